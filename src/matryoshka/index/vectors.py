"""Embeddings from files other tools write, and the step some models need before slicing.

:func:`read_vectors` reads a matrix of embeddings (and optionally their ids) from

- ``.npy``: a 2-D float array (memory-mapped, float16 kept as it is);
- ``.npz``: the array named ``column`` (default: ``embeddings``, or the only array), ids from
  the array named ``ids_column``;
- ``.parquet``: a list or fixed-size-list column of floats (``column``, default the only one),
  ids from an integer column (needs ``pyarrow``, ``pip install 'matryoshka[index]'``);
- ``.jsonl``: one JSON object a line, the vector under ``column`` (default ``embedding``), the id
  under ``ids_column``.

Every mistake names the file, the column and what was found there.

Prefix transforms: a Matryoshka model may prescribe a step on the full vector before it is cut to
a prefix (nomic-embed-text-v1.5 applies a layer norm, then truncates, then L2-normalises). The
index stores vectors after :func:`apply_transform` and applies the same step to every query.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from matryoshka._io import read_json_lines
from matryoshka._optional import require

__all__ = ["FORMATS", "TRANSFORMS", "apply_transform", "read_vectors"]

FORMATS = (".npy", ".npz", ".parquet", ".jsonl")
TRANSFORMS = ("none", "l2", "layer-norm")


def apply_transform(x: np.ndarray, transform: str, eps: float = 1e-5) -> np.ndarray:
    """The full vectors ``x`` (n, d) after ``transform``, float32 (n, d).

    ``none``: unchanged; ``l2``: each row divided by its L2 norm; ``layer-norm``: each row minus
    its mean, divided by ``sqrt(var + eps)`` (``torch.nn.functional.layer_norm`` without weights).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"prefix transform must be one of {TRANSFORMS}, got {transform!r}")
    x = np.asarray(x, dtype=np.float32)
    if transform == "l2":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if transform == "layer-norm":
        mean = x.mean(axis=1, keepdims=True)
        var = x.var(axis=1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps)
    return x


def _matrix(x: np.ndarray, path: Path, where: str) -> np.ndarray:
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{path}: {where} is not a numeric array (it holds {x.dtype} values)")
    if x.ndim != 2:
        raise ValueError(f"{path}: {where} must be 2-D (n, d), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x


def _ids(ids: np.ndarray, n: int, path: Path, where: str) -> np.ndarray:
    """int64 ids, or str names (a corpus's document ids): (n,) either way."""
    ids = np.asarray(ids)
    if ids.shape == (n,) and ids.dtype.kind in "OUT" and all(isinstance(v, str) for v in ids):
        return ids.astype(str)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{path}: {where} must hold one integer id or one string name per vector ({n}), "
            f"got {ids.dtype} of shape {ids.shape}"
        )
    return ids.astype(np.int64)


def _npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path} is not a plain .npy array: {e}") from None
    return _matrix(x, path, "the array")


def _npz(path: Path, column: str | None, ids_column: str | None):
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        name = column or ("embeddings" if "embeddings" in names else None)
        if name is None and len(names) == 1:
            name = names[0]
        if name is None or name not in names:
            raise ValueError(
                f"{path}: no array {column or 'embeddings'!r} (it holds {', '.join(names)}); "
                "name one with --column"
            )
        x = _matrix(z[name], path, f"array {name!r}")
        ids = None
        if ids_column is not None:
            if ids_column not in names:
                raise ValueError(f"{path}: no ids array {ids_column!r} (it holds {names})")
            ids = _ids(z[ids_column], len(x), path, f"array {ids_column!r}")
    return x, ids


def _parquet(path: Path, column: str | None, ids_column: str | None):
    pq = require("pyarrow.parquet", "reading Parquet", "index")
    pa = require("pyarrow", "reading Parquet", "index")
    table = pq.read_table(path)
    lists = [f.name for f in table.schema if pa.types.is_list(f.type)
             or pa.types.is_fixed_size_list(f.type) or pa.types.is_large_list(f.type)]  # fmt: skip
    name = column or (lists[0] if len(lists) == 1 else None)
    if name is None or name not in table.column_names:
        raise ValueError(
            f"{path}: no list column {column!r} of vectors (list columns: {lists or 'none'}; all "
            f"columns: {table.column_names}); name one with --column"
        )
    col = table.column(name).combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type)
            or pa.types.is_large_list(col.type)):  # fmt: skip
        raise ValueError(f"{path}: column {name!r} holds {col.type}, not lists of numbers")
    lengths = np.asarray(col.value_lengths() if hasattr(col, "value_lengths") else
                         [col.type.list_size] * len(col))  # fmt: skip
    if len(col) and (lengths.min() != lengths.max() or col.null_count):
        raise ValueError(
            f"{path}: column {name!r} holds vectors of different lengths "
            f"({lengths.min()} to {lengths.max()}) or missing values"
        )
    values = np.asarray(col.flatten().to_numpy(zero_copy_only=False))
    x = _matrix(values.reshape(len(col), -1 if len(col) else 0), path, f"column {name!r}")
    ids = None
    if ids_column is not None:
        if ids_column not in table.column_names:
            raise ValueError(f"{path}: no ids column {ids_column!r} ({table.column_names})")
        ids = _ids(table.column(ids_column).to_numpy(), len(x), path, f"column {ids_column!r}")
    return x, ids


def _jsonl(path: Path, column: str | None, ids_column: str | None):
    name = column or "embedding"
    rows, ids = [], []
    for n, obj in read_json_lines(path):
        if not isinstance(obj.get(name), list):
            raise ValueError(
                f"{path}, line {n}: no list {name!r} of numbers (keys: {sorted(obj)}); name the "
                "vector's key with --column"
            )
        if rows and len(obj[name]) != len(rows[0]):
            raise ValueError(
                f"{path}, line {n}: a vector of {len(obj[name])} numbers after ones of "
                f"{len(rows[0])}"
            )
        rows.append(obj[name])
        if ids_column is not None:
            value = obj.get(ids_column)
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                raise ValueError(f"{path}, line {n}: no integer id or string name {ids_column!r}")
            ids.append(value)
    try:
        x = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1 if rows else 0)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {name!r} must hold numbers ({e})") from None
    if ids_column is None:
        return x, None
    if len({type(v) for v in ids}) > 1:
        raise ValueError(f"{path}: {ids_column!r} mixes integer ids and string names")
    return x, _ids(np.asarray(ids, dtype=object if ids and isinstance(ids[0], str) else np.int64),
                   len(x), path, repr(ids_column))  # fmt: skip


def read_vectors(
    path: str | os.PathLike, column: str | None = None, ids_column: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (n, d) and their ids (n,) or None, from one of :data:`FORMATS`.

    Ids are int64, or str when the column holds names (e.g. ``"doc-17"``): an index keeps those
    as the rows' names and numbers the rows itself.

    ``.npy`` is memory-mapped; float16 and float32 stay as stored (other numbers become
    float32). See the module docstring for ``column`` and ``ids_column``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if ids_column is not None:
            raise ValueError(f"{path}: a .npy holds one array; give ids in a separate file")
        return _npy(path), None
    if suffix == ".npz":
        return _npz(path, column, ids_column)
    if suffix == ".parquet":
        return _parquet(path, column, ids_column)
    if suffix == ".jsonl":
        return _jsonl(path, column, ids_column)
    raise ValueError(f"{path}: unknown format {suffix!r}; read are {', '.join(FORMATS)}")
