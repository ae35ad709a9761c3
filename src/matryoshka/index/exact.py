"""Exact (brute-force) search at any prefix size, in blocks so memory stays bounded.

At small prefix sizes the arithmetic is cheap and choosing the best ``k`` of each score row is what
costs: ``torch.topk`` over a (1000, 200k) score matrix takes several times longer than the product
that filled it. So :func:`stream_topk` first estimates, for every query, a score threshold that
about ``2k`` database vectors beat (the ``r``-th best score over an evenly spaced sample of the
database; the expected count above an order statistic does not depend on the distribution), and
then keeps only the scores above it with one comparison per score. Rows where fewer than ``k``
scores beat the threshold (ties, unlucky samples) are searched again the plain way, so the result
is always exact. Score buffers are reused across blocks: allocating a fresh (nq, nb) tensor per
block costs more than the product at small sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch

from matryoshka.dims import truncate, validate_dim

__all__ = ["exact_search", "product", "stream_topk", "METRICS"]

METRICS = ("cosine", "ip", "l2")

# A source of prepared database blocks: ``rows(start, stop)`` returns the block's vectors as a
# float32 tensor B of shape (nb, m), and a column scale and a column bias, each of shape (nb,) or
# None: the block's scores are ``(q @ B.T) * scale + bias`` (scale ``1/|b|`` for cosine when B is
# not normalised; bias ``-|b|^2`` for l2, so that ``2 q.b - |b|^2`` ranks like l2). B may also be
# a list of column parts ``[(lo, B_lo), ...]``, each (nb, w) read in place from a stored panel
# (no copy); then ``q @ B.T`` is the sum of ``q[:, lo:lo + w] @ B_lo.T`` (see :func:`product`).
Parts = list[tuple[int, torch.Tensor]]
Block = tuple["torch.Tensor | Parts", "torch.Tensor | None", "torch.Tensor | None"]
BlockFn = Callable[[int, int], Block]
TakeFn = Callable[[np.ndarray], Block]


def check_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a 2-D floating array; raise ``ValueError`` for other shapes, NaN or inf."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {x.shape}")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(
            f"{name} holds NaN or infinite values (first in row {bad}); clean it first"
        )
    if x.dtype.itemsize > 4 and x.size:  # float64: values past float32's range become inf
        big = np.abs(x).max(axis=1) > np.finfo(np.float32).max
        if big.any():
            raise ValueError(
                f"{name} holds values beyond float32's range (±3.4e38, first in row "
                f"{int(np.flatnonzero(big)[0])}); vectors are stored and scored in float32"
            )
    return x


def product(
    q: torch.Tensor, b: torch.Tensor | Parts, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``q @ B.T`` of shape (nq, nb) for queries (nq, m) and a block B: a tensor (nb, m), or
    column parts ``[(lo, B_lo), ...]`` that together cover the first m columns."""
    if isinstance(b, torch.Tensor):
        return torch.mm(q, b.T, out=out) if out is not None else q @ b.T
    (lo, first), *rest = b
    qs = q[:, lo : lo + first.shape[1]]
    out = torch.mm(qs, first.T, out=out) if out is not None else qs @ first.T
    for lo, part in rest:
        out.addmm_(q[:, lo : lo + part.shape[1]], part.T)
    return out


def _sample_rows(n: int, k: int) -> np.ndarray | None:
    """Evenly spaced sample positions for the threshold estimate, or None when not worth it."""
    s = int(min(16384, max(2048, n // 16)))
    if n < 4 * s or k > n // 8:  # small database or k near N: plain top-k is cheaper
        return None
    return np.linspace(0, n - 1, s).astype(np.int64)


def stream_topk(
    rows: BlockFn,
    take: TakeFn,
    n: int,
    q: torch.Tensor,
    k: int,
    block_size: int = 8192,
    query_block: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` inner products of queries against a blocked database (larger is better).

    Parameters
    ----------
    rows : callable ``(start, stop) -> (B, scale, bias)``
        The database rows ``start:stop`` as a float32 tensor of shape (nb, m) and an optional
        column scale and additive column bias, each of shape (nb,).
    take : callable ``(positions) -> (B, scale, bias)``
        The same for arbitrary row positions (used for the threshold sample).
    n : int
        Number of database rows.
    q : Tensor of shape (nq, m), float32
        Prepared queries.
    k : int
        Results per query, at most ``n``.

    Returns
    -------
    S : Tensor of shape (nq, k), float32, best first
    I : Tensor of shape (nq, k), int64 row positions
    """
    nq = q.shape[0]
    if nq > query_block:  # bounded memory: the score buffer is (query_block, block_size)
        parts = [
            stream_topk(rows, take, n, q[i : i + query_block], k, block_size, query_block)
            for i in range(0, nq, query_block)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    sample = _sample_rows(n, k)
    if sample is None or nq == 0:
        return _plain_topk(rows, n, q, k, block_size)
    s = len(sample)  # threshold: the r-th best score over the sample
    # the sample holds about e = k s / n of the true top k; r = e + 3 sqrt(e) + 4 leaves the
    # threshold below the true k-th score except with probability ~1e-3 (then the row is redone)
    e = k * s / n
    r = min(s, math.ceil(e + 3 * math.sqrt(e) + 4))
    bs, scale, bias = take(sample)
    ss = product(q, bs)  # (nq, s)
    if scale is not None:
        ss *= scale
    if bias is not None:
        ss += bias
    tau = ss.topk(r, dim=1).values[:, -1].contiguous()  # (nq,)
    del ss
    # numpy compares and compacts several times faster than torch.gt / torch.nonzero on CPU;
    # numpy runs on one core, so each of `threads` workers takes its own rows of every block
    buf = torch.empty(nq * block_size)
    mask = np.empty(nq * block_size, dtype=bool)
    threads = max(1, min(torch.get_num_threads(), nq // 64))
    parts = [_Candidates(lo, hi, tau.numpy()) for lo, hi in _splits(nq, threads)]
    pool = _pool(threads)
    for start in range(0, n, block_size):
        nb = min(n, start + block_size) - start
        b, scale, bias = rows(start, start + nb)
        sc = product(q, b, out=buf[: nq * nb].view(nq, nb))  # contiguous (nq, nb), reused
        if scale is not None:
            sc *= scale
        if bias is not None:
            sc += bias
        sc_np, mk = sc.numpy(), mask[: nq * nb].reshape(nq, nb)
        _run(pool, [partial(c.collect, sc_np, mk, start) for c in parts])
    S = torch.empty(nq, k)
    I = torch.empty(nq, k, dtype=torch.int64)  # noqa: E741 (faiss's name for the id matrix)
    _run(pool, [partial(c.best, k, S, I) for c in parts])
    fill = np.concatenate([c.fill for c in parts])
    short = torch.from_numpy(np.flatnonzero(fill < k))  # threshold too high for these: redo
    if short.numel():
        s2, i2 = _plain_topk(rows, n, q[short], k, block_size)
        S[short], I[short] = s2, i2
    return S, I


class _Candidates:
    """Scores above the threshold for query rows ``lo:hi``, kept as ragged lists per row."""

    def __init__(self, lo: int, hi: int, tau: np.ndarray) -> None:
        self.lo, self.hi = lo, hi
        self.tau = tau[lo:hi, None]  # (rows, 1)
        self.fill = np.zeros(hi - lo, dtype=np.int64)  # candidates so far per row
        self.vals: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []

    def collect(self, sc: np.ndarray, mask: np.ndarray, start: int) -> None:
        """Keep this part's scores of ``sc`` (nq, nb) above the threshold (columns from start)."""
        sc, mk = sc[self.lo : self.hi], mask[self.lo : self.hi]  # (rows, nb)
        nb = sc.shape[1]
        np.greater(sc, self.tau, out=mk)
        flat = np.flatnonzero(mk)  # ascending, so rows come in order
        if flat.size == 0:
            return
        rr = flat // nb
        counts = np.bincount(rr, minlength=len(self.fill))
        first = np.cumsum(counts) - counts
        self.vals.append(sc.reshape(-1)[flat])
        self.rows.append(rr)
        self.cols.append(flat - rr * nb + start)
        self.pos.append(self.fill[rr] + np.arange(flat.size) - first[rr])
        self.fill += counts

    def best(self, k: int, S: torch.Tensor, I: torch.Tensor) -> None:  # noqa: E741
        """Write this part's best ``k`` scores and positions into rows ``lo:hi`` of S and I."""
        rows = self.hi - self.lo
        if not self.vals:
            S[self.lo : self.hi] = float("-inf")
            I[self.lo : self.hi] = -1
            return
        w = max(int(self.fill.max()), k)
        DS = np.full((rows, w), -np.inf, dtype=np.float32)  # ragged candidate rows, padded
        DI = np.full((rows, w), -1, dtype=np.int64)
        rr, pp = np.concatenate(self.rows), np.concatenate(self.pos)
        DS[rr, pp] = np.concatenate(self.vals)
        DI[rr, pp] = np.concatenate(self.cols)
        top, sel = torch.from_numpy(DS).topk(k, dim=1)
        S[self.lo : self.hi] = top
        I[self.lo : self.hi] = torch.from_numpy(DI).gather(1, sel)


def _splits(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor | None:
    if threads <= 1:
        return None
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="matryoshka-topk")
    return _POOLS[threads]


def _run(pool: ThreadPoolExecutor | None, tasks: list[Callable[[], None]]) -> None:
    if pool is None:
        for t in tasks:
            t()
        return
    for f in [pool.submit(t) for t in tasks]:
        f.result()


def _plain_topk(
    rows: BlockFn, n: int, q: torch.Tensor, k: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` by a ``torch.topk`` per block, merged as it goes (used for small or hard cases)."""
    nq = q.shape[0]
    best_s = torch.full((nq, 0), float("-inf"))
    best_i = torch.empty((nq, 0), dtype=torch.int64)
    for start in range(0, n, block_size):
        b, scale, bias = rows(start, min(n, start + block_size))
        s = product(q, b)  # (nq, nb)
        if scale is not None:
            s *= scale
        if bias is not None:
            s += bias
        top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)  # (nq, <=k)
        best_s = torch.cat([best_s, top_s], dim=1)
        best_i = torch.cat([best_i, top_i + start], dim=1)
        if best_s.shape[1] > k:
            best_s, sel = best_s.topk(k, dim=1)
            best_i = best_i.gather(1, sel)
    return best_s, best_i


def finish(
    S: torch.Tensor,
    I: torch.Tensor,  # noqa: E741
    k: int,
    metric: str,
    q_sqnorm: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad scores and positions to ``k`` columns and turn l2 scores back into distances.

    Parameters
    ----------
    S, I : Tensor of shape (nq, k') with k' <= k
        Scores (larger is better; for l2 ``2 q.b - |b|^2``) and positions, ``-1`` for none.
    q_sqnorm : Tensor of shape (nq,), optional
        ``|q|^2``, needed for l2.

    Returns
    -------
    D : ndarray of shape (nq, k), float32: scores for cosine/ip (``-inf`` padding), squared
        distances for l2 (``+inf`` padding)
    I : ndarray of shape (nq, k), int64
    """
    nq, kk = S.shape
    if kk == k and metric != "l2":  # nothing to pad (the common case): the arrays as they are
        D, Io = S.numpy(), I.numpy()
        if np.isfinite(D).all():
            return D, Io
    D = np.full((nq, k), -np.inf, dtype=np.float32)
    Io = np.full((nq, k), -1, dtype=np.int64)
    D[:, :kk] = S.numpy()
    Io[:, :kk] = I.numpy()
    Io[~np.isfinite(D)] = -1
    if metric == "l2":
        D = -D
        if q_sqnorm is not None:
            D += q_sqnorm.numpy()[:, None]
        np.maximum(D, 0, out=D)  # rounding can dip a squared distance below zero
        D[Io < 0] = np.inf
    return D, Io


def prepare_queries(xq: np.ndarray, m: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries as float32 (nq, m) ready for :func:`stream_topk`, and their squared norms (nq,).

    Cosine prefixes are renormalised (zero prefixes stay zero); l2 queries are doubled so that
    ``q.b - |b|^2`` with the doubled query is ``2 q.b - |b|^2``, which ranks like
    ``-|q - b|^2``. In numpy: a handful of calls, so a single query costs microseconds here.
    """
    q, sq = prefix_queries(xq, m, metric)
    if metric == "l2":
        q *= 2
    return torch.from_numpy(q), torch.from_numpy(sq)


def prefix_queries(xq: np.ndarray, m: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Queries' prefixes of size ``m`` as a C-contiguous float32 copy (nq, m), renormalised for
    cosine (a zero prefix stays zero), and their squared norms before that (nq,)."""
    m = validate_dim(m, xq.shape[1], "dim")
    q = np.array(xq[:, :m], dtype=np.float32, order="C")  # a copy: scaled in place below
    sq = np.einsum("ij,ij->i", q, q)
    if metric == "cosine":
        q /= np.sqrt(np.maximum(sq, 1e-24))[:, None]
    return q, sq


def _array_source(xb: np.ndarray, m: int, metric: str) -> tuple[BlockFn, TakeFn]:
    """Block readers over a plain (possibly memory-mapped) array's first ``m`` columns."""

    def prep(b: np.ndarray) -> Block:
        t = torch.from_numpy(np.array(b, dtype=np.float32, order="C"))  # (nb, m), a copy
        if metric == "cosine":
            return truncate(t, m), None, None
        if metric == "l2":  # (nb, m + 1): the bias as an extra column (queries get ones)
            return torch.cat([t, -(t * t).sum(1, keepdim=True)], dim=1), None, None
        return t, None, None

    def rows(start: int, stop: int) -> Block:
        return prep(xb[start:stop, :m])

    def take(pos: np.ndarray) -> Block:
        return prep(xb[pos, :m])

    return rows, take


def exact_search(
    xq: np.ndarray,
    xb: np.ndarray,
    k: int,
    metric: str = "cosine",
    dim: int | None = None,
    block_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every database vector against every query on the first ``dim`` columns.

    Queries come first, then the database, as in ``faiss.knn(xq, xb, k)``. Memory stays bounded
    by the blocks: ``xb`` may be a memory-mapped array larger than RAM.

    Parameters
    ----------
    xq : ndarray of shape (nq, d') with d' >= dim
        Queries.
    xb : ndarray of shape (N, d)
        Database vectors.
    k : int
        Neighbours per query; ids are ``-1`` (scores ``-inf``, or ``+inf`` for l2) past ``N``.
    metric : {"cosine", "ip", "l2"}
        Cosine renormalises each prefix; ``ip`` is the raw inner product; ``l2`` the squared
        Euclidean distance (smaller is better).
    dim : int, optional
        Prefix size ``m``; default the full width of ``xb``.
    block_size : int, default 8192
        Database rows scored at a time.

    Returns
    -------
    D : ndarray of shape (nq, k), float32, best first
    I : ndarray of shape (nq, k), int64
        Row numbers of ``xb``.

    Examples
    --------
    >>> xb = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    >>> exact_search(np.array([[1, 0.1]]), xb, 2, metric="ip")[1]
    array([[2, 0]])
    """
    xb = np.asarray(xb)
    if xb.ndim != 2:
        raise ValueError(f"xb must have shape (n, d), got shape {xb.shape}")
    xq = check_matrix(xq, "xq")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    d = xb.shape[1]
    m = d if dim is None else validate_dim(dim, d, "dim")
    if xq.shape[1] < m:
        raise ValueError(f"queries have {xq.shape[1]} columns but the search size is dim={m}")
    n = xb.shape[0]
    for start in range(0, n, 1 << 20):  # checked in slices so a memory-mapped xb is not loaded
        check_matrix(xb[start : start + (1 << 20), :m], "xb")
    q, sq = prepare_queries(xq, m, metric)
    kk = min(int(k), n)
    if kk == 0:
        return finish(torch.empty(len(q), 0), torch.empty(len(q), 0, dtype=torch.int64), k, metric)
    rows, take = _array_source(xb, m, metric)
    if metric == "l2":
        q = torch.cat([q, torch.ones(len(q), 1)], dim=1)  # (nq, m + 1)
    S, I = stream_topk(rows, take, n, q, kk, block_size)  # noqa: E741
    return finish(S, I, int(k), metric, sq)
