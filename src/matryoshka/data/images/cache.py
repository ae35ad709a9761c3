"""The decoded-image cache: every image of a split decoded once into a memory-mappable uint8 array.

A cache is a folder ``<cache_dir>/<split>-<size>-<hash>/`` (``<split>-<size>-gray-<hash>`` for
grayscale; the hash: the first 10 hex digits of the SHA-1 of the source's resolved path) holding
``images.npy`` (uint8, (N, C, H, W), C = 3 or 1), ``labels.npy`` (int64, (N,)) and ``meta.json``
(format version, key, classes, count). The key names the source, split, ``image_size``, crop
fraction, channels and a fingerprint of the source (a tar's size and mtime; a folder's image
count, bytes and newest mtime); a cache whose key differs, or that cannot be read, is rebuilt.
The key holds ``channels`` only when it is not 3, so caches written before grayscale existed
stay valid. It is written atomically, so a crash leaves no half cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import FolderKind, atomic_dir
from matryoshka._runtime import progress_bar  # leaf helpers (import nothing of the package)
from matryoshka.data.images.decode import _decode
from matryoshka.data.images.sources import _list, _Source, _TarSource

__all__: list[str] = []

_CACHE_VERSION = 1
CACHE_FOLDER = FolderKind("matryoshka image cache", "meta.json", keys=("version", "key"),
                          names=r"images\.npy|labels\.npy|meta\.json")  # fmt: skip


def _cache_folder(
    cache_dir: Path, source: _Source, split: str | None, size: int | None, channels: int = 3
) -> Path:
    """``cache_dir/<split or all>-<size or native>[-gray]-<hash of the source's path>``."""
    digest = hashlib.sha1(str(source.path.resolve()).encode()).hexdigest()[:10]
    gray = "-gray" if channels == 1 else ""
    return cache_dir / f"{split or 'all'}-{size or 'native'}{gray}-{digest}"


def _decode_all(
    source: _Source,
    samples: Sequence[tuple[str, int]],
    image_size: int | None,
    crop_fraction: float,
    progress: bool,
    allocate: Callable[[tuple[int, ...]], Any],
    channels: int = 3,
) -> Any:
    """Decode every sample into ``allocate(shape)``, a uint8 array of shape (N, C, H, W).

    A tar is read front to back; the array is allocated once the first image gives (C, H, W),
    and every other image must have that shape.
    """
    order: Sequence[int] = range(len(samples))
    if isinstance(source, _TarSource):  # read the tar front to back
        order = sorted(order, key=lambda i: source.members[samples[i][0]][0])
    out = None
    for i in progress_bar(
        order, desc=f"decoding {source.path.name}", unit="img", disable=not progress
    ):
        x = _decode(source, samples[i][0], image_size, crop_fraction, channels=channels)
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
    channels: int,
) -> None:
    """Decode ``samples`` and write the cache folder ``folder`` atomically."""
    with atomic_dir(folder, CACHE_FOLDER) as tmp:

        def allocate(shape: tuple[int, ...]) -> np.ndarray:
            return np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, shape)

        images = _decode_all(
            source, samples, image_size, crop_fraction, progress, allocate, channels
        )  # (N, C, H, W)
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


def _cached_images(
    cache_dir: Path,
    source: _Source,
    split: str | None,
    image_size: int | None,
    crop_fraction: float,
    progress: bool,
    channels: int = 3,
) -> tuple[np.ndarray, np.ndarray, list[str], Path]:
    """The cache of ``source`` under ``cache_dir``, built first when missing or stale.

    Returns
    -------
    images : read-only uint8 memory map of shape (N, C, H, W)
    labels : int64 array of shape (N,)
    classes : list of str
    folder : the cache folder
    """
    folder = _cache_folder(cache_dir, source, split, image_size, channels)
    key: dict[str, Any] = {"source": str(source.path.resolve()), "split": split}
    key["image_size"] = image_size
    key["crop_fraction"] = crop_fraction if image_size is not None else None
    if channels != 3:  # left out for RGB: caches written before grayscale existed stay valid
        key["channels"] = channels
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
        _build_cache(
            folder, source, samples, classes, key, image_size, crop_fraction, progress, channels
        )
        cached = _load_cache(folder, key)
        if cached is None:
            raise RuntimeError(f"the image cache at {folder} could not be read back")
    images, labels, classes = cached
    return images, labels, classes, folder
