"""The entry points: :func:`image_folder` (any ImageNet-layout folder or tar) and :func:`cifar10`.

Each picks the data set (decoded cache or on-the-fly decoding), resolves ``augment="auto"`` for
the split, and hands back a :class:`DecodedImageDataset` or an :class:`ImageFileDataset`.
torchvision, for CIFAR-10's own files, is imported inside :func:`cifar10`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from matryoshka._optional import require
from matryoshka.data.images.cache import _cached_images, _decode_all
from matryoshka.data.images.datasets import DecodedImageDataset, ImageFileDataset
from matryoshka.data.images.sources import _list, _open_source
from matryoshka.data.images.survey import survey_images
from matryoshka.data.images.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Augment,
    _check_augment,
    _check_channels,
)

__all__ = ["cifar10", "image_folder"]


def image_folder(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    augment: Augment = "auto",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    padding: int = 4,
    flip: bool = True,
    crop_fraction: float = 0.875,
    channels: int | None = 3,
    progress: bool = True,
) -> DecodedImageDataset | ImageFileDataset:
    """An image data set in the ImageNet layout, from a folder or a tar file.

    Parameters
    ----------
    root : path
        One of: a folder holding ``<split>/<class>/<image>``; a folder holding ``<split>.tar``;
        a plain tar whose members are ``<split>/<class>/<image>``; or, with ``split=None``, a
        folder or tar whose top level is the class folders. A folder wins over a tar.
    split : str or None
        ``"train"``, ``"test"``, ``"val"``...; also decides ``augment="auto"``.
    cache_dir : path, optional
        Decode every image once into ``cache_dir/<split>-<size>-<hash>/images.npy``
        (uint8, (N, C, H, W), memory-mapped) and read from there; rebuilt when the source's path,
        size or mtime, ``image_size`` or ``channels`` changes. Written atomically (a crash leaves
        no half cache). Under DDP, build it once before the ranks start (or on rank 0, then
        barrier), so that ranks do not each decode. None: decode on every access.
    image_size : int, optional
        Output side in pixels. None keeps the images' own size (for a cache they must all match).
        Set: evaluation views resize the shorter side to ``image_size / crop_fraction`` and
        centre-crop; a cache stores those views.
    augment : {"auto", "crop", "resized_crop", "none"}
        See :mod:`matryoshka.data.images`; ``"auto"`` augments only the ``"train"`` split.
    mean, std : C floats each, optional
        Per-channel normalisation in [0, 1] units (see ``CIFAR10_MEAN``; :func:`measure_stats`
        measures a folder's own). None: ImageNet's (for one channel, their averages).
    padding : int
        Zero padding of the ``"crop"`` augmentation (0: no shift).
    flip : bool
        Random horizontal flip in the ``"crop"`` and ``"resized_crop"`` augmentations.
    crop_fraction : float
        Evaluation crop as a fraction of the shorter side (0.875: 256 -> 224); 1.0 resizes the
        whole image to ``image_size`` squared, without a crop.
    channels : {3, 1, None}
        3: RGB; 1: grayscale (Pillow's "L": colour images become their luma; the cache holds
        (N, 1, H, W), a third of the bytes). None: 1 when every image of a sample of the split is
        grayscale (:func:`survey_images`), else 3.
    progress : bool
        Show a progress bar while building a cache.

    Returns
    -------
    DecodedImageDataset (with ``cache_dir``) or ImageFileDataset; items are
    ``(float32 tensor of shape (C, H, W), int label)``.
    """
    _check_augment(augment)
    if channels is None:
        channels = survey_images(root, split).channels
    _check_channels(channels)
    if image_size is not None and image_size <= 0:
        raise ValueError(f"image_size must be a positive int or None, got {image_size}")
    if augment == "auto":  # the ImageNet recipe when decoding on the fly at a size, else CIFAR's
        on_the_fly = cache_dir is None and image_size is not None
        augment = "none" if split != "train" else "resized_crop" if on_the_fly else "crop"
    source = _open_source(Path(root).expanduser(), split)
    if cache_dir is None:
        classes, samples, _ = _list(source)
        return ImageFileDataset(source, samples, classes, image_size, augment, mean, std, padding,
                                flip, crop_fraction, channels=channels)  # fmt: skip
    images, labels, classes, folder = _cached_images(
        Path(cache_dir).expanduser(), source, split, image_size, crop_fraction, progress, channels
    )
    dataset = DecodedImageDataset(images, labels, classes, augment, mean, std, padding, flip)
    dataset._mmap_path = str(folder / "images.npy")
    return dataset


def cifar10(
    root: str | os.PathLike,
    split: Literal["train", "test"] = "train",
    *,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    augment: Augment = "auto",
    padding: int = 4,
    flip: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    progress: bool = True,
) -> DecodedImageDataset:
    """CIFAR-10 as a :class:`DecodedImageDataset` with CIFAR-10's mean and std (unless given).

    Parameters
    ----------
    root : path
        Either torchvision's root (holding ``cifar-10-batches-py``, or where it will be
        downloaded), or a local copy in the ImageNet layout: a folder holding ``train.tar`` and
        ``test.tar`` or ``train/`` and ``test/`` (read with :func:`image_folder`).
    split : {"train", "test"}
    download : bool
        Let torchvision download the data into ``root`` when it is missing.
    cache_dir : path, optional
        For an ImageNet-layout copy, where to keep the decoded cache (see :func:`image_folder`);
        None decodes the JPEGs into memory on every call (about 8 s for the train split here).
    augment : {"auto", "crop", "none"}
        ``"auto"``: pad-4 crop and flip for ``"train"``, none for ``"test"``.
    padding : int
    flip : bool
        Random horizontal flip in the ``"crop"`` augmentation.
    mean, std : three floats each, optional
        None: ``CIFAR10_MEAN`` and ``CIFAR10_STD``.
    progress : bool

    Returns
    -------
    DecodedImageDataset of 50,000 (train) or 10,000 (test) images of shape (3, 32, 32).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser()
    if augment == "auto":
        augment = "crop" if split == "train" else "none"
    mean = CIFAR10_MEAN if mean is None else mean
    std = CIFAR10_STD if std is None else std
    stats = {"mean": mean, "std": std, "padding": padding, "flip": flip}
    layout = root / split if (root / split).is_dir() else root / f"{split}.tar"
    if not download and not (root / "cifar-10-batches-py").exists() and layout.exists():
        if cache_dir is not None:
            return image_folder(
                root, split, cache_dir=cache_dir, augment=augment, progress=progress, **stats
            )
        files = image_folder(root, split, augment="none", progress=progress)
        images = _decode_all(
            files.source, files.samples, None, 1.0, progress, lambda s: np.empty(s, np.uint8)
        )  # (N, 3, H, W) uint8
        return DecodedImageDataset(images, files.labels, files.classes, augment, **stats)
    datasets = require("torchvision.datasets", "torchvision's CIFAR-10")
    try:
        ds = datasets.CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"CIFAR-10 not found in {root} ({e}); pass download=True, or a folder holding "
            "train.tar/test.tar or train/ and test/ in the ImageNet layout"
        ) from None
    images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return DecodedImageDataset(images, ds.targets, ds.classes, augment, **stats)
