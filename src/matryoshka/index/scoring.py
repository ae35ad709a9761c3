"""Exact funnel stages over stored panels: the first stage over every row, and the rerank.

:func:`exact_stage` scores every stored row at size ``m`` through :func:`stream_topk`, reading the
panels block by block (one to four queries over float32 panels: numpy products over whole panels
in one pass); :func:`rerank` rescores a shortlist of row positions at a larger size, reading only
the candidates' rows. Both return scores with larger better (for l2,
``2 q.b - |b|^2``; :func:`~matryoshka.index.exact.finish` turns them back into distances) and row
positions, not ids.

``norm`` is the index's cached per-row factor at size ``m``: ``1 / |x[:m]|`` for cosine (0 for a
zero row), ``|x[:m]|^2`` for l2, None for ip.
"""

from __future__ import annotations

import numpy as np
import torch

from matryoshka.index.exact import BlockFn, TakeFn, prepare_queries, stream_topk
from matryoshka.index.storage import Storage

__all__ = ["exact_stage", "prefix_norms", "rerank", "store_sources"]


_EPS = 1e-12


def prefix_norms(store: Storage, m: int, metric: str) -> np.ndarray:
    """Per stored row at size ``m``, float32 (N,): ``1 / |x[:m]|`` for cosine (0 for a zero
    row), ``|x[:m]|^2`` otherwise; read 65,536 rows at a time."""
    n = len(store)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, 65536):
        b = store.rows(start, min(n, start + 65536), m)  # (rows, m)
        sq = np.einsum("ij,ij->i", b, b)
        if metric == "cosine":
            nrm = np.sqrt(sq)
            out[start : start + len(b)] = np.where(nrm > _EPS, 1 / np.maximum(nrm, _EPS), 0)
        else:
            out[start : start + len(b)] = sq
    return out


def store_sources(
    store: Storage,
    m: int,
    metric: str,
    norm: np.ndarray | None,
    block_size: int,
    in_place: bool = False,
) -> tuple[BlockFn, TakeFn]:
    """Block readers for :func:`stream_topk` over the stored prefix of size ``m``.

    ``in_place`` (float32 only): blocks are views of the stored panels (column parts, no copy)
    with the cosine factor as a column scale and ``-|b|^2`` as a column bias; the queries are
    then (nq, m). Otherwise each block is copied into a reused (nb, m) buffer, scaled for
    cosine, with an extra column ``-|b|^2`` for l2 (the queries then have a column of ones).
    """
    if in_place:
        return _panel_sources(store, m, metric, norm)
    if m <= store.width(0) and store.precision == "float32" and metric == "ip":
        panel = torch.from_numpy(store.panels[0])  # (N, 32): the first panel, read in place

        def first_rows(start: int, stop: int):
            return panel[start:stop, :m], None, None

        def first_take(pos: np.ndarray):
            return panel.index_select(0, torch.from_numpy(pos))[:, :m], None, None

        return first_rows, first_take

    # l2 appends the column -|b|^2 to each row (queries get a column of ones), so the one
    # product gives 2 q.b - |b|^2 without another pass over the scores
    width = m + 1 if metric == "l2" else m
    buf = np.empty((block_size, width), dtype=np.float32)

    def prep(b: np.ndarray, nrm: np.ndarray | None):
        if metric == "cosine":
            b *= nrm[:, None]
        elif metric == "l2":
            b[:, m] = -nrm
        return torch.from_numpy(b), None, None

    def rows(start: int, stop: int):
        b = buf[: stop - start]
        store.rows(start, stop, m, out=b[:, :m])
        return prep(b, None if norm is None else norm[start:stop])

    def take(pos: np.ndarray):
        b = np.empty((len(pos), width), dtype=np.float32)
        store.take(pos, m, out=b[:, :m])
        return prep(b, None if norm is None else norm[pos])

    return rows, take


def _panel_sources(
    store: Storage, m: int, metric: str, norm: np.ndarray | None
) -> tuple[BlockFn, TakeFn]:
    """In-place block readers: views of the float32 panels covering the first ``m`` columns."""
    parts = [
        (lo, torch.from_numpy(store.panels[i])[:, : min(hi, m) - lo])
        for i, (lo, hi) in enumerate(store.bounds)
        if lo < m
    ]
    t_norm = None if norm is None else torch.from_numpy(norm)
    if t_norm is not None and metric == "l2":
        t_norm = -t_norm  # the bias -|b|^2

    def factors(sel) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if t_norm is None:
            return None, None
        return (t_norm[sel], None) if metric == "cosine" else (None, t_norm[sel])

    def rows(start: int, stop: int):
        return [(lo, p[start:stop]) for lo, p in parts], *factors(slice(start, stop))

    def take(pos: np.ndarray):
        return torch.from_numpy(store.take(pos, m)), *factors(torch.from_numpy(pos))

    return rows, take


# a batch of at most this many queries reads float32 panels in place (no copy of the rows): a
# copy costs about as much as scoring a few dozen queries against the block, and for a single
# query the copy (and the pages of its buffer) is most of the search's time
_IN_PLACE_QUERIES = 32


def _apply_factors(S: np.ndarray, factor: np.ndarray | None, metric: str) -> None:
    """In place: scores times the cosine factor ``1 / |x|``, or minus ``|x|^2`` for l2 (with
    doubled queries, ``2 q.b - |b|^2``); ``factor`` broadcasts against S, None for ip."""
    if factor is None:
        return
    if metric == "cosine":
        S *= factor
    else:
        S -= factor


def _finish_candidates(
    S: np.ndarray, norm: np.ndarray | None, metric: str, pos: np.ndarray
) -> np.ndarray:
    """Candidate scores (nq, kp) with each row's factor applied and ``-inf`` where ``pos`` is
    -1 (set after the factor: ``-inf * 0``, a zero row's cosine factor, would be NaN)."""
    _apply_factors(S, None if norm is None else norm[np.maximum(pos, 0)], metric)
    S[pos < 0] = -np.inf
    return S


# at most this many queries are scored by numpy's matrix-vector products over the stored panels
# in one pass: for one query torch's product took twice as long (and a blocked pass with a
# threshold estimate is bookkeeping a single query does not repay)
_NUMPY_QUERIES = 4


def _few_queries(
    store: Storage, norm: np.ndarray | None, metric: str, q: np.ndarray, m: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact stage for a few prepared queries q (nq, m) over float32 panels, in numpy.

    Scores every row in one (nq, N) array, panel by panel, then keeps the best ``k`` with
    ``argpartition``; ties are broken by position. Returns scores and positions (nq, k')."""
    n, nq = len(store), q.shape[0]
    S = np.empty((nq, n), dtype=np.float32)
    for i, (lo, hi) in enumerate(store.bounds):
        if lo >= m:
            break
        w = min(hi, m) - lo
        part = store.panels[i][:, :w]  # (N, w): a view, read where it is stored
        if lo == 0:
            np.matmul(q[:, :w], part.T, out=S)
        else:
            S += q[:, lo : lo + w] @ part.T
    _apply_factors(S, norm, metric)
    kk = min(k, n)
    top = np.empty((nq, kk), dtype=np.float32)
    pos = np.empty((nq, kk), dtype=np.int64)
    for j, s in enumerate(S):  # a few rows: plain 1-d indexing is the cheapest
        p = np.argpartition(s, n - kk)[n - kk :] if kk < n else np.arange(n)  # unordered
        v = s[p]
        order = np.lexsort((p, -v))  # best first, then the lower position
        top[j], pos[j] = v[order], p[order]
    return torch.from_numpy(top), torch.from_numpy(pos)


def exact_stage(
    store: Storage,
    norm: np.ndarray | None,
    metric: str,
    xq: np.ndarray,
    m: int,
    k: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``k`` stored rows at size ``m`` for queries ``xq`` (nq, >= m).

    Returns scores (nq, k') float32 and row positions (nq, k') int64, ``k' = min(k, N)``.
    """
    q, _ = prepare_queries(xq, m, metric)
    if store.precision == "float32" and len(q) <= _NUMPY_QUERIES:
        return _few_queries(store, norm, metric, q.numpy(), m, k)
    in_place = store.precision == "float32" and len(q) <= _IN_PLACE_QUERIES
    if metric == "l2" and not in_place:
        q = torch.cat([q, torch.ones(len(q), 1)], dim=1)  # (nq, m + 1), see store_sources
    n = len(store)
    rows, take = store_sources(store, m, metric, norm, block_size, in_place)
    return stream_topk(rows, take, n, q, min(k, n), block_size)


def _faiss_or_none():
    """faiss when it is installed (its by-index products fuse the gather with the scoring)."""
    if not _FAISS:
        try:
            import faiss
        except ImportError:
            faiss = None
        _FAISS.append(faiss)
    return _FAISS[0]


_FAISS: list = []


def _fused_rerank(
    store: Storage, norm: np.ndarray | None, metric: str, q: np.ndarray, pos: np.ndarray, m: int
) -> np.ndarray:
    """Scores (nq, kp) of candidate positions ``pos`` (nq, kp) at size ``m``, ``-inf`` for -1.

    float32 panels only: per panel, faiss's ``fvec_inner_products_by_idx`` reads each candidate's
    row where it is stored and scores it (no gathered copy), threaded over the queries.
    """
    faiss = _FAISS[0]
    nq, kp = pos.shape
    S = np.empty((nq, kp), dtype=np.float32)
    part = np.empty((nq, kp), dtype=np.float32) if m > store.width(0) else S
    ptr_pos = faiss.swig_ptr(pos)
    for i, (lo, hi) in enumerate(store.bounds):
        if lo >= m:
            break
        qp = q[:, lo:hi]  # queries' columns of this panel, zero past m
        if hi > m or not qp.flags.c_contiguous:
            qp = np.zeros((nq, hi - lo), dtype=np.float32)
            qp[:, : min(hi, m) - lo] = q[:, lo : min(hi, m)]
        out = S if lo == 0 else part
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(out), faiss.swig_ptr(qp), faiss.swig_ptr(store.panels[i]),
            ptr_pos, hi - lo, nq, kp,
        )  # fmt: skip
        if lo:
            S += part
    return _finish_candidates(S, norm, metric, pos)


def _few_rerank(
    store: Storage, norm: np.ndarray | None, metric: str, q: np.ndarray, pos: np.ndarray, m: int
) -> np.ndarray:
    """:func:`_fused_rerank` for a few queries, in numpy: each panel's candidate rows taken
    and multiplied in one call (a faiss call opens a parallel region, which costs more than
    scoring a few dozen rows when another thread pool is spinning). Returns (nq, kp)."""
    nq, kp = pos.shape
    safe = np.maximum(pos, 0)
    S = np.zeros((nq, kp), dtype=np.float32)
    for i, (lo, hi) in enumerate(store.bounds):
        if lo >= m:
            break
        w = min(hi, m) - lo
        rows = store.panels[i][safe, :w]  # (nq, kp, w)
        S += np.matmul(rows, q[:, lo : lo + w, None])[:, :, 0]
    return _finish_candidates(S, norm, metric, pos)


def rerank(
    store: Storage,
    norm: np.ndarray | None,
    metric: str,
    xq: np.ndarray,
    pos: torch.Tensor,
    m: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescore candidate positions ``pos`` (nq, kp) (``-1`` for none) at size ``m``; keep k.

    float32 panels with faiss installed: one fused gather-and-score per panel
    (:func:`_fused_rerank`). Otherwise panel by panel: each panel's candidate rows are gathered
    into a reused buffer and multiplied with the matching slice of the queries (zero-padded to
    the panel's width), so no concatenated copy of the prefix is made. Returns scores and
    positions, each (nq, min(k, kp)).
    """
    q, _ = prepare_queries(xq, m, metric)  # (nq, m)
    nq, kp = pos.shape
    kk = min(k, kp)
    fused = store.precision == "float32" and all(p.flags.c_contiguous for p in store.panels)
    if store.precision == "float32" and nq <= _NUMPY_QUERIES and nq and kp:
        p = pos.numpy()
        s = torch.from_numpy(_few_rerank(store, norm, metric, q.numpy(), p, m))
        top, sel = s.topk(kk, dim=1)
        return top, pos.gather(1, sel)
    if fused and nq and kp and _faiss_or_none() is not None:
        p = np.ascontiguousarray(pos.numpy(), dtype=np.int64)
        s = torch.from_numpy(_fused_rerank(store, norm, metric, q.numpy(), p, m))
        top, sel = s.topk(kk, dim=1)
        return top, pos.gather(1, sel)
    return _rerank_gathered(store, norm, metric, q, pos, kk)


def _rerank_gathered(
    store: Storage,
    norm: np.ndarray | None,
    metric: str,
    q: torch.Tensor,
    pos: torch.Tensor,
    kk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rerank` by gathered rows: prepared queries q (nq, m), positions (nq, kp)."""
    m = q.shape[1]
    nq, kp = pos.shape
    S = torch.empty(nq, kk)
    P = torch.empty(nq, kk, dtype=torch.int64)
    panels = [i for i, (lo, _) in enumerate(store.bounds) if lo < m]
    widest = max(store.width(i) for i in panels)
    qc = max(1, (1 << 22) // max(1, kp * widest))  # about 16 MB of gathered rows at a time
    buf = torch.empty(min(nq, qc) * kp * widest)
    qpad = []  # per panel: the queries' columns lo:hi, zero past m, (nq, width, 1)
    for i in panels:
        lo, hi = store.bounds[i]
        qp = torch.zeros(nq, hi - lo, 1)
        qp[:, : min(hi, m) - lo, 0] = q[:, lo : min(hi, m)]
        qpad.append(qp)
    for s0 in range(0, nq, qc):
        p = pos[s0 : s0 + qc]  # (qc, kp)
        c = p.shape[0]
        valid = p >= 0
        pp = torch.where(valid, p, 0).reshape(-1)  # (qc * kp,)
        s = torch.zeros(c, kp, 1)
        for i, qp in zip(panels, qpad, strict=True):
            w = store.width(i)
            rows = store.gather(i, pp, buf[: c * kp * w].view(c * kp, w))
            s.baddbmm_(rows.view(c, kp, w), qp[s0 : s0 + c])  # (qc, kp, 1)
        s = s[:, :, 0]
        if metric == "cosine":
            s *= torch.from_numpy(norm)[pp].view(c, kp)
        elif metric == "l2":
            s -= torch.from_numpy(norm)[pp].view(c, kp)
        s[~valid] = float("-inf")
        top, sel = s.topk(kk, dim=1)
        S[s0 : s0 + c] = top
        P[s0 : s0 + c] = p.gather(1, sel)
    return S, P
