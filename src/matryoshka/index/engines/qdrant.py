"""Qdrant back end: named vectors per stored size, the funnel as one nested ``prefetch`` query.

Each point holds the full vector (named ``full``) and one named vector per prefix size (``m64``
for the first 64 dimensions): the prefix vectors are extra copies inside the engine. A funnel
``[(64, 400), (128, 50), (512, 10)]`` becomes one request that Qdrant executes itself: the
innermost prefetch takes the 400 nearest by ``m64``, the next rescored those by ``m128`` and
keeps 50, and the query rescored those by ``full`` and returns 10. For cosine Qdrant normalises
each named vector on its own, so the score at size m is the cosine of the two prefixes, as in
:class:`MatryoshkaIndex`; ``l2`` scores (Qdrant's Euclidean distance) are squared on return.

Two ways to reach the engine, one class:

- a local folder: Qdrant Edge (``qdrant-edge-py``), the Qdrant engine embedded in this process;
  the collection is the shard folder ``<path>/<collection>``;
- an address ``http(s)://host:6333``: a Qdrant server or cluster through ``qdrant-client``
  (``":memory:"`` gives the client's own local mode, which runs the same requests in Python).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from matryoshka._optional import require
from matryoshka.index.engines.base import EngineError, EngineIndex, Layout, check_collection

__all__ = ["QdrantIndex"]

_DISTANCES = {"cosine": "Cosine", "ip": "Dot", "l2": "Euclid"}
_METRICS = {v: k for k, v in _DISTANCES.items()}


def vector_name(m: int, d: int) -> str:
    """The named vector holding size ``m``: ``full`` for ``d``, else ``m<size>``."""
    return "full" if m == d else f"m{m}"


def _layout_of(vectors: dict[str, tuple[int, str]]) -> Layout:
    """A collection's layout from its named vectors ``{name: (size, distance)}``."""
    if "full" not in vectors:
        raise EngineError(
            f"this Qdrant collection has no 'full' vector (it has {sorted(vectors)}): "
            "it was not written by matryoshka"
        )
    d, distance = vectors["full"]
    sizes = sorted(size for name, (size, _) in vectors.items() if name == vector_name(size, d))
    return Layout(d, _METRICS[distance], tuple(sizes))


class _Edge:
    """Qdrant Edge: one shard folder per collection, queried in this process."""

    def __init__(self, folder: Path, **config: Any) -> None:
        self.q = require("qdrant_edge", "the embedded Qdrant back end", extra="qdrant")
        self.folder, self.config, self.shard = folder, config, None
        if (folder / "edge_config.json").exists():
            try:
                self.shard = self.q.EdgeShard.load(str(folder))
            except Exception as e:  # qdrant_edge raises plain Exceptions
                busy = "WouldBlock" in str(e)
                why = "it is open elsewhere (close the other QdrantIndex or process)" if busy else e
                raise EngineError(f"cannot open the Qdrant shard {folder}: {why}") from None

    def layout(self) -> Layout | None:
        if self.shard is None:
            return None
        raw = json.loads((self.folder / "edge_config.json").read_text())["vectors"]
        return _layout_of({n: (v["size"], v["distance"]) for n, v in raw.items()})

    def create(self, layout: Layout, graphs: set[int]) -> None:
        q = self.q
        dist = getattr(q.Distance, _DISTANCES[layout.metric])

        def hnsw(links: int) -> Any:
            return q.HnswIndexConfig(
                m=links,
                ef_construct=self.config.get("ef_construct", 100),
                full_scan_threshold=self.config.get("full_scan_threshold", 10_000),
            )

        vectors = {vector_name(m, layout.d): q.EdgeVectorParams(
                       size=m, distance=dist, hnsw_config=None if m in graphs else hnsw(0))
                   for m in layout.sizes}  # fmt: skip
        threshold = self.config.get("indexing_threshold")  # KB of vectors before a graph
        optimizers = q.EdgeOptimizersConfig(indexing_threshold=threshold) if threshold else None
        links = self.config.get("hnsw_m", 16)
        cfg = q.EdgeConfig(vectors=vectors, hnsw_config=hnsw(links), optimizers=optimizers)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard = q.EdgeShard.create(str(self.folder), cfg)

    def upsert(self, ids: np.ndarray, parts: dict[str, np.ndarray], names: list | None) -> None:
        q, cols = self.q, {n: x.tolist() for n, x in parts.items()}
        points = [
            q.Point(
                id=int(i),
                vector={n: c[r] for n, c in cols.items()},
                payload=None if names is None else {"name": names[r]},
            )  # fmt: skip
            for r, i in enumerate(ids.tolist())
        ]
        self.shard.update(q.UpdateOperation.upsert_points(points))

    def retrieve(self, ids: np.ndarray, payload: bool) -> dict[int, Any]:
        got = self.shard.retrieve([int(i) for i in ids], with_payload=payload, with_vector=False)
        return {int(r.id): r.payload for r in got}

    def count(self) -> int:
        return int(self.shard.count(self.q.CountRequest(exact=True)))

    def query(self, xq: np.ndarray, stages: list, d: int, exact: bool, ef: int | None) -> list:
        q = self.q
        params = q.SearchParams(exact=exact, hnsw_ef=ef)

        def near(m: int, x: np.ndarray) -> Any:
            return q.Query.Nearest(x[:m].tolist(), using=vector_name(m, d))

        requests = []
        for x in xq:
            inner = None
            for m, k in stages[:-1]:
                inner = [q.Prefetch(limit=k, query=near(m, x), prefetches=inner, params=params)]
            m, k = stages[-1]
            requests.append(q.QueryRequest(limit=k, query=near(m, x), prefetches=inner,
                                           params=params, with_payload=False))  # fmt: skip
        found = self.shard.query_batch(q.QueryBatchRequest(requests))
        return [([int(p.id) for p in pts], [p.score for p in pts]) for pts in found]

    def optimize(self) -> None:
        self.shard.optimize()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None


class _Client:
    """A Qdrant server or cluster (or the client's local mode) through ``qdrant-client``."""

    def __init__(self, target: str, collection: str, **kwargs: Any) -> None:
        client = require("qdrant_client", "the Qdrant back end", extra="qdrant")
        self.m = client.models
        self.name, self.target = collection, target
        if target == ":memory:":
            self.c = client.QdrantClient(location=":memory:", **kwargs)
        else:
            kwargs.setdefault("timeout", 10)
            self.c = client.QdrantClient(url=target, **kwargs)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with connection failures as a clear :class:`EngineError`."""
        try:
            return fn(*args, **kwargs)
        except EngineError:
            raise
        except Exception as e:  # the client raises several transport types
            text = str(e) or type(e).__name__
            if "Connect" in type(e).__name__ or "connect" in text.lower() or "refused" in text:
                raise EngineError(
                    f"cannot reach Qdrant at {self.target} ({what}): is the server running "
                    f"and the address right? ({text})"
                ) from None
            raise EngineError(f"Qdrant at {self.target} refused to {what}: {text}") from None

    def layout(self) -> Layout | None:
        if not self.call("list collections", self.c.collection_exists, self.name):
            return None
        info = self.call("describe the collection", self.c.get_collection, self.name)
        vectors = info.config.params.vectors
        if not isinstance(vectors, dict):
            raise EngineError(f"Qdrant collection {self.name!r} has no named vectors: "
                              "it was not written by matryoshka")  # fmt: skip
        return _layout_of({n: (v.size, v.distance.value) for n, v in vectors.items()})

    def create(self, layout: Layout, graphs: set[int]) -> None:
        m = self.m
        dist = m.Distance(_DISTANCES[layout.metric])
        off = m.HnswConfigDiff(m=0)  # Qdrant's way to store a vector without a graph
        vectors = {vector_name(s, layout.d): m.VectorParams(
                       size=s, distance=dist, hnsw_config=None if s in graphs else off)
                   for s in layout.sizes}  # fmt: skip
        self.call("create the collection", self.c.create_collection, self.name,
                  vectors_config=vectors)  # fmt: skip

    def upsert(self, ids: np.ndarray, parts: dict[str, np.ndarray], names: list | None) -> None:
        cols = {n: x.tolist() for n, x in parts.items()}
        points = [
            self.m.PointStruct(
                id=int(i),
                vector={n: c[r] for n, c in cols.items()},
                payload=None if names is None else {"name": names[r]},
            )  # fmt: skip
            for r, i in enumerate(ids.tolist())
        ]
        self.call("upsert points", self.c.upsert, self.name, points=points, wait=True)

    def retrieve(self, ids: np.ndarray, payload: bool) -> dict[int, Any]:
        got = self.call("retrieve points", self.c.retrieve, self.name, [int(i) for i in ids],
                        with_payload=payload, with_vectors=False)  # fmt: skip
        return {int(r.id): r.payload for r in got}

    def count(self) -> int:
        return int(self.call("count points", self.c.count, self.name, exact=True).count)

    def query(self, xq: np.ndarray, stages: list, d: int, exact: bool, ef: int | None) -> list:
        m = self.m
        params = m.SearchParams(exact=exact, hnsw_ef=ef)
        requests = []
        for x in xq:
            inner = None
            for size, k in stages[:-1]:
                inner = m.Prefetch(query=x[:size].tolist(), using=vector_name(size, d),
                                   limit=k, prefetch=inner, params=params)  # fmt: skip
            size, k = stages[-1]
            requests.append(m.QueryRequest(query=x[:size].tolist(), using=vector_name(size, d),
                                           prefetch=inner, limit=k, params=params))  # fmt: skip
        found = self.call("query", self.c.query_batch_points, self.name, requests=requests)
        return [([int(p.id) for p in r.points], [p.score for p in r.points]) for r in found]

    def optimize(self) -> None:
        """The server builds its indexes in the background; nothing to wait for here."""

    def close(self) -> None:
        self.c.close()


def _transport(target: str, collection: str, options: dict[str, Any]) -> _Edge | _Client:
    """The way to reach ``target``: an address or ``:memory:`` (client), else a folder (Edge)."""
    if not isinstance(target, (str, Path)) or not str(target):
        raise ValueError(f"target must be a folder or an http(s):// address, got {target!r}")
    text = str(target)
    scheme = urlparse(text).scheme
    if text == ":memory:" or scheme in ("http", "https"):
        if scheme and not urlparse(text).hostname:
            raise EngineError(f"{text!r} is not a Qdrant address: write http://host:6333")
        return _Client(text, collection, **options)
    if "://" in text:
        raise EngineError(
            f"{text!r} is not a Qdrant address: give http(s)://host:port for a server, "
            "or a local folder for the embedded engine"
        )
    return _Edge(Path(text) / collection, **options)


class QdrantIndex(EngineIndex):
    """A Matryoshka index in Qdrant: embedded (Qdrant Edge) or a server, same funnels.

    Parameters
    ----------
    target : str or Path
        A local folder (Qdrant Edge keeps the collection in ``<target>/<collection>``), an
        address ``http://host:6333`` of a server or cluster, or ``":memory:"``.
    d, metric, sizes, collection, transform
        See :class:`~matryoshka.index.engines.base.EngineIndex`.
    hnsw_ef : int, optional
        Qdrant's ``hnsw_ef`` for every stage (default: Qdrant's own, at least the limit).
    graphs : list of int, optional
        When creating: the sizes that get an HNSW graph (default: every stored size). A size
        only ever reranked (a funnel's later stages) needs none: Qdrant then stores it
        without one, saving the graph's build time and links; searching it first scans.
    **options
        Edge: ``hnsw_m`` (16), ``ef_construct`` (100), ``full_scan_threshold`` (10,000 KB:
        below it Qdrant scans a segment instead of using its graph), ``indexing_threshold``
        (KB of vectors in a segment before :meth:`optimize` builds its graphs; Qdrant's
        default otherwise); a server: the keyword arguments of ``qdrant_client.QdrantClient``
        (``api_key``, ``timeout``). Qdrant's thresholds count each named vector's kilobytes,
        so a short prefix stays without a graph (and is scanned) long after the full vector
        has one: 55,000 vectors of 16 dims are 3.5 MB, under the default 10 MB. Give
        ``indexing_threshold=1`` to build a graph for every size :meth:`optimize` sees.

    Examples
    --------
    >>> engine = QdrantIndex("qdrant/", d=512, sizes=[64])          # doctest: +SKIP
    >>> engine.add(xb, names=doc_ids)                                # doctest: +SKIP
    >>> D, I = engine.search(xq, funnel=[(64, 200), (512, 10)])      # doctest: +SKIP
    """

    kind = "qdrant"

    def __init__(
        self,
        target: str | Path,
        d: int | None = None,
        metric: str | None = None,
        sizes: Sequence[int] | None = None,
        collection: str = "matryoshka",
        transform: str = "none",
        hnsw_ef: int | None = None,
        graphs: Sequence[int] | None = None,
        **options: Any,
    ) -> None:
        self.target, self.hnsw_ef = str(target), hnsw_ef
        self.graphs = None if graphs is None else {int(m) for m in graphs}
        self._t = _transport(self.target, check_collection(collection), options)
        super().__init__(d, metric, sizes, collection, transform)

    @property
    def where(self) -> str:
        return self.target

    @classmethod
    def bytes_per_vector(
        cls,
        d: int,
        sizes: Sequence[int],
        name_bytes: int = 0,
        hnsw_m: int = 16,
        graphs: int | None = None,
    ) -> dict[str, float]:
        """What Qdrant stores per point: float32 copies of every size, id, payload, graphs.

        ``vectors``: 4 bytes x (d + each prefix size); ``ids``: 8 (the id tracker's mapping,
        plus its version, 8 more); ``names``: the name's bytes plus about 16 of payload
        framing; ``index``: each HNSW graph's level-0 links, 2 x ``hnsw_m`` x 4 bytes per
        named vector with a graph (``graphs``, default all; Qdrant's own estimate; upper
        levels add a few percent).
        """
        stored = sorted(set(sizes) | {d})
        out = {
            "vectors": 4.0 * sum(stored),
            "ids": 16.0,
            "names": float(name_bytes + 16) if name_bytes else 0.0,
            "index": 8.0 * hnsw_m * (len(stored) if graphs is None else graphs),
        }
        out["total"] = sum(out.values())
        return out

    def _describe(self) -> Layout | None:
        return self._t.layout()

    def _create(self, layout: Layout) -> None:
        graphs = set(layout.sizes) if self.graphs is None else self.graphs
        if not graphs <= set(layout.sizes):
            raise ValueError(f"graphs {sorted(graphs)} must be among the stored sizes "
                             f"{list(layout.sizes)}")  # fmt: skip
        self._t.create(layout, graphs)

    def _upsert(self, ids: np.ndarray, xb: np.ndarray, names: list[str] | None) -> None:
        parts = {vector_name(m, self.d): xb[:, :m] for m in self.sizes}
        self._t.upsert(ids, parts, names)

    def _present(self, ids: np.ndarray) -> np.ndarray:
        found = self._t.retrieve(ids, payload=False)
        return np.fromiter((int(i) in found for i in ids), dtype=bool, count=len(ids))

    def _query(self, xq: np.ndarray, stages: list[tuple[int, int]], exact: bool) -> list:
        return self._t.query(xq, stages, self.d, exact, self.hnsw_ef)

    def _to_distance(self, scores: np.ndarray) -> np.ndarray:
        return np.square(scores) if self.metric == "l2" else scores

    def count(self) -> int:
        return self._t.count()

    def names_of(self, ids: np.ndarray) -> list:
        """The names of ids as search returns them ((nq, k) or (n,)), None for -1 padding."""
        ids = np.asarray(ids)
        wanted = np.unique(ids[ids >= 0])
        found = self._t.retrieve(wanted, payload=True) if len(wanted) else {}
        names = {i: (p or {}).get("name") for i, p in found.items()}
        return np.vectorize(lambda i: names.get(int(i)), otypes=[object])(ids).tolist()

    def optimize(self) -> None:
        """Build the engine's HNSW graphs now (Edge); a server builds them in the background."""
        self._t.optimize()

    def close(self) -> None:
        self._t.close()
