"""Milvus back end: one vector field per stored size; stage one searched by Milvus, later stages
rescored from the stored prefix fields.

A collection holds ``id`` (INT64 primary key, ids as given), ``full`` (FLOAT_VECTOR of size d),
one FLOAT_VECTOR field per prefix size (``m64`` holds the first 64 dimensions: an extra copy
inside the engine, named as Qdrant's named vectors are) and ``name`` (nullable VARCHAR: None for
a row added without a name). The layout is read back from the fields (their names and sizes)
and the metric from the ``full`` field's index. Metrics map to Milvus's own: cosine to COSINE
(Milvus normalises each field on its own, so the score at size m is the cosine of the two
prefixes, as in :class:`MatryoshkaIndex`), ip to IP, l2 to L2, which Milvus already reports as
the squared distance: scores need no conversion.

Milvus has no nested prefetch, so a funnel ``[(m1, k1), (m2, k2), ..., (mt, k)]`` runs as:

1. one ``search`` of every query at once on the ``m1`` field (the ANN index, ``limit=k1``);
2. each later stage rescores the previous shortlist at its size, in one of two ways
   (``rerank=``):

   - ``"client"`` (the default): one ``get`` of the union of the shortlists' ``m2`` field,
     scored here by the index's own exact search (cosine, ip, squared l2, as Milvus scores);
   - ``"engine"``: one filtered ``search`` per query (``filter="id in [...]"``,
     ``limit=k2``) with exhaustive search parameters, so that Milvus scores every candidate
     itself and only ids and scores come back.

   Both give the same ids (the tests check it). Measured on Milvus Lite (2 cores; 256-d
   rows, prefix 64 under HNSW, cosine; 100 queries; after Milvus Lite's background merging
   settled), funnel ``64:100,256:10``, batch / one query: at 60,000 rows "client" 74 q/s /
   48 ms, "engine" 23 q/s / 118 ms; at 200,000 rows 65 q/s / 128 ms against 7.7 q/s / 442 ms
   (Milvus Lite walks every row in Python on each call, so per-query searches cost most);
   ``64:400`` at 60,000: 22 q/s / 87 ms against 17 q/s / 135 ms. Hence ``"client"``; it is
   also exact whatever the stage's index, where a filtered search on an HNSW field misses
   candidates (Milvus Lite returned 43 of the best 50 of a 200-row shortlist), so "engine"
   asks for exhaustive parameters. On a server "engine" sends no vectors back: measure both.
   For scale: full-size FLAT search of the same 100 queries ran at 262 q/s (92 ms for one)
   at 60,000 rows and 115 q/s (308 ms) at 200,000: Milvus Lite spends ~50 us per returned
   row, so its funnels pay off for single queries and large collections first.

Indexes: the prefix fields get ``index_type`` (default ``"HNSW"``, M 16, efConstruction 200),
``full`` gets ``full_index_type`` (default ``"FLAT"``: the full-size search and the funnels'
last stage score every candidate exactly). Milvus Lite (milvus-lite 3, pure Python over faiss)
builds FLAT (= BRUTE_FORCE), HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8 and AUTOINDEX (HNSW there);
it accepts other names at creation and then fails when it builds them, so they are refused
here for a ``.db`` target. A server builds whatever it supports. Milvus Lite searches rows not
yet flushed by brute force; a search after an upload flushes first (``optimize()`` does it on
demand), so the ANN index serves the queries. ``exact=True`` asks each stage's index to look
at everything: FLAT always does, HNSW with ``ef`` = the row count, IVF with ``nprobe`` =
``nlist``; HNSW_SQ and IVF_SQ8 still score 8-bit codes.

Two ways to reach the engine, one class: a local path ending in ``.db`` runs Milvus Lite in
this process (a folder of Parquet segments and a log); an address ``http(s)://host:19530``
or ``tcp://host:19530`` reaches a Milvus server or cluster (``token=`` for its credentials).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from matryoshka._optional import require
from matryoshka.index.engines.base import EngineError, EngineIndex, Layout, check_collection
from matryoshka.index.exact import exact_search

__all__ = ["LITE_INDEX_TYPES", "RERANKS", "MilvusIndex", "field_name"]

_METRIC_TYPES = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
_METRICS = {v: k for k, v in _METRIC_TYPES.items()}
LITE_INDEX_TYPES = ("FLAT", "BRUTE_FORCE", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "AUTOINDEX")
RERANKS = ("client", "engine")
_BUILD = {"HNSW": {"M": 16, "efConstruction": 200}, "HNSW_SQ": {"M": 16, "efConstruction": 200},
          "IVF_FLAT": {"nlist": 128}, "IVF_SQ8": {"nlist": 128}}  # fmt: skip
_GRAPHS = ("HNSW", "HNSW_SQ", "AUTOINDEX")
NAME_BYTES = 65_535  # Milvus's longest VARCHAR
_CHUNK = 4096  # rows per get, queries per search
_LITE_OPEN: dict[str, int] = {}  # Milvus Lite folder -> MilvusIndex objects holding it open
_LITE_LOCK = threading.Lock()


def field_name(m: int, d: int) -> str:
    """The vector field holding size ``m``: ``full`` for ``d``, else ``m<size>``."""
    return "full" if m == d else f"m{m}"


def _index_bytes(kind: str, m: int, hnsw_m: int) -> float:
    """Bytes per row an index of ``kind`` on a size-``m`` field adds beside the stored row."""
    if kind in _GRAPHS or kind.startswith("IVF"):
        per_dim = 1.0 if kind.endswith(("SQ", "SQ8")) else 4.0
        return per_dim * m + (8.4 * hnsw_m if kind in _GRAPHS else 8.0)
    return 0.0  # FLAT and BRUTE_FORCE search the stored rows


def _id_list(ids: Sequence[int] | np.ndarray) -> list[int]:
    return [int(i) for i in ids]


def _message(e: Exception) -> str:
    return str(getattr(e, "message", "") or e or type(e).__name__)


class _Conn:
    """A pymilvus client with every failure turned into a clear :class:`EngineError`."""

    def __init__(self, target: str, options: dict[str, Any]) -> None:
        self.target = target
        text = str(target)
        scheme = urlparse(text).scheme.lower()
        remote = scheme in ("http", "https", "tcp")
        self.lite = text.endswith(".db") and not remote
        if not self.lite and (not remote or not urlparse(text).hostname):
            raise EngineError(
                f"{text!r} is not a Milvus address: give a Milvus Lite file ending in .db, "
                "or http(s)://host:19530 (tcp://host:19530) for a server"
            )
        pymilvus = require("pymilvus", "the Milvus back end", extra="milvus")
        self.error = pymilvus.MilvusException  # what every pymilvus failure derives from
        if self.lite:
            require("milvus_lite", "Milvus Lite (a local .db path)", extra="milvus")
            self.path = str(Path(text).expanduser().resolve())
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.c = pymilvus.MilvusClient(self.path if self.lite else text, **options)
        except Exception as e:  # MilvusException, ConnectionConfigException, grpc errors
            if self.lite:
                raise EngineError(
                    f"cannot open Milvus Lite at {text}: is another process using it? (Milvus "
                    f"Lite lets one process at a time open a .db) ({_message(e)})"
                ) from None
            raise EngineError(
                f"cannot reach Milvus at {text}: is the server running and the address right? "
                f"({_message(e)})"
            ) from None
        if self.lite:
            with _LITE_LOCK:
                _LITE_OPEN[self.path] = _LITE_OPEN.get(self.path, 0) + 1

    def __call__(self, what: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        """``client.fn(*args, **kwargs)``, failures named by ``what``."""
        if self.c is None:
            raise EngineError(f"the Milvus index at {self.target} is closed")
        try:
            return getattr(self.c, fn)(*args, **kwargs)
        except self.error as e:
            text = _message(e)
            if "connect" in text.lower() or "unavailable" in text.lower():
                raise EngineError(f"cannot reach Milvus at {self.target} ({what}): is the "
                                  f"server running? ({text})") from None  # fmt: skip
            raise EngineError(f"Milvus at {self.target} refused to {what}: {text}") from None

    def close(self) -> None:
        if self.c is None:
            return
        self.c.close()
        self.c = None
        if self.lite:  # the last of ours to close stops the embedded engine (and its lock)
            with _LITE_LOCK:
                _LITE_OPEN[self.path] -= 1
                last = _LITE_OPEN[self.path] == 0
            if last:
                del _LITE_OPEN[self.path]
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.path)


class MilvusIndex(EngineIndex):
    """A Matryoshka index in Milvus: Milvus Lite (a ``.db`` path) or a server, same funnels.

    Parameters
    ----------
    target : str or Path
        A local path ending in ``.db`` (Milvus Lite keeps its folder there), or the address of
        a Milvus server or cluster: ``http://host:19530``, ``https://...``, ``tcp://...``.
    d, metric, sizes, collection, transform
        See :class:`~matryoshka.index.engines.base.EngineIndex`.
    index_type : str, default "HNSW"
        The prefix fields' index (the first stages'). Milvus Lite: one of
        :data:`LITE_INDEX_TYPES`; a server: any index type it builds.
    index_params : dict, optional
        Build parameters of that index (default HNSW ``{"M": 16, "efConstruction": 200}``,
        IVF ``{"nlist": 128}``).
    full_index_type : str, default "FLAT"
        The ``full`` field's index: FLAT scores every candidate exactly.
    search_params : dict, optional
        Milvus's search ``params`` for the first stage (``{"ef": 128}``, ``{"nprobe": 16}``).
        HNSW's ``ef`` defaults to twice the stage's ``k`` (at least 64) and is never below
        ``k``: at 200,000 rows ``64:100,256:10`` found 0.86 of the exact top 10 with ``ef=k``
        and 0.94 with ``2k``, for 7% more time.
    rerank : {"client", "engine"}, default "client"
        How later stages rescore a shortlist (see the module notes): from one ``get`` of the
        stored prefix fields, scored here, or by one filtered search per query in Milvus.
    **client_kwargs
        Passed to ``pymilvus.MilvusClient``: ``token``, ``db_name``, ``timeout``.

    Examples
    --------
    >>> engine = MilvusIndex("milvus.db", d=512, sizes=[64])       # doctest: +SKIP
    >>> engine.add(xb, names=doc_ids)                                # doctest: +SKIP
    >>> D, I = engine.search(xq, funnel=[(64, 200), (512, 10)])      # doctest: +SKIP
    """

    kind = "milvus"

    def __init__(
        self,
        target: str | Path,
        d: int | None = None,
        metric: str | None = None,
        sizes: Sequence[int] | None = None,
        collection: str = "matryoshka",
        transform: str = "none",
        index_type: str = "HNSW",
        index_params: dict[str, Any] | None = None,
        full_index_type: str = "FLAT",
        search_params: dict[str, Any] | None = None,
        rerank: str = "client",
        **client_kwargs: Any,
    ) -> None:
        if rerank not in RERANKS:
            raise ValueError(f"rerank must be one of {RERANKS}, got {rerank!r}")
        self.target, self.rerank = str(target), rerank
        self.index_type = str(index_type).upper()
        self.full_index_type = str(full_index_type).upper()
        self.index_params = dict(index_params or _BUILD.get(self.index_type, {}))
        self.search_params = dict(search_params or {})
        self._dirty = False
        self._t = _Conn(self.target, client_kwargs)
        for kind in (self.index_type, self.full_index_type):
            if self._t.lite and kind not in LITE_INDEX_TYPES:
                self._t.close()
                raise ValueError(f"Milvus Lite builds the index types {LITE_INDEX_TYPES}, "
                                 f"not {kind!r}")  # fmt: skip
        try:
            super().__init__(d, metric, sizes, check_collection(collection), transform)
        except BaseException:
            self._t.close()
            raise

    @property
    def where(self) -> str:
        return self.target

    @classmethod
    def bytes_per_vector(
        cls,
        d: int,
        sizes: Sequence[int],
        name_bytes: int = 0,
        index_type: str = "HNSW",
        full_index_type: str = "FLAT",
        hnsw_m: int = 16,
    ) -> dict[str, float]:
        """What Milvus stores per row: float32 copies of every size, id, name, indexes.

        ``vectors``: 4 bytes x (d + each prefix size); ``ids``: 16 (the INT64 key and Milvus's
        own 8-byte timestamp or sequence number); ``names``: the name's bytes plus a 4-byte
        offset; ``index``: what each field's index adds beside the stored rows (prefixes under
        ``index_type``, ``full`` under ``full_index_type``): faiss and Milvus keep their own
        copy of the vectors in HNSW and IVF_FLAT (4 x m) or 8-bit codes in the SQ kinds (m),
        plus the graph's level-0 links (2 x ``hnsw_m`` x 4 bytes, upper levels add ~5%) or an
        IVF list entry (8); FLAT adds nothing. Milvus Lite holds loaded segments in memory:
        the total is its RAM, too (measured: 1,000,000 rows of d=256 with m64 under HNSW took
        4 GB of RSS while loading, 1.5 GB on disk).
        """
        prefixes = sorted(set(sizes) - {d})
        fields = [(index_type, m) for m in prefixes] + [(full_index_type, d)]
        out = {
            "vectors": 4.0 * (d + sum(prefixes)),
            "ids": 16.0,
            "names": float(name_bytes + 4) if name_bytes else 0.0,
            "index": sum(_index_bytes(kind.upper(), m, hnsw_m) for kind, m in fields),
        }
        out["total"] = sum(out.values())
        return out

    # ------------------------------------------------------------------ the hooks
    def _describe(self) -> Layout | None:
        name = self.collection
        if not self._t("list collections", "has_collection", name):
            return None
        info = self._t("describe the collection", "describe_collection", name)
        vectors = {f["name"]: int(f["params"]["dim"]) for f in info["fields"]
                   if getattr(f["type"], "name", "") == "FLOAT_VECTOR"}  # fmt: skip
        if "full" not in vectors or not any(f["name"] == "id" and f.get("is_primary")
                                            for f in info["fields"]):  # fmt: skip
            raise EngineError(f"Milvus collection {name!r} has fields "
                              f"{[f['name'] for f in info['fields']]}: it was not written by "
                              "matryoshka (no 'id' key and 'full' vector)")  # fmt: skip
        d = vectors["full"]
        sizes = sorted(m for f, m in vectors.items() if f == field_name(m, d))
        self._indexes = {field_name(m, d): self._index_of(field_name(m, d)) for m in sizes}
        metric_type = self._indexes["full"][1]
        if metric_type not in _METRICS:
            raise EngineError(f"Milvus collection {name!r} indexes 'full' with metric "
                              f"{metric_type!r}, not one of {list(_METRICS)}")  # fmt: skip
        self._t("load the collection", "load_collection", name)
        return Layout(d, _METRICS[metric_type], tuple(sizes))

    def _index_of(self, field: str) -> tuple[str, str, dict[str, Any]]:
        """(index type, metric type, build params) of a field's index."""
        got = self._t("describe an index", "describe_index", self.collection, field)
        if not got:
            raise EngineError(f"Milvus collection {self.collection!r} has no index on {field!r}")
        params = dict(got.get("params") or {})
        params.update({k: v for k, v in got.items() if k in ("nlist", "M", "efConstruction")})
        return str(got["index_type"]).upper(), str(got["metric_type"]).upper(), params

    def _create(self, layout: Layout) -> None:
        pymilvus = require("pymilvus", "the Milvus back end", extra="milvus")
        DataType = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("name", DataType.VARCHAR, max_length=NAME_BYTES, nullable=True)
        prepared = pymilvus.MilvusClient.prepare_index_params()
        metric_type = _METRIC_TYPES[layout.metric]
        self._indexes = {}
        for m in layout.sizes:
            field = field_name(m, layout.d)
            schema.add_field(field, DataType.FLOAT_VECTOR, dim=m)
            kind = self.full_index_type if m == layout.d else self.index_type
            params = self.index_params if kind == self.index_type else _BUILD.get(kind, {})
            prepared.add_index(field, index_type=kind, metric_type=metric_type,
                               params=dict(params), index_name=field)  # fmt: skip
            self._indexes[field] = (kind, metric_type, dict(params))
        self._t("create the collection", "create_collection", self.collection, schema=schema,
                consistency_level="Strong")  # fmt: skip
        # sync=False: pymilvus would poll each new index of the empty collection for 0.5 s
        self._t("create the indexes", "create_index", self.collection, prepared, sync=False)
        self._t("load the collection", "load_collection", self.collection)

    def _upsert(self, ids: np.ndarray, xb: np.ndarray, names: list[str] | None) -> None:
        if names is not None:
            long = [v for v in names if len(str(v).encode()) > NAME_BYTES]
            if long:
                raise ValueError(f"a Milvus name holds at most {NAME_BYTES} bytes; "
                                 f"{long[0][:40]!r}... is longer")  # fmt: skip
        fields = {field_name(m, self.d): m for m in self.sizes}
        rows = [
            {"id": i, "name": None if names is None else str(names[r])}
            | {f: xb[r, :m] for f, m in fields.items()}
            for r, i in enumerate(_id_list(ids))
        ]
        self._t("upsert rows", "upsert", self.collection, rows)
        self._dirty = True

    def _get(self, ids: Sequence[int], fields: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        ids = _id_list(ids)
        for start in range(0, len(ids), _CHUNK):
            part = ids[start : start + _CHUNK]
            out.extend(self._t("get rows", "get", self.collection, ids=part,
                               output_fields=fields))  # fmt: skip
        return out

    def _present(self, ids: np.ndarray) -> np.ndarray:
        found = {int(r["id"]) for r in self._get(ids, ["id"])}
        return np.fromiter((int(i) in found for i in ids), dtype=bool, count=len(ids))

    def count(self) -> int:
        got = self._t("count rows", "query", self.collection, filter="",
                      output_fields=["count(*)"])  # fmt: skip
        return int(got[0]["count(*)"])

    def names_of(self, ids: np.ndarray) -> list:
        """The names of ids as search returns them ((nq, k) or (n,)), None for -1 padding."""
        ids = np.asarray(ids)
        wanted = np.unique(ids[ids >= 0])
        names = {int(r["id"]): r.get("name") for r in self._get(wanted, ["name"])}
        return np.vectorize(lambda i: names.get(int(i)), otypes=[object])(ids).tolist()

    def optimize(self) -> None:
        """Flush uploaded rows into segments, so that their ANN indexes serve searches."""
        self._t("flush", "flush", self.collection)
        self._dirty = False

    def close(self) -> None:
        """Close the client; the last handle on a Milvus Lite file stops its engine, which
        first finishes its background merging (after a 1,000,000-row upload: 5 minutes)."""
        self._t.close()

    # ------------------------------------------------------------------ search
    def _params(self, field: str, k: int, exhaustive: bool, total: int) -> dict[str, Any]:
        """Milvus's search parameters for one stage on ``field``."""
        kind, metric_type, build = self._indexes[field]
        params = dict(self.search_params)
        if kind in _GRAPHS:
            ef = total if exhaustive else int(params.get("ef", max(64, 2 * k)))
            params["ef"] = max(k, ef)
        elif kind.startswith("IVF") and exhaustive:
            params["nprobe"] = int(build.get("nlist", 65_536))
        return {"metric_type": metric_type, "params": params}

    def _search(self, xq: np.ndarray, m: int, k: int, params: dict, expr: str = "") -> list:
        """One Milvus search of queries (nq, >= m) on the size-``m`` field: (ids, scores)."""
        out = []
        for start in range(0, len(xq), _CHUNK):
            q = np.ascontiguousarray(xq[start : start + _CHUNK, :m])
            found = self._t("search", "search", self.collection, data=list(q), limit=k,
                            anns_field=field_name(m, self.d), search_params=params,
                            filter=expr, output_fields=["id"])  # fmt: skip
            out.extend((_id_list(h.ids), list(h.distances)) for h in found)
        return out

    def _query(
        self, xq: np.ndarray, stages: list[tuple[int, int]], exact: bool
    ) -> list[tuple[list[int], list[float]]]:
        """Stage one in Milvus for all queries at once, then each later stage rescores."""
        if self._dirty and self._t.lite:  # Lite scans unflushed rows; flushed ones use the index
            self.optimize()
        graphs = any(self._indexes[field_name(m, self.d)][0] in _GRAPHS for m, _ in stages)
        total = self.count() if graphs and (exact or self.rerank == "engine") else 0
        m, k = stages[0]
        hits = self._search(xq, m, k, self._params(field_name(m, self.d), k, exact, total))
        for m, k in stages[1:]:
            if self.rerank == "client":
                hits = self._rescore(xq, m, k, hits)
                continue
            params = self._params(field_name(m, self.d), k, True, total)
            hits = [self._search(xq[i : i + 1], m, k, params,
                                 f"id in [{','.join(map(str, got))}]")[0] if got else ([], [])
                    for i, (got, _) in enumerate(hits)]  # fmt: skip
        return hits

    def _rescore(self, xq: np.ndarray, m: int, k: int, hits: list) -> list:
        """Score each query's shortlist at size ``m`` from one ``get`` of the stored field."""
        field = field_name(m, self.d)
        union = np.unique(np.fromiter((i for got, _ in hits for i in got), dtype=np.int64))
        rows = self._get(union, [field])
        if len(rows) != len(union):
            raise EngineError(f"Milvus returned {len(rows)} of {len(union)} shortlisted rows: "
                              "were rows deleted during the search?")  # fmt: skip
        got_ids = np.array([int(r["id"]) for r in rows], dtype=np.int64)
        V = np.empty((len(rows), m), dtype=np.float32)
        V[np.searchsorted(union, got_ids)] = np.array([r[field] for r in rows], dtype=np.float32)
        out = []
        for row, (got, _) in enumerate(hits):  # the index's own exact scoring of the shortlist
            if not got:
                out.append(([], []))
                continue
            B = V[np.searchsorted(union, np.asarray(got, dtype=np.int64))]
            s, order = exact_search(xq[row : row + 1, :m], B, min(k, len(B)), self.metric)
            out.append(([got[j] for j in order[0]], s[0].tolist()))
        return out
