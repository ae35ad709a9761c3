"""Embeddings as one (N, d) matrix read from disk a row range at a time, whether one file or shards.

:func:`open_embeddings` takes an ``embeddings.npy``, a folder written by ``matryoshka embed``, or
a folder of shard folders written by ``matryoshka embed --shard I/N``, and returns an
:class:`EmbeddingRows`: read-only memory maps of the files, never loaded whole. It checks first
that every shard is there and complete, naming the ones that are not. Rows are read by slicing
(``rows[s:e]``, ``rows[s:e, :m]``, a list of row numbers) or batch by batch
(:meth:`EmbeddingRows.batches`); a range inside one file is a view of its map, a range across
two shards a copy of just those rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka.eval.embeddings import open_folder
from matryoshka.eval.shards import PROGRESS, SHARD_NAME, Shard

__all__ = ["EmbeddingRows", "open_embeddings"]

BATCH = 65_536  # rows per batch of EmbeddingRows.batches


class EmbeddingRows:
    """Rows of one or more read-only embedding maps, read as one (N, d) matrix.

    Parameters
    ----------
    parts : 2-D arrays (usually ``np.memmap``) of the same width and dtype, in row order
    meta : what the folder's ``meta.json`` says (a folder of shards: the first shard's, with
        ``count`` the total and ``shards`` the number of shards)
    names : one name per row, or None
    labels : ``labels.npy`` of every part, or None when a part has none

    Attributes
    ----------
    shape : ``(N, d)``
    dtype : the stored dtype (float32 or float16)
    offsets : ndarray of shape (len(parts) + 1,), the first row of every part, then N
    """

    ndim = 2

    def __init__(
        self,
        parts: Sequence[np.ndarray],
        meta: dict[str, Any] | None = None,
        names: list[str] | None = None,
        labels: Sequence[Path] | None = None,
    ) -> None:
        if not parts:
            raise ValueError("no embeddings to read")
        widths = {p.shape[1] if p.ndim == 2 else None for p in parts}
        if len(widths) != 1 or None in widths:
            raise ValueError(f"the parts must be 2-D of one width, got widths {sorted(widths)}")
        if len({p.dtype for p in parts}) != 1:
            raise ValueError(f"the parts mix dtypes {sorted({str(p.dtype) for p in parts})}")
        self.parts = tuple(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), int(parts[0].shape[1]))
        self.dtype = parts[0].dtype
        self.meta = dict(meta or {})
        self.names = names
        self._labels = list(labels) if labels is not None else None

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"EmbeddingRows(shape={self.shape}, dtype={self.dtype}, parts={len(self.parts)})"

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows (an int, a slice, or an array of row numbers), optionally then columns."""
        if isinstance(key, tuple) and len(key) != 2:
            raise IndexError(f"a 2-D matrix takes rows and columns, got {len(key)} indices")
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(rows, (int, np.integer)):
            r = int(rows) + (len(self) if rows < 0 else 0)
            if not 0 <= r < len(self):
                raise IndexError(f"row {rows} is out of range for {len(self)} rows")
            p = self._part(r)
            return self.parts[p][r - self.offsets[p], cols]
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if step == 1:
                return self._range(start, stop, cols)
            rows = np.arange(start, stop, step)
        return self._take(np.asarray(rows), cols)

    def _part(self, r: np.ndarray | int) -> Any:
        """The part that holds row ``r`` (empty parts hold none)."""
        return np.searchsorted(self.offsets, r, side="right") - 1

    def _range(self, start: int, stop: int, cols: Any) -> np.ndarray:
        if stop <= start:
            return self.parts[0][0:0, cols]
        pieces = []
        while start < stop:
            p = int(self._part(start))
            end = min(stop, int(self.offsets[p + 1]))
            pieces.append(self.parts[p][start - self.offsets[p] : end - self.offsets[p], cols])
            start = end
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _take(self, idx: np.ndarray, cols: Any) -> np.ndarray:
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"a boolean mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"rows must be an int, a slice or a 1-D array of ints, got {idx!r}")
        idx = np.where(idx < 0, idx + len(self), idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row numbers must be in [-{len(self)}, {len(self)})")
        width = self.parts[0][0:0, cols].shape[1:]
        out = np.empty((len(idx), *width), dtype=self.dtype)
        which = self._part(idx)
        for p in np.unique(which):
            sel = which == p
            out[sel] = self.parts[p][idx[sel] - self.offsets[p]][:, cols]
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Every row in memory (N, d): only for data that fits."""
        x = np.asarray(self._range(0, len(self), slice(None)), dtype=dtype)
        return x.copy() if copy else x

    def batches(
        self, size: int = BATCH, dim: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows[start:start + size, :dim])`` for every batch, in row order.

        A batch inside one file is a view of its memory map: nothing is read until it is used.
        """
        if size < 1:
            raise ValueError(f"the batch size must be positive, got {size}")
        cols = slice(None) if dim is None else slice(0, dim)
        for start in range(0, len(self), size):
            yield start, self._range(start, min(len(self), start + size), cols)

    def labels(self) -> np.ndarray | None:
        """The rows' labels (N,) int64, read into memory, or None when the files hold none."""
        if self._labels is None:
            return None
        parts = [np.load(p, mmap_mode="r", allow_pickle=False) for p in self._labels]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def open_embeddings(path: str | Path) -> EmbeddingRows:
    """Embeddings from disk, memory-mapped read-only, as one (N, d) matrix.

    Parameters
    ----------
    path : an ``embeddings.npy`` (N, d); a folder written by ``matryoshka embed`` (its
        ``meta.json`` and ``names.json`` come along); or a folder of shard folders
        ``shard-IIIII-of-NNNNN`` written by ``matryoshka embed --shard I/N``, read in shard
        order as one matrix

    Returns
    -------
    EmbeddingRows
        ``.shape`` (N, d), ``len()``, slicing by rows (and columns), ``.batches(size)``,
        ``.names`` (N names or None), ``.labels()``, ``.meta``.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``, or a shard is missing (the message names it and the command that
        writes it).
    ValueError
        A shard is incomplete (still being written, or stopped: the message says how many rows
        it holds), or the shards do not fit together (widths, dtypes, rows).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".npy":
            raise ValueError(f"{path}: open_embeddings reads .npy files and embedding folders")
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path} is not a plain .npy array: {e}") from None
        if x.ndim != 2:
            raise ValueError(f"{path} must hold a 2-D array (N, d), got shape {x.shape}")
        return EmbeddingRows([x])
    if not path.is_dir():
        raise FileNotFoundError(f"no embeddings at {path}")
    if (path / "embeddings.npy").is_file():
        return _one_folder(path)
    return _shards(path)


def _one_folder(folder: Path) -> EmbeddingRows:
    unfinished = _unfinished(folder)
    if unfinished:
        raise ValueError(f"shard {folder} is incomplete ({unfinished})")
    x, meta, labels = open_folder(folder)
    names = meta.pop("names", None)
    return EmbeddingRows([x], meta, names, None if labels is None else [labels])


def _unfinished(folder: Path) -> str | None:
    """How far a shard folder without ``meta.json`` got, and how to finish it; None when the
    folder is complete (or is no shard being written)."""
    if (folder / "meta.json").is_file() or not (folder / PROGRESS).is_file():
        return None
    try:
        got = json.loads((folder / PROGRESS).read_text())
        rows = got["settings"]["rows"]
        held = f"{got['done']} of its {rows[1] - rows[0]} rows written"
        shard = f" --shard {got['settings']['shard']}"
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        held, shard = "rows written unknown", ""
    return f"{held}; run the same `matryoshka embed ...{shard}` command again to finish it"


def _shards(path: Path) -> EmbeddingRows:
    found: dict[int, tuple[Path, Shard]] = {}
    counts = set()
    for entry in sorted(path.iterdir()):
        match = SHARD_NAME.fullmatch(entry.name)
        if match and entry.is_dir():
            shard = Shard(int(match[1]), int(match[2])) if int(match[1]) < int(match[2]) else None
            if shard is not None:
                found[shard.index] = (entry, shard)
                counts.add(shard.count)
    if not found:
        raise FileNotFoundError(
            f"{path} holds neither embeddings.npy nor shard folders (shard-00000-of-00004, ...); "
            "write them with `matryoshka embed`"
        )
    if len(counts) > 1:
        raise ValueError(f"{path} mixes shards of {sorted(counts)} shards; keep one set of them")
    n = counts.pop()
    missing = [i for i in range(n) if i not in found]
    if missing:
        shown = ", ".join(Shard(i, n).name for i in missing[:5]) + (", ..." if len(missing) > 5
                                                                    else "")  # fmt: skip
        raise FileNotFoundError(
            f"{path} is missing {len(missing)} of {n} shards ({shown}); write each with "
            f"`matryoshka embed ... --shard I/{n}` (e.g. --shard {missing[0]}/{n}) or copy it here"
        )
    return _join(path, [found[i] for i in range(n)])


def _join(path: Path, shards: list[tuple[Path, Shard]]) -> EmbeddingRows:
    """The complete shards of ``path`` as one matrix, after checking that they fit together."""
    unfinished = [(folder, _unfinished(folder)) for folder, _ in shards]
    unfinished = [(folder, why) for folder, why in unfinished if why]
    if unfinished:
        listed = "; ".join(f"{folder.name}: {why}" for folder, why in unfinished[:3])
        raise ValueError(f"{path}: {len(unfinished)} shard(s) are incomplete ({listed})")
    parts, labels, names, metas = [], [], [], []
    for folder, _ in shards:
        x, meta, label = open_folder(folder)
        parts.append(x)
        labels.append(label)
        names.append(meta.pop("names", None))
        metas.append(meta)
    total, stop = metas[0].get("shard", {}).get("total"), 0
    for (folder, shard), x, meta in zip(shards, parts, metas, strict=True):
        info = meta.get("shard", {})
        start, end = shard.rows(total) if isinstance(total, int) else (None, None)
        got = tuple(info.get(k) for k in ("index", "count", "total", "start", "stop"))
        if (
            got != (shard.index, shard.count, total, start, end)
            or start != stop
            or len(x) != (end - start)
        ):
            raise ValueError(
                f"{folder} does not fit the other shards of {path}: it holds rows "
                f"{got[3]}..{got[4]} of {got[2]} as shard {got[0]}/{got[1]}; expected rows "
                f"{start}..{end} of {total}; write the shards again with one setting"
            )
        if (x.shape[1], x.dtype) != (parts[0].shape[1], parts[0].dtype):
            raise ValueError(
                f"{folder} holds {x.shape[1]} columns of {x.dtype}, the first shard "
                f"{parts[0].shape[1]} of {parts[0].dtype}; write the shards with one --dtype "
                "and one model"
            )
        stop = end
    meta = {**{k: v for k, v in metas[0].items() if k != "shard"}, "count": total,
            "shards": len(shards)}  # fmt: skip
    has_names = all(n is not None for n in names)
    joined = [str(n) for part in names for n in part] if has_names else None
    return EmbeddingRows(parts, meta, joined, labels if all(labels) else None)
