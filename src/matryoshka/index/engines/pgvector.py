"""PostgreSQL with pgvector: one table, HNSW expression indexes on prefixes, the funnel in SQL.

The table ``<collection>`` holds ``id bigint PRIMARY KEY, name text, embedding vector(d)``:
each vector once, at full size. Every stored prefix size ``m`` below ``d`` is an HNSW
*expression index* on ``subvector(embedding, 1, m)::halfvec(m)`` (pgvector >= 0.7), or on
``((embedding::real[])[1:m])::vector(m)`` for older pgvector: the prefix copy lives in the
index, not in the table. ``d`` itself has no index unless ``full_index=True``: a funnel's last
stages only reorder a shortlist, and a search at size ``d`` alone then scores every row. The
layout (d, metric, sizes, flavour) is JSON in the table's comment (see
:mod:`~matryoshka.index.engines.pgvector_sql`, which writes every statement used here).

A search sends one statement per batch of queries: the queries as a ``vector(d)[]`` array,
each run through the funnel's nested subqueries in a ``LATERAL`` join (as fast as a pipelined
``executemany`` of one statement per query, measured; one round trip). The first stage walks
the HNSW index with ``hnsw.ef_search`` set to at least its shortlist ``k1`` (pgvector's
default, 40, would cut shortlists to 40 rows; pgvector caps it at 1,000, and longer first
shortlists need pgvector >= 0.8, whose iterative scans are then switched on), and with
``enable_seqscan`` off, so that the planner walks the graph even where it guesses a scan of a
small table is cheaper. ``exact=True`` scores the first stage's float32 prefix of every row
instead (no index matches that expression) with index scans off.

Scores come back as the index's: cosine similarity ``1 - (a <=> b)``, inner product
``-(a <#> b)``, squared Euclidean distance ``(a <-> b)**2``.

Rows go up by binary ``COPY`` into a temporary table and one ``INSERT ... ON CONFLICT (id) DO
UPDATE`` per batch (8x faster than a batched ``INSERT``, measured). :meth:`PgvectorIndex.from_index`
loads the rows before it builds the HNSW indexes: building each graph once over the rows took a
quarter of the time of growing it row by row (20,000 x 256, pgvector 0.8.1).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

import numpy as np

from matryoshka._optional import require
from matryoshka.index.engines.base import EngineError, EngineIndex, Layout, batches_of
from matryoshka.index.engines.pgvector_sql import (
    HNSW_MAX,
    MAX_EF_SEARCH,
    PgTable,
    ef_search_for,
    funnel_sql,
    pgvector_sql,
    quote_ident,
    vector_text,
    write_pgvector_sql,
)
from matryoshka.index.planner import parse_bytes

__all__ = ["PgvectorIndex", "pgvector_sql", "write_pgvector_sql"]

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_QUERY_BATCH = 256  # queries per statement


def _copy_binary(ids: np.ndarray, xb: np.ndarray, names: list[str] | None) -> bytes:
    """Rows ``(id, name, embedding)`` in COPY's binary format (pgvector's ``vector`` wire form:
    int16 dimensions, int16 unused, then float32s, all big-endian)."""
    n, d = xb.shape
    head = np.empty(n, dtype=[("fields", ">i2"), ("idlen", ">i4"), ("id", ">i8")])
    head["fields"], head["idlen"], head["id"] = 3, 8, ids
    vec = np.empty(n, dtype=[("len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", d)])
    vec["len"], vec["dim"], vec["unused"], vec["v"] = 4 + 4 * d, d, 0, xb
    hb, vb, hs, vs = head.tobytes(), vec.tobytes(), head.itemsize, vec.itemsize
    null = struct.pack(">i", -1)
    parts = [_COPY_HEADER]
    for r in range(n):
        if names is None or names[r] is None:
            name = null
        else:
            raw = str(names[r]).encode()
            name = struct.pack(">i", len(raw)) + raw
        parts += (hb[r * hs : (r + 1) * hs], name, vb[r * vs : (r + 1) * vs])
    parts.append(struct.pack(">h", -1))
    return b"".join(parts)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(".")[:3] if v.isdigit())


class PgvectorIndex(EngineIndex):
    """A Matryoshka index in PostgreSQL with pgvector, searched with the same funnels.

    Parameters
    ----------
    target : str
        A libpq URL, ``postgresql://user:password@host:5432/database`` (``?host=/socket/dir``
        for a Unix socket).
    d, metric, sizes, collection, transform
        See :class:`~matryoshka.index.engines.base.EngineIndex`; ``collection`` is the table.
    halfvec : bool, optional
        New tables: index prefixes as ``halfvec`` (default where the server has pgvector >= 0.7
        and every size is at most 4,000) or ``vector`` (up to 2,000).
    ef_search : int, optional
        ``hnsw.ef_search`` for the first stage (default and minimum: its shortlist ``k1``;
        at most 1,000).
    flavour : {"subvector", "array"}, optional
        New tables: how prefixes are written (default: ``subvector`` on pgvector >= 0.7).
    full_index : bool, default False
        New tables: also an HNSW index on the full ``embedding`` (d <= 2,000).
    build_indexes : bool, default True
        New tables: create the HNSW indexes now. ``False`` leaves them to
        :meth:`create_indexes`, to be called after loading (:meth:`from_index` does so).
    connect_timeout : int, default 10
        Seconds to wait for the server.
    **options
        ``hnsw_m`` (16), ``ef_construction`` (64): pgvector's HNSW build options.

    Examples
    --------
    >>> engine = PgvectorIndex("postgresql://me@db/app", d=512, sizes=[64])  # doctest: +SKIP
    >>> engine.add(xb, names=doc_ids)                                        # doctest: +SKIP
    >>> D, I = engine.search(xq, funnel=[(64, 200), (512, 10)])              # doctest: +SKIP
    """

    kind = "pgvector"

    def __init__(
        self,
        target: str,
        d: int | None = None,
        metric: str | None = None,
        sizes: Sequence[int] | None = None,
        collection: str = "matryoshka",
        transform: str = "none",
        halfvec: bool | None = None,
        ef_search: int | None = None,
        flavour: str | None = None,
        full_index: bool = False,
        build_indexes: bool = True,
        connect_timeout: int = 10,
        **options: Any,
    ) -> None:
        if ef_search is not None and not 1 <= ef_search <= MAX_EF_SEARCH:
            raise ValueError(f"ef_search must be between 1 and 1000, got {ef_search!r}")
        self.target, self.ef_search = str(target), ef_search
        self._wish = dict(
            halfvec=halfvec, flavour=flavour, full_index=full_index, build=build_indexes, **options
        )
        self._conn = self._connect(connect_timeout)
        self._vector_version: tuple[int, ...] | None = None
        self.table: PgTable | None = None
        try:
            super().__init__(d, metric, sizes, collection, transform)
        except BaseException:
            self._conn.close()
            raise

    # ------------------------------------------------------------------ connection
    def _connect(self, timeout: int) -> Any:
        url = urlparse(self.target)
        if url.scheme not in ("postgresql", "postgres"):
            raise EngineError(
                f"{self.where!r} is not a PostgreSQL address: write "
                "postgresql://user:password@host:5432/database"
            )
        psycopg = require("psycopg", "the pgvector back end", extra="pgvector")
        try:
            return psycopg.connect(self.target, autocommit=True, connect_timeout=timeout)
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(
                f"cannot reach PostgreSQL at {self.where}: is the server running and the "
                f"address right? ({first})"
            ) from None

    @property
    def where(self) -> str:
        """The address without its password."""
        url = urlparse(self.target)
        if url.password:
            user = f"{url.username}:***@" if url.username else ":***@"
            return urlunparse(url._replace(netloc=user + url.netloc.rsplit("@", 1)[1]))
        return self.target

    @contextlib.contextmanager
    def _sql(self, what: str) -> Iterator[Any]:
        """A cursor; PostgreSQL's errors become :class:`EngineError` naming ``what``."""
        psycopg = require("psycopg", "the pgvector back end", extra="pgvector")
        try:
            with self._conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as e:
            raise EngineError(f"lost PostgreSQL at {self.where} ({what}): {e}") from None
        except psycopg.Error as e:
            raise EngineError(f"PostgreSQL at {self.where} refused to {what}: {e}") from None

    def vector_version(self) -> tuple[int, ...]:
        """The installed pgvector extension's version, e.g. ``(0, 8, 1)`` (``()``: none)."""
        if not self._vector_version:
            with self._sql("read pgvector's version") as cur:
                row = cur.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()
            self._vector_version = _version(row[0]) if row else ()
        return self._vector_version

    # ------------------------------------------------------------------ the hooks
    def _describe(self) -> Layout | None:
        with self._sql("describe the table") as cur:
            row = cur.execute(
                "SELECT obj_description(c.oid, 'pg_class'), format_type(a.atttypid, a.atttypmod)"
                " FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid"
                " AND a.attname = 'embedding' AND NOT a.attisdropped"
                " WHERE c.oid = to_regclass(%s)",
                [quote_ident(self.collection)],
            ).fetchone()
        if row is None:
            return None
        comment, column = row
        where = f"table {self.collection!r} at {self.where}"
        try:
            table = PgTable.from_comment(self.collection, comment)
        except (ValueError, TypeError, KeyError) as e:
            raise EngineError(
                f"{where} was not written by matryoshka ({e}; column embedding: {column}): "
                "use another collection"
            ) from None
        if column != f"vector({table.d})":
            raise EngineError(
                f"{where}: its comment says vector({table.d}), its embedding column is {column}"
            )
        self._check_wish(table)
        self.table = table
        return Layout(table.d, table.metric, (*table.sizes, table.d))

    def _check_wish(self, table: PgTable) -> None:
        """Options given for a new table must match an existing one."""
        for key in ("halfvec", "flavour"):
            if self._wish[key] is not None and self._wish[key] != getattr(table, key):
                raise EngineError(
                    f"table {self.collection!r} at {self.where} was created with "
                    f"{key}={getattr(table, key)!r}, not {self._wish[key]!r}"
                )

    def _create(self, layout: Layout) -> None:
        with self._sql("create the vector extension (CREATE EXTENSION vector)") as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = self.vector_version()
        flavour = self._wish["flavour"] or ("subvector" if version >= (0, 7) else "array")
        if flavour == "subvector" and version < (0, 7):
            raise EngineError(
                f"pgvector {'.'.join(map(str, version))} at {self.where} has no "
                "subvector (0.7 and later): use flavour='array'"
            )
        prefixes = tuple(m for m in layout.sizes if m != layout.d)
        halfvec = self._wish["halfvec"]
        if halfvec is None:
            halfvec = flavour == "subvector" and all(m <= HNSW_MAX["halfvec"] for m in prefixes)
        table = PgTable(
            self.collection,
            layout.d,
            layout.metric,
            prefixes,
            flavour,
            halfvec,
            self._wish["full_index"],
            self._wish.get("hnsw_m", 16),
            self._wish.get("ef_construction", 64),
        )
        with self._sql("create the table") as cur, self._conn.transaction():
            for statement in table.create_sql()[1:]:
                cur.execute(statement)
        self.table = table
        if self._wish["build"]:
            self.create_indexes()

    def create_indexes(self, build_memory: str | int | None = "1GB") -> None:
        """Create the HNSW indexes the layout names (those missing), then ``ANALYZE``.

        Building a graph over loaded rows is faster than growing it row by row, and fastest
        when PostgreSQL's ``maintenance_work_mem`` (64 MB by default) holds it: for the build,
        this session's setting is raised to the graphs' estimated size (rows x
        ``bytes_per_vector(...)["index"]``), at most ``build_memory`` (``"1GB"``, a number of
        bytes, or None to keep the server's setting), and reset after.
        """
        t = self.table
        with self._sql("create the HNSW indexes") as cur:
            if build_memory is not None:
                per_row = self.bytes_per_vector(t.d, t.sizes, hnsw_m=t.hnsw_m, halfvec=t.halfvec,
                                                full_index=t.full_index)["index"]  # fmt: skip
                want = min(parse_bytes(build_memory), 1.2 * per_row * self.count())
                cur.execute(f"SET maintenance_work_mem = '{max(64, int(want) >> 20)}MB'")
            for statement in t.index_sql():
                cur.execute(statement)
            cur.execute("RESET maintenance_work_mem")
            cur.execute(f"ANALYZE {t.name}")

    def _upsert(self, ids: np.ndarray, xb: np.ndarray, names: list[str] | None) -> None:
        stage = quote_ident(f"{self.collection}_load")
        t = self.table.name
        with self._sql("upload rows") as cur, self._conn.transaction():
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {t}) ON COMMIT DELETE ROWS")
            with cur.copy(f"COPY {stage} (id, name, embedding) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(_copy_binary(ids, xb, names))
            cur.execute(self.table.upsert_sql(stage))

    def _present(self, ids: np.ndarray) -> np.ndarray:
        with self._sql("look up ids") as cur:
            rows = cur.execute(
                f"SELECT id FROM {self.table.name} WHERE id = ANY(%s)", [ids.tolist()]
            ).fetchall()
        found = {r[0] for r in rows}
        return np.fromiter((int(i) in found for i in ids), dtype=bool, count=len(ids))

    def search_sql(self, stages: Sequence[tuple[int, int]], exact: bool = False) -> str:
        """The statement :meth:`search` runs: ``(n, id, distance)`` rows for the queries in
        parameter 1 (a ``vector(d)[]``), ``n`` counting queries from 1."""
        inner = funnel_sql(self.table, stages, "qs.v", exact).replace("\n", "\n    ")
        return (
            f"SELECT qs.n, r.id, r.distance\n"
            f"FROM unnest(%s::vector({self.d})[]) WITH ORDINALITY AS qs(v, n)\n"
            f"CROSS JOIN LATERAL (\n    {inner}\n) AS r\nORDER BY qs.n, r.distance"
        )

    def _settings(self, first: tuple[int, int], exact: bool) -> list[str]:
        """``SET LOCAL`` statements for a search whose first stage is ``(m1, k1)``."""
        (m1, k1), t = first, self.table
        if exact or not (m1 in t.sizes or (m1 == t.d and t.full_index)):  # no graph to walk
            return ["SET LOCAL enable_indexscan = off"]
        out = [  # the graph even where the planner guesses a scan is cheaper (small tables)
            "SET LOCAL enable_seqscan = off",
            f"SET LOCAL hnsw.ef_search = {ef_search_for(k1, self.ef_search)}",
        ]
        if k1 > MAX_EF_SEARCH:
            if self.vector_version() < (0, 8):
                raise EngineError(
                    f"a first shortlist of {k1} rows: pgvector "
                    f"{'.'.join(map(str, self.vector_version()))} returns at most 1,000 rows "
                    "from an HNSW scan (0.8 and later continue the scan); shorten it or "
                    "search with exact=True"
                )
            out.append("SET LOCAL hnsw.iterative_scan = relaxed_order")
        return out

    def _query(self, xq: np.ndarray, stages: list[tuple[int, int]], exact: bool) -> list:
        if xq.shape[1] < self.d:  # prefix queries: the SQL takes vector(d), zeros change nothing
            xq = np.pad(xq, ((0, 0), (0, self.d - xq.shape[1])))
        sql = self.search_sql(stages, exact)
        out: list[tuple[list[int], list[float]]] = [([], []) for _ in range(len(xq))]
        with self._sql("search") as cur, self._conn.transaction():
            for statement in self._settings(stages[0], exact):
                cur.execute(statement)
            for start, stop in batches_of(len(xq), _QUERY_BATCH):
                array = "{" + ",".join(f'"{vector_text(x)}"' for x in xq[start:stop]) + "}"
                for n, i, dist in cur.execute(sql, [array]).fetchall():
                    out[start + n - 1][0].append(i)
                    out[start + n - 1][1].append(dist)
        return out

    def _to_distance(self, scores: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return 1.0 - scores
        return -scores if self.metric == "ip" else np.square(scores)

    def count(self) -> int:
        with self._sql("count rows") as cur:
            return int(cur.execute(f"SELECT count(*) FROM {self.table.name}").fetchone()[0])

    def names_of(self, ids: np.ndarray) -> list:
        """The names of ids as search returns them ((nq, k) or (n,)), None for -1 padding."""
        ids = np.asarray(ids)
        wanted = np.unique(ids[ids >= 0]).tolist()
        names: dict[int, str | None] = {}
        if wanted:
            with self._sql("read names") as cur:
                names = dict(
                    cur.execute(
                        f"SELECT id, name FROM {self.table.name} WHERE id = ANY(%s)", [wanted]
                    ).fetchall()
                )
        return np.vectorize(lambda i: names.get(int(i)), otypes=[object])(ids).tolist()

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ export and sizes
    @classmethod
    def from_index(
        cls,
        index: Any,
        *args: Any,
        sizes: Sequence[int] | None = None,
        batch_size: int = 4096,
        progress: bool = False,
        **kwargs: Any,
    ) -> PgvectorIndex:
        """Export a :class:`MatryoshkaIndex` (ids, names, vectors): rows first, then the HNSW
        indexes (built once over the loaded rows). Resumes an interrupted export; a second
        export of the same index adds nothing. See :meth:`EngineIndex.from_index`."""
        kwargs.setdefault("build_indexes", False)
        engine = super().from_index(
            index, *args, sizes=sizes, batch_size=batch_size, progress=progress, **kwargs
        )
        engine.create_indexes()
        return engine

    @classmethod
    def bytes_per_vector(
        cls,
        d: int,
        sizes: Sequence[int],
        name_bytes: int = 0,
        hnsw_m: int = 16,
        halfvec: bool = True,
        full_index: bool = False,
    ) -> dict[str, float]:
        """What PostgreSQL stores per row, in bytes (8 KiB pages, pgvector 0.6 to 0.8).

        ``vectors``: the heap row: 24 bytes of tuple header, a 4-byte line pointer, the 8-byte
        id and ``vector(d)``'s 8 + 4d bytes (past about 2 KB a row moves the vector to TOAST,
        about 40 bytes more per 2 KB chunk; rows are packed whole into pages, as are index
        entries, so short rows waste up to a row per page); ``ids``: the primary key's B-tree
        entry, 20 bytes at 90% fill; ``names``: the name's bytes plus a 1-byte length (4
        past 126 bytes); ``index``: per HNSW index (each size below d, and d with
        ``full_index``) an element tuple of 72 bytes + the prefix (8 + 2m halfvec, 8 + 4m
        vector), and a neighbour tuple of 4 + 12 ``hnsw_m`` bytes at level 0 (6-byte item
        pointers, 2 ``hnsw_m`` of them; upper levels add 6 ``hnsw_m`` / (``hnsw_m`` - 1)
        on average), each 8-aligned, with two line pointers: pgvector's
        ``HNSW_ELEMENT_TUPLE_SIZE`` and ``HNSW_NEIGHBOR_TUPLE_SIZE`` (``src/hnsw.h``).
        """
        page = 8192 - 24  # a page less its header

        def packed(row: float) -> float:  # whole rows per page
            return page / max(1, page // row)

        name = 0 if not name_bytes else name_bytes + (1 if name_bytes < 127 else 4)
        vec = 8 + 4 * d
        if 24 + 8 + name + vec > 2032:  # TOAST_TUPLE_THRESHOLD: the vector goes out of line
            heap = packed(_align(24 + 8 + 18 + name) + 4)  # an 18-byte TOAST pointer stays
            for chunk in [1996] * (vec // 1996) + ([vec % 1996] if vec % 1996 else []):
                heap += packed(_align(24 + 12 + chunk) + 4) + 20 / 0.9  # + its index entry
        else:
            heap = packed(_align(24 + 8 + vec + name) + 4)
        graph = 0.0
        indexed = [m for m in sizes if m < d] + ([d] if full_index else [])
        for m in indexed:
            element = _align(72 + 8 + (2 if halfvec and m < d else 4) * m)
            links = _align(4 + 12 * hnsw_m) + 6 * hnsw_m / (hnsw_m - 1)
            graph += packed(element + links + 8)
        out = {"vectors": heap - name, "ids": 20 / 0.9, "names": float(name), "index": graph}
        out["total"] = sum(out.values())
        return out


def _align(n: float) -> int:
    """Round up to PostgreSQL's MAXALIGN (8 bytes)."""
    return int(-(-n // 8) * 8)
