"""recall@k: how much of an exact search's top ``k`` another search finds.

The one implementation of the measure; the storage planner, the benchmarks and
:mod:`matryoshka.eval.retrieval` all use it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["recall_at_k", "recall_per_query"]


def recall_at_k(I: np.ndarray, I_true: np.ndarray, k: int | None = None) -> float:  # noqa: E741
    """Fraction of the exact top-``k`` ids found in the first ``k`` ids of an approximate result.

    Parameters
    ----------
    I : ndarray of shape (nq, >= k), int
        Ids returned by the search under test (``-1`` for none).
    I_true : ndarray of shape (nq, >= k), int
        Ids of exact (e.g. full-size) search, best first.
    k : int, optional
        Default the width of ``I_true``.

    Returns
    -------
    float
        ``|I[:, :k] & I_true[:, :k]| / |I_true[:, :k]|`` summed over queries (``-1`` ignored).

    Examples
    --------
    >>> recall_at_k(np.array([[3, 9, 1]]), np.array([[1, 2, 3]]))
    0.6666666666666666
    """
    I, I_true = np.asarray(I), np.asarray(I_true)  # noqa: E741
    if I.ndim != 2 or I_true.ndim != 2 or I.shape[0] != I_true.shape[0]:
        raise ValueError(
            f"I and I_true must be (nq, k) with equal nq, got {I.shape}, {I_true.shape}"
        )
    k = I_true.shape[1] if k is None else int(k)
    if k < 1 or k > I.shape[1] or k > I_true.shape[1]:
        raise ValueError(f"k must be between 1 and {min(I.shape[1], I_true.shape[1])}, got k={k}")
    found, total = _hits(I, I_true, k)
    return float(found.sum() / total.sum()) if total.sum() else 0.0


def recall_per_query(I: np.ndarray, I_true: np.ndarray, k: int) -> np.ndarray:  # noqa: E741
    """recall@k of each query, shape (nq,): :func:`recall_at_k` query by query (a query with
    no true ids scores 0)."""
    found, total = _hits(np.asarray(I), np.asarray(I_true), int(k))
    return found / np.maximum(total, 1)


def _hits(I: np.ndarray, I_true: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: E741
    """Per query: true ids found in the first ``k`` of ``I``, and true ids (``-1`` ignored)."""
    found = np.zeros(len(I_true), dtype=np.int64)
    total = np.zeros(len(I_true), dtype=np.int64)
    for j, (a, b) in enumerate(zip(I[:, :k], I_true[:, :k], strict=True)):
        b = b[b >= 0]
        found[j] = len(np.intersect1d(a[a >= 0], b))
        total[j] = len(b)
    return found, total
