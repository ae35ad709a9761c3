"""What every engine back end shares: the search contract, checks, batching and result padding.

A back end stores each vector's full size and, as extra copies inside the engine, the prefixes a
funnel's stages score at (``sizes``). It implements five hooks (:meth:`EngineIndex._describe`,
``_create``, ``_upsert``, ``_present``, ``_query``) plus ``count``, ``names_of`` and ``close``;
everything a user calls (``add``, ``search``, ``from_index``) lives here, so the three engines
check arguments, batch uploads and pad results the same way :class:`MatryoshkaIndex` does:
``search(xq, k, dim=m)`` or ``search(xq, funnel=[(m1, k1), ..., (mt, k)])`` returns ``(D, I)``
with ``-1`` ids (and ``-inf``, or ``+inf`` for l2, scores) where fewer than ``k`` results exist.
Scores follow the index: cosine and ip similarities, best first; l2 squared distances, ascending.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matryoshka._runtime import progress_bar
from matryoshka.dims import validate_dims
from matryoshka.index.exact import METRICS, check_matrix
from matryoshka.index.funnel import search_stages
from matryoshka.index.ids import MAX_ID, int_ids
from matryoshka.index.vectors import TRANSFORMS, apply_transform

__all__ = [
    "EngineError",
    "EngineIndex",
    "Layout",
    "batches_of",
    "check_collection",
    "index_batches",
]


class EngineError(OSError):
    """The engine refused, could not be reached, or holds a collection that does not match.

    An ``OSError``, like the failed connection it often reports: callers that handle I/O
    failures handle it too, and the command line prints it as one line.
    """


@dataclass(frozen=True)
class Layout:
    """What a collection holds: full size ``d``, ``metric`` and the stored ``sizes`` (with d)."""

    d: int
    metric: str
    sizes: tuple[int, ...]


def batches_of(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of at most ``batch_size`` covering ``0..n``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def index_batches(
    index: Any, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str] | None]]:
    """A :class:`MatryoshkaIndex`'s rows in order: ids (n,), float32 vectors (n, d), names."""
    all_ids = index.ids
    for start, stop in batches_of(len(index), batch_size):
        names = None if index.names is None else [str(v) for v in index.names[start:stop]]
        yield all_ids[start:stop], index.vectors(start, stop), names


def check_collection(name: str) -> str:
    """A collection (table) name: letters, digits and underscores, starting with a letter."""
    if not isinstance(name, str) or not name[:1].isalpha() or not name.replace("_", "").isalnum():
        raise ValueError(
            f"collection must be letters, digits and underscores, starting with a letter; "
            f"got {name!r}"
        )
    return name


class EngineIndex(ABC):
    """A Matryoshka index kept in an existing vector engine, searched with the same funnels.

    Parameters
    ----------
    d : int, optional
        Full embedding size. Required to create a collection; when the collection exists it is
        read from it, and a given ``d`` (or ``metric``, ``sizes``) that differs is an error.
    metric : {"cosine", "ip", "l2"}, optional
        Default ``"cosine"`` for a new collection.
    sizes : list of int, optional
        Prefix sizes stored beside the full vector, one extra copy each: the sizes the funnels'
        stages score at (``d`` itself is always stored). Default ``[d // 4]`` for a new
        collection (``[]`` when ``d < 4``).
    collection : str, default "matryoshka"
        The engine's collection (table) name.
    transform : {"none", "l2", "layer-norm"}, default "none"
        The model's step on the full vector, applied to added vectors and to queries.
    """

    kind = "engine"  # the back end's name, as ``--to`` spells it

    def __init__(
        self,
        d: int | None = None,
        metric: str | None = None,
        sizes: Sequence[int] | None = None,
        collection: str = "matryoshka",
        transform: str = "none",
    ) -> None:
        check_collection(collection)
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if metric is not None and metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.collection = collection
        self.transform = transform
        wanted = None if d is None else self._wanted_layout(d, metric, sizes)
        found = self._describe()
        if found is None:
            if wanted is None:
                raise EngineError(
                    f"{self.kind} has no collection {collection!r} at {self.where}: check the "
                    "name and address, export an index there first (`matryoshka index "
                    "export`), or give d (and metric, sizes) to create it"
                )
            self._create(wanted)
            found = wanted
        elif wanted is not None or metric is not None or sizes is not None:
            self._check_same(found, d, metric, sizes)
        self.layout = found

    # ------------------------------------------------------------------ the hooks
    @property
    @abstractmethod
    def where(self) -> str:
        """Where the engine is (a path or an address), for messages."""

    @abstractmethod
    def _describe(self) -> Layout | None:
        """The existing collection's layout, or None when there is none."""

    @abstractmethod
    def _create(self, layout: Layout) -> None:
        """Create the collection: the full vector, one prefix copy per size, a name payload."""

    @abstractmethod
    def _upsert(self, ids: np.ndarray, xb: np.ndarray, names: list[str] | None) -> None:
        """Insert or replace rows: ids (n,), full vectors (n, d) float32, names or None."""

    @abstractmethod
    def _present(self, ids: np.ndarray) -> np.ndarray:
        """(n,) bool: which of these ids the collection holds."""

    @abstractmethod
    def _query(
        self, xq: np.ndarray, stages: list[tuple[int, int]], exact: bool
    ) -> list[tuple[list[int], list[float]]]:
        """Run the funnel in the engine: per query the result ids and raw scores, best first."""

    @abstractmethod
    def count(self) -> int:
        """Number of stored vectors."""

    @abstractmethod
    def names_of(self, ids: np.ndarray) -> list:
        """The names (payload) of ids as search returns them, None for -1 or unnamed rows."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection or the embedded engine."""

    def _to_distance(self, scores: np.ndarray) -> np.ndarray:
        """Raw engine scores as the index's scores; the default: already the same."""
        return scores

    # ------------------------------------------------------------------ shared
    @property
    def d(self) -> int:
        return self.layout.d

    @property
    def metric(self) -> str:
        return self.layout.metric

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every stored size, ascending, ``d`` last."""
        return self.layout.sizes

    def __len__(self) -> int:
        return self.count()

    def __enter__(self) -> EngineIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.where!r}, collection={self.collection!r}, d={self.d}, "
            f"metric={self.metric!r}, sizes={list(self.sizes)})"
        )

    @staticmethod
    def _wanted_layout(d: int, metric: str | None, sizes: Sequence[int] | None) -> Layout:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"d must be a positive integer, got d={d!r}")
        d = int(d)
        if sizes is None:
            sizes = [d // 4] if d >= 4 else []
        extra = validate_dims(sizes, d, "sizes") if len(sizes) else []
        return Layout(d, metric or "cosine", tuple(sorted(set(extra) | {d})))

    def _check_same(
        self, found: Layout, d: int | None, metric: str | None, sizes: Sequence[int] | None
    ) -> None:
        """An existing collection must match what the caller asked for."""
        where = f"{self.kind} collection {self.collection!r} at {self.where}"
        if d is not None and int(d) != found.d:
            raise EngineError(
                f"dimension mismatch: {where} holds d={found.d} vectors, not d={d}; "
                "use another collection or drop this one"
            )
        if metric is not None and metric != found.metric:
            raise EngineError(f"{where} uses metric {found.metric!r}, not {metric!r}")
        missing = sorted(set(sizes or ()) - set(found.sizes))
        if missing:
            raise EngineError(
                f"{where} stores sizes {list(found.sizes)}, not {missing}; "
                "create a new collection with those sizes"
            )

    def _check_ids(self, ids: Any, n: int) -> np.ndarray:
        if ids is None:
            start = self.count()
            return np.arange(start, start + n, dtype=np.int64)
        raw = np.asarray(ids)
        if raw.shape != (n,):
            raise ValueError(f"ids must have shape ({n},) to match xb, got {raw.shape}")
        new = int_ids(raw)
        if n and (new.min() < 0 or new.max() >= MAX_ID):
            raise ValueError("ids must be non-negative and below 2**62")
        if len(np.unique(new)) != n:
            raise ValueError("ids must be unique within one add")
        return new

    def add(
        self,
        xb: np.ndarray,
        ids: np.ndarray | Sequence[int] | None = None,
        names: Sequence[str] | None = None,
        batch_size: int = 1024,
        skip_present: bool = False,
        progress: bool = False,
    ) -> EngineIndex:
        """Upload vectors (n, d) with ids (n,) (default: ``count()`` onwards) and names.

        A row whose id is already stored is replaced, so adding the same rows twice leaves one
        copy of each. ``skip_present`` checks each batch first and sends only the ids the
        engine lacks (a resumed upload sends only what an interrupted one did not).
        """
        xb = check_matrix(xb, "xb")
        if xb.shape[1] != self.d:
            raise ValueError(
                f"xb has {xb.shape[1]} columns but the {self.kind} collection holds d={self.d}"
            )
        n = xb.shape[0]
        ids = self._check_ids(ids, n)
        if names is not None and len(names) != n:
            raise ValueError(f"names must have length {n} to match xb, got {len(names)}")
        with progress_bar(total=n, desc=f"upload to {self.kind}", unit="vec",
                          disable=not progress) as bar:  # fmt: skip
            for start, stop in batches_of(n, batch_size):
                part = None if names is None else list(names[start:stop])
                self._upload(xb[start:stop], ids[start:stop], part, skip_present)
                bar.update(stop - start)
        return self

    def _upload(
        self,
        xb: np.ndarray,
        ids: np.ndarray,
        names: list[str] | None,
        skip_present: bool,
        transformed: bool = False,
    ) -> None:
        if skip_present:
            keep = ~self._present(ids)
            if not keep.any():
                return
            xb, ids = xb[keep], ids[keep]
            names = None if names is None else [v for v, k in zip(names, keep) if k]
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        if self.transform != "none" and not transformed:
            xb = apply_transform(xb, self.transform)
        self._upsert(ids, xb, names)

    def search(
        self,
        xq: np.ndarray,
        k: int | None = None,
        dim: int | None = None,
        funnel: Sequence[Sequence[int]] | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search at one stored size, or through a funnel the engine runs in one request.

        Parameters
        ----------
        xq : ndarray of shape (nq, d') with largest stage size <= d' <= d
        k, dim, funnel : as :meth:`MatryoshkaIndex.search`; every stage's size must be stored
        exact : bool, default False
            Ask the engine for brute-force scoring in every stage instead of its ANN index.

        Returns
        -------
        D : ndarray of shape (nq, k), float32 (similarities; squared distances for l2)
        I : ndarray of shape (nq, k), int64, ``-1`` padding
        """
        stages = search_stages(k, dim, funnel, self.d)
        missing = sorted({m for m, _ in stages} - set(self.sizes))
        if missing:
            raise ValueError(
                f"the {self.kind} collection stores sizes {list(self.sizes)}; a search at "
                f"{missing} needs a collection created with sizes including them"
            )
        xq = check_matrix(xq, "xq")
        top = stages[-1][0]
        if not top <= xq.shape[1] <= self.d:
            raise ValueError(
                f"queries have {xq.shape[1]} columns; this search needs between {top} "
                f"(its largest size) and d={self.d}"
            )
        if self.transform != "none":
            if xq.shape[1] != self.d:
                raise ValueError(
                    f"transform {self.transform!r} needs full-size (d={self.d}) queries"
                )
            xq = apply_transform(xq, self.transform)
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        k_out = stages[-1][1]
        pad = np.inf if self.metric == "l2" else -np.inf
        D = np.full((len(xq), k_out), pad, dtype=np.float32)
        I = np.full((len(xq), k_out), -1, dtype=np.int64)  # noqa: E741
        if len(xq) == 0:
            return D, I
        for row, (got_ids, got_scores) in enumerate(self._query(xq, stages, exact)):
            n = min(len(got_ids), k_out)
            I[row, :n] = got_ids[:n]
            D[row, :n] = self._to_distance(np.asarray(got_scores[:n], dtype=np.float32))
        return D, I

    @classmethod
    def from_index(
        cls,
        index: Any,
        *args: Any,
        sizes: Sequence[int] | None = None,
        batch_size: int = 1024,
        progress: bool = False,
        **kwargs: Any,
    ) -> EngineIndex:
        """Export a :class:`MatryoshkaIndex` (its ids, names and vectors) into the engine.

        ``args``/``kwargs`` go to the back end's constructor (its address, ``collection``); d,
        metric and transform come from the index. Uploads in batches, skipping ids the
        collection already holds, so an interrupted export resumes where it stopped and a
        second export of the same index adds nothing.
        """
        engine = cls(*args, d=index.d, metric=index.metric, sizes=sizes,
                     transform=index.transform, **kwargs)  # fmt: skip
        engine.add_index(index, batch_size=batch_size, progress=progress)
        return engine

    def add_index(self, index: Any, batch_size: int = 1024, progress: bool = False) -> None:
        """Upload every row of a :class:`MatryoshkaIndex`, skipping ids already stored (each
        batch is looked up first unless the collection started empty).

        The index's rows are decoded to float32 (an int8 or binary index uploads its decoded
        codes) and sent as stored, already through the index's transform.
        """
        if index.d != self.d:
            raise EngineError(f"dimension mismatch: the index holds d={index.d}, the {self.kind} "
                              f"collection d={self.d}")  # fmt: skip
        resuming = self.count() > 0  # an empty collection: no batch needs a look-up first
        with progress_bar(total=len(index), desc=f"export to {self.kind}", unit="vec",
                          disable=not progress) as bar:  # fmt: skip
            for ids, xb, names in index_batches(index, batch_size):
                # an index stores its rows after its transform: they go up as they are
                self._upload(xb, ids, names, skip_present=resuming, transformed=True)
                bar.update(len(ids))
