"""Image data sets in the ImageNet layout (``split/class/image.jpg``), from a folder or a tar file.

Three ways in, one kind of result: every data set here is a ``torch.utils.data.Dataset`` whose
items are ``(image, label)`` with ``image`` a float32 tensor of shape (3, H, W), normalised with a
per-channel mean and std, and ``label`` an int; each has ``classes`` (sorted folder names) and
``labels`` (int64 tensor of shape (N,)).

- :func:`image_folder` reads an extracted folder or a plain (uncompressed) tar directly. With
  ``cache_dir`` it decodes every JPEG once into a memory-mappable uint8 array
  (``images.npy`` of shape (N, 3, H, W)) and later epochs, and later runs, read that instead: a
  :class:`DecodedImageDataset`. Without ``cache_dir`` it decodes on every access: an
  :class:`ImageFileDataset`. The cache is rebuilt when its source changes (path, size, mtime) or
  when ``image_size`` changes.
- :func:`cifar10` reads CIFAR-10 through torchvision (which downloads it on a user's machine) or,
  given a folder holding ``train.tar``/``test.tar`` or ``train/``/``test/`` in the ImageNet layout,
  through :func:`image_folder`; both give a :class:`DecodedImageDataset` with the same classes.
- ImageNet goes through :func:`image_folder` with ``image_size=224`` and no cache (a decoded cache
  of 1.28M full-size images does not fit on most disks): training images get the standard
  random-resized crop (Szegedy et al. 2015, scale 0.08-1, aspect 3/4-4/3) and a flip, evaluation
  images a resize of the shorter side to ``image_size / crop_fraction`` and a centre crop. The
  validation split must be laid out in class folders like the training split. A cache with a small
  ``image_size`` (e.g. 64, a downsampled ImageNet) works too.

Augmentation (``augment=``):

=================  =========================================================================
``"auto"``         ``"none"`` unless ``split == "train"``; for training ``"resized_crop"`` when
                   decoding on the fly at a given ``image_size``, otherwise ``"crop"``
``"crop"``         the CIFAR recipe: zero-pad by ``padding`` (4), random crop back to (H, W),
                   random horizontal flip; batched tensor ops on uint8 (:func:`random_crop_flip`)
``"resized_crop"`` the ImageNet recipe above; only when decoding on the fly with ``image_size``
``"none"``         no augmentation
=================  =========================================================================

Randomness comes from torch's global generator, which ``DataLoader`` seeds per worker from
``torch.manual_seed``, so a seeded run is repeatable. Pillow and torchvision are the ``vision``
extra; they load inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from matryoshka._io import atomic_dir  # a leaf helper (imports nothing of the package)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "DecodedImageDataset",
    "ImageFileDataset",
    "cifar10",
    "image_folder",
    "normalize",
    "random_crop_flip",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")

Augment = Literal["auto", "crop", "resized_crop", "none"]
_AUGMENTS = ("auto", "crop", "resized_crop", "none")
_CACHE_VERSION = 1
_VISION_HINT = "pip install 'matryoshka[vision]'"


# --------------------------------------------------------------------------- augmentation


def normalize(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Scale uint8 pixels to [0, 1] and normalise each channel.

    Parameters
    ----------
    images : uint8 tensor of shape (B, 3, H, W) or (3, H, W)
    mean, std : three floats each, in [0, 1] units

    Returns
    -------
    float32 tensor of the same shape: ``(images / 255 - mean) / std``.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0  # (3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0
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
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    out = padded.reshape(b, c, hp * wp).gather(2, index).view(b, c, h, w)  # (B, C, H, W)
    return out[0] if single else out


def _check_augment(augment: str) -> None:
    if augment not in _AUGMENTS:
        raise ValueError(f"augment must be one of {_AUGMENTS}, got {augment!r}")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values each, got {list(mean)} and {list(std)}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {list(std)}")


# --------------------------------------------------------------------------- data sets


class DecodedImageDataset(Dataset):
    """Images already decoded into one uint8 array; augmentation and normalisation on access.

    Fetching a batch through ``DataLoader(dataset, batch_size=B)`` goes through
    ``__getitems__``: one gather from the array and one batched :func:`random_crop_flip`.

    Parameters
    ----------
    images : uint8 ndarray or tensor of shape (N, 3, H, W); may be a read-only memory map
    labels : int array-like of shape (N,)
    classes : list of str, the class names; ``labels`` index into it
    augment : ``"crop"`` or ``"none"`` (``"auto"`` means ``"none"`` here)
    mean, std : per-channel normalisation, three floats each in [0, 1] units
    padding : int, the crop's zero padding (``"crop"`` only)
    flip : bool, random horizontal flip (``"crop"`` only)
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        classes: Sequence[str],
        augment: Augment = "none",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        padding: int = 4,
        flip: bool = True,
    ) -> None:
        _check_augment(augment)
        if augment == "resized_crop":
            raise ValueError(
                "augment='resized_crop' needs the original images, decoded ones have a fixed size: "
                "use augment='crop', or image_folder(..., cache_dir=None) to decode on the fly"
            )
        _check_stats(mean, std)
        uint8 = images.dtype == (torch.uint8 if isinstance(images, torch.Tensor) else np.uint8)
        if images.ndim != 4 or images.shape[1] != 3 or not uint8:
            raise ValueError(
                "images must be uint8 of shape (N, 3, H, W), "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
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
        self.mean, self.std = tuple(mean), tuple(std)
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

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _gather(self, indices: Sequence[int]) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[torch.as_tensor(indices, dtype=torch.int64)]
        return torch.from_numpy(np.ascontiguousarray(self.images[np.asarray(indices)]))

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment == "crop":
            x = random_crop_flip(x, self.padding, self.flip)
        return normalize(x, self.mean, self.std)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One image as float32 of shape (3, H, W) and its label."""
        x = self._gather([index])  # (1, 3, H, W) uint8
        return self._finish(x)[0], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch at once (what ``DataLoader`` calls): one gather, batched augmentation."""
        x = self._finish(self._gather(indices))  # (B, 3, H, W) float32
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


class ImageFileDataset(Dataset):
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
        and centre-crops ``image_size`` (0.875: 256 then 224)
    scale, ratio : ranges of the random-resized crop's area fraction and aspect ratio
    """

    def __init__(
        self,
        source: _Source,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        image_size: int | None = None,
        augment: Augment = "none",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        padding: int = 4,
        flip: bool = True,
        crop_fraction: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        _check_augment(augment)
        _check_stats(mean, std)
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
        self.mean, self.std = tuple(mean), tuple(std)
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

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, index: int) -> torch.Tensor:
        """The image at ``index`` as uint8 of shape (3, H, W), before augmentation.

        With ``image_size`` set this is the evaluation view (resize and centre crop), the same
        pixels a cache at that size holds.
        """
        name = self.samples[index][0]
        return _decode(self.source, name, self.image_size, self.crop_fraction)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One image as float32 of shape (3, H, W) and its label."""
        name, label = self.samples[index]
        if self.augment == "resized_crop":
            x = _decode(self.source, name, None, 1.0, self._random_box, self.image_size)
            if self.flip and float(torch.rand(())) < 0.5:
                x = x.flip(-1)
        else:
            x = _decode(self.source, name, self.image_size, self.crop_fraction)
            if self.augment == "crop":
                x = random_crop_flip(x, self.padding, self.flip)
        return normalize(x, self.mean, self.std), label

    def _random_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random crop box (left, top, right, bottom): the Inception / torchvision recipe."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u = torch.rand(4).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = min(int(u[2] * (width - w + 1)), width - w)
                top = min(int(u[3] * (height - h + 1)), height - h)
                return left, top, left + w, top + h
        # Fallback: the largest centred crop whose aspect lies within the ratio range.
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, source={self.source.path}, "
            f"classes={len(self.classes)}, image_size={self.image_size}, augment={self.augment!r})"
        )


# --------------------------------------------------------------------------- sources


class _Source:
    """Where the image files of one split live; ``read(name)`` returns a member's bytes."""

    path: Path

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def describe(self, name: str) -> str:
        return f"{self.path / name}"


class _FolderSource(_Source):
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def list(self) -> tuple[list[str], dict[str, list[str]], tuple[int, int, int]]:
        """Class folder names, their image files (sorted), and (count, bytes, max mtime)."""
        classes = sorted(
            e.name for e in os.scandir(self.path) if e.is_dir() and not e.name.startswith(".")
        )
        files: dict[str, list[str]] = {}
        count = total = newest = 0
        for cls in classes:
            found = []
            for dirpath, dirnames, filenames in os.walk(self.path / cls):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = Path(dirpath).relative_to(self.path)
                for f in filenames:
                    if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                        continue
                    st = os.stat(os.path.join(dirpath, f))
                    count += 1
                    total += st.st_size
                    newest = max(newest, st.st_mtime_ns)
                    found.append((rel / f).as_posix())
            files[cls] = sorted(found)
        return classes, files, (count, total, newest)


class _TarSource(_Source):
    """Members of an uncompressed tar under one prefix, read with positioned reads."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path, self.prefix = path, prefix  # prefix: "train/" or "" (class folders at the top)
        self.members: dict[str, tuple[int, int]] = {}  # name below prefix -> (offset, size)
        self._fd: int | None = None
        self._pid: int | None = None

    def describe(self, name: str) -> str:
        return f"member {self.prefix}{name} of {self.path}"

    def list(self) -> tuple[list[str], dict[str, list[str]]]:
        """Index the tar: class names and their image members (sorted)."""
        try:
            tar = tarfile.open(self.path, "r:")  # plain tar only: members must be seekable
        except tarfile.ReadError as e:
            raise ValueError(
                f"{self.path} is not an uncompressed tar file ({e}); decompress it "
                "(e.g. `gunzip`) or extract it and pass the folder"
            ) from None
        dirs: set[str] = set()
        tops: set[str] = set()
        files: dict[str, list[str]] = {}
        with tar:
            for m in tar:
                name = m.name.removeprefix("./")
                if name not in ("", "."):
                    tops.add(name.split("/")[0])
                if not name.startswith(self.prefix):
                    continue
                rest = name[len(self.prefix) :].strip("/")
                if not rest or any(p.startswith(".") for p in rest.split("/")):
                    continue
                if m.isdir():
                    dirs.add(rest.split("/")[0])
                elif m.isfile() and "/" in rest and rest.lower().endswith(IMAGE_EXTENSIONS):
                    self.members[rest] = (m.offset_data, m.size)
                    files.setdefault(rest.split("/")[0], []).append(rest)
                elif m.isfile() and "/" in rest:
                    dirs.add(rest.split("/")[0])
        if self.prefix and not self.members and not dirs:
            found = ", ".join(sorted(tops)) or "nothing"
            raise ValueError(
                f"tar {self.path} has no members under {self.prefix!r} (top level: {found})"
            )
        classes = sorted(dirs | set(files))
        for cls in classes:
            files.setdefault(cls, []).sort()
        return classes, files

    def read(self, name: str) -> bytes:
        offset, size = self.members[name]
        if self._fd is None or self._pid != os.getpid():  # one handle per (forked) process
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = os.getpid()
        if hasattr(os, "pread"):
            return os.pread(self._fd, size, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)  # Windows: no pread
        return os.read(self._fd, size)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def _open_source(root: Path, split: str | None) -> _FolderSource | _TarSource:
    if not root.exists():
        raise FileNotFoundError(f"image data not found: {root}")
    if root.is_file():
        if not tarfile.is_tarfile(root):
            raise ValueError(f"{root} is a file but not a tar file")
        return _TarSource(root, f"{split.strip('/')}/" if split else "")
    if split is None:
        return _FolderSource(root)
    if (root / split).is_dir():
        return _FolderSource(root / split)
    if (root / f"{split}.tar").is_file():
        return _TarSource(root / f"{split}.tar", f"{split}/")
    found = ", ".join(sorted(p.name for p in root.iterdir() if not p.name.startswith(".")))
    raise FileNotFoundError(
        f"no folder {split!r} and no {split}.tar in {root} (found: {found or 'nothing'})"
    )


def _list(source: _FolderSource | _TarSource) -> tuple[list[str], list[tuple[str, int]], Any]:
    """Classes, (member, label) samples in a fixed order, and a fingerprint of the source."""
    if isinstance(source, _FolderSource):
        classes, files, fingerprint = source.list()
    else:
        classes, files = source.list()
        st = source.path.stat()
        fingerprint = (st.st_size, st.st_mtime_ns)
    if not classes:
        raise ValueError(f"no class folders in {source.path} (expected split/class/image.jpg)")
    empty = [c for c in classes if not files[c]]
    if empty:
        raise ValueError(
            f"class folder(s) with no images in {source.path}: {', '.join(empty)} "
            f"(image extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    samples = [(name, label) for label, c in enumerate(classes) for name in files[c]]
    return classes, samples, fingerprint


# --------------------------------------------------------------------------- decoding


def _decode(
    source: _Source,
    name: str,
    image_size: int | None,
    crop_fraction: float,
    box_fn: Any = None,
    out_size: int | None = None,
) -> torch.Tensor:
    """Decode one member to uint8 (3, H, W).

    ``image_size`` set: resize the shorter side to ``image_size / crop_fraction`` and centre-crop
    ``image_size`` squared. ``box_fn(width, height)`` set instead: crop that box and resize it to
    ``out_size`` squared.
    """
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(f"decoding images needs Pillow: {_VISION_HINT}") from e
    try:
        with Image.open(io.BytesIO(source.read(name))) as img:
            if image_size is not None:
                # JPEG only: let libjpeg decode at a reduced scale no smaller than needed.
                short = image_size / crop_fraction
                img.draft("RGB", (math.ceil(short), math.ceil(short)))
            img = img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad or truncated files
        raise ValueError(f"cannot decode image {source.describe(name)}: {e}") from None
    if box_fn is not None:
        box = box_fn(*img.size)
        img = img.resize((out_size, out_size), Image.Resampling.BILINEAR, box=box)
    elif image_size is not None:
        w, h = img.size
        side = min(w, h) * crop_fraction  # the crop, in source pixels
        left, top = (w - side) / 2, (h - side) / 2
        img = img.resize(
            (image_size, image_size),
            Image.Resampling.BILINEAR,
            box=(left, top, left + side, top + side),
        )
    return torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())  # (3, H, W)


def _cache_folder(cache_dir: Path, source: _Source, split: str | None, size: int | None) -> Path:
    digest = hashlib.sha1(str(source.path.resolve()).encode()).hexdigest()[:10]
    return cache_dir / f"{split or 'all'}-{size or 'native'}-{digest}"


def _decode_all(
    source: _Source,
    samples: Sequence[tuple[str, int]],
    image_size: int | None,
    crop_fraction: float,
    progress: bool,
    allocate: Any,
) -> Any:
    """Decode every sample into ``allocate(shape)``, a uint8 array of shape (N, 3, H, W)."""
    from tqdm.auto import tqdm

    order: Sequence[int] = range(len(samples))
    if isinstance(source, _TarSource):  # read the tar front to back
        order = sorted(order, key=lambda i: source.members[samples[i][0]][0])
    out = None
    for i in tqdm(
        order, desc=f"decoding {source.path.name}", unit="img", disable=not progress, mininterval=1
    ):
        x = _decode(source, samples[i][0], image_size, crop_fraction)  # (3, H, W)
        if out is None:
            out = allocate((len(samples), *x.shape))
        elif x.shape != out.shape[1:]:
            raise ValueError(
                f"images differ in size: {source.describe(samples[i][0])} is "
                f"{tuple(x.shape[1:])}, others {tuple(out.shape[2:])}; pass image_size="
            )
        out[i] = x.numpy()
    return out


def _build_cache(
    folder: Path,
    source: _Source,
    samples: list[tuple[str, int]],
    classes: list[str],
    key: dict[str, Any],
    image_size: int | None,
    crop_fraction: float,
    progress: bool,
) -> None:
    with atomic_dir(folder) as tmp:

        def allocate(shape: tuple[int, ...]) -> np.ndarray:
            return np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, shape)

        images = _decode_all(source, samples, image_size, crop_fraction, progress, allocate)
        images.flush()
        del images  # close the map before the folder is renamed
        np.save(tmp / "labels.npy", np.array([label for _, label in samples], dtype=np.int64))
        meta = {"version": _CACHE_VERSION, "key": key, "classes": classes, "count": len(samples)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _load_cache(folder: Path, key: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list] | None:
    """The cached (images, labels, classes), or None when missing, stale or unreadable."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != _CACHE_VERSION or meta.get("key") != key:
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError):
        return None
    if images.shape[0] != meta["count"] or labels.shape != (meta["count"],):
        return None
    return images, labels, meta["classes"]


# --------------------------------------------------------------------------- entry points


def image_folder(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    augment: Augment = "auto",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    padding: int = 4,
    crop_fraction: float = 0.875,
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
        (uint8, (N, 3, H, W), memory-mapped) and read from there; rebuilt when the source's path,
        size or mtime, or ``image_size``, changes. Written atomically (a crash leaves no half
        cache). Under DDP, build it once before the ranks start (or on rank 0, then barrier), so
        that ranks do not each decode. None: decode on every access.
    image_size : int, optional
        Output side in pixels. None keeps the images' own size (for a cache they must all match).
        Set: evaluation views resize the shorter side to ``image_size / crop_fraction`` and
        centre-crop; a cache stores those views.
    augment : {"auto", "crop", "resized_crop", "none"}
        See the module docstring; ``"auto"`` augments only the ``"train"`` split.
    mean, std : three floats each
        Per-channel normalisation in [0, 1] units (ImageNet's by default; see ``CIFAR10_MEAN``).
    padding : int
        Zero padding of the ``"crop"`` augmentation.
    crop_fraction : float
        Evaluation crop as a fraction of the shorter side (0.875: 256 -> 224).
    progress : bool
        Show a progress bar while building a cache.

    Returns
    -------
    DecodedImageDataset (with ``cache_dir``) or ImageFileDataset; items are
    ``(float32 tensor of shape (3, H, W), int label)``.
    """
    _check_augment(augment)
    if image_size is not None and image_size <= 0:
        raise ValueError(f"image_size must be a positive int or None, got {image_size}")
    if augment == "auto":
        if split != "train":
            augment = "none"
        elif cache_dir is None and image_size is not None:
            augment = "resized_crop"
        else:
            augment = "crop"
    source = _open_source(Path(root).expanduser(), split)
    if cache_dir is None:
        classes, samples, _ = _list(source)
        return ImageFileDataset(
            source, samples, classes, image_size, augment, mean, std, padding, True, crop_fraction
        )

    folder = _cache_folder(Path(cache_dir).expanduser(), source, split, image_size)
    key: dict[str, Any] = {"source": str(source.path.resolve()), "split": split}
    key["image_size"] = image_size
    key["crop_fraction"] = crop_fraction if image_size is not None else None
    if isinstance(source, _TarSource):  # size and mtime of the tar: no need to open it
        st = source.path.stat()
        key["fingerprint"] = [st.st_size, st.st_mtime_ns]
        cached = _load_cache(folder, key)
        if cached is None:
            classes, samples, _ = _list(source)
    else:  # a folder: count, bytes and newest mtime of its images, so listing comes first
        classes, samples, fingerprint = _list(source)
        key["fingerprint"] = list(fingerprint)
        cached = _load_cache(folder, key)
    if cached is None:
        _build_cache(folder, source, samples, classes, key, image_size, crop_fraction, progress)
        cached = _load_cache(folder, key)
        if cached is None:
            raise RuntimeError(f"the image cache at {folder} could not be read back")
    images, labels, classes = cached
    dataset = DecodedImageDataset(images, labels, classes, augment, mean, std, padding)
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
    progress: bool = True,
) -> DecodedImageDataset:
    """CIFAR-10 as a :class:`DecodedImageDataset` with CIFAR-10's mean and std.

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
    stats = {"mean": CIFAR10_MEAN, "std": CIFAR10_STD, "padding": padding}
    layout = root / split if (root / split).is_dir() else root / f"{split}.tar"
    if not download and not (root / "cifar-10-batches-py").exists() and layout.exists():
        if cache_dir is not None:
            return image_folder(
                root, split, cache_dir=cache_dir, augment=augment, progress=progress, **stats
            )
        files = image_folder(root, split, augment="none", progress=progress)
        images = _decode_all(
            files.source, files.samples, None, 1.0, progress, lambda s: np.empty(s, np.uint8)
        )
        return DecodedImageDataset(images, files.labels, files.classes, augment, **stats)
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as e:
        raise ImportError(f"torchvision's CIFAR-10 needs torchvision: {_VISION_HINT}") from e
    try:
        ds = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"CIFAR-10 not found in {root} ({e}); pass download=True, or a folder holding "
            "train.tar/test.tar or train/ and test/ in the ImageNet layout"
        ) from None
    images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return DecodedImageDataset(images, ds.targets, ds.classes, augment, **stats)
