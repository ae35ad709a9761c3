"""An index on disk: a folder of ``.npy`` arrays described by ``manifest.json``.

The manifest holds the format name and version, the index's settings (``d``, metric, precision,
rerank copy, count, next id, column panels, approximate stage), for every array file its size in
bytes, sha256, shape and dtype, and (format 2) a sha256 of the manifest itself, so an edited
setting is caught like a changed array. A save goes through :func:`matryoshka._io.atomic_dir`:
one writer at a time, never over a folder that is not an index unless asked, and a crash at any
point leaves the previous index or the new one. A load reads one version through one handle of
the folder, checks every manifest field and every file against the manifest, memory-maps or reads
the arrays and never unpickles anything; a memory-mapped index keeps its files open and
:func:`check_files` says when one of them changed on disk since (a truncated file would otherwise
kill the process with SIGBUS on the next search).

``MatryoshkaIndex.save`` and ``MatryoshkaIndex.load`` are the entry points: they hand over and
take back an :class:`IndexParts`, so this module, the one place that knows the layout of the
folder, never needs the index itself.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from matryoshka._io import (
    FolderKind,
    FolderReader,
    atomic_dir,
    read_folder,
    sha256_bytes,
    sha256_file,
)
from matryoshka.index.ann import make_ann
from matryoshka.index.exact import METRICS
from matryoshka.index.storage import PRECISIONS, Storage
from matryoshka.index.vectors import TRANSFORMS

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FOLDER",
    "IndexParts",
    "ann_entry",
    "check_files",
    "load_index",
    "save_index",
]

FORMAT = "matryoshka-index"
FORMAT_VERSION = 2  # 2: the manifest carries its own checksum; version 1 is still read
_FILES = r"(panel|rerank)_\d+\.npy|params\.npy|ids\.npy|names\.npy|ann_[a-z]+\.npy"
INDEX_FOLDER = FolderKind("matryoshka index", "manifest.json", fmt=FORMAT,
                          names=rf"manifest\.json|{_FILES}")  # fmt: skip
_SHA = re.compile(r"[0-9a-f]{64}")
_FILE = re.compile(_FILES)


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
    transform: str = "none"  # the step applied to full vectors before slicing (vectors.py)
    names: np.ndarray | None = None  # (N,) str, a name per row, or None
    handles: list[tuple[str, BinaryIO, int, int]] = field(default_factory=list)
    # memory-mapped files kept open: (name, file, size, mtime_ns), for check_files


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
    if parts.names is not None:
        arrays["names.npy"] = parts.names
    if parts.ann is not None:
        arrays.update({f"ann_{k}.npy": v for k, v in parts.ann.to_arrays().items()})
    return arrays


def ann_entry(stage: Any) -> dict[str, Any] | None:
    """An approximate stage as the manifest describes it: kind, size and settings (or None)."""
    if stage is None:
        return None
    return {"kind": stage.kind, "dim": stage.search_dim, **stage.params()}


def _checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's fields (all but ``checksum``) in a canonical JSON form."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def save_index(parts: IndexParts, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write an index to the folder ``path``, atomically; see ``MatryoshkaIndex.save``."""
    path = Path(path)
    ann = ann_entry(parts.ann)
    with atomic_dir(path, INDEX_FOLDER, overwrite=overwrite) as tmp:
        files = _write_arrays(tmp, _arrays(parts))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "d": parts.d,
            "metric": parts.metric,
            "precision": parts.precision,
            "rerank": parts.rerank,
            "transform": parts.transform,
            "count": len(parts.store),
            "next_id": parts.next_id,
            "panels": [list(b) for b in parts.store.bounds],
            "ann": ann,
            "files": files,
        }
        manifest["checksum"] = _checksum(manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------- the manifest
def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_files_entry(files: Any) -> None:
    if not isinstance(files, dict):
        raise ValueError(f"'files' must map file names to their size and checksum, got {files!r}")
    for name, info in files.items():
        if not _FILE.fullmatch(str(name)):
            raise ValueError(f"'files' names {name!r}, which no index holds")
        ok = (
            isinstance(info, dict)
            and _is_int(info.get("bytes"))
            and isinstance(info.get("sha256"), str)
            and _SHA.fullmatch(info["sha256"])
            and isinstance(info.get("shape"), list)
            and all(_is_int(n) for n in info["shape"])
            and isinstance(info.get("dtype"), str)
        )
        if not ok:
            raise ValueError(f"the entry of {name} in 'files' is malformed: {info!r}")


def _check_manifest(man: Any) -> None:
    """Every field of a manifest, typed and in range; ``ValueError`` names the first bad one."""
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise ValueError("it is not a matryoshka index manifest")
    version = man.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(
            f"it has index format version {version!r}; this version of matryoshka reads 1 "
            f"and {FORMAT_VERSION}"
        )
    if version >= 2 and man.get("checksum") != _checksum(man):
        raise ValueError("it fails its own checksum: a field was changed after it was written")
    checks = {
        "d": _is_int(man.get("d"), 1),
        "metric": man.get("metric") in METRICS,
        "precision": man.get("precision") in PRECISIONS,
        "rerank": man.get("rerank") in (None, "float16", "float32"),
        "transform": man.get("transform", "none") in TRANSFORMS,
        "count": _is_int(man.get("count")),
        "next_id": _is_int(man.get("next_id")),
        "panels": isinstance(man.get("panels"), list),
        "ann": man.get("ann") is None or isinstance(man.get("ann"), dict),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"its field {bad[0]!r} is missing or invalid: {man.get(bad[0])!r}")
    _check_files_entry(man.get("files"))


# ---------------------------------------------------------------------- reading
def _open_npy(f: BinaryIO, mmap: bool) -> np.ndarray:
    """An ``.npy`` array from an open file: memory-mapped (copy-on-write) or read whole."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise ValueError("it holds Python objects (refused: loading them could run code)")
    if not mmap:
        f.seek(0)
        return np.load(f, allow_pickle=False)
    # copy-on-write maps: writable views for torch, and nothing is ever written back
    order = "F" if fortran else "C"
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype, order=order)
    return np.memmap(f, dtype=dtype, mode="c", offset=f.tell(), shape=shape, order=order)


class _Folder:
    """One version of a saved index: its checked manifest and its arrays, read through one
    handle of the folder."""

    def __init__(self, reader: FolderReader, want: Path, mmap: bool, verify: bool) -> None:
        self.reader, self.want, self.mmap, self.verify = reader, want, mmap, verify
        self.mpath = reader.path / "manifest.json"
        self.handles: list[tuple[str, BinaryIO, int, int]] = []
        if not reader.is_file("manifest.json"):
            if not reader.is_current():  # a previous version, deleted as it was read
                raise FileNotFoundError(f"index {want} was replaced while it was read")
            raise ValueError(f"{want} is not a matryoshka index: no manifest.json in it")
        try:
            man = json.loads(reader.read_text("manifest.json"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.mpath} is corrupt: not valid JSON ({e})") from None
        try:
            _check_manifest(man)
        except ValueError as e:
            raise ValueError(f"{self.mpath} is corrupt or from another version: {e}") from None
        self.manifest: dict[str, Any] = man
        self.files: dict[str, Any] = man["files"]

    def read(self, name: str) -> np.ndarray:
        """The array ``name``, after checking its size (and sha256) against the manifest."""
        info = self.files.get(name)
        if info is None or not self.reader.is_file(name):
            if not self.reader.is_current():  # a writer replaced this version: read the next
                raise FileNotFoundError(f"index {self.want} was replaced while it was read")
            raise ValueError(f"index {self.want} is incomplete: {name} is missing")
        f = self.reader.open(name)
        st = os.fstat(f.fileno())
        try:
            if st.st_size != info["bytes"]:
                raise ValueError(
                    f"index {self.want} is corrupt: {name} has {st.st_size} bytes, "
                    f"the manifest says {info['bytes']}"
                )
            if self.verify and sha256_file(f) != info["sha256"]:
                raise ValueError(f"index {self.want} is corrupt: {name} fails its sha256 checksum")
            f.seek(0)
            arr = _open_npy(f, self.mmap)
        except ValueError as e:
            f.close()
            if str(e).startswith(f"index {self.want}"):
                raise
            raise ValueError(f"index {self.want} is corrupt: {name} cannot be read ({e})") from None
        if self.mmap:
            self.handles.append((name, f, st.st_size, st.st_mtime_ns))
        else:
            f.close()
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
    """Empty parts with the manifest's (checked) settings, and the manifest's count of rows."""
    man = folder.manifest
    d, precision, rerank = man["d"], man["precision"], man.get("rerank")
    if rerank is not None and precision not in ("int8", "binary"):
        raise ValueError(f"{folder.mpath} is corrupt: a {rerank} rerank copy beside {precision}")
    parts = IndexParts(
        d, man["metric"], precision, rerank, next_id=man["next_id"], store=Storage(d, precision),
        rerank_store=Storage(d, rerank) if rerank else None, ids=None,
        transform=man.get("transform", "none"),
    )  # fmt: skip
    bounds = [tuple(b) for b in man["panels"]]
    if bounds != parts.store.bounds:
        raise ValueError(f"{folder.mpath} lists panels {bounds}, expected {parts.store.bounds}")
    return parts, man["count"]


def _load_ann(folder: _Folder, ann: dict[str, Any], d: int) -> Any:
    """The saved approximate first stage, or None (with a warning) when faiss is missing."""
    try:
        params = {k: v for k, v in ann.items() if k not in ("kind", "dim")}
        stage = make_ann(ann["kind"], int(ann["dim"]), d, **params)
    except ImportError:
        warnings.warn(
            f"{folder.want} holds an approximate first stage ({ann['kind']}) that needs faiss: "
            "pip install 'matryoshka[index]'; loading the index without it",
            stacklevel=5,  # the caller of MatryoshkaIndex.load
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


def _read_ids(folder: _Folder, count: int, next_id: int) -> np.ndarray | None:
    if "ids.npy" not in folder.files:
        if next_id < count:
            raise ValueError(
                f"{folder.mpath} is corrupt: next_id {next_id} is below the count {count}"
            )
        return None
    ids = np.asarray(folder.read("ids.npy"))
    if ids.shape != (count,) or ids.dtype != np.int64:
        raise ValueError(f"index {folder.want}: ids.npy has shape {ids.shape}, expected ({count},)")
    if count and (ids.min() < 0 or len(np.unique(ids)) != count or ids.max() >= next_id):
        raise ValueError(
            f"index {folder.want} is corrupt: its ids must be unique, non-negative and below "
            f"next_id {next_id} ({len(np.unique(ids))} unique of {count}, from {ids.min()} to "
            f"{ids.max()})"
        )
    return ids


def _load(folder: _Folder) -> IndexParts:
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
    parts.ids = _read_ids(folder, count, parts.next_id)
    if "names.npy" in folder.files:
        names = np.asarray(folder.read("names.npy"))
        if names.shape != (count,) or names.dtype.kind != "U":
            raise ValueError(f"index {want}: names.npy holds {names.dtype} {names.shape}")
        parts.names = names
    if folder.manifest.get("ann"):
        parts.ann = _load_ann(folder, folder.manifest["ann"], parts.d)
    parts.handles = folder.handles
    return parts


def load_index(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> IndexParts:
    """Read and check the index saved in ``path``; see ``MatryoshkaIndex.load``."""
    want = Path(path)
    if not want.exists() and not (want.parent / f".{want.name}.old").exists():
        raise ValueError(f"{want} is not a matryoshka index: no manifest.json (no such folder)")

    def read(reader: FolderReader) -> IndexParts:
        folder = _Folder(reader, want, mmap, verify)
        try:
            return _load(folder)
        except BaseException:
            for _, f, _, _ in folder.handles:
                f.close()
            raise

    return read_folder(want, read)


def check_files(parts_handles: list[tuple[str, BinaryIO, int, int]], where: str) -> None:
    """Raise ``ValueError`` when a memory-mapped file changed on disk since it was loaded.

    Reading a truncated memory-mapped file kills the process (SIGBUS), so a search checks the
    size and modification time of every mapped file first. The project's own saves never change
    a file in place (they write new files and rename them), so this only fires when something
    else edits the index's files.
    """
    for name, f, size, mtime in parts_handles:
        st = os.fstat(f.fileno())
        if st.st_size != size or st.st_mtime_ns != mtime:
            raise ValueError(
                f"index {where}: {name} changed on disk since the index was loaded "
                f"({size} -> {st.st_size} bytes); load the index again"
            )
