"""The two image data sets: pixels decoded once into an array, or decoded from files on access.

Both are ``torch.utils.data.Dataset`` s of ``(float32 tensor of shape (C, H, W), int label)``
(C = 3 for RGB, 1 for grayscale) with ``classes`` (list of str), ``labels`` (int64 tensor of shape
(N,)), ``channels``, ``mean`` and ``std``, ``with_augment(...)`` for a view with another
augmentation, ``with_stats(mean, std)`` for a view with another normalisation, and
``pixels(indices)`` for the uint8 images before augmentation. :class:`DecodedImageDataset` holds a
uint8 array (often a memory map of the cache); :class:`ImageFileDataset` decodes each image with
Pillow from a folder or tar source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from matryoshka.data.images.decode import _decode
from matryoshka.data.images.sources import _Source
from matryoshka.data.images.transforms import (
    Augment,
    _check_augment,
    _check_channels,
    _check_stats,
    _default_stats,
    normalize,
    random_crop_flip,
    random_resized_box,
)

__all__ = ["DecodedImageDataset", "ImageFileDataset"]


class _Normalised(Dataset):
    """What both data sets share: per-channel statistics that a copy can replace."""

    augment: Augment
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def with_augment(self, augment: Augment) -> _Normalised:
        """A shallow copy with another augmentation (each data set defines it)."""
        raise NotImplementedError

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> _Normalised:
        """The same images normalised with another ``mean`` and ``std`` (C floats each)."""
        other = self.with_augment(self.augment)
        other.mean, other.std = _stats_or_default(mean, std, self.channels)
        return other


class DecodedImageDataset(_Normalised):
    """Images already decoded into one uint8 array; augmentation and normalisation on access.

    Fetching a batch through ``DataLoader(dataset, batch_size=B)`` goes through
    ``__getitems__``: one gather from the array and one batched :func:`random_crop_flip`.

    Parameters
    ----------
    images : uint8 ndarray or tensor of shape (N, C, H, W), C = 3 (RGB) or 1 (grayscale); may
        be a read-only memory map
    labels : int array-like of shape (N,)
    classes : list of str, the class names; ``labels`` index into it
    augment : ``"crop"`` or ``"none"`` (``"auto"`` means ``"none"`` here)
    mean, std : per-channel normalisation, C floats each in [0, 1] units; None: ImageNet's (for
        one channel, the averages of ImageNet's three)
    padding : int, the crop's zero padding (``"crop"`` only)
    flip : bool, random horizontal flip (``"crop"`` only)
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        classes: Sequence[str],
        augment: Augment = "none",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: int = 4,
        flip: bool = True,
    ) -> None:
        _check_augment(augment)
        if augment == "resized_crop":
            raise ValueError(
                "augment='resized_crop' needs the original images, decoded ones have a fixed size: "
                "use augment='crop', or image_folder(..., cache_dir=None) to decode on the fly"
            )
        uint8 = images.dtype == (torch.uint8 if isinstance(images, torch.Tensor) else np.uint8)
        if images.ndim != 4 or images.shape[1] not in (1, 3) or not uint8:
            raise ValueError(
                "images must be uint8 of shape (N, 3, H, W) or (N, 1, H, W), "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
        self.channels = int(images.shape[1])
        mean, std = _stats_or_default(mean, std, self.channels)
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)  # (N,)
        if self.labels.shape != (images.shape[0],):
            raise ValueError(
                f"{images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        self.classes = list(classes)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), one per class name")
        self.augment = "none" if augment == "auto" else augment
        self.mean, self.std = mean, std
        self.padding, self.flip = padding, flip
        self._mmap_path: str | None = None  # set when images is a memory map of a cache file

    def with_augment(self, augment: Augment) -> DecodedImageDataset:
        """The same images with another augmentation (e.g. ``"none"`` to embed the train split).

        A shallow copy: the pixels are shared, not copied.
        """
        _check_augment(augment)
        if augment == "resized_crop":
            raise ValueError("augment='resized_crop' needs the original images, not decoded ones")
        other = object.__new__(type(self))  # not copy.copy: pickling state would drop the map
        other.__dict__.update(self.__dict__)
        other.augment = "none" if augment == "auto" else augment
        return other

    def pixels(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 tensor of shape (B, C, H, W): the images at ``indices``, before augmentation."""
        return self._gather(indices)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _gather(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 tensor of shape (B, C, H, W): the images at ``indices``."""
        if isinstance(self.images, torch.Tensor):
            return self.images[torch.as_tensor(indices, dtype=torch.int64)]
        return torch.from_numpy(np.ascontiguousarray(self.images[np.asarray(indices)]))

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """Augment and normalise uint8 (B, C, H, W) into float32 (B, C, H, W)."""
        if self.augment == "crop":
            x = random_crop_flip(x, self.padding, self.flip)
        return normalize(x, self.mean, self.std)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One image as float32 of shape (C, H, W) and its label."""
        x = self._gather([index])  # (1, C, H, W) uint8
        return self._finish(x)[0], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch at once (what ``DataLoader`` calls): one gather, batched augmentation."""
        x = self._finish(self._gather(indices))  # (B, C, H, W) float32
        return list(zip(x.unbind(0), self.labels[torch.as_tensor(indices)].tolist(), strict=True))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._mmap_path is not None:  # reopen the map in a spawned worker, don't copy it
            state["images"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.images is None:
            self.images = np.load(self._mmap_path, mmap_mode="r")

    def __repr__(self) -> str:
        n, _, h, w = self.images.shape
        return (
            f"{type(self).__name__}(n={n}, size={h}x{w}, classes={len(self.classes)}, "
            f"augment={self.augment!r})"
        )


class ImageFileDataset(_Normalised):
    """Image files in a folder or a tar, decoded with Pillow on every access.

    Built by :func:`image_folder` without a cache. Safe in ``DataLoader`` workers (a tar is read
    with positioned reads through one file handle per process).

    Parameters
    ----------
    source : folder or tar reader made by :func:`image_folder`
    samples : list of (member name, label), member names relative to the source
    classes : list of str
    image_size : int or None; None keeps each image's own size (all must then match to batch)
    augment : ``"crop"``, ``"resized_crop"`` or ``"none"`` (``"auto"`` means ``"none"``)
    mean, std, padding, flip : as in :class:`DecodedImageDataset`
    crop_fraction : float, evaluation resizes the shorter side to ``image_size / crop_fraction``
        and centre-crops ``image_size`` (0.875: 256 then 224); 1.0 resizes the whole image
    scale, ratio : ranges of the random-resized crop's area fraction and aspect ratio
    """

    def __init__(
        self,
        source: _Source,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        image_size: int | None = None,
        augment: Augment = "none",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: int = 4,
        flip: bool = True,
        crop_fraction: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        channels: int = 3,
    ) -> None:
        _check_augment(augment)
        _check_channels(channels)
        mean, std = _stats_or_default(mean, std, channels)
        if augment == "resized_crop" and image_size is None:
            raise ValueError("augment='resized_crop' needs an image_size (e.g. 224)")
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.source = source
        self.samples = list(samples)
        self.classes = list(classes)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.image_size = image_size
        self.augment = "none" if augment == "auto" else augment
        self.mean, self.std, self.channels = mean, std, channels
        self.padding, self.flip = padding, flip
        self.crop_fraction, self.scale, self.ratio = crop_fraction, scale, ratio

    def with_augment(self, augment: Augment) -> ImageFileDataset:
        """The same images with another augmentation (e.g. ``"none"`` to embed the train split).

        A shallow copy: the pixels are shared, not copied.
        """
        _check_augment(augment)
        if augment == "resized_crop" and self.image_size is None:
            raise ValueError("augment='resized_crop' needs an image_size (e.g. 224)")
        other = object.__new__(type(self))  # shares the sample list and the open source
        other.__dict__.update(self.__dict__)
        other.augment = "none" if augment == "auto" else augment
        return other

    def pixels(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 tensor of shape (B, C, H, W): the images at ``indices``, before augmentation
        (all must have one size)."""
        return torch.stack([self.decode(i) for i in indices])

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, index: int) -> torch.Tensor:
        """The image at ``index`` as uint8 of shape (C, H, W), before augmentation.

        With ``image_size`` set this is the evaluation view (resize and centre crop), the same
        pixels a cache at that size holds.
        """
        name = self.samples[index][0]
        return _decode(
            self.source, name, self.image_size, self.crop_fraction, channels=self.channels
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One image as float32 of shape (C, H, W) and its label."""
        name, label = self.samples[index]
        if self.augment == "resized_crop":
            x = _decode(self.source, name, None, 1.0, self._random_box, self.image_size,
                        self.channels)  # fmt: skip
            if self.flip and float(torch.rand(())) < 0.5:
                x = x.flip(-1)
        else:
            x = self.decode(index)
            if self.augment == "crop":
                x = random_crop_flip(x, self.padding, self.flip)
        return normalize(x, self.mean, self.std), label

    def _random_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random crop box (left, top, right, bottom): see :func:`random_resized_box`."""
        return random_resized_box(width, height, self.scale, self.ratio)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, source={self.source.path}, "
            f"classes={len(self.classes)}, image_size={self.image_size}, augment={self.augment!r})"
        )


def _stats_or_default(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as tuples, checked against ``channels``; None: :func:`_default_stats`."""
    default_mean, default_std = _default_stats(channels)
    mean = default_mean if mean is None else mean
    std = default_std if std is None else std
    _check_stats(mean, std, channels)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
