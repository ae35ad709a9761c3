"""Ids of stored vectors: checked where users hand them in, so a wrong id is never stored.

An id is a non-negative int64 below 2**62 (``-1`` marks "no result" in search output, and the
next default id must still fit); ids are unique within an index; ``1.7`` is not the id 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_ID", "int_ids", "new_ids_for"]

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
