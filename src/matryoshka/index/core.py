"""``MatryoshkaIndex``: store each vector once, search at any prefix size, or through a funnel.

A Matryoshka embedding's every prefix ``x[:m]`` is an embedding. The index keeps the full vectors
once (see :mod:`matryoshka.index.storage` for the column panels and the four precisions) and

- ``search(xq, k, dim=m)`` scores only the first ``m`` columns;
- ``search(xq, funnel=[(32, 400), (128, 50), (512, 10)])`` keeps the best 400 at size 32, reranks
  those at size 128 and keeps 50, reranks those at 512 and returns 10 (Kusupati et al., 2022,
  "Matryoshka Representation Learning", https://arxiv.org/abs/2205.13147, section 4.3);
- ``build_ann(...)`` then ``search(..., ann=True)`` replaces the exact first stage with a faiss
  HNSW, IVF, IVF-PQ or AdANNS-IVF structure built on a prefix.

Metrics: ``cosine`` renormalises each prefix before scoring (a unit vector's prefix is not a unit
vector, so the cosine at size ``m`` is that of the two prefixes); ``ip`` is the raw inner product of
the prefixes; ``l2`` the squared Euclidean distance between them (smaller is better, ``D``
ascending). For cosine and ip, ``D`` is descending.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matryoshka._io import atomic_dir, resolve_dir, sha256_file
from matryoshka.dims import validate_dim
from matryoshka.index.exact import METRICS, check_matrix, finish, prepare_queries, stream_topk
from matryoshka.index.storage import PRECISIONS, Storage

__all__ = ["MatryoshkaIndex", "check_funnel", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FORMAT = "matryoshka-index"
_EPS = 1e-12


def check_funnel(funnel: Sequence[Sequence[int]], d: int) -> list[tuple[int, int]]:
    """Validate a funnel ``[(m1, k1), (m2, k2), ...]`` and return it as a list of int pairs.

    Sizes must not decrease and be at most ``d``; shortlist lengths positive and not increasing
    (a later stage keeps at most what the one before handed it). A repeated size is useful when
    the last stage reranks quantised codes from a float copy (``rerank="float16"``).
    """
    if isinstance(funnel, (str, bytes)) or not isinstance(funnel, Sequence) or len(funnel) == 0:
        raise ValueError(f"funnel must be a non-empty list of (dim, k) stages, got {funnel!r}")
    stages = []
    for st in funnel:
        if isinstance(st, (str, bytes)) or not isinstance(st, Sequence) or len(st) != 2:
            raise ValueError(f"each funnel stage must be a (dim, k) pair, got {st!r} in {funnel!r}")
        m, k = st
        for v, what in ((m, "dim"), (k, "k")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"funnel stage {what} must be an integer, got {v!r} in {funnel!r}")
        if not 1 <= m <= d:
            raise ValueError(f"funnel sizes must be between 1 and d={d}, got {m} in {funnel!r}")
        if k < 1:
            raise ValueError(f"funnel shortlist lengths must be positive, got {k} in {funnel!r}")
        stages.append((int(m), int(k)))
    for (m1, k1), (m2, k2) in zip(stages, stages[1:], strict=False):
        if m2 < m1:
            raise ValueError(f"funnel sizes must not decrease, got {m2} after {m1}")
        if k2 > k1:
            raise ValueError(
                f"funnel shortlists cannot grow: stage ({m2}, {k2}) keeps more than the "
                f"{k1} candidates the stage before handed it"
            )
    return stages


class MatryoshkaIndex:
    """An index of Matryoshka embeddings that stores each vector once and searches any prefix.

    Parameters
    ----------
    d : int
        Full embedding size; every added vector has ``d`` columns.
    metric : {"cosine", "ip", "l2"}, default "cosine"
        ``cosine`` renormalises each prefix; ``ip`` raw inner product; ``l2`` squared distance.
    precision : {"float32", "float16", "int8", "binary"}, default "float32"
        How vectors are stored. ``int8`` and ``binary`` learn per-dimension parameters from the
        first ``add`` and score float32 queries against the decoded codes.
    rerank : {None, "float16", "float32"}, default None
        For ``int8`` or ``binary``: also keep a float copy that only the last stage of a funnel
        (of two or more stages, or after an approximate first stage) reads, for its shortlist
        alone, so the final ranking is by float scores. After :meth:`load` it stays on disk
        (memory-mapped) and is read a few rows per query. ``None`` stores each vector once and
        the last stage scores the decoded codes.

    Attributes
    ----------
    ann_ : object or None
        The approximate first stage built by :meth:`build_ann`.

    Examples
    --------
    >>> index = MatryoshkaIndex(64, metric="cosine")
    >>> index.add(np.random.default_rng(0).standard_normal((1000, 64), dtype=np.float32))
    MatryoshkaIndex(d=64, metric='cosine', precision='float32', count=1000)
    >>> D, I = index.search(np.ones((2, 64), np.float32), funnel=[(16, 100), (64, 5)])
    >>> I.shape
    (2, 5)
    """

    def __init__(
        self, d: int, metric: str = "cosine", precision: str = "float32", rerank: str | None = None
    ) -> None:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"d must be a positive integer, got d={d!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if rerank not in (None, "float16", "float32"):
            raise ValueError(f"rerank must be None, 'float16' or 'float32', got {rerank!r}")
        if rerank is not None and precision not in ("int8", "binary"):
            raise ValueError(
                f"rerank={rerank!r} is for quantised precisions (int8, binary); "
                f"precision={precision!r} already reranks in float"
            )
        self.d = int(d)
        self.metric = metric
        self.precision = precision
        self.rerank = rerank
        self._store = Storage(self.d, precision)
        self._float = Storage(self.d, rerank) if rerank else None  # the last stage's float copy
        self._ids: np.ndarray | None = None  # None: the id of a row is its position
        self._next_id = 0
        # (store, m) -> (N,) 1/|x[:m]| (cosine) or |x[:m]|^2 (l2)
        self._norms: dict[tuple[str, int], np.ndarray] = {}
        self.ann_: Any = None

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self._store)

    @property
    def ntotal(self) -> int:
        """Number of stored vectors (faiss's name for ``len(index)``)."""
        return len(self._store)

    @property
    def ids(self) -> np.ndarray:
        """The id of every stored row, shape (N,), int64."""
        if self._ids is None:
            return np.arange(len(self), dtype=np.int64)
        return self._ids

    @property
    def nbytes(self) -> int:
        """Bytes taken by the stored codes (ids and parameters not counted)."""
        return self._store.nbytes

    def __repr__(self) -> str:
        extra = f", rerank={self.rerank!r}" if self.rerank else ""
        return (
            f"MatryoshkaIndex(d={self.d}, metric={self.metric!r}, "
            f"precision={self.precision!r}{extra}, count={len(self)})"
        )

    # ------------------------------------------------------------------ writing
    def add(self, xb: np.ndarray, ids: np.ndarray | Sequence[int] | None = None) -> MatryoshkaIndex:
        """Append vectors.

        Parameters
        ----------
        xb : ndarray of shape (n, d)
            Vectors at full size; NaN or infinite values are refused.
        ids : array-like of shape (n,), optional
            Non-negative, unique int64 ids; default the next ``n`` integers.

        Returns
        -------
        self

        Notes
        -----
        Adding to a memory-mapped index (from :meth:`load`) copies its vectors into memory; for
        an index larger than RAM, build it in one process and save it.
        """
        xb = check_matrix(xb, "xb")
        if xb.shape[1] != self.d:
            raise ValueError(f"xb has {xb.shape[1]} columns but the index holds d={self.d}")
        n = xb.shape[0]
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            new_ids = np.asarray(ids)
            if new_ids.shape != (n,):
                raise ValueError(f"ids must have shape ({n},) to match xb, got {new_ids.shape}")
            if n and not np.issubdtype(new_ids.dtype, np.integer):
                raise ValueError(f"ids must be integers, got dtype {new_ids.dtype}")
            new_ids = new_ids.astype(np.int64)
            if n and new_ids.min() < 0:
                raise ValueError(
                    f"ids must be non-negative (-1 marks 'no result'), got {new_ids.min()}"
                )
            uniq, counts = np.unique(new_ids, return_counts=True)
            if (counts > 1).any():
                raise ValueError(f"ids must be unique, got {uniq[counts > 1][0]} more than once")
            clash = np.isin(new_ids, self.ids)
            if clash.any():
                raise ValueError(f"id {new_ids[clash][0]} is already in the index")
        if n == 0:
            return self
        if self._ids is None and not np.array_equal(
            new_ids, np.arange(len(self), len(self) + n, dtype=np.int64)
        ):
            self._ids = self.ids  # ids stop being the positions: keep them explicitly
        self._store.append(xb.astype(np.float32, copy=False))
        if self._float is not None:
            self._float.append(xb.astype(np.float32, copy=False))
        if self._ids is not None:
            self._ids = np.concatenate([self._ids, new_ids])
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._norms.clear()
        if self.ann_ is not None:
            self.ann_.add(self, len(self) - n, len(self))
        return self

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove the vectors with these ids; ids not in the index are ignored.

        A memory-mapped index is loaded into memory. An approximate first stage is dropped
        (call :meth:`build_ann` again).

        Returns
        -------
        int
            How many vectors were removed.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        gone = np.isin(self.ids, ids)
        count = int(gone.sum())
        if count == 0:
            return 0
        self._ids = self.ids[~gone]
        self._store.keep(~gone)
        if self._float is not None:
            self._float.keep(~gone)
        self._norms.clear()
        self.ann_ = None
        return count

    def reconstruct(self, ids: np.ndarray | Sequence[int], dim: int | None = None) -> np.ndarray:
        """The stored vectors (decoded to float32) of these ids, shape (n, dim or d)."""
        m = self.d if dim is None else validate_dim(dim, self.d, "dim")
        return self._store.take(self._positions(ids), m)

    def _positions(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._ids is None:
            pos = ids.copy()
            bad = (pos < 0) | (pos >= len(self))
        else:
            order = np.argsort(self._ids)
            j = np.searchsorted(self._ids, ids, sorter=order)
            j = np.minimum(j, len(order) - 1) if len(order) else j
            pos = order[j] if len(order) else j
            bad = self._ids[pos] != ids if len(order) else np.ones(len(ids), bool)
        if bad.any():
            raise KeyError(f"id {ids[bad][0]} is not in the index")
        return pos

    # ------------------------------------------------------------------ scoring helpers
    def _norm(self, m: int, store: Storage | None = None) -> np.ndarray:
        """(N,) float32: ``1 / |x[:m]|`` for cosine (0 for zero vectors), ``|x[:m]|^2`` for l2."""
        store = self._store if store is None else store
        key = (store.precision, m)
        if key not in self._norms:
            n = len(self)
            out = np.empty(n, dtype=np.float32)
            for start in range(0, n, 65536):
                b = store.rows(start, min(n, start + 65536), m)
                sq = np.einsum("ij,ij->i", b, b)
                if self.metric == "cosine":
                    nrm = np.sqrt(sq)
                    out[start : start + len(b)] = np.where(nrm > _EPS, 1 / np.maximum(nrm, _EPS), 0)
                else:
                    out[start : start + len(b)] = sq
            self._norms[key] = out
        return self._norms[key]

    def _sources(self, m: int, block_size: int):
        """Block readers for :func:`stream_topk` over the stored prefix of size ``m``."""
        norm = self._norm(m) if self.metric != "ip" else None
        store = self._store
        if m <= store.width(0) and self.precision == "float32" and self.metric == "ip":
            panel = torch.from_numpy(store.panels[0])  # (N, 32): the first panel, read in place

            def rows(start: int, stop: int):
                return panel[start:stop, :m], None, None

            def take(pos: np.ndarray):
                return panel.index_select(0, torch.from_numpy(pos))[:, :m], None, None

            return rows, take

        # l2 appends the column -|b|^2 to each row (queries get a column of ones), so the one
        # product gives 2 q.b - |b|^2 without another pass over the scores
        width = m + 1 if self.metric == "l2" else m
        buf = np.empty((block_size, width), dtype=np.float32)

        def prep(b: np.ndarray, nrm: np.ndarray | None):
            if self.metric == "cosine":
                b *= nrm[:, None]
            elif self.metric == "l2":
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

    def _exact_stage(self, xq: np.ndarray, m: int, k: int, block_size: int):
        """Positions (nq, k') and scores of the best ``k`` at size ``m`` over every stored row."""
        q, _ = prepare_queries(xq, m, self.metric)
        if self.metric == "l2":
            q = torch.cat([q, torch.ones(len(q), 1)], dim=1)  # (nq, m + 1), see _sources
        kk = min(k, len(self))
        rows, take = self._sources(m, block_size)
        return stream_topk(rows, take, len(self), q, kk, block_size)

    def _rerank(self, xq: np.ndarray, pos: torch.Tensor, m: int, k: int, store: Storage):
        """Rescore candidate positions (nq, kp) (``-1`` for none) at size ``m``; keep the best k.

        Scores panel by panel: each panel's candidate rows are gathered into a reused buffer and
        multiplied with the matching slice of the queries (zero-padded to the panel's width), so
        no concatenated copy of the prefix is made.
        """
        q, _ = prepare_queries(xq, m, self.metric)  # (nq, m)
        nq, kp = pos.shape
        norm = self._norm(m, store) if self.metric != "ip" else None
        kk = min(k, kp)
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
            if self.metric == "cosine":
                s *= torch.from_numpy(norm)[pp].view(c, kp)
            elif self.metric == "l2":
                s -= torch.from_numpy(norm)[pp].view(c, kp)
            s[~valid] = float("-inf")
            top, sel = s.topk(kk, dim=1)
            S[s0 : s0 + c] = top
            P[s0 : s0 + c] = p.gather(1, sel)
        return S, P

    # ------------------------------------------------------------------ searching
    def search(
        self,
        xq: np.ndarray,
        k: int | None = None,
        dim: int | None = None,
        funnel: Sequence[Sequence[int]] | None = None,
        ann: bool = False,
        block_size: int = 8192,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search at one size, or through a funnel of sizes.

        Parameters
        ----------
        xq : ndarray of shape (nq, d') with ``max size <= d' <= d``
            Queries; only the first columns a stage needs are read.
        k : int, optional
            Results per query. With a funnel it defaults to (and must equal) the last stage's k.
        dim : int, optional
            Search at this prefix size (default ``d``). Not with ``funnel``.
        funnel : list of (dim, k), optional
            Stages ``[(m1, k1), (m2, k2), ...]``: sizes not decreasing, shortlists not increasing.
        ann : bool, default False
            Take the first stage from the structure built by :meth:`build_ann`; its search size
            must be the first stage's size.
        block_size : int, default 8192
            Database rows scored at a time by exact stages.

        Returns
        -------
        D : ndarray of shape (nq, k), float32
            Scores at the last stage's size, best first: similarities for cosine and ip (``-inf``
            padding), squared distances for l2 (``+inf`` padding).
        I : ndarray of shape (nq, k), int64
            Ids, ``-1`` where fewer than ``k`` vectors exist.
        """
        if funnel is not None:
            if dim is not None:
                raise ValueError("give either dim or funnel, not both")
            stages = check_funnel(funnel, self.d)
            if k is not None and k != stages[-1][1]:
                raise ValueError(
                    f"k={k} differs from the funnel's last shortlist {stages[-1][1]}; "
                    "the last stage's k is what is returned"
                )
        else:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"k must be a positive integer, got k={k!r}")
            m = self.d if dim is None else validate_dim(dim, self.d, "dim")
            stages = [(m, int(k))]
        k_out = stages[-1][1]
        xq = check_matrix(xq, "xq")
        top = stages[-1][0]
        if not top <= xq.shape[1] <= self.d:
            raise ValueError(
                f"queries have {xq.shape[1]} columns; this search needs between {top} "
                f"(its largest size) and d={self.d}"
            )
        xq = xq.astype(np.float32, copy=False)
        nq = xq.shape[0]
        if len(self) == 0 or nq == 0:
            return finish(
                torch.empty(nq, 0), torch.empty(nq, 0, dtype=torch.int64), k_out, self.metric
            )
        m1, k1 = stages[0]
        if ann:
            if self.ann_ is None:
                raise ValueError("ann=True but no approximate first stage: call build_ann first")
            if self.ann_.search_dim != m1:
                raise ValueError(
                    f"the approximate first stage searches at size {self.ann_.search_dim}, "
                    f"but the funnel's first stage is at size {m1}"
                )
            S, P = self.ann_.search(self, xq, min(k1, len(self)))
        else:
            S, P = self._exact_stage(xq, m1, k1, block_size)
        for i, (m, kk) in enumerate(stages[1:], start=2):
            last = i == len(stages) and self._float is not None
            S, P = self._rerank(xq, P, m, kk, self._float if last else self._store)
        sq = None
        if self.metric == "l2":
            sq = torch.from_numpy(np.einsum("ij,ij->i", xq[:, :top], xq[:, :top]))
        D, I = finish(S, P, k_out, self.metric, sq)  # noqa: E741
        if self._ids is not None:
            I = np.where(I >= 0, self._ids[np.maximum(I, 0)], -1)  # noqa: E741
        return D, I

    # ------------------------------------------------------------------ approximate first stage
    def build_ann(self, kind: str, dim: int, **params: Any) -> MatryoshkaIndex:
        """Build an approximate first stage on a prefix with faiss.

        Parameters
        ----------
        kind : {"hnsw", "ivf", "ivfpq", "adanns"}
            ``hnsw`` (params ``M``, ``ef_construction``, ``ef_search``), ``ivf`` (``nlist``,
            ``nprobe``), ``ivfpq`` (``nlist``, ``nprobe``, ``pq_m``, ``nbits``), ``adanns``
            (AdANNS-IVF: ``cluster_dim`` for the clustering and the query-to-centroid step,
            ``dim`` for scoring inside the probed lists; ``nlist``, ``nprobe``).
        dim : int
            Size the structure searches at (the funnel's first stage size).

        Returns
        -------
        self
        """
        from matryoshka.index.ann import make_ann

        if len(self) == 0:
            raise ValueError("add vectors before build_ann")
        m = validate_dim(dim, self.d, "dim")
        self.ann_ = make_ann(kind, m, self.d, **params).build(self)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to a folder, atomically.

        The folder holds ``manifest.json`` (format version, d, metric, precision, count, every
        file's size and sha256) and ``.npy`` arrays: one per column panel, the quantiser's
        parameters and the ids when they are not ``0..N-1``. It is built beside ``path`` and
        renamed into place, so a crash leaves the previous index or the new one. An approximate
        first stage built by :meth:`build_ann` is saved too, in faiss's own binary format
        (``ann_*.npy`` of bytes, checksummed like the rest).

        Returns
        -------
        Path
            ``path``.
        """
        path = Path(path)
        with atomic_dir(path) as tmp:
            arrays: dict[str, np.ndarray] = {
                f"panel_{i}.npy": p for i, p in enumerate(self._store.panels)
            }
            if self._store.params is not None:
                arrays["params.npy"] = self._store.params
            if self._float is not None:
                arrays.update({f"rerank_{i}.npy": p for i, p in enumerate(self._float.panels)})
            if self._ids is not None:
                arrays["ids.npy"] = self._ids
            ann = None
            if self.ann_ is not None:
                ann = {"kind": self.ann_.kind, "dim": self.ann_.search_dim, **self.ann_.params()}
                arrays.update({f"ann_{k}.npy": v for k, v in self.ann_.to_arrays().items()})
            files = {}
            for name, arr in arrays.items():
                np.save(tmp / name, np.ascontiguousarray(arr), allow_pickle=False)
                files[name] = {
                    "bytes": (tmp / name).stat().st_size,
                    "sha256": sha256_file(tmp / name),
                    "shape": list(arr.shape),
                    "dtype": str(arr.dtype),
                }
            manifest = {
                "format": _FORMAT,
                "format_version": FORMAT_VERSION,
                "d": self.d,
                "metric": self.metric,
                "precision": self.precision,
                "rerank": self.rerank,
                "count": len(self),
                "next_id": self._next_id,
                "panels": [list(b) for b in self._store.bounds],
                "ann": ann,
                "files": files,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, mmap: bool = True, verify: bool = True
    ) -> MatryoshkaIndex:
        """Open an index written by :meth:`save`.

        Parameters
        ----------
        path : path-like
            The index folder (if a crash interrupted a save, the previous version is found).
        mmap : bool, default True
            Memory-map the arrays instead of reading them: searches read only the panels they
            need, and an index larger than RAM works.
        verify : bool, default True
            Check every file's sha256 against the manifest (reads each file once).

        Raises
        ------
        ValueError
            The folder is not an index, its format version is unknown, or a file is missing,
            truncated, corrupt or does not match the manifest. Nothing is unpickled.
        """
        want = Path(path)
        root = resolve_dir(want)
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise ValueError(f"{want} is not a matryoshka index: no manifest.json in it")
        try:
            man = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{mpath} is corrupt: not valid JSON ({e})") from None
        if not isinstance(man, dict) or man.get("format") != _FORMAT:
            raise ValueError(f"{mpath} is not a matryoshka index manifest")
        if man.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{want} has index format version {man.get('format_version')!r}; this version of "
                f"matryoshka reads version {FORMAT_VERSION}"
            )
        try:
            index = cls(int(man["d"]), man["metric"], man["precision"], man.get("rerank"))
            count, files = int(man["count"]), dict(man["files"])
            index._next_id = int(man["next_id"])
            bounds = [tuple(b) for b in man["panels"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{mpath} is corrupt or from another version: {e}") from None
        if bounds != index._store.bounds:
            raise ValueError(f"{mpath} lists panels {bounds}, expected {index._store.bounds}")

        def read(name: str) -> np.ndarray:
            info = files.get(name)
            f = root / name
            if info is None or not f.is_file():
                raise ValueError(f"index {want} is incomplete: {name} is missing")
            if f.stat().st_size != info["bytes"]:
                raise ValueError(
                    f"index {want} is corrupt: {name} has {f.stat().st_size} bytes, "
                    f"the manifest says {info['bytes']}"
                )
            if verify and sha256_file(f) != info["sha256"]:
                raise ValueError(f"index {want} is corrupt: {name} fails its sha256 checksum")
            try:
                # copy-on-write maps: writable views for torch, and nothing is ever written back
                arr = np.load(f, mmap_mode="c" if mmap else None, allow_pickle=False)
            except ValueError as e:
                raise ValueError(f"index {want} is corrupt: {name} cannot be read ({e})") from None
            if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                raise ValueError(
                    f"index {want} is corrupt: {name} holds {arr.dtype} {arr.shape}, "
                    f"the manifest says {info['dtype']} {tuple(info['shape'])}"
                )
            return arr

        store = index._store
        panels = [read(f"panel_{i}.npy") for i in range(len(bounds))]
        for p, empty in zip(panels, store.panels, strict=True):
            if p.dtype != empty.dtype or p.shape != (count, empty.shape[1]):
                raise ValueError(
                    f"index {want} does not match its manifest: a panel holds {p.dtype} "
                    f"{p.shape}, expected {empty.dtype} {(count, empty.shape[1])}"
                )
        store.panels = panels
        if index._float is not None:
            fl = [read(f"rerank_{i}.npy") for i in range(len(bounds))]
            for p, empty in zip(fl, index._float.panels, strict=True):
                if p.dtype != empty.dtype or p.shape != (count, empty.shape[1]):
                    raise ValueError(
                        f"index {want} does not match its manifest: rerank copy {p.shape}"
                    )
            index._float.panels = fl
        if index.precision in ("int8", "binary"):
            params = np.asarray(read("params.npy"))
            if params.shape != (2, index.d) or params.dtype != np.float32:
                raise ValueError(f"index {want}: params.npy has shape {params.shape}")
            store.params = params
        if "ids.npy" in files:
            ids = np.asarray(read("ids.npy"))
            if ids.shape != (count,) or ids.dtype != np.int64:
                raise ValueError(
                    f"index {want}: ids.npy has shape {ids.shape}, expected ({count},)"
                )
            index._ids = ids
        ann = man.get("ann")
        if ann:
            from matryoshka.index.ann import make_ann

            try:
                params = {k: v for k, v in ann.items() if k not in ("kind", "dim")}
                stage = make_ann(ann["kind"], int(ann["dim"]), index.d, **params)
            except ImportError:
                warnings.warn(
                    f"{want} holds an approximate first stage ({ann['kind']}) that needs faiss: "
                    "pip install 'matryoshka[index]'; loading the index without it",
                    stacklevel=2,
                )
                return index
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{mpath} describes an unknown approximate stage: {e}") from None
            names = [n for n in files if n.startswith("ann_")]
            arrays = {n[4:-4]: np.asarray(read(n)) for n in names}
            try:
                index.ann_ = stage.from_arrays(arrays)
            except (KeyError, RuntimeError) as e:
                raise ValueError(
                    f"index {want}: the approximate stage cannot be read: {e}"
                ) from None
        return index
