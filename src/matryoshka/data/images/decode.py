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
    channels: int = 3,
) -> torch.Tensor:
    """Decode one member to uint8 (C, H, W): C = 3 (Pillow's "RGB") or 1 (Pillow's "L").

    Parameters
    ----------
    source : _Source
        Where the member lives.
    name : str
        The member, relative to the source.
    image_size : int or None
        Set: resize the shorter side to ``image_size / crop_fraction`` and centre-crop
        ``image_size`` squared; with ``crop_fraction`` 1.0, resize the whole image to
        ``image_size`` squared (no crop). None (and no ``box_fn``): the image's own size.
    crop_fraction : float
        The centre crop as a fraction of the shorter side.
    box_fn : callable, optional
        ``box_fn(width, height)`` gives a box (left, top, right, bottom) to crop instead; it is
        then resized to ``out_size`` squared.
    out_size : int, optional
        The side of the output with ``box_fn``.
    channels : {3, 1}
        3: RGB; 1: grayscale (a colour image is converted to its luma).

    Returns
    -------
    uint8 tensor of shape (C, H, W).
    """
    image = require("PIL.Image", "decoding images")
    mode = "L" if channels == 1 else "RGB"
    try:
        with image.open(io.BytesIO(source.read(name))) as img:
            if image_size is not None:
                # JPEG only: let libjpeg decode at a reduced scale no smaller than needed.
                short = image_size / crop_fraction
                img.draft(mode, (math.ceil(short), math.ceil(short)))
            img = img.convert(mode)
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
        img = img.resize((image_size, image_size), image.Resampling.BILINEAR,
                         box=_centre_box(*img.size, crop_fraction))  # fmt: skip
    pixels = np.asarray(img)  # (H, W, 3) or, for "L", (H, W)
    if pixels.ndim == 2:
        return torch.from_numpy(pixels[None].copy())  # (1, H, W)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())  # (H, W, 3) -> (3, H, W)


def _centre_box(w: int, h: int, crop_fraction: float) -> tuple[float, float, float, float]:
    """The evaluation crop (left, top, right, bottom) of a (w, h) image.

    A centred square of side ``crop_fraction`` times the shorter side; with ``crop_fraction``
    1.0 the whole image (a plain resize, the aspect ratio not kept).
    """
    if crop_fraction == 1.0:
        return 0.0, 0.0, float(w), float(h)
    side = min(w, h) * crop_fraction  # the crop, in source pixels
    left, top = (w - side) / 2, (h - side) / 2
    return left, top, left + side, top + side
