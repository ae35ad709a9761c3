"""``matryoshka index build|search|plan|tune|info``: store embeddings once, search them at any size.

``search`` and ``plan`` are also reachable at the top level (``matryoshka search``), the spelling
of earlier versions. Every input is checked before a progress bar starts, so a mistake costs no
waiting: a bad ``--dim``, ids that clash, a funnel that does not fit the index, ``-k`` that
differs from a funnel's last shortlist.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka.cli._common import add_common, dims_arg, progress_bar, search_in_batches
from matryoshka.cli.engines import (
    ENGINES,
    add_engine_arguments,
    add_export_command,
    check_engine_search,
    search_engine,
)
from matryoshka.cli.index_tune import add_tune_command

__all__ = ["add_index_commands"]

ANN_KINDS = ("hnsw", "ivf", "ivfpq", "adanns")  # matryoshka.index.ann, without importing faiss
METRICS = ("cosine", "ip", "l2")
TRANSFORMS = ("none", "l2", "layer-norm")  # matryoshka.index.vectors.TRANSFORMS
PRECISIONS = ("float32", "float16", "int8", "binary")


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--ann-param must be KEY=VALUE such as nprobe=32, got {item!r}")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _load_npy(path: str, what: str, column: str | None = None) -> Any:
    """Vectors from ``.npy``, ``.npz``, Parquet or JSONL (see ``matryoshka.index.read_vectors``),
    or a folder written by ``matryoshka embed`` (with or without ``--shard``), memory-mapped."""
    from matryoshka.index import read_vectors

    if Path(path).is_dir():
        from matryoshka.eval import open_embeddings

        return open_embeddings(path)  # rows read lazily, a range at a time
    try:
        return read_vectors(path, column)[0]
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None


def _read(path: str, column: str | None, ids_column: str | None):
    """Vectors, ids from a column (or None) and row names (or None), from a file or a folder
    written by ``matryoshka embed``: one ``embeddings.npy``, or a folder of shards read as one
    matrix (``matryoshka.eval.open_embeddings``: memory-mapped, every shard checked first)."""
    from matryoshka.index import read_vectors

    if Path(path).is_dir():
        from matryoshka.eval import open_embeddings

        rows = open_embeddings(path)
        return rows, None, rows.names
    try:
        x, ids = read_vectors(path, column, ids_column)
    except FileNotFoundError:
        raise FileNotFoundError(f"embeddings file not found: {path}") from None
    if ids is not None and ids.dtype.kind == "U":  # names, not numbers: the index numbers rows
        return x, None, ids.tolist()
    return x, ids, None


def _load_ids(path: str, n: int) -> np.ndarray:
    """Ids from a ``.npy``, checked whole before anything is added: (n,), integers, unique."""
    ids = np.load(path, allow_pickle=False)
    if ids.shape != (n,):
        raise ValueError(f"--ids must hold one id per embedding ({n}), got shape {ids.shape}")
    if n and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"--ids must be integers, got dtype {ids.dtype}")
    return _check_ids(ids)


def _check_ids(ids: np.ndarray) -> np.ndarray:
    if len(ids) and ids.min() < 0:
        raise ValueError(f"ids must be non-negative (-1 marks 'no result'), got {ids.min()}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"--ids must be unique, got {uniq[counts > 1][0]} more than once")
    return ids.astype(np.int64)


def _build(args: argparse.Namespace) -> int:
    """Build an index folder from an embeddings ``.npy`` or an embed folder, sharded or not
    (read memory-mapped, ``--batch`` rows at a time)."""
    from matryoshka._io import check_destination
    from matryoshka.index import MatryoshkaIndex
    from matryoshka.index.manifest import INDEX_FOLDER

    check_destination(args.out, INDEX_FOLDER, args.overwrite)
    x, file_ids, names = _read(args.embeddings, args.column, args.ids_column)
    d = x.shape[1] if args.dim is None else args.dim
    if not 1 <= d <= x.shape[1]:
        raise ValueError(f"--dim must be between 1 and the embeddings' {x.shape[1]} columns")
    if args.batch < 1:
        raise ValueError(f"--batch must be positive, got {args.batch}")
    if args.ann and args.ann_dim is None:
        raise ValueError("--ann needs --ann-dim, the size the approximate stage searches at")
    if args.ann and not 1 <= args.ann_dim <= d:
        raise ValueError(f"--ann-dim must be between 1 and the stored size {d}, got {args.ann_dim}")
    params = _parse_params(args.ann_param)
    if args.ids and file_ids is not None:
        raise ValueError("give ids either with --ids or with --ids-column, not both")
    ids = _load_ids(args.ids, len(x)) if args.ids else None
    ids = _check_ids(file_ids) if file_ids is not None else ids
    index = MatryoshkaIndex(d, args.metric, args.precision, args.rerank, args.prefix_transform)
    with progress_bar(len(x), "index", args.quiet) as bar:  # row batches, never the whole file
        for s in range(0, len(x), args.batch):
            e = min(len(x), s + args.batch)
            index.add(
                np.asarray(x[s:e, :d], dtype=np.float32),
                None if ids is None else ids[s:e],
                None if names is None else names[s:e],
            )
            bar.update(e - s)
    if args.ann:
        print(f"building {args.ann} at size {args.ann_dim} ...", file=sys.stderr)
        index.build_ann(args.ann, args.ann_dim, **params)
    index.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {len(index):,} vectors of size {d}, {args.precision}, {args.metric}")
    return 0


def _queries(args: argparse.Namespace) -> tuple[np.ndarray, list[str] | None]:
    """The query vectors (nq, d) and their names: from a file or an embed folder, or texts
    encoded here with ``--model`` (``--text`` one by one, ``--texts`` a file)."""
    given = [f for f, v in (("--queries", args.queries), ("--text", args.text),
                            ("--texts", args.texts)) if v]  # fmt: skip
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of --queries, --text and --texts, got {given or 'none'}"
        )
    if args.queries:
        x, _, names = _read(args.queries, args.column, None)
        return x, names
    if not args.model:
        raise ValueError(f"{given[0]} needs --model, the text model that made the index")
    from matryoshka.data import load_texts
    from matryoshka.models.text import encode_texts, load_sentence_encoder

    if args.texts:
        texts = load_texts(args.texts, args.text_column, args.id_column)
        strings, names = texts.texts, texts.ids
    else:
        strings, names = list(args.text), None
    model = load_sentence_encoder(args.model, progress=False)
    return encode_texts(model, strings, progress=False, prompt=args.prompt), names


def _write_results(D: np.ndarray, I: np.ndarray, out: str | None, names=None, qnames=None) -> None:  # noqa: E741
    from matryoshka._io import atomic_file

    if out and out.endswith(".npz"):
        with atomic_file(out) as f:
            np.savez(f, D=D, I=I)
        return
    rows = [{"query": i, "ids": ids.tolist(), "scores": [float(v) for v in ds]}
            for i, (ds, ids) in enumerate(zip(D, I, strict=True))]  # fmt: skip
    for row, named in zip(rows, names or [], strict=False):
        row["names"] = named  # the corpus's own ids, when the index holds them
    for row, qname in zip(rows, qnames or [], strict=False):
        row["query_name"] = qname
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    if out:
        with atomic_file(out, "w") as f:
            f.write(lines)
    else:
        sys.stdout.write(lines)


def _search(args: argparse.Namespace) -> int:
    """Search an index with queries from a ``.npy``; write ids and scores (JSON lines or npz)."""
    from matryoshka.index import MatryoshkaIndex, parse_funnel

    if args.batch < 1:
        raise ValueError(f"--batch must be positive, got {args.batch}")
    funnel = parse_funnel(args.funnel, "--funnel") if args.funnel is not None else None
    k = 10 if args.k is None and funnel is None else args.k
    if args.engine:  # the funnel in Qdrant, Milvus or PostgreSQL
        check_engine_search(args)
        xq, query_names = _queries(args)
        D, I, names = search_engine(args, xq, k, funnel)  # noqa: E741
        _write_results(D, I, args.out, names, query_names)
        return 0
    if args.index is None:
        raise ValueError("give INDEX (an index folder), or --engine and --url")
    index = MatryoshkaIndex.load(args.index, mmap=True, verify=not args.no_verify)
    xq, query_names = _queries(args)
    first = funnel[0][0] if funnel else (args.dim or index.d)
    if args.ann and args.ann != "saved" and args.ann_dim is not None and args.ann_dim != first:
        raise ValueError(
            f"--ann-dim {args.ann_dim} differs from the size of the first stage ({first}); "
            "the approximate stage replaces that stage"
        )
    if args.ann == "saved" and index.ann_ is None:
        raise ValueError(f"{args.index} holds no approximate first stage (build one with --ann)")
    if args.ann and args.ann != "saved":
        index.build_ann(args.ann, first, **_parse_params(args.ann_param))
    kw = {"dim": args.dim, "funnel": funnel, "ann": bool(args.ann)}
    D, I = search_in_batches(index.search, xq, k, args.batch, args.quiet, **kw)  # noqa: E741
    names = index.names_of(I) if index.names is not None else None
    _write_results(D, I, args.out, names, query_names)
    if args.out:
        print(f"wrote {args.out}: {len(I)} queries x {I.shape[1]} results", file=sys.stderr)
    return 0


def _plan(args: argparse.Namespace) -> int:
    """Print the storage plan as a Markdown table (and write it as JSON with ``--json``)."""
    from matryoshka._io import write_json
    from matryoshka.index import plan_storage
    from matryoshka.viz import plan_table

    emb = queries = None
    if args.embeddings:
        emb = _load_npy(args.embeddings, "embeddings", args.column)
        if args.queries:
            queries = _load_npy(args.queries, "queries", args.column)
        else:  # hold out a random sample as queries: files are often written class by class
            if args.holdout < 1:
                raise ValueError(f"--holdout must be at least 1, got {args.holdout}")
            if len(emb) <= args.holdout:
                raise ValueError(f"--holdout {args.holdout} leaves no embeddings to search")
            order = np.random.default_rng(args.seed).permutation(len(emb))
            queries = emb[np.sort(order[: args.holdout])]
            emb = emb[np.sort(order[args.holdout :])]
    elif args.queries:
        raise ValueError("--queries needs --embeddings")
    precisions = args.precisions.split(",") if args.precisions else PRECISIONS
    if emb is not None and args.prefix_transform != "none":  # on the full vector, as the index
        from matryoshka.index.vectors import apply_transform

        emb = apply_transform(np.asarray(emb, np.float32), args.prefix_transform)
        queries = apply_transform(np.asarray(queries, np.float32), args.prefix_transform)
    plan = plan_storage(
        args.n,
        args.budget,
        d=args.d,
        dims=args.dims,
        precisions=precisions,
        embeddings=emb,
        queries=queries,
        metric=args.metric,
        k=args.k,
        sample=args.sample,
        progress=not args.quiet,
        engine=args.engine,
        prefix_sizes=args.prefix_sizes,
    )
    sys.stdout.write(plan_table(plan, only_fitting=args.fitting_only))
    if args.json:
        write_json(args.json, plan)
    return 0


def _info(args: argparse.Namespace) -> int:
    """Print what an index folder holds (and check its files with ``--verify``)."""
    from matryoshka.index import MatryoshkaIndex

    index = MatryoshkaIndex.load(args.index, mmap=True, verify=args.verify)
    info = index.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        print(f"{key}: {value}")
    if args.verify:
        print("checksums: every file matches its manifest")
    return 0


def _add_build(isub: argparse._SubParsersAction) -> None:
    b = add_common(
        isub.add_parser(
            "build",
            help="store embeddings in an index folder (atomic write)",
            description="Read EMBEDDINGS (.npy, memory-mapped) in batches and write an index "
            "folder: manifest.json with checksums plus memory-mappable arrays, built beside OUT "
            "and renamed into place.",
        )
    )
    b.add_argument(
        "embeddings",
        help="embeddings (N, d): .npy, .npz, .parquet, .jsonl, or a folder written by "
        "`matryoshka embed` (its names.json becomes the index's names)",
    )
    b.add_argument("--out", required=True, help="index folder to write")
    b.add_argument("--metric", choices=METRICS, default="cosine", help="default: cosine")
    b.add_argument("--precision", choices=PRECISIONS, default="float32", help="default: float32")
    b.add_argument(
        "--rerank",
        choices=["float16", "float32"],
        help="with int8/binary: keep a float copy for the funnel's last stage",
    )
    b.add_argument("--dim", type=int, help="store only the first DIM columns (default: all)")
    b.add_argument("--ids", help=".npy of N non-negative int64 ids (default: 0..N-1)")
    b.add_argument("--column", help="the vectors' array, column or key (.npz, .parquet, .jsonl)")
    b.add_argument("--ids-column", help="the ids' array, column or key in the same file")
    b.add_argument(
        "--prefix-transform",
        choices=TRANSFORMS,
        default="none",
        help="a step the model prescribes on the full vector before cutting it (nomic-embed-text"
        "-v1.5: layer-norm); stored in the index and applied to queries too (default: none)",
    )
    b.add_argument("--batch", type=int, default=100_000, help="vectors per batch (default 100000)")
    b.add_argument("--ann", choices=ANN_KINDS, help="also build and save an approximate stage")
    b.add_argument("--ann-dim", type=int, help="size the approximate stage searches at")
    b.add_argument(
        "--ann-param",
        action="append",
        metavar="KEY=VALUE",
        help="approximate stage setting, repeatable (see `matryoshka index search --help`)",
    )
    b.add_argument(
        "--overwrite",
        action="store_true",
        help="write over an --out folder that holds something else (its other files are kept)",
    )
    b.set_defaults(func=_build)


def _add_search(sub: argparse._SubParsersAction, name: str, **kw: Any) -> None:
    p = add_common(
        sub.add_parser(
            name,
            description="Search INDEX with query vectors (--queries: a file or a folder from "
            "`matryoshka embed`) or with texts encoded by a text model (--text or --texts with "
            "--model). Give -k and optionally --dim, or a "
            "--funnel such as 32:400,128:50,512:10 (keep 400 at size 32, 50 of those at 128, "
            "return 10 at 512). --ann builds an approximate first stage with faiss before "
            "searching. Writes JSON lines {query, ids, scores} to stdout or --out (.jsonl), or "
            "arrays D and I to --out *.npz.",
            **kw,
        )
    )
    p.add_argument("index", nargs="?", help="index folder written by `matryoshka index build`")
    p.add_argument(
        "--queries", help="query vectors (nq, d): .npy, .npz, .parquet, .jsonl or an embed folder"
    )
    q = p.add_argument_group("text queries")
    q.add_argument("--text", action="append", help="a query text (repeatable); needs --model")
    q.add_argument("--texts", help="a file of query texts (JSONL, CSV, TSV, Parquet, .txt)")
    q.add_argument("--model", help="the text model folder that embedded the corpus, or "
                   "'packaged' (the packaged all-MiniLM-L6-v2)")  # fmt: skip
    q.add_argument("--prompt", help="put before every query text, e.g. 'query: '")
    q.add_argument("--text-column", default="text", help="with --texts (default: text)")
    q.add_argument("--id-column", help="with --texts: the queries' ids (default: _id or id)")
    p.add_argument("--column", help="the queries' array, column or key (.npz, .parquet, .jsonl)")
    p.add_argument(
        "-k",
        type=int,
        help="results per query (default 10; with --funnel it must "
        "equal the last stage's k, which is the default)",
    )
    p.add_argument("--dim", type=int, help="search size (default: the full size)")
    p.add_argument("--funnel", help="stages dim:k,dim:k,... (sizes up, shortlists down)")
    p.add_argument(
        "--ann",
        choices=(*ANN_KINDS, "saved"),
        help="approximate first stage (needs faiss): build one of these kinds now, or "
        "use the one saved in the index ('saved')",
    )
    p.add_argument("--ann-dim", type=int, help="size the approximate stage searches at")
    p.add_argument(
        "--ann-param",
        action="append",
        metavar="KEY=VALUE",
        help="approximate stage setting, repeatable: M=32, ef_construction=64, ef_search=128, "
        "bits=8 (HNSW's copy of the prefix in 8 bits; 16 or 32), nlist=1024, nprobe=16, "
        "pq_m=8, cluster_dim=64",
    )
    p.add_argument("--out", help="output file: .jsonl (default stdout) or .npz")
    p.add_argument("--batch", type=int, default=4096, help="queries per batch (default 4096)")
    p.add_argument("--no-verify", action="store_true", help="skip the index's checksums")
    add_engine_arguments(p)
    p.set_defaults(func=_search)


def _add_plan(sub: argparse._SubParsersAction, name: str, **kw: Any) -> None:
    p = add_common(
        sub.add_parser(
            name,
            description="List sizes x precisions (float32, float16, int8, binary) with their bytes "
            "(decimal units) for N vectors, mark what fits BUDGET and recommend one. With "
            "--embeddings (and --queries, or the last --holdout rows as queries) every row gets "
            "its recall@k against exact full-size search on a sample, and the recommendation is "
            "the best measured recall that fits.",
            **kw,
        )
    )
    p.add_argument("--n", type=int, required=True, help="number of vectors to store")
    p.add_argument("--budget", required=True, help="memory budget, e.g. 100GB or 64GiB")
    p.add_argument("--d", type=int, help="full embedding size (default: embeddings' or 2048)")
    p.add_argument(
        "--dims",
        type=dims_arg,
        metavar="M,M,...",
        help="sizes to list, e.g. 64,128,256 (default: 8,16,...,d)",
    )
    p.add_argument("--precisions", help="comma-separated subset (default: all four)")
    p.add_argument("--embeddings", help="embeddings .npy to measure recall on")
    p.add_argument("--queries", help="queries file (default: --holdout embeddings at random)")
    p.add_argument(
        "--holdout", type=int, default=1000, help="queries drawn at random (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of that draw (default 0)")
    p.add_argument("--column", help="the vectors' array, column or key (.npz, .parquet, .jsonl)")
    p.add_argument("--metric", choices=METRICS, default="cosine", help="default: cosine")
    p.add_argument(
        "--prefix-transform",
        choices=TRANSFORMS,
        default="none",
        help="applied to each full vector before it is cut, as `index build` does (default none)",
    )
    p.add_argument("-k", type=int, default=10, help="recall@k (default 10)")
    p.add_argument("--sample", type=int, default=100_000, help="embeddings searched (default 1e5)")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        help="count what this vector engine stores (float32 rows, prefix copies)",
    )
    p.add_argument(
        "--prefix-sizes",
        type=dims_arg,
        metavar="M,M,...",
        default=[],
        help="with --engine: prefix sizes stored beside the full vector",
    )
    p.add_argument("--fitting-only", action="store_true", help="list only rows that fit")
    p.add_argument("--json", help="also write the plan as JSON here")
    p.set_defaults(func=_plan)


def add_index_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``index build|search|plan|tune|export|info`` and the top-level ``search``, ``plan``."""
    p = add_common(
        sub.add_parser(
            "index",
            help="build, search, plan and inspect MatryoshkaIndex folders",
            description="`matryoshka index build EMB.npy --out DIR` stores each vector once; "
            "`index search` searches it at any size or through a funnel; `index plan` picks a size "
            "and precision for a memory budget; `index export` copies it into Qdrant, Milvus or "
            "PostgreSQL; `index info` says what a folder holds.",
        ),
        quiet=False,
    )
    isub = p.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    _add_build(isub)
    _add_search(isub, "search", help="search an index at one size or through a funnel")
    _add_plan(isub, "plan", help="choose a size and precision for N vectors in a memory budget")
    add_tune_command(isub)
    add_export_command(isub)
    info = add_common(
        isub.add_parser(
            "info",
            help="what an index folder holds: size, precision, count, files",
            description="Print an index folder's manifest: format version, d, metric, precision, "
            "count, column panels, bytes and the approximate stage if any.",
        ),
        quiet=False,
    )
    info.add_argument("index", help="index folder written by `matryoshka index build`")
    info.add_argument("--verify", action="store_true", help="also check every file's sha256")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=_info)
    _add_search(sub, "search", help="same as `index search`")
    _add_plan(sub, "plan", help="same as `index plan`")
