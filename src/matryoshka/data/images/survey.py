"""What an image folder holds, measured before training: colour, sizes, and pixel statistics.

:func:`survey_images` reads the headers of a seeded sample of a split's images (classes, image
count, the sizes and Pillow modes found), which decide ``channels`` (1 when every sampled image
is grayscale) and whether the images share one size. :func:`measure_stats` computes the
per-channel mean and std of a data set's decoded uint8 pixels, before augmentation, over a seeded
sample: the normalisation a folder of one's own needs when ImageNet's numbers do not fit it.
Both sample with ``np.random.default_rng(seed)`` alone, so the same folder gives the same numbers.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from matryoshka._optional import require
from matryoshka._runtime import progress_bar
from matryoshka.data.images.datasets import DecodedImageDataset, ImageFileDataset
from matryoshka.data.images.sources import _list, _open_source

__all__ = ["GRAY_MODES", "ImageSurvey", "measure_stats", "survey_images"]

# Pillow modes of single-channel images: bilevel, 8-bit, with alpha, 16- and 32-bit, float
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageSurvey(NamedTuple):
    """What :func:`survey_images` found in one split."""

    classes: list[str]  # sorted class folder names
    count: int  # images in the split
    sampled: int  # images whose headers were read
    sizes: dict[tuple[int, int], int]  # (width, height) -> sampled images of that size
    modes: dict[str, int]  # Pillow mode -> sampled images in that mode

    @property
    def grayscale(self) -> bool:
        """Whether every sampled image is single-channel (see :data:`GRAY_MODES`)."""
        return all(mode in GRAY_MODES for mode in self.modes)

    @property
    def channels(self) -> int:
        """1 when every sampled image is grayscale, else 3."""
        return 1 if self.grayscale else 3

    @property
    def size(self) -> tuple[int, int] | None:
        """The (width, height) every sampled image has, or None when they differ."""
        return next(iter(self.sizes)) if len(self.sizes) == 1 else None


def _sample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)`` when ``n <= limit``, else a seeded pick of ``limit``, sorted."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def survey_images(
    root: str | os.PathLike, split: str | None = "train", limit: int | None = 10_000, seed: int = 0
) -> ImageSurvey:
    """Classes, image count, and the sizes and colour modes of a seeded sample of a split.

    Only headers are parsed (no pixels are decoded), so a sample of 10,000 takes seconds.

    Parameters
    ----------
    root, split : as in :func:`~matryoshka.data.images.image_folder`
    limit : int or None
        Read at most this many images' headers (a seeded pick); None reads all.
    seed : int
    """
    image = require("PIL.Image", "reading image headers")
    source = _open_source(Path(root).expanduser(), split)
    classes, samples, _ = _list(source)
    sizes: Counter = Counter()
    modes: Counter = Counter()
    picked = _sample(len(samples), limit, seed)
    for i in picked:
        name = samples[int(i)][0]
        try:
            with image.open(io.BytesIO(source.read(name))) as img:
                sizes[img.size] += 1
                modes[img.mode] += 1
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad files
            raise ValueError(f"cannot read image {source.describe(name)}: {e}") from None
    return ImageSurvey(classes, len(samples), len(picked), dict(sizes), dict(modes))


def measure_stats(
    dataset: DecodedImageDataset | ImageFileDataset,
    limit: int | None = 10_000,
    seed: int = 0,
    progress: bool = False,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a data set's pixels, in [0, 1] units, rounded to 4 decimals.

    Read from the decoded uint8 images before augmentation (with ``image_size`` set, the
    evaluation view), over all images or a seeded pick of ``limit``. The std is the population
    std of every pixel of the sample, at least 1/255 (one grey level) so it can divide.

    Returns
    -------
    mean, std : tuples of C floats, C = ``dataset.channels``.
    """
    picked = _sample(len(dataset), limit, seed).tolist()
    c = dataset.channels
    total = torch.zeros(c, dtype=torch.int64)  # (C,) sum of pixel values, exact in any order
    squares = torch.zeros(c, dtype=torch.int64)  # (C,) sum of their squares
    count = 0  # pixels per channel
    step = 256 if isinstance(dataset, DecodedImageDataset) else 1  # files may differ in size
    chunks = [picked[i : i + step] for i in range(0, len(picked), step)]
    for chunk in progress_bar(
        chunks, desc="measuring mean/std", unit="batch", disable=not progress
    ):
        x = dataset.pixels(chunk).to(torch.int64)  # (B, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.numel() // c
    if count == 0:
        raise ValueError("no images to measure the mean and std on")
    mean = total.double() / count  # (C,) in 0..255
    var = (squares.double() / count - mean * mean).clamp(min=0)
    std = [max(math.sqrt(v) / 255, 1 / 255) for v in var.tolist()]
    return tuple(round(m / 255, 4) for m in mean.tolist()), tuple(round(s, 4) for s in std)
