"""Approximate first stages through faiss: HNSW, IVF, IVF-PQ on a prefix, and AdANNS-IVF.

Each structure is built on the stored vectors' prefix of one size and hands a shortlist of row
positions to the funnel, whose later stages rerank from the stored vectors at larger sizes. The
structure holds its own copy of the short prefix (``N * m * 4`` bytes for HNSW and IVF, less for
IVF-PQ), small next to the full vectors when ``m`` is small.

A stage never sees the index: it reads the stored rows it needs through a row reader
``rows(start, stop, m)`` (:data:`RowsFn`) and is told the metric, both passed by
``MatryoshkaIndex`` when it builds, adds to and searches the stage.

AdANNS-IVF (Rege et al., 2023, "AdANNS: A Framework for Adaptive Semantic Search",
https://arxiv.org/abs/2305.19435) clusters with one prefix size and scores inside the probed lists
with another: ``cluster_dim`` decides the k-means clustering, every vector's list and the
query-to-centroid step; ``dim`` the scan inside the lists. Either may be the larger.

faiss is an optional dependency (``pip install 'matryoshka[index]'``) imported only here, inside
the functions that use it, through :func:`matryoshka._optional.require`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from matryoshka._optional import require
from matryoshka.dims import validate_dim
from matryoshka.index.exact import prefix_queries

__all__ = [
    "import_faiss",
    "make_ann",
    "HNSWStage",
    "IVFStage",
    "AdannsIVFStage",
    "ANN_KINDS",
    "RowsFn",
]

ANN_KINDS = ("hnsw", "ivf", "ivfpq", "adanns")
_PARAMS = {  # the settings of each kind (every one a positive integer)
    "hnsw": ("M", "ef_construction", "ef_search", "bits"),
    "ivf": ("nlist", "nprobe"),
    "ivfpq": ("nlist", "nprobe", "pq_m", "nbits"),
    "adanns": ("cluster_dim", "nlist", "nprobe"),
}

# A row reader: ``rows(start, stop, m)`` returns the stored rows ``start:stop`` at size ``m`` as a
# float32 array of shape (stop - start, m), each row unit-normalised when the metric is cosine.
RowsFn = Callable[[int, int, int], np.ndarray]

_CHUNK = 65536  # rows read and added to faiss at a time
_SQ_SAMPLE = 262144  # rows an 8-bit or 16-bit HNSW graph sets its per-dimension ranges from


def import_faiss() -> Any:
    """Import faiss, or raise ``ImportError`` naming the extra that provides it."""
    return require("faiss", "approximate search")


def _faiss_metric(faiss: Any, metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _queries(xq: np.ndarray, m: int, metric: str) -> np.ndarray:
    """Queries at size ``m`` as contiguous float32 (nq, m), unit-normalised for cosine."""
    return prefix_queries(xq, m, metric)[0]  # faiss reads C-contiguous rows


def _to_scores(q: np.ndarray, D: np.ndarray, Ipos: np.ndarray, metric: str):
    """faiss (D, I) to the funnel's convention: larger is better; l2 as ``|q|^2 - dist``."""
    S = np.ascontiguousarray(D, dtype=np.float32)
    if metric == "l2":
        S = np.einsum("ij,ij->i", q, q)[:, None] - S
    P = np.ascontiguousarray(Ipos, dtype=np.int64)
    S[P < 0] = -np.inf
    return torch.from_numpy(S), torch.from_numpy(P)


def _gather(rows: RowsFn, positions: np.ndarray, m: int) -> np.ndarray:
    """Rows at sorted ``positions`` at size ``m``, read chunk by chunk: (len(positions), m)."""
    out = np.empty((len(positions), m), dtype=np.float32)
    n = int(positions[-1]) + 1 if len(positions) else 0
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        lo, hi = np.searchsorted(positions, [s, e])
        if hi > lo:
            out[lo:hi] = rows(s, e, m)[positions[lo:hi] - s]
    return out


def _train_sample(n: int, nlist: int, per_list: int = 64) -> np.ndarray:
    """Evenly spaced positions for k-means training: ``per_list`` per centroid at most."""
    return np.linspace(0, n - 1, min(n, per_list * nlist)).astype(np.int64)


def _check_nlist(nlist: int, n: int) -> int:
    if nlist < 1:
        raise ValueError(f"nlist must be positive, got {nlist}")
    if nlist > n:
        raise ValueError(f"nlist={nlist} is more than the {n} stored vectors; use fewer lists")
    return int(nlist)


class _Stage:
    """Common part: a faiss index over a prefix, rows added in chunks of positions."""

    kind: str
    search_dim: int
    faiss_index: Any

    def params(self) -> dict[str, Any]:
        """Constructor settings (besides ``dim``), as saved in an index's manifest."""
        raise NotImplementedError

    def build(self, rows: RowsFn, n: int, metric: str) -> _Stage:
        """Build the structure over the ``n`` stored rows read through ``rows``; returns self."""
        raise NotImplementedError

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The built faiss structures as uint8 arrays (faiss's own format, not pickle)."""
        faiss = import_faiss()
        return {"index": faiss.serialize_index(self.faiss_index)}

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> _Stage:
        """Restore what :meth:`to_arrays` wrote; returns self."""
        faiss = import_faiss()
        self.faiss_index = faiss.deserialize_index(np.ascontiguousarray(arrays["index"]))
        return self

    def _add_rows(self, rows: RowsFn, start: int, stop: int) -> None:
        for s in range(start, stop, _CHUNK):
            self.faiss_index.add(rows(s, min(stop, s + _CHUNK), self.search_dim))

    def add(self, rows: RowsFn, start: int, stop: int, metric: str) -> None:
        """Add stored rows ``start:stop``, read through ``rows`` (after ``MatryoshkaIndex.add``)."""
        self._add_rows(rows, start, stop)

    def search(self, xq: np.ndarray, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Shortlist of ``k`` positions per query for queries ``xq`` (nq, >= dim).

        Returns scores (nq, k) float32, larger is better (``-inf`` where none), and row
        positions (nq, k) int64 (``-1`` where none).
        """
        q = _queries(xq, self.search_dim, metric)
        D, Ipos = self.faiss_index.search(q, k)
        return _to_scores(q, D, Ipos, metric)


class HNSWStage(_Stage):
    """faiss ``IndexHNSWFlat`` on the prefix of size ``dim``.

    Parameters
    ----------
    dim : int
        Prefix size it is built and searched at.
    M : int, default 32
        Graph degree.
    ef_construction : int, default 64
        Beam width while building.
    ef_search : int, default 128
        Beam width while searching (faiss uses at least the shortlist length).
    bits : {32, 16, 8}, default 32
        How the graph keeps its copy of the prefix: float32 (``IndexHNSWFlat``), float16 or
        8-bit scalar quantisation per dimension (``IndexHNSWSQ``, ranges from a sample of the
        rows). Shorter codes make each step of the walk cheaper (a 128-dimension prefix is 128
        bytes at 8 bits against 512 at 32) and cost the shortlist a little precision, which the
        funnel's exact rerank does not inherit. Rows added later outside the sampled ranges are
        clipped to them.
    """

    kind = "hnsw"
    _BITS = (32, 16, 8)

    def __init__(
        self,
        dim: int,
        M: int = 32,
        ef_construction: int = 64,
        ef_search: int = 128,
        bits: int = 32,
    ):
        if bits not in self._BITS:
            raise ValueError(f"hnsw setting bits must be one of {self._BITS}, got {bits!r}")
        self.search_dim = dim
        self.M = M
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.bits = int(bits)

    def params(self) -> dict[str, Any]:
        return {
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "bits": self.bits,
        }

    def build(self, rows: RowsFn, n: int, metric: str) -> HNSWStage:
        """Build the graph over the ``n`` stored rows read through ``rows``; returns self."""
        faiss = import_faiss()
        m, fmetric = self.search_dim, _faiss_metric(faiss, metric)
        if self.bits == 32:
            self.faiss_index = faiss.IndexHNSWFlat(m, self.M, fmetric)
        else:
            sq = faiss.ScalarQuantizer
            qtype = sq.QT_8bit if self.bits == 8 else sq.QT_fp16
            self.faiss_index = faiss.IndexHNSWSQ(m, qtype, self.M, fmetric)
            sample = np.linspace(0, n - 1, min(n, _SQ_SAMPLE)).astype(np.int64)
            self.faiss_index.train(_gather(rows, sample, m))
        self.faiss_index.hnsw.efConstruction = self.ef_construction
        self._add_rows(rows, 0, n)
        return self

    def search(self, xq: np.ndarray, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.faiss_index.hnsw.efSearch = max(self.ef_search, k)
        return super().search(xq, k, metric)


class IVFStage(_Stage):
    """faiss ``IndexIVFFlat`` (or ``IndexIVFPQ`` with ``pq_m``) on the prefix of size ``dim``.

    Parameters
    ----------
    dim : int
        Prefix size it is trained, built and searched at.
    nlist : int, default 1024
        Number of k-means lists.
    nprobe : int, default 16
        Lists scanned per query.
    pq_m : int, optional
        Product-quantise the lists with this many sub-quantisers (must divide ``dim``).
    nbits : int, default 8
        Bits per sub-quantiser code.
    """

    def __init__(
        self, dim: int, nlist: int = 1024, nprobe: int = 16, pq_m: int | None = None, nbits: int = 8
    ):
        if pq_m is not None and (pq_m < 1 or dim % pq_m):
            raise ValueError(f"pq_m must divide the stage size dim={dim}, got pq_m={pq_m}")
        self.search_dim = dim
        self.nlist = nlist
        self.nprobe = nprobe
        self.pq_m = pq_m
        self.nbits = nbits
        self.kind = "ivf" if pq_m is None else "ivfpq"

    def params(self) -> dict[str, Any]:
        out = {"nlist": self.nlist, "nprobe": self.nprobe}
        if self.pq_m is not None:
            out.update(pq_m=self.pq_m, nbits=self.nbits)
        return out

    def build(self, rows: RowsFn, n: int, metric: str) -> IVFStage:
        """Train the lists on a sample of the ``n`` stored rows and add them all; returns self."""
        faiss = import_faiss()
        nlist = _check_nlist(self.nlist, n)
        fmetric = _faiss_metric(faiss, metric)
        m = self.search_dim
        quantizer = faiss.IndexFlatL2(m) if metric == "l2" else faiss.IndexFlatIP(m)
        if self.pq_m is None:
            ivf = faiss.IndexIVFFlat(quantizer, m, nlist, fmetric)
        else:
            ivf = faiss.IndexIVFPQ(quantizer, m, nlist, self.pq_m, self.nbits, fmetric)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns and frees its quantizer
        x = _gather(rows, _train_sample(n, nlist, 256 if self.pq_m else 64), m)  # (ntrain, m)
        ivf.train(x)
        self.faiss_index = ivf
        self._add_rows(rows, 0, n)
        return self

    def search(self, xq: np.ndarray, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.faiss_index.nprobe = min(self.nprobe, self.faiss_index.nlist)
        return super().search(xq, k, metric)


class AdannsIVFStage(_Stage):
    """AdANNS-IVF: lists from k-means at ``cluster_dim``, scanned at ``dim``.

    Parameters
    ----------
    dim : int
        Prefix size scored inside the probed lists (the funnel's first stage size).
    cluster_dim : int
        Prefix size of the k-means clustering, of each vector's list assignment and of the
        query-to-centroid search. Smaller or larger than ``dim``.
    nlist : int, default 1024
    nprobe : int, default 16
    """

    kind = "adanns"

    def __init__(self, dim: int, cluster_dim: int, nlist: int = 1024, nprobe: int = 16):
        self.search_dim = dim
        self.cluster_dim = cluster_dim
        self.nlist = nlist
        self.nprobe = nprobe

    def params(self) -> dict[str, Any]:
        return {"cluster_dim": self.cluster_dim, "nlist": self.nlist, "nprobe": self.nprobe}

    def to_arrays(self) -> dict[str, np.ndarray]:
        faiss = import_faiss()
        return {**super().to_arrays(), "centroids": faiss.serialize_index(self.centroids)}

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> AdannsIVFStage:
        faiss = import_faiss()
        super().from_arrays(arrays)
        self.centroids = faiss.deserialize_index(np.ascontiguousarray(arrays["centroids"]))
        return self

    def _assign(self, rows: RowsFn, start: int, stop: int) -> np.ndarray:
        """The list of each stored row ``start:stop``, shape (stop - start,)."""
        xc = rows(start, stop, self.cluster_dim)  # (n, cluster_dim)
        return self.centroids.search(xc, 1)[1][:, 0]

    def build(self, rows: RowsFn, n: int, metric: str) -> AdannsIVFStage:
        """Cluster at ``cluster_dim``, then list the ``n`` stored rows at ``dim``; returns self."""
        faiss = import_faiss()
        dc, ds = self.cluster_dim, self.search_dim
        nlist = _check_nlist(self.nlist, n)
        sample = _train_sample(n, nlist)
        km = faiss.Kmeans(dc, nlist, niter=20, seed=1234, spherical=metric == "cosine")
        km.train(_gather(rows, sample, dc))
        self.centroids = faiss.IndexFlatL2(dc) if metric == "l2" else faiss.IndexFlatIP(dc)
        self.centroids.add(km.centroids)
        # the IVF structure at size ds needs centroids of that size: the lists' means at ds
        assign = np.concatenate(
            [self._assign(rows, s, min(n, s + _CHUNK)) for s in range(0, n, _CHUNK)]
        )
        sums = np.zeros((nlist, ds), dtype=np.float64)
        for s in range(0, n, _CHUNK):
            np.add.at(sums, assign[s : s + _CHUNK], rows(s, min(n, s + _CHUNK), ds))
        means = (sums / np.maximum(np.bincount(assign, minlength=nlist), 1)[:, None]).astype(
            np.float32
        )
        quantizer = faiss.IndexFlatL2(ds) if metric == "l2" else faiss.IndexFlatIP(ds)
        quantizer.add(means)
        ivf = faiss.IndexIVFFlat(quantizer, ds, nlist, _faiss_metric(faiss, metric))
        ivf.own_fields = True
        quantizer.this.disown()
        ivf.is_trained = True
        self.faiss_index = ivf
        self._add_assigned(rows, 0, n, assign)
        return self

    def _add_assigned(self, rows: RowsFn, start: int, stop: int, assign: np.ndarray) -> None:
        ivf_tools = require("faiss.contrib.ivf_tools", "approximate search")
        for s in range(start, stop, _CHUNK):
            e = min(stop, s + _CHUNK)
            ids = np.arange(s, e, dtype=np.int64)
            a = np.ascontiguousarray(assign[s - start : e - start], dtype=np.int64)
            ivf_tools.add_preassigned(self.faiss_index, rows(s, e, self.search_dim), a, ids)

    def add(self, rows: RowsFn, start: int, stop: int, metric: str) -> None:
        self._add_assigned(rows, start, stop, self._assign(rows, start, stop))

    def search(self, xq: np.ndarray, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
        nprobe = min(self.nprobe, self.faiss_index.nlist)
        self.faiss_index.nprobe = nprobe
        qc = _queries(xq, self.cluster_dim, metric)
        coarse_d, lists = self.centroids.search(qc, nprobe)  # query-to-centroid at cluster_dim
        q = _queries(xq, self.search_dim, metric)
        D, Ipos = self.faiss_index.search_preassigned(q, k, lists, coarse_d)
        return _to_scores(q, D, Ipos, metric)


def make_ann(kind: str, dim: int, d: int, **params: Any) -> _Stage:
    """An unbuilt approximate stage of ``kind`` searching at size ``dim`` of ``d``.

    Every parameter is a positive integer; an unknown one, or another value, raises
    ``ValueError`` naming it and the valid ones.
    """
    if kind not in ANN_KINDS:
        raise ValueError(f"kind must be one of {ANN_KINDS}, got {kind!r}")
    valid = _PARAMS[kind]
    for key, value in params.items():
        if key not in valid:
            raise ValueError(f"{kind} has no setting {key!r}; its settings: {', '.join(valid)}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{kind} setting {key} must be a positive integer, got {value!r}")
    import_faiss()
    if kind == "hnsw":
        return HNSWStage(dim, **params)
    if kind == "ivf":
        return IVFStage(dim, **params)
    if kind == "ivfpq":
        params.setdefault("pq_m", max(1, dim // 4) if dim % 4 == 0 else 1)
        return IVFStage(dim, **params)
    if "cluster_dim" not in params:
        raise ValueError("kind='adanns' needs cluster_dim, the prefix size that builds the lists")
    params["cluster_dim"] = validate_dim(params["cluster_dim"], d, "cluster_dim")
    return AdannsIVFStage(dim, **params)
