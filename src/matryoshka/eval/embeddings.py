"""Embedding files: ``embeddings.npy`` (memory-mappable, float32 or float16) + ``meta.json``.

A data set is encoded once at full size; every size is a prefix of these rows, so nothing is
stored twice. The folder is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import FolderKind, atomic_dir, write_json

__all__ = ["save_embeddings", "load_embeddings"]

DTYPES = ("float32", "float16")
FORMAT = "matryoshka-embeddings"
# meta.json with count, d and dtype (folders written before "format" was added have no format)
EMBEDDINGS_FOLDER = FolderKind(
    "matryoshka embeddings folder",
    "meta.json",
    keys=("count", "d", "dtype"),
    names=r"embeddings\.npy|labels\.npy|names\.json|meta\.json",
)


def save_embeddings(
    folder: str | Path,
    X: np.ndarray,
    labels: np.ndarray | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    names: list[str] | None = None,
    **meta: Any,
) -> Path:
    """Write ``folder/embeddings.npy`` (N, d), optional ``labels.npy`` (N,) and ``names.json``
    (a name per row, e.g. a corpus's document ids), and ``meta.json``.

    ``meta`` (e.g. the model folder, split, sizes) is stored beside ``count``, ``d`` and ``dtype``.
    The three files are swapped in together (a crash leaves the old set or the new one); a folder
    holding something else is refused unless ``overwrite``, and its other entries are kept.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, d), got {X.shape}")
    if not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise ValueError(f"embeddings hold NaN or infinite values (first in row {row})")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(X),):
            raise ValueError(f"labels must have shape ({len(X)},), got {labels.shape}")
    if names is not None and len(names) != len(X):
        raise ValueError(f"names must hold one name per row ({len(X)}), got {len(names)}")
    with atomic_dir(folder, EMBEDDINGS_FOLDER, overwrite=overwrite) as tmp:
        np.save(tmp / "embeddings.npy", X.astype(dtype, copy=False), allow_pickle=False)
        if labels is not None:
            np.save(tmp / "labels.npy", labels.astype(np.int64), allow_pickle=False)
        if names is not None:
            write_json(tmp / "names.json", [str(n) for n in names])
        meta = {"format": FORMAT, "count": int(len(X)), "d": int(X.shape[1]), "dtype": dtype,
                "labels": labels is not None, **meta}  # fmt: skip
        write_json(tmp / "meta.json", meta)
    return Path(folder)


def load_embeddings(
    folder: str | Path, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read what :func:`save_embeddings` wrote: ``(X (N, d), labels (N,) or None, meta)``;
    ``meta["names"]`` holds the row names when the folder has them.

    A folder of shards (``matryoshka embed --shard``) is read by
    :func:`~matryoshka.eval.open_embeddings`, row batch by row batch.
    """
    X, meta, labels_path = open_folder(folder, mmap)
    labels = np.load(labels_path, allow_pickle=False) if labels_path is not None else None
    return X, labels, meta


def open_folder(folder: str | Path, mmap: bool = True) -> tuple[np.ndarray, dict[str, Any],
                                                                  Path | None]:  # fmt: skip
    """``(X (N, d), meta, labels.npy or None)`` of one embeddings folder, checked against each
    other; ``meta["names"]`` holds the row names when the folder has them."""
    folder = Path(folder)
    path = folder / "embeddings.npy"
    if not path.is_file():
        shards = any(p.name.startswith("shard-") and p.is_dir() for p in _entries(folder))
        hint = "; it holds shards: read them with matryoshka.eval.open_embeddings" if shards else ""
        raise FileNotFoundError(f"{path} not found; write it with `matryoshka embed`{hint}")
    try:
        X = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        meta = json.loads((folder / "meta.json").read_text())
    except (ValueError, OSError) as e:
        raise ValueError(f"{folder} holds a corrupt embeddings file: {e}") from e
    if X.ndim != 2 or X.shape[0] != meta.get("count") or X.shape[1] != meta.get("d"):
        raise ValueError(
            f"{path} has shape {X.shape} but meta.json says count={meta.get('count')}, "
            f"d={meta.get('d')}; the folder is inconsistent"
        )
    labels_path = folder / "labels.npy"
    names_path = folder / "names.json"
    if names_path.is_file():  # a name per row: meta["names"] (not a column of X)
        meta["names"] = json.loads(names_path.read_text())
        if len(meta["names"]) != len(X):
            raise ValueError(f"{names_path} names {len(meta['names'])} rows, not {len(X)}")
    return X, meta, labels_path if labels_path.is_file() else None


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []
