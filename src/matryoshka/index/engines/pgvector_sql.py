"""The SQL of the pgvector back end: a table, HNSW indexes on prefixes, the funnel as one query.

One table per collection holds each vector once at full size, ``embedding vector(d)``, beside its
``id`` and ``name``. A prefix is not stored a second time in the table: each stored size ``m``
gets an HNSW **expression index** on the first ``m`` dimensions, and the index keeps that prefix
(as ``halfvec``, 2 bytes a dimension, unless told otherwise). Two spellings of the prefix:

- ``flavour="subvector"`` (pgvector >= 0.7): ``subvector(embedding, 1, m)::halfvec(m)``;
- ``flavour="array"`` (pgvector < 0.7, without ``subvector`` and ``halfvec``):
  ``((embedding::real[])[1:m])::vector(m)``: casts and slice are immutable, so PostgreSQL
  indexes the expression itself (tried on pgvector 0.6.2 and 0.8.1), no generated column.

pgvector's HNSW indexes hold at most 2,000 dimensions of ``vector`` and 4,000 of ``halfvec``.
A funnel ``[(m1, k1), (m2, k2), ..., (mt, k)]`` is one statement of nested subqueries: the
innermost orders the table by the indexed prefix expression (so PostgreSQL walks the HNSW
graph) and keeps ``k1`` rows; each outer one reorders the shortlist below it at its own size, in
float32, and the outermost returns ``k`` rows with their distance at the last size. The operators
are pgvector's distances, ascending: ``<=>`` cosine distance of the two prefixes (1 - cosine
similarity, the cosine :class:`MatryoshkaIndex` computes at each size), ``<#>`` the *negative*
inner product, ``<->`` the Euclidean distance (the index reports it squared).
:func:`pgvector_sql` writes the whole recipe for a two-stage funnel and
:func:`write_pgvector_sql` a file that also loads an index's rows (``psql -f``).

The layout (``d``, metric, sizes, flavour, halfvec) is kept as JSON in the table's comment, so a
table written by either path can be opened again by
:class:`~matryoshka.index.engines.pgvector.PgvectorIndex`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_file
from matryoshka._runtime import progress_bar
from matryoshka.dims import validate_dims
from matryoshka.index.engines.base import check_collection, index_batches
from matryoshka.index.exact import METRICS
from matryoshka.index.funnel import check_funnel, format_funnel

__all__ = ["PgTable", "copy_text", "funnel_sql", "pgvector_sql", "write_pgvector_sql"]

FLAVOURS = ("subvector", "array")
OPERATORS = {"cosine": "<=>", "ip": "<#>", "l2": "<->"}
HNSW_MAX = {"vector": 2000, "halfvec": 4000}  # dimensions pgvector's HNSW indexes accept
MAX_EF_SEARCH = 1000  # pgvector's ceiling for hnsw.ef_search
COMMENT_TAG = "matryoshka "  # the table comment: this tag, then the layout as JSON
_ROW = "%.9g"  # nine significant digits give back every float32 exactly


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: ``"matryoshka"``."""
    return '"' + name.replace('"', '""') + '"'


def vector_text(x: np.ndarray) -> str:
    """One vector (d,) as pgvector's text input, ``[0.5,-1.25,...]``, exact for float32."""
    return "[" + ",".join([_ROW] * len(x)) % tuple(np.asarray(x, dtype=np.float32).tolist()) + "]"


@dataclass(frozen=True)
class PgTable:
    """A matryoshka table in PostgreSQL: what every statement about it is written from.

    Parameters
    ----------
    table : str
        Table name (letters, digits, underscores); indexes are named ``<table>_m<size>``.
    d : int
        Full size: the column is ``embedding vector(d)``.
    metric : {"cosine", "ip", "l2"}
    sizes : tuple of int
        Prefix sizes below ``d``, each with an HNSW expression index.
    flavour : {"subvector", "array"}
        How the prefix is written (see the module notes); ``"array"`` for pgvector < 0.7.
    halfvec : bool
        Index prefixes as ``halfvec`` (half the bytes, up to 4,000 dimensions; needs pgvector
        >= 0.7, so not with ``flavour="array"``) rather than ``vector`` (up to 2,000).
        Values beyond halfvec's range (65,504) cannot be inserted then.
    full_index : bool
        Also index ``embedding`` itself (``d`` <= 2,000), for searches at size ``d`` alone;
        funnels never need it (their last stages reorder a shortlist).
    hnsw_m, ef_construction : int
        pgvector's HNSW build options ``m`` (links per node) and ``ef_construction``.
    """

    table: str
    d: int
    metric: str = "cosine"
    sizes: tuple[int, ...] = ()
    flavour: str = "subvector"
    halfvec: bool = True
    full_index: bool = False
    hnsw_m: int = 16
    ef_construction: int = 64

    def __post_init__(self) -> None:
        check_collection(self.table)
        if len(self.table) > 48:
            raise ValueError(f"table names are limited to 48 characters, got {self.table!r}")
        if self.metric not in METRICS or self.flavour not in FLAVOURS:
            raise ValueError(
                f"metric must be one of {METRICS} and flavour one of {FLAVOURS}, "
                f"got {self.metric!r}, {self.flavour!r}"
            )
        if self.halfvec and self.flavour == "array":
            raise ValueError(
                "halfvec arrived in pgvector 0.7 together with subvector: use "
                "flavour='subvector' with halfvec, or halfvec=False"
            )
        if list(self.sizes) != sorted(set(self.sizes)) or not all(
            0 < m < self.d for m in self.sizes
        ):
            raise ValueError(
                f"sizes must be ascending, distinct and below d={self.d}, got {list(self.sizes)}"
            )
        kind = "halfvec" if self.halfvec else "vector"
        if any(m > HNSW_MAX[kind] for m in self.sizes) or (
            self.full_index and self.d > HNSW_MAX["vector"]
        ):
            raise ValueError(
                f"pgvector's HNSW indexes hold at most {HNSW_MAX[kind]:,} "
                f"dimensions of {kind}, fewer than sizes {list(self.sizes)} "
                f"(or d={self.d} with full_index) need"
            )

    # ------------------------------------------------------------------ expressions
    @property
    def name(self) -> str:
        return quote_ident(self.table)

    def prefix(self, vec: str, m: int, indexed: bool) -> str:
        """The first ``m`` dimensions of the vector expression ``vec``.

        ``indexed``: exactly the expression the HNSW index holds (typed, maybe halfvec), so
        that ``ORDER BY`` it uses the index; otherwise the float32 prefix, for reordering.
        """
        if m == self.d:
            return vec
        if self.flavour == "subvector":
            expr = f"subvector({vec}, 1, {m})"
        else:
            expr = f"(({vec})::real[])[1:{m}]::vector"
        if not indexed:
            return expr
        if self.flavour == "array":
            return f"({expr}({m}))"
        return f"({expr}::{'halfvec' if self.halfvec else 'vector'}({m}))"

    def distance(self, col: str, q: str, m: int, indexed: bool = False) -> str:
        """pgvector's distance at size ``m`` between a row's ``col`` and the query ``q``."""
        op = OPERATORS[self.metric]
        return f"{self.prefix(col, m, indexed)} {op} {self.prefix(q, m, indexed)}"

    # ------------------------------------------------------------------ statements
    def comment(self) -> str:
        """The layout as the table comment holds it."""
        keep = {k: v for k, v in asdict(self).items() if k != "table"}
        keep["sizes"] = [*self.sizes, self.d]
        return COMMENT_TAG + json.dumps(keep, separators=(",", ":"))

    @classmethod
    def from_comment(cls, table: str, text: str) -> PgTable:
        """Read back :meth:`comment` (``ValueError`` when it is not one of ours)."""
        if not text or not text.startswith(COMMENT_TAG):
            raise ValueError("no matryoshka layout in the table comment")
        raw: dict[str, Any] = json.loads(text[len(COMMENT_TAG) :])
        raw["sizes"] = tuple(m for m in raw["sizes"] if m != raw["d"])
        return cls(table=table, **raw)

    def create_sql(self) -> list[str]:
        """The extension, the table and its layout comment (each statement re-runnable)."""
        return [
            "CREATE EXTENSION IF NOT EXISTS vector",
            f"CREATE TABLE IF NOT EXISTS {self.name} (id bigint PRIMARY KEY, name text, "
            f"embedding vector({self.d}) NOT NULL)",
            f"COMMENT ON TABLE {self.name} IS '{self.comment()}'",
        ]

    def upsert_sql(self, stage: str) -> str:
        """Move the rows of the (quoted) table ``stage`` in, replacing rows with the same id."""
        return (
            f"INSERT INTO {self.name} (id, name, embedding)\n"
            f"SELECT id, name, embedding FROM {stage}\n"
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, embedding = EXCLUDED.embedding"
        )

    def index_name(self, m: int) -> str:
        return quote_ident(f"{self.table}_m{m}")

    def index_sql(self) -> list[str]:
        """One ``CREATE INDEX IF NOT EXISTS`` per indexed size (HNSW, the metric's ops)."""
        ops = {"cosine": "cosine_ops", "ip": "ip_ops", "l2": "l2_ops"}[self.metric]
        with_ = f"WITH (m = {self.hnsw_m}, ef_construction = {self.ef_construction})"
        out = []
        for m in self.sizes:
            kind = "halfvec" if self.halfvec else "vector"
            out.append(
                f"CREATE INDEX IF NOT EXISTS {self.index_name(m)} ON {self.name} "
                f"USING hnsw ({self.prefix('embedding', m, True)} {kind}_{ops}) {with_}"
            )
        if self.full_index:
            out.append(
                f"CREATE INDEX IF NOT EXISTS {self.index_name(self.d)} ON {self.name} "
                f"USING hnsw (embedding vector_{ops}) {with_}"
            )
        return out


def funnel_sql(
    t: PgTable, stages: Sequence[tuple[int, int | str]], q: str, exact: bool = False
) -> str:
    """One SELECT running a funnel for the query expression ``q`` (a ``vector(d)``).

    Returns rows ``(id, name, distance)``, best first: pgvector's distance at the last stage's
    size. The first stage orders by the indexed prefix (its HNSW index; ``exact``: the float32
    prefix, which no index matches, so every row is scored); every later stage, and a
    one-stage search once more, reorders the shortlist in float32. ``q`` is spelt as the caller
    binds it: ``$1``, a function's argument ``q``, a lateral column ``qs.v``; a stage's ``k``
    may be a name too (a function's argument).
    """
    (m1, k1), *rest = stages
    first = t.distance("t.embedding", q, m1, indexed=not exact)
    sql = f"SELECT t.id, t.name, t.embedding FROM {t.name} AS t\nORDER BY {first}\nLIMIT {k1}"
    rest = rest or [(m1, k1)]  # one stage: its shortlist reordered by the float32 distance
    for i, (m, k) in enumerate(rest, start=1):
        s = f"s{i}"
        inner = sql.replace("\n", "\n    ")
        if i == len(rest):
            cols = f"{s}.id, {s}.name, {t.distance(f'{s}.embedding', q, m)} AS distance"
            order = "distance"
        else:
            cols, order = f"{s}.id, {s}.name, {s}.embedding", t.distance(f"{s}.embedding", q, m)
        sql = f"SELECT {cols}\nFROM (\n    {inner}\n) AS {s}\nORDER BY {order}\nLIMIT {k}"
    return sql


def ef_search_for(k1: int, ef_search: int | None = None) -> int:
    """``hnsw.ef_search`` for a first shortlist of ``k1``: at least k1, at most 1,000.

    pgvector's default (40) would cut every HNSW scan, and so the shortlist, to 40 rows.
    """
    return min(MAX_EF_SEARCH, max(k1, ef_search or 40))


def _search_function(t: PgTable, funnel: list[tuple[int, int]]) -> str:
    """``<table>_search(q vector(d), k integer DEFAULT k)``: the funnel as a SQL function."""
    settings = f"SET hnsw.ef_search = {ef_search_for(funnel[0][1])}"
    if funnel[0][1] > MAX_EF_SEARCH:  # iterative scans (pgvector >= 0.8) fill long shortlists
        settings += "\nSET hnsw.iterative_scan = relaxed_order  -- pgvector 0.8 and later"
    body = funnel_sql(t, [*funnel[:-1], (funnel[-1][0], "k")], "q")
    return (
        f"CREATE OR REPLACE FUNCTION {quote_ident(t.table + '_search')}"
        f"(q vector({t.d}), k integer DEFAULT {funnel[-1][1]})\n"
        "RETURNS TABLE (id bigint, name text, distance double precision)\n"
        f"LANGUAGE sql STABLE\n{settings}\nAS $$\n{body}\n$$"
    )


def _resolve(
    d: int,
    m: int | None,
    k1: int,
    k: int,
    funnel: Sequence[Sequence[int]] | None,
    sizes: Sequence[int] | None,
) -> tuple[list[tuple[int, int]], tuple[int, ...]]:
    """The funnel the SQL serves and the prefix sizes to index."""
    if funnel is None:
        if m is None:
            m = min(sizes) if sizes else (d // 4 if d >= 4 else d)
        funnel = [(m, k1), (d, k)]
    elif m is not None:
        raise ValueError("give m (with k1, k) or funnel, not both")
    stages = check_funnel(funnel, d)
    below = sorted({s for s, _ in stages if s < d})
    if sizes is None:
        sizes = below
    sizes = tuple(validate_dims(sorted(set(sizes) - {d}), d, "sizes")) if sizes else ()
    missing = sorted(set(below) - set(sizes))
    if missing:
        raise ValueError(
            f"the funnel searches at sizes {missing}, which need an index each: "
            f"add them to sizes {list(sizes)}"
        )
    return stages, sizes


def _recipe(
    d: int,
    metric: str,
    funnel: list[tuple[int, int]],
    sizes: tuple[int, ...],
    table: str,
    halfvec: bool | None,
    flavour: str,
    hnsw_m: int,
    ef_construction: int,
) -> tuple[PgTable, list[str], list[str]]:
    """The table and the statements before and after its rows: ``(t, head, tail)``."""
    if halfvec is None:
        halfvec = flavour == "subvector" and all(m <= HNSW_MAX["halfvec"] for m in sizes)
    if flavour == "array" and funnel[0][1] > MAX_EF_SEARCH:
        raise ValueError(
            f"a first shortlist of {funnel[0][1]}: pgvector < 0.8 returns at most 1,000 rows "
            "from an HNSW scan; longer ones need pgvector >= 0.8 (flavour='subvector')"
        )
    full = funnel[0][0] == d and d <= HNSW_MAX["vector"]  # else a search at d scans the table
    t = PgTable(table, d, metric, sizes, flavour, halfvec, full, hnsw_m, ef_construction)
    note = (
        f"-- matryoshka: the funnel {format_funnel(funnel)} on pgvector ({flavour} flavour), "
        f"metric {metric}.\n-- Run with: psql -v ON_ERROR_STOP=1 -f FILE (again: harmless).\n"
    )
    head = [note + "SET client_min_messages = warning", *t.create_sql()]
    search = (
        f"-- search: SELECT * FROM {t.table}_search('[...]'::vector({d}), {funnel[-1][1]});\n"
        f"-- distance: pgvector's {OPERATORS[metric]} at size {funnel[-1][0]}\n"
        + _search_function(t, funnel)
    )
    return t, head, [*t.index_sql(), f"ANALYZE {t.name}", search]


def _statements(sql: list[str]) -> str:
    return "".join(s + ";\n\n" for s in sql)


def pgvector_sql(
    d: int,
    metric: str = "cosine",
    m: int | None = None,
    k1: int = 200,
    k: int = 10,
    table: str = "matryoshka",
    halfvec: bool | None = None,
    flavour: str = "subvector",
    *,
    funnel: Sequence[Sequence[int]] | None = None,
    sizes: Sequence[int] | None = None,
    hnsw_m: int = 16,
    ef_construction: int = 64,
) -> str:
    """The SQL of a funnel on pgvector, by default two stages ``[(m, k1), (d, k)]``.

    The extension, the table (``id bigint``, ``name text``, ``embedding vector(d)``), an
    HNSW expression index on the first ``m`` dimensions (one per size of ``sizes``) and a SQL
    function ``<table>_search(q vector(d), k integer DEFAULT k)`` returning ``(id, name,
    distance)``: the ``k1`` nearest by the indexed prefix, reordered by the full vector, ``k``
    returned. Rows go between the table and the index (:func:`write_pgvector_sql` puts them
    there).

    Parameters
    ----------
    d : int
        Full size.
    metric : {"cosine", "ip", "l2"}, default "cosine"
    m : int, optional
        Prefix size the first stage searches (default the smallest of ``sizes``, else
        ``d // 4``; ``d``: a plain HNSW index on ``embedding``, d <= 2,000).
    k1, k : int, default 200, 10
        The shortlist's length and the function's default number of results.
    table : str, default "matryoshka"
    halfvec : bool, optional
        Index prefixes as ``halfvec`` (default: yes with ``flavour="subvector"``, no with
        ``"array"``).
    flavour : {"subvector", "array"}, default "subvector"
        ``"array"`` for pgvector < 0.7 (see the module notes).
    funnel : list of (int, int), optional
        Any funnel instead of ``[(m, k1), (d, k)]`` (then without ``m``).
    sizes : list of int, optional
        Prefix sizes to index (default: the funnel's sizes below ``d``); must hold them.
    hnsw_m, ef_construction : int, default 16, 64
        pgvector's HNSW build options.

    Returns
    -------
    str
        The statements, each ending in ``;``, with ``--`` comments.

    Examples
    --------
    >>> print(pgvector_sql(256, m=64).split("USING ")[1].split(" WITH")[0])
    hnsw ((subvector(embedding, 1, 64)::halfvec(64)) halfvec_cosine_ops)
    """
    stages, sizes = _resolve(d, m, k1, k, funnel, sizes)
    _, head, tail = _recipe(
        d, metric, stages, sizes, table, halfvec, flavour, hnsw_m, ef_construction
    )
    return _statements(head + tail)


def _copy_field(v: str) -> str:
    """A text field of COPY's text format (backslash escapes)."""
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_text(ids: np.ndarray, xb: np.ndarray, names: Sequence[str] | None) -> str:
    """Rows as the data lines of ``COPY ... (id, name, embedding) FROM stdin`` (text format).

    Each line: ``id<TAB>name<TAB>[x1,...,xd]``, ``\\N`` for no name; floats with nine
    significant digits, so every float32 comes back exactly.
    """
    fmt = "[" + ",".join([_ROW] * xb.shape[1]) + "]"
    rows = np.asarray(xb, dtype=np.float32).tolist()
    out = []
    for r, (i, row) in enumerate(zip(np.asarray(ids).tolist(), rows)):
        name = "\\N" if names is None or names[r] is None else _copy_field(str(names[r]))
        out.append(f"{i}\t{name}\t{fmt % tuple(row)}\n")
    return "".join(out)


def _load_sql(t: PgTable, ids: np.ndarray, xb: np.ndarray, names: list[str] | None) -> str:
    """One batch: COPY into a temporary table, then upsert (re-running replaces, not fails)."""
    stage = quote_ident(f"{t.table}_load")
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {t.name});\n"
        f"COPY {stage} (id, name, embedding) FROM stdin;\n{copy_text(ids, xb, names)}\\.\n"
        f"{t.upsert_sql(stage)};\nTRUNCATE {stage};\n\n"
    )


def write_pgvector_sql(
    index: Any,
    path: str | os.PathLike,
    m: int | None = None,
    k1: int = 200,
    k: int = 10,
    table: str = "matryoshka",
    halfvec: bool | None = None,
    flavour: str = "subvector",
    *,
    funnel: Sequence[Sequence[int]] | None = None,
    sizes: Sequence[int] | None = None,
    batch_size: int = 10_000,
    progress: bool = False,
    hnsw_m: int = 16,
    ef_construction: int = 64,
) -> Path:
    """Write a :class:`MatryoshkaIndex` as one SQL file for pgvector: schema, rows, index, query.

    The file holds :func:`pgvector_sql`'s statements with the index's rows between the table
    and its HNSW indexes (a graph built once over loaded rows takes a quarter of the time of
    one grown row by row): per batch a ``COPY ... FROM stdin`` block (text format) into a
    temporary table, then ``INSERT ... ON CONFLICT (id) DO UPDATE``, so loading the file twice,
    or again after an interruption, leaves one copy of each row. Run it with ``psql -v
    ON_ERROR_STOP=1 -f FILE``. Written to a temporary name and renamed into place.

    Parameters
    ----------
    index : MatryoshkaIndex
        Its ids, names and vectors (as stored: after its transform, int8/binary decoded).
    path : str or PathLike
        The ``.sql`` file to write.
    m, k1, k, table, halfvec, flavour, funnel, sizes, hnsw_m, ef_construction
        As :func:`pgvector_sql`; the index gives ``d`` and the metric.
    batch_size : int, default 10000
        Rows per COPY block.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    Path
        The written file.
    """
    stages, sizes = _resolve(index.d, m, k1, k, funnel, sizes)
    t, head, tail = _recipe(
        index.d, index.metric, stages, sizes, table, halfvec, flavour, hnsw_m, ef_construction
    )
    path = Path(path)
    with (
        atomic_file(path, "w") as f,
        progress_bar(total=len(index), desc="write SQL", unit="vec", disable=not progress) as bar,
    ):
        f.write(_statements(head))
        for ids, xb, names in index_batches(index, batch_size):
            f.write(_load_sql(t, ids, xb, names))
            bar.update(len(ids))
        f.write(f"DROP TABLE IF EXISTS {quote_ident(t.table + '_load')};\n\n")
        f.write(_statements(tail))
    return path
