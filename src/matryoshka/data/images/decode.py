"""Decoding one image file to uint8 pixels with Pillow, at its own size or an evaluation view.

Pillow is the ``vision`` extra; it is imported inside :func:`_decode`, so importing this module
loads neither Pillow nor torchvision.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch

from matryoshka._optional import require
from matryoshka.data.images.sources import _Source

__all__: list[str] = []

BoxFn = Callable[[int, int], tuple[int, int, int, int]]  # (width, height) -> crop box


def _decode(
    source: _Source,
    name: str,
    image_size: int | None,
    crop_fraction: float,
    box_fn: BoxFn | None = None,
    out_size: int | None = None,
) -> torch.Tensor:
    """Decode one member to uint8 (3, H, W).

    Parameters
    ----------
    source : _Source
        Where the member lives.
    name : str
        The member, relative to the source.
    image_size : int or None
        Set: resize the shorter side to ``image_size / crop_fraction`` and centre-crop
        ``image_size`` squared. None (and no ``box_fn``): the image's own size.
    crop_fraction : float
        The centre crop as a fraction of the shorter side.
    box_fn : callable, optional
        ``box_fn(width, height)`` gives a box (left, top, right, bottom) to crop instead; it is
        then resized to ``out_size`` squared.
    out_size : int, optional
        The side of the output with ``box_fn``.

    Returns
    -------
    uint8 tensor of shape (3, H, W).
    """
    image = require("PIL.Image", "decoding images")
    try:
        with image.open(io.BytesIO(source.read(name))) as img:
            if image_size is not None:
                # JPEG only: let libjpeg decode at a reduced scale no smaller than needed.
                short = image_size / crop_fraction
                img.draft("RGB", (math.ceil(short), math.ceil(short)))
            img = img.convert("RGB")
    except image.DecompressionBombError as e:  # a few bytes that would decode to gigabytes
        raise ValueError(
            f"image {source.describe(name)} is too large to decode ({e}); refused as a "
            "possible decompression bomb"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad or truncated files
        raise ValueError(f"cannot decode image {source.describe(name)}: {e}") from None
    if box_fn is not None:
        box = box_fn(*img.size)
        img = img.resize((out_size, out_size), image.Resampling.BILINEAR, box=box)
    elif image_size is not None:
        w, h = img.size
        side = min(w, h) * crop_fraction  # the crop, in source pixels
        left, top = (w - side) / 2, (h - side) / 2
        img = img.resize(
            (image_size, image_size),
            image.Resampling.BILINEAR,
            box=(left, top, left + side, top + side),
        )
    return torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())  # (H, W, 3) -> (3, H, W)
