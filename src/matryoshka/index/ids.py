"""Ids of stored vectors: checked where users hand them in, so a wrong id is never stored.

An id is a non-negative int64 below 2**62 (``-1`` marks "no result" in search output, and the
next default id must still fit); ids are unique within an index; ``1.7`` is not the id 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_ID", "check_names", "int_ids", "new_ids_for", "positions_of"]

MAX_ID = 2**62


def int_ids(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """Ids as int64 of shape (n,); ``ValueError`` for anything but integers."""
    arr = np.asarray(ids).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        example = arr[0].item()
        raise ValueError(f"ids must be integers, got {arr.dtype} values such as {example!r}")
    return arr.astype(np.int64)


def new_ids_for(
    ids: np.ndarray | Sequence[int] | None, n: int, next_id: int, existing: np.ndarray
) -> np.ndarray:
    """The ids of ``n`` vectors being added: ``ids`` checked, or ``next_id, next_id + 1, ...``.

    Parameters
    ----------
    ids : array-like of shape (n,), optional
    n : how many vectors are added
    next_id : the first default id
    existing : ndarray of shape (N,), the ids already stored

    Returns
    -------
    ndarray of shape (n,), int64
    """
    if ids is None:
        if next_id + n > MAX_ID:
            raise ValueError(f"default ids would pass 2**62 (next id {next_id}); pass ids")
        return np.arange(next_id, next_id + n, dtype=np.int64)
    raw = np.asarray(ids)
    if raw.shape != (n,):
        raise ValueError(f"ids must have shape ({n},) to match xb, got {raw.shape}")
    new = int_ids(raw)
    if not n:
        return new
    if new.min() < 0:
        raise ValueError(f"ids must be non-negative (-1 marks 'no result'), got {new.min()}")
    if new.max() >= MAX_ID:
        raise ValueError(f"ids must be below 2**62, got {int(new.max())}")
    uniq, counts = np.unique(new, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"ids must be unique, got {uniq[counts > 1][0]} more than once")
    clash = np.isin(new, existing)
    if clash.any():
        raise ValueError(f"id {new[clash][0]} is already in the index")
    return new


def positions_of(ids: np.ndarray, stored: np.ndarray | None, n: int) -> np.ndarray:
    """Row positions of ``ids`` (int64 (k,)) among ``stored`` ids ((N,), None: ids are the
    positions ``0..n-1``); ``KeyError`` names the first id that is not there."""
    if stored is None:
        pos = ids.copy()
        bad = (pos < 0) | (pos >= n)
    elif not len(stored):
        pos, bad = np.zeros_like(ids), np.ones(len(ids), bool)
    else:
        order = np.argsort(stored)
        j = np.minimum(np.searchsorted(stored, ids, sorter=order), len(order) - 1)
        pos = order[j]
        bad = stored[pos] != ids
    if bad.any():
        raise KeyError(f"id {ids[bad][0]} is not in the index")
    return pos


def check_names(names: Sequence[str] | None, n: int, count: int, named: bool) -> np.ndarray | None:
    """The names of ``n`` vectors being added to an index of ``count`` (``named``: it has names),
    as a str array (n,), or None; all adds give names or none do."""
    if names is None:
        if named and n:
            raise ValueError("this index names every vector: give names to add")
        return None
    if isinstance(names, str) or len(names) != n:
        raise ValueError(f"names must be a list of {n} strings, one per vector")
    if count and not named:
        raise ValueError("this index has no names: add without names, or start a new one")
    if any(not isinstance(s, str) for s in names):
        raise ValueError("names must be strings")
    return np.asarray(list(names), dtype=str)
