"""Pixel transforms on uint8 images: normalisation, the CIFAR crop-and-flip, the ImageNet crop box.

Holds the per-channel statistics (ImageNet's and CIFAR-10's), :func:`normalize` (one value per
channel: 3 for RGB, 1 for grayscale), :func:`random_crop_flip` (batched, on uint8 tensors),
:func:`random_resized_box` (the box of the Inception / torchvision random-resized crop) and the
checks of the ``augment``, ``channels``, ``mean`` and ``std`` options shared by the data sets.
Randomness comes from torch's generators only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

__all__ = [
    "Augment",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "random_crop_flip",
    "random_resized_box",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Augment = Literal["auto", "crop", "resized_crop", "none"]
_AUGMENTS = ("auto", "crop", "resized_crop", "none")


def normalize(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Scale uint8 pixels to [0, 1] and normalise each channel.

    Parameters
    ----------
    images : uint8 tensor of shape (B, C, H, W) or (C, H, W), C = 3 (RGB) or 1 (grayscale)
    mean, std : C floats each, in [0, 1] units

    Returns
    -------
    float32 tensor of the same shape: ``(images / 255 - mean) / std``.
    """
    c = len(mean)
    if images.dim() < 3 or images.shape[-3] != c:
        raise ValueError(
            f"{c} mean/std value(s) for images of shape {tuple(images.shape)}: give one per "
            "channel (C of (C, H, W))"
        )
    mean_t = torch.tensor(mean, dtype=torch.float32).view(c, 1, 1) * 255.0  # (C, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(c, 1, 1) * 255.0  # (C, 1, 1)
    return (images.float() - mean_t) / std_t


def random_crop_flip(
    images: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, each image drawn independently.

    Equivalent to padding every image by ``padding`` zeros on each side and cutting a random
    (H, W) window from it, then mirroring it with probability 1/2; done as one gather over the
    whole batch, so it costs about as much as a copy.

    Parameters
    ----------
    images : uint8 (or any dtype) tensor of shape (B, C, H, W) or (C, H, W)
    padding : int, the largest shift in pixels, in each direction
    flip : bool, whether to flip horizontally with probability 1/2
    generator : torch.Generator, optional; torch's global generator when None

    Returns
    -------
    tensor of the same shape and dtype as ``images``.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    single = images.dim() == 3
    x = images.unsqueeze(0) if single else images  # (B, C, H, W)
    b, c, h, w = x.shape
    p = padding
    padded = torch.nn.functional.pad(x, (p, p, p, p)) if p else x  # (B, C, H+2p, W+2p)
    hp, wp = h + 2 * p, w + 2 * p
    oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)  # (B,) top of the window
    ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)  # (B,) left of the window
    cols = torch.arange(w).expand(b, w)  # (B, W)
    if flip:
        flipped = torch.rand(b, generator=generator) < 0.5  # (B,)
        cols = torch.where(flipped[:, None], w - 1 - cols, cols)
    rows = oy[:, None] + torch.arange(h)  # (B, H)
    cols = ox[:, None] + cols  # (B, W)
    # flat positions in the padded image: (B, H, W) -> (B, 1, H*W) -> (B, C, H*W)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    # gather along the flattened (B, C, Hp*Wp), then back to (B, C, H, W)
    out = padded.reshape(b, c, hp * wp).gather(2, index).view(b, c, h, w)
    return out[0] if single else out


def random_resized_box(
    width: int,
    height: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """A random crop box: the Inception / torchvision random-resized-crop recipe.

    Up to ten tries draw an area fraction uniformly in ``scale`` and an aspect ratio
    log-uniformly in ``ratio`` (four draws of ``torch.rand`` each, from torch's global generator)
    and keep the first box that fits; when none does, the largest centred box whose aspect lies in
    ``ratio``.

    Parameters
    ----------
    width, height : int
        The image's size in pixels.
    scale : (float, float)
        Range of the box's area as a fraction of the image's.
    ratio : (float, float)
        Range of the box's aspect ratio (width / height).

    Returns
    -------
    (left, top, right, bottom) : four ints, a box inside the (width, height) image.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(4).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = min(int(u[2] * (width - w + 1)), width - w)
            top = min(int(u[3] * (height - h + 1)), height - h)
            return left, top, left + w, top + h
    # Fallback: the largest centred crop whose aspect lies within the ratio range.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _check_augment(augment: str) -> None:
    """Raise ``ValueError`` unless ``augment`` is one of the four :data:`Augment` values."""
    if augment not in _AUGMENTS:
        raise ValueError(f"augment must be one of {_AUGMENTS}, got {augment!r}")


def _check_stats(mean: Sequence[float], std: Sequence[float], channels: int = 3) -> None:
    """Raise ``ValueError`` unless ``mean`` and ``std`` hold one value per channel, ``std`` > 0."""
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need {channels} values each (one per channel), got {list(mean)} and "
            f"{list(std)}"
        )
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {list(std)}")


def _check_channels(channels: int) -> None:
    """Raise ``ValueError`` unless ``channels`` is 1 (grayscale) or 3 (RGB)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def _default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std for 3 channels; for 1 channel, their averages over the channels."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (round(sum(IMAGENET_MEAN) / 3, 4),), (round(sum(IMAGENET_STD) / 3, 4),)
