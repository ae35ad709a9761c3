"""``matryoshka index export`` and ``matryoshka search --engine``: the funnel on a vector engine.

``index export INDEX --to qdrant --url qdrant-data/`` uploads an index (vectors, ids, names) in
batches with a progress bar; an interrupted export run again sends only what is missing, and a
second export of the same index adds nothing. ``--to pgvector --out index.sql`` writes the SQL
(table, data, an HNSW expression index on the prefix, the two-stage query) instead of running it.
``search --engine qdrant --url qdrant-data/ --funnel 64:200,512:10`` runs the funnel in the
engine. Registered by :func:`matryoshka.cli.index.add_index_commands`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from matryoshka.cli._common import add_common, dims_arg, search_in_batches

__all__ = [
    "ENGINES",
    "add_engine_arguments",
    "add_export_command",
    "check_engine_search",
    "search_engine",
]

ENGINES = ("qdrant", "milvus", "pgvector")  # matryoshka.index.engines.ENGINES, without imports

_TARGET_HELP = (
    "where the engine is: a folder (Qdrant Edge, embedded), a .db file (Milvus Lite, embedded), "
    "or an address: http://host:6333 (Qdrant), http://host:19530 (Milvus), "
    "postgresql://user@host/db (pgvector)"
)


def _export(args: argparse.Namespace) -> int:
    """Upload an index into an engine (or write pgvector's SQL), resumably, in batches."""
    from matryoshka.index import MatryoshkaIndex, parse_funnel
    from matryoshka.index.engines import engine_class

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.out and args.to != "pgvector":
        raise ValueError(f"--out writes SQL for --to pgvector; --to {args.to} needs --url")
    if not args.out and not args.url:
        raise ValueError(f"--to {args.to} needs --url: {_TARGET_HELP}")
    funnel = parse_funnel(args.funnel, "--funnel") if args.funnel else None
    index = MatryoshkaIndex.load(args.index, mmap=True, verify=not args.no_verify)
    # the prefix sizes to store: --sizes, else every size of --funnel below d
    sizes = args.sizes or (sorted({m for m, _ in funnel if m < index.d}) if funnel else None)
    if args.out:
        return _write_sql(args, index, sizes, funnel)
    cls = engine_class(args.to)
    with cls.from_index(
        index, args.url, sizes=sizes, collection=args.collection,
        batch_size=args.batch_size, progress=not args.quiet,
    ) as engine:  # fmt: skip
        count, stored = engine.count(), list(engine.sizes)
        per = cls.bytes_per_vector(index.d, stored[:-1])["total"]
    print(
        f"exported {len(index):,} vectors to {args.to} {args.url} collection "
        f"{args.collection!r}: it holds {count:,}, sizes {stored}, about {per:,.0f} bytes "
        "per vector in the engine"
    )
    return 0


def _write_sql(
    args: argparse.Namespace, index: Any, sizes: list[int] | None, funnel: list | None
) -> int:
    """``--to pgvector --out FILE.sql``: the schema, the data, the prefix index and the query."""
    from matryoshka.index.engines.pgvector import write_pgvector_sql

    write_pgvector_sql(
        index, args.out, sizes=sizes, funnel=funnel, table=args.collection,
        batch_size=args.batch_size, progress=not args.quiet,
    )  # fmt: skip
    print(f"wrote {args.out}: {len(index):,} vectors for table {args.collection!r}")
    return 0


def add_export_command(isub: argparse._SubParsersAction) -> None:
    """``index export INDEX --to qdrant|milvus|pgvector [--url ...]``."""
    p = add_common(
        isub.add_parser(
            "export",
            help="upload an index to Qdrant, Milvus or PostgreSQL (pgvector), or write the SQL",
            description="Copy an index's vectors, ids and names into a vector engine, with "
            "the prefix sizes its funnels use stored beside the full vector (extra copies "
            "inside the engine). Batched and resumable: run the same command again after an "
            "interruption and only the missing vectors are sent; exporting twice adds nothing. "
            "Search it afterwards with `matryoshka search --engine`.",
        )
    )
    p.add_argument("index", help="index folder written by `matryoshka index build`")
    p.add_argument("--to", choices=ENGINES, required=True, help="the engine")
    p.add_argument("--url", help=_TARGET_HELP)
    p.add_argument("--out", help="--to pgvector: write the SQL to this .sql file instead")
    p.add_argument("--collection", default="matryoshka", help="collection or table name")
    p.add_argument("--sizes", type=dims_arg, metavar="M,M,...",
                   help="prefix sizes to store beside the full vector (default: the sizes of "
                   "--funnel below d, else d/4)")  # fmt: skip
    p.add_argument("--funnel", help="the funnel to serve, e.g. 64:200,512:10 (sets --sizes; "
                   "--out: the query the SQL file ends with)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=1024, help="vectors per request (1024)")
    p.add_argument("--no-verify", action="store_true", help="skip the index's checksums")
    p.set_defaults(func=_export)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine``, ``--url``, ``--collection`` and ``--exact`` on the search command."""
    g = p.add_argument_group("searching a vector engine instead of an index folder")
    g.add_argument("--engine", choices=ENGINES, help="search this engine (give --url, not INDEX)")
    g.add_argument("--url", help=_TARGET_HELP)
    g.add_argument("--collection", default="matryoshka", help="collection or table name")
    g.add_argument("--exact", action="store_true", help="brute-force scoring in the engine")


def check_engine_search(args: argparse.Namespace) -> None:
    """``search --engine``'s flags, checked before any query is read or encoded."""
    if args.index is not None or not args.url:
        raise ValueError("--engine searches the engine at --url: give --url and no INDEX")
    if args.ann or args.ann_dim or args.ann_param:
        raise ValueError("--ann builds a faiss stage for an index folder; engines use their own")


def search_engine(
    args: argparse.Namespace, xq: np.ndarray, k: int | None, funnel: list | None
) -> tuple[np.ndarray, np.ndarray, list | None]:
    """Run the search in the engine, batch by batch: ``D``, ``I`` (nq, k) and names or None."""
    from matryoshka.index.engines import open_engine

    with open_engine(args.engine, args.url, collection=args.collection) as engine:
        kw = {"dim": args.dim, "funnel": funnel, "exact": args.exact}
        D, I = search_in_batches(engine.search, xq, k, args.batch, args.quiet, **kw)  # noqa: E741
        names = engine.names_of(I)
    if all(n is None for row in names for n in row):
        names = None
    print(f"searched {len(I)} queries in {args.engine} {args.url}", file=sys.stderr)
    return D, I, names
