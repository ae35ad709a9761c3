"""An index on disk: a folder of ``.npy`` arrays described by ``manifest.json``.

The manifest holds the format name and version, the index's settings (``d``, metric, precision,
rerank copy, count, next id, column panels, approximate stage) and, for every array file, its
size in bytes, sha256, shape and dtype. A save builds the folder beside its destination and
renames it into place, so a crash leaves the previous index or the new one, never half of one. A
load checks the manifest, then every file against it (missing, truncated, corrupt or mismatched
files raise ``ValueError``), memory-maps or reads the arrays, and never unpickles anything.

``MatryoshkaIndex.save`` and ``MatryoshkaIndex.load`` are the entry points: they hand over and
take back an :class:`IndexParts` (settings, stored codes, ids, approximate stage), so this module,
the one place that knows the layout of the folder, never needs the index itself.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_dir, resolve_dir, sha256_file
from matryoshka.index.ann import make_ann
from matryoshka.index.exact import METRICS
from matryoshka.index.storage import Storage

__all__ = ["FORMAT", "FORMAT_VERSION", "IndexParts", "load_index", "save_index"]

FORMAT = "matryoshka-index"
FORMAT_VERSION = 1


@dataclass
class IndexParts:
    """What an index is saved as and loaded from: its settings and its stored arrays."""

    d: int
    metric: str
    precision: str
    rerank: str | None
    next_id: int  # the id the next vector added without ids gets
    store: Storage  # the codes, (N, width) per column panel, and the quantiser's parameters
    rerank_store: Storage | None  # the float copy for the last stage, when ``rerank`` is set
    ids: np.ndarray | None  # (N,) int64, or None while the ids are the positions 0..N-1
    ann: Any = None  # the approximate first stage (an ``ann`` stage), or None


# ---------------------------------------------------------------------- writing
def _write_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Write each array as ``folder/name`` and return the manifest's ``files`` entries."""
    files = {}
    for name, arr in arrays.items():
        np.save(folder / name, np.ascontiguousarray(arr), allow_pickle=False)
        files[name] = {
            "bytes": (folder / name).stat().st_size,
            "sha256": sha256_file(folder / name),
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
        }
    return files


def _arrays(parts: IndexParts) -> dict[str, np.ndarray]:
    """Every array an index is saved as, by file name."""
    store = parts.store
    arrays: dict[str, np.ndarray] = {f"panel_{i}.npy": p for i, p in enumerate(store.panels)}
    if store.params is not None:
        arrays["params.npy"] = store.params
    if parts.rerank_store is not None:
        arrays.update({f"rerank_{i}.npy": p for i, p in enumerate(parts.rerank_store.panels)})
    if parts.ids is not None:
        arrays["ids.npy"] = parts.ids
    if parts.ann is not None:
        arrays.update({f"ann_{k}.npy": v for k, v in parts.ann.to_arrays().items()})
    return arrays


def save_index(parts: IndexParts, path: str | os.PathLike) -> Path:
    """Write an index to the folder ``path``, atomically; see ``MatryoshkaIndex.save``."""
    path = Path(path)
    ann = None
    if parts.ann is not None:
        ann = {"kind": parts.ann.kind, "dim": parts.ann.search_dim, **parts.ann.params()}
    with atomic_dir(path) as tmp:
        files = _write_arrays(tmp, _arrays(parts))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "d": parts.d,
            "metric": parts.metric,
            "precision": parts.precision,
            "rerank": parts.rerank,
            "count": len(parts.store),
            "next_id": parts.next_id,
            "panels": [list(b) for b in parts.store.bounds],
            "ann": ann,
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------- reading
class _Folder:
    """A saved index's folder and manifest; :meth:`read` checks each array against it."""

    def __init__(self, path: str | os.PathLike, mmap: bool, verify: bool) -> None:
        self.want = Path(path)  # the path the user gave, for messages
        self.root = resolve_dir(self.want)  # where it is (the old copy, after a crash)
        self.mpath = self.root / "manifest.json"
        self.mmap, self.verify = mmap, verify
        if not self.mpath.is_file():
            raise ValueError(f"{self.want} is not a matryoshka index: no manifest.json in it")
        try:
            man = json.loads(self.mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.mpath} is corrupt: not valid JSON ({e})") from None
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise ValueError(f"{self.mpath} is not a matryoshka index manifest")
        if man.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{self.want} has index format version {man.get('format_version')!r}; this "
                f"version of matryoshka reads version {FORMAT_VERSION}"
            )
        try:
            self.files: dict[str, Any] = dict(man["files"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{self.mpath} is corrupt or from another version: {e}") from None
        self.manifest: dict[str, Any] = man

    def read(self, name: str) -> np.ndarray:
        """The array ``name``, after checking its size (and sha256) against the manifest."""
        info = self.files.get(name)
        f = self.root / name
        if info is None or not f.is_file():
            raise ValueError(f"index {self.want} is incomplete: {name} is missing")
        if f.stat().st_size != info["bytes"]:
            raise ValueError(
                f"index {self.want} is corrupt: {name} has {f.stat().st_size} bytes, "
                f"the manifest says {info['bytes']}"
            )
        if self.verify and sha256_file(f) != info["sha256"]:
            raise ValueError(f"index {self.want} is corrupt: {name} fails its sha256 checksum")
        try:
            # copy-on-write maps: writable views for torch, and nothing is ever written back
            arr = np.load(f, mmap_mode="c" if self.mmap else None, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"index {self.want} is corrupt: {name} cannot be read ({e})") from None
        if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
            raise ValueError(
                f"index {self.want} is corrupt: {name} holds {arr.dtype} {arr.shape}, "
                f"the manifest says {info['dtype']} {tuple(info['shape'])}"
            )
        return arr

    def read_panels(self, prefix: str, empty: list[np.ndarray], count: int) -> list[np.ndarray]:
        """The ``prefix_{i}.npy`` panels, checked against the ``empty`` ones' dtypes and widths."""
        panels = [self.read(f"{prefix}_{i}.npy") for i in range(len(empty))]
        for p, e in zip(panels, empty, strict=True):
            if p.dtype != e.dtype or p.shape != (count, e.shape[1]):
                what = "a panel" if prefix == "panel" else "a rerank panel"
                raise ValueError(
                    f"index {self.want} does not match its manifest: {what} holds {p.dtype} "
                    f"{p.shape}, expected {e.dtype} {(count, e.shape[1])}"
                )
        return panels


def _empty_parts(folder: _Folder) -> tuple[IndexParts, int]:
    """Empty parts with the manifest's settings, and the manifest's count of rows."""
    man = folder.manifest
    try:
        d, metric, precision = int(man["d"]), man["metric"], man["precision"]
        rerank = man.get("rerank")
        if d < 1:
            raise ValueError(f"d must be a positive integer, got d={d}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        parts = IndexParts(
            d,
            metric,
            precision,
            rerank,
            next_id=int(man["next_id"]),
            store=Storage(d, precision),
            rerank_store=Storage(d, rerank) if rerank else None,
            ids=None,
        )
        count = int(man["count"])
        bounds = [tuple(b) for b in man["panels"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder.mpath} is corrupt or from another version: {e}") from None
    if bounds != parts.store.bounds:
        raise ValueError(f"{folder.mpath} lists panels {bounds}, expected {parts.store.bounds}")
    return parts, count


def _load_ann(folder: _Folder, ann: dict[str, Any], d: int) -> Any:
    """The saved approximate first stage, or None (with a warning) when faiss is missing."""
    try:
        params = {k: v for k, v in ann.items() if k not in ("kind", "dim")}
        stage = make_ann(ann["kind"], int(ann["dim"]), d, **params)
    except ImportError:
        warnings.warn(
            f"{folder.want} holds an approximate first stage ({ann['kind']}) that needs faiss: "
            "pip install 'matryoshka[index]'; loading the index without it",
            stacklevel=4,  # the caller of MatryoshkaIndex.load
        )
        return None
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder.mpath} describes an unknown approximate stage: {e}") from None
    names = [n for n in folder.files if n.startswith("ann_")]
    arrays = {n[4:-4]: np.asarray(folder.read(n)) for n in names}
    try:
        return stage.from_arrays(arrays)
    except (KeyError, RuntimeError) as e:
        raise ValueError(
            f"index {folder.want}: the approximate stage cannot be read: {e}"
        ) from None


def load_index(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> IndexParts:
    """Read and check the index saved in ``path``; see ``MatryoshkaIndex.load``."""
    folder = _Folder(path, mmap, verify)
    parts, count = _empty_parts(folder)
    want, store = folder.want, parts.store
    store.panels = folder.read_panels("panel", store.panels, count)
    if parts.rerank_store is not None:
        parts.rerank_store.panels = folder.read_panels("rerank", parts.rerank_store.panels, count)
    if parts.precision in ("int8", "binary"):
        params = np.asarray(folder.read("params.npy"))
        if params.shape != (2, parts.d) or params.dtype != np.float32:
            raise ValueError(f"index {want}: params.npy has shape {params.shape}")
        store.params = params
    if "ids.npy" in folder.files:
        ids = np.asarray(folder.read("ids.npy"))
        if ids.shape != (count,) or ids.dtype != np.int64:
            raise ValueError(f"index {want}: ids.npy has shape {ids.shape}, expected ({count},)")
        parts.ids = ids
    if folder.manifest.get("ann"):
        parts.ann = _load_ann(folder, folder.manifest["ann"], parts.d)
    return parts
