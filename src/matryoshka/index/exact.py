"""Exact (brute-force) search at any prefix size, in blocks so memory stays bounded."""

from __future__ import annotations

import numpy as np
import torch

from matryoshka.dims import validate_dim

__all__ = ["exact_search", "METRICS"]

METRICS = ("cosine", "ip", "l2")


def _check_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"{name} holds NaN or infinite values (first in row {bad}); clean it first")
    return x


def exact_search(
    xb: np.ndarray,
    xq: np.ndarray,
    k: int,
    metric: str = "cosine",
    dim: int | None = None,
    block_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every database vector against every query on the first ``dim`` columns.

    Parameters
    ----------
    xb : ndarray of shape (N, d)
        Database vectors.
    xq : ndarray of shape (nq, d') with d' >= dim
        Queries.
    k : int
        Neighbours per query; ids are ``-1`` (scores ``-inf``, or ``+inf`` for l2) past ``N``.
    metric : {"cosine", "ip", "l2"}
        Cosine renormalises each prefix; ``ip`` is the raw inner product; ``l2`` the squared
        Euclidean distance (smaller is better).
    dim : int, optional
        Prefix size ``m``; default the full width of ``xb``.

    Returns
    -------
    D : ndarray of shape (nq, k), float32, best first
    I : ndarray of shape (nq, k), int64
    """
    xb = _check_matrix(xb, "xb")
    xq = _check_matrix(xq, "xq")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got k={k}")
    d = xb.shape[1]
    m = d if dim is None else validate_dim(dim, d, "dim")
    if xq.shape[1] < m:
        raise ValueError(f"queries have {xq.shape[1]} columns but the search size is dim={m}")
    n, nq = xb.shape[0], xq.shape[0]
    q = torch.from_numpy(np.ascontiguousarray(xq[:, :m], dtype=np.float32))  # (nq, m)
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
    kk = min(k, n)
    best_s = torch.full((nq, 0), float("-inf"))
    best_i = torch.empty((nq, 0), dtype=torch.int64)
    for start in range(0, n, block_size):
        b = torch.from_numpy(np.ascontiguousarray(xb[start : start + block_size, :m], np.float32))
        if metric == "cosine":
            b = torch.nn.functional.normalize(b, dim=1)
        s = q @ b.T  # (nq, nb)
        if metric == "l2":  # negated squared distance, so larger is better throughout
            s = 2 * s - (b * b).sum(1)[None, :] - (q * q).sum(1)[:, None]
        top_s, top_i = s.topk(min(kk, s.shape[1]), dim=1)  # (nq, <=k)
        best_s = torch.cat([best_s, top_s], dim=1)
        best_i = torch.cat([best_i, top_i + start], dim=1)
        if best_s.shape[1] > kk:
            best_s, sel = best_s.topk(kk, dim=1)
            best_i = best_i.gather(1, sel)
    D = np.full((nq, k), -np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)  # noqa: E741 (faiss's name for the id matrix)
    D[:, :kk] = best_s.numpy()
    I[:, :kk] = best_i.numpy()
    if metric == "l2":
        D = -D
    return D, I
