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

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matryoshka.dims import validate_dim
from matryoshka.index.ann import make_ann
from matryoshka.index.exact import METRICS, check_matrix, finish
from matryoshka.index.funnel import search_stages
from matryoshka.index.ids import check_names, int_ids, new_ids_for, positions_of
from matryoshka.index.manifest import IndexParts, ann_entry, check_files, load_index, save_index
from matryoshka.index.scoring import exact_stage, prefix_norms, rerank
from matryoshka.index.storage import PRECISIONS, Storage
from matryoshka.index.vectors import TRANSFORMS, apply_transform

__all__ = ["MatryoshkaIndex"]


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
    transform : {"none", "l2", "layer-norm"}, default "none"
        A step the embedding model prescribes on the full vector before it is cut to a prefix
        (nomic-embed-text-v1.5: a layer norm). Applied to every added vector before it is
        stored and to every query before it is searched (queries must then be full size).

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
        self,
        d: int,
        metric: str = "cosine",
        precision: str = "float32",
        rerank: str | None = None,
        transform: str = "none",
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
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.d = int(d)
        self.metric = metric
        self.transform = transform
        self.precision = precision
        self.rerank = rerank
        self._store = Storage(self.d, precision)
        self._float = Storage(self.d, rerank) if rerank else None  # the last stage's float copy
        self._ids: np.ndarray | None = None  # None: the id of a row is its position
        self.names: np.ndarray | None = None  # (N,) str: a name per row (a corpus's own ids)
        self._next_id = 0
        # (store, m) -> (N,) 1/|x[:m]| (cosine) or |x[:m]|^2 (l2)
        self._norms: dict[tuple[str, int], np.ndarray] = {}
        self.ann_: Any = None
        self._handles: list = []  # files a memory-mapped load keeps open (see check_files)
        self._where = "in memory"

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
        extra += f", transform={self.transform!r}" if self.transform != "none" else ""
        return (
            f"MatryoshkaIndex(d={self.d}, metric={self.metric!r}, "
            f"precision={self.precision!r}{extra}, count={len(self)})"
        )

    def info(self) -> dict[str, Any]:
        """What the index holds, as plain values (what ``matryoshka index info`` prints).

        The settings, ``count``, ``ids`` (``"positions"`` or ``"explicit"``), ``names``,
        ``next_id``, ``panels``, ``bytes`` of codes (and of the rerank copy) and ``ann``.
        """
        return {
            "d": self.d,
            "metric": self.metric,
            "precision": self.precision,
            "rerank": self.rerank,
            "transform": self.transform,
            "count": len(self),
            "ids": "positions" if self._ids is None else "explicit",
            "names": self.names is not None,
            "next_id": self._next_id,
            "panels": [list(b) for b in self._store.bounds],
            "bytes": self.nbytes,
            "rerank_bytes": 0 if self._float is None else self._float.nbytes,
            "ann": ann_entry(self.ann_),
        }

    # ------------------------------------------------------------------ writing
    def add(
        self,
        xb: np.ndarray,
        ids: np.ndarray | Sequence[int] | None = None,
        names: Sequence[str] | None = None,
    ) -> MatryoshkaIndex:
        """Append vectors.

        Parameters
        ----------
        xb : ndarray of shape (n, d)
            Vectors at full size; NaN or infinite values are refused.
        ids : array-like of shape (n,), optional
            Non-negative, unique int64 ids; default the next ``n`` integers.
        names : sequence of str of length n, optional
            A name per vector (e.g. a corpus's document ids); all adds give names or none do.
            :meth:`names_of` maps search results back to them.

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
        xb = apply_transform(xb, self.transform) if self.transform != "none" else xb
        n = xb.shape[0]
        new_ids = new_ids_for(ids, n, self._next_id, self.ids)
        new_names = check_names(names, n, len(self), self.names is not None)
        if n == 0:
            return self
        if self.precision == "binary" and self._store.params is None and n < 2:
            raise ValueError(
                "binary precision learns each dimension's threshold and spread from the first "
                f"add, which needs at least 2 vectors (got {n}); add more at once"
            )
        if self._ids is None and not np.array_equal(
            new_ids, np.arange(len(self), len(self) + n, dtype=np.int64)
        ):
            self._ids = self.ids  # ids stop being the positions: keep them explicitly
        self._store.append(xb.astype(np.float32, copy=False))
        if self._float is not None:
            self._float.append(xb.astype(np.float32, copy=False))
        if self._ids is not None:
            self._ids = np.concatenate([self._ids, new_ids])
        if new_names is not None:
            old = self.names if self.names is not None else np.empty(0, dtype=str)
            self.names = np.concatenate([old, new_names])
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._norms.clear()
        if self.ann_ is not None:
            self.ann_.add(self._rows, len(self) - n, len(self), self.metric)
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
        ids = int_ids(ids)
        gone = np.isin(self.ids, ids)
        count = int(gone.sum())
        if count == 0:
            return 0
        self._ids = self.ids[~gone]
        if self.names is not None:
            self.names = self.names[~gone]
        self._store.keep(~gone)
        if self._float is not None:
            self._float.keep(~gone)
        self._norms.clear()
        self.ann_ = None
        return count

    def names_of(self, ids: np.ndarray) -> list:
        """The names of ids as search returns them ((nq, k) or (n,)), None for -1 padding."""
        if self.names is None:
            raise ValueError("this index has no names (give names= to add)")
        ids = np.asarray(ids)
        found = ids >= 0
        pos = np.zeros(ids.shape, dtype=np.int64)
        pos[found] = self._positions(ids[found])
        named = np.where(found, self.names[pos], None)
        return named.tolist()

    def reconstruct(self, ids: np.ndarray | Sequence[int], dim: int | None = None) -> np.ndarray:
        """The stored vectors (decoded to float32) of these ids, shape (n, dim or d)."""
        m = self.d if dim is None else validate_dim(dim, self.d, "dim")
        return self._store.take(self._positions(ids), m)

    def vectors(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in stored order (ids ``self.ids[start:stop]``), float32 (n, d)."""
        return self._store.rows(start, stop, self.d)

    def _positions(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        return positions_of(int_ids(ids), self._ids, len(self))

    # ------------------------------------------------------------------ scoring helpers
    def _norm(self, m: int, store: Storage | None = None) -> np.ndarray:
        """(N,) float32: ``1 / |x[:m]|`` for cosine (0 for zero vectors), ``|x[:m]|^2`` for l2."""
        store = self._store if store is None else store
        key = (store.precision, m)
        if key not in self._norms:  # computed once per size, dropped when the vectors change
            self._norms[key] = prefix_norms(store, m, self.metric)
        return self._norms[key]

    def _norm_or_none(self, m: int, store: Storage) -> np.ndarray | None:
        """What the exact stages scale or shift scores by: :meth:`_norm`, or None for ip."""
        return None if self.metric == "ip" else self._norm(m, store)

    def _rows(self, start: int, stop: int, m: int) -> np.ndarray:
        """Stored rows ``start:stop`` at size ``m``, float32 (stop - start, m), unit for cosine.

        The row reader handed to the approximate first stage (``ann.RowsFn``).
        """
        x = self._store.rows(start, stop, m)
        if self.metric == "cosine":
            x *= self._norm(m)[start:stop, None]
        return x

    # ------------------------------------------------------------------ searching
    def search(
        self,
        xq: np.ndarray,
        k: int | None = None,
        dim: int | None = None,
        funnel: Sequence[Sequence[int]] | None = None,
        ann: bool = False,
        block_size: int = 8192,
        timings: list[float] | None = None,
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
        timings : list, optional
            When given, the seconds each stage took are appended to it, one per stage.

        Returns
        -------
        D : ndarray of shape (nq, k), float32
            Scores at the last stage's size, best first: similarities for cosine and ip (``-inf``
            padding), squared distances for l2 (``+inf`` padding).
        I : ndarray of shape (nq, k), int64
            Ids, ``-1`` where fewer than ``k`` vectors exist.
        """
        check_files(self._handles, self._where)  # a mapped file truncated under us: an error
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        stages = search_stages(k, dim, funnel, self.d)
        k_out, top = stages[-1][1], stages[-1][0]
        xq = check_matrix(xq, "xq")
        if not top <= xq.shape[1] <= self.d:
            raise ValueError(
                f"queries have {xq.shape[1]} columns; this search needs between {top} "
                f"(its largest size) and d={self.d}"
            )
        if self.transform != "none":  # the model's step on the full vector, as for the stored
            if xq.shape[1] != self.d:
                raise ValueError(
                    f"transform {self.transform!r} works on full vectors: give queries of "
                    f"d={self.d} columns, not {xq.shape[1]}"
                )
            xq = apply_transform(xq, self.transform)
        xq = xq.astype(np.float32, copy=False)
        nq = xq.shape[0]
        if len(self) == 0 or nq == 0:
            empty = torch.empty(nq, 0)
            return finish(empty, empty.long(), k_out, self.metric)
        clock = [time.perf_counter()]
        S, P = self._first_stage(xq, *stages[0], ann, block_size)
        clock.append(time.perf_counter())
        for i, (m, kk) in enumerate(stages[1:], start=2):
            last = i == len(stages) and self._float is not None
            store = self._float if last else self._store
            S, P = rerank(store, self._norm_or_none(m, store), self.metric, xq, P, m, kk)
            clock.append(time.perf_counter())
        if timings is not None:
            timings.extend(b - a for a, b in zip(clock, clock[1:]))
        sq = None
        if self.metric == "l2":
            sq = torch.from_numpy(np.einsum("ij,ij->i", xq[:, :top], xq[:, :top]))
        D, I = finish(S, P, k_out, self.metric, sq)  # noqa: E741
        if self._ids is not None:
            I = np.where(I >= 0, self._ids[np.maximum(I, 0)], -1)  # noqa: E741
        return D, I

    def _first_stage(
        self, xq: np.ndarray, m: int, k: int, ann: bool, block_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and row positions (nq, k') of the first stage: exact, or approximate."""
        if not ann:
            norm = self._norm_or_none(m, self._store)
            return exact_stage(self._store, norm, self.metric, xq, m, k, block_size)
        if self.ann_ is None:
            raise ValueError("ann=True but no approximate first stage: call build_ann first")
        if self.ann_.search_dim != m:
            raise ValueError(
                f"the approximate first stage searches at size {self.ann_.search_dim}, "
                f"but the funnel's first stage is at size {m}"
            )
        return self.ann_.search(xq, min(k, len(self)), self.metric)

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
        if len(self) == 0:
            raise ValueError("add vectors before build_ann")
        m = validate_dim(dim, self.d, "dim")
        self.ann_ = make_ann(kind, m, self.d, **params).build(self._rows, len(self), self.metric)
        return self

    # ------------------------------------------------------------------ tuning
    def tune(
        self,
        xq_sample: np.ndarray,
        target_recall: float = 0.95,
        k: int = 10,
        ann: bool | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The fastest funnel meeting ``target_recall`` (recall@k) on sample queries (nq, d).

        Tries exact full-size search, funnels of two and three stages from every first size
        and (with :meth:`build_ann` done, or ``ann=True``) funnels from the approximate first
        stage at a few settings of its knob, each measured against exact full-size results on
        ``xq_sample``. :func:`matryoshka.index.tune.tune_funnel` documents ``options`` and the
        returned dict (``funnel``, ``ann``, ``recall``, ``qps``, ...); search with
        ``index.search(xq, funnel=result["funnel"], ann=result["ann"])``.
        """
        from matryoshka.index.tune import tune_funnel

        return tune_funnel(self, xq_sample, target_recall, k, ann, **options)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the index to a folder, atomically.

        The folder holds ``manifest.json`` (format version, d, metric, precision, count, every
        file's size and sha256) and ``.npy`` arrays: one per column panel, the quantiser's
        parameters and the ids when they are not ``0..N-1``. It is built beside ``path`` and
        renamed into place, so a crash leaves the previous index or the new one. An approximate
        first stage built by :meth:`build_ann` is saved too, in faiss's own binary format
        (``ann_*.npy`` of bytes, checksummed like the rest).

        One process writes a folder at a time (a second waits, then gets a clear error), and a
        folder that exists and is not an index is refused unless ``overwrite``, which writes the
        index's files into it and keeps its other entries; a regular file is never replaced.

        Returns
        -------
        Path
            ``path``.
        """
        parts = IndexParts(
            self.d, self.metric, self.precision, self.rerank, next_id=self._next_id,
            store=self._store, rerank_store=self._float, ids=self._ids, ann=self.ann_,
            transform=self.transform, names=self.names,
        )  # fmt: skip
        return save_index(parts, path, overwrite=overwrite)

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
        parts = load_index(path, mmap=mmap, verify=verify)
        index = cls(parts.d, parts.metric, parts.precision, parts.rerank, parts.transform)
        index._store, index._float, index._ids = parts.store, parts.rerank_store, parts.ids
        index._next_id, index.ann_ = parts.next_id, parts.ann
        index._handles, index._where = parts.handles, str(path)
        index.names = parts.names
        return index
