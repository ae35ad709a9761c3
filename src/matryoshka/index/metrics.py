"""recall@k: how much of an exact search's top ``k`` another search finds.

The one implementation of the measure; the storage planner, the benchmarks and
:mod:`matryoshka.eval.retrieval` all use it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["recall_at_k"]


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
    found = total = 0
    for a, b in zip(I[:, :k], I_true[:, :k], strict=True):
        b = b[b >= 0]
        found += len(np.intersect1d(a[a >= 0], b))
        total += len(b)
    return found / total if total else 0.0
