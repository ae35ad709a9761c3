"""Command-line commands of the index: ``matryoshka index build``, ``search`` and ``plan``.

``add_index_commands(sub)`` adds the three commands to the ``matryoshka`` parser's subparsers;
each sets ``func`` to its ``run_*`` function, which takes the parsed namespace and returns an exit
code (user errors raise ``ValueError`` or ``FileNotFoundError``, for the caller to print).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_file, write_json
from matryoshka.index.ann import ANN_KINDS
from matryoshka.index.core import MatryoshkaIndex
from matryoshka.index.exact import METRICS
from matryoshka.index.planner import plan_storage, plan_table
from matryoshka.index.storage import PRECISIONS

__all__ = [
    "add_index_commands",
    "parse_funnel",
    "run_index_build",
    "run_plan",
    "run_search",
]


def parse_funnel(text: str) -> list[tuple[int, int]]:
    """``"32:400,128:50,512:10"`` -> ``[(32, 400), (128, 50), (512, 10)]``."""
    try:
        stages = [tuple(int(v) for v in st.split(":")) for st in text.split(",")]
    except ValueError:
        stages = []
    if not stages or any(len(st) != 2 for st in stages):
        raise ValueError(f"--funnel must look like 32:400,128:50,512:10 (dim:k,...), got {text!r}")
    return stages  # type: ignore[return-value]


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--ann-param must be KEY=VALUE such as nprobe=32, got {item!r}")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _load_npy(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        x = np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{what} {path} is not a plain .npy array: {e}") from None
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n, d), got shape {x.shape} in {path}")
    return x


def _bar(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="vec", disable=quiet, file=sys.stderr)


# ---------------------------------------------------------------------- index build
def run_index_build(args: argparse.Namespace) -> int:
    """Build an index folder from an embeddings ``.npy`` (read memory-mapped, in batches)."""
    x = _load_npy(args.embeddings, "embeddings")
    d = x.shape[1] if args.dim is None else args.dim
    if not 1 <= d <= x.shape[1]:
        raise ValueError(f"--dim must be between 1 and the embeddings' {x.shape[1]} columns")
    ids = None
    if args.ids:
        ids = np.load(args.ids, allow_pickle=False)
        if ids.shape != (len(x),):
            raise ValueError(f"--ids must hold one id per embedding ({len(x)}), got {ids.shape}")
    index = MatryoshkaIndex(d, args.metric, args.precision, rerank=args.rerank)
    with _bar(len(x), "index", args.quiet) as bar:
        for s in range(0, len(x), args.batch):
            e = min(len(x), s + args.batch)
            index.add(np.asarray(x[s:e, :d], dtype=np.float32), None if ids is None else ids[s:e])
            bar.update(e - s)
    if args.ann:
        if not args.ann_dim:
            raise ValueError("--ann needs --ann-dim, the size the approximate stage searches at")
        print(f"building {args.ann} at size {args.ann_dim} ...", file=sys.stderr)
        index.build_ann(args.ann, args.ann_dim, **_parse_params(args.ann_param))
    index.save(args.out)
    print(f"wrote {args.out}: {len(index):,} vectors of size {d}, {args.precision}, {args.metric}")
    return 0


# ---------------------------------------------------------------------- search
def run_search(args: argparse.Namespace) -> int:
    """Search an index with queries from a ``.npy``; write ids and scores (JSON lines or npz)."""
    index = MatryoshkaIndex.load(args.index, mmap=True, verify=not args.no_verify)
    xq = _load_npy(args.queries, "queries")
    funnel = parse_funnel(args.funnel) if args.funnel else None
    k = None if funnel else args.k
    if args.ann == "saved":
        if index.ann_ is None:
            raise ValueError(
                f"{args.index} holds no approximate first stage (build one with --ann)"
            )
    elif args.ann:
        dim = args.ann_dim or (funnel[0][0] if funnel else args.dim or index.d)
        index.build_ann(args.ann, dim, **_parse_params(args.ann_param))
    Ds, Is = [], []
    with _bar(len(xq), "search", args.quiet) as bar:
        for s in range(0, len(xq), args.batch):
            q = np.asarray(xq[s : s + args.batch], dtype=np.float32)
            D, I = index.search(q, k, dim=args.dim, funnel=funnel, ann=bool(args.ann))  # noqa: E741
            Ds.append(D)
            Is.append(I)
            bar.update(len(q))
    D = np.concatenate(Ds) if Ds else np.empty((0, 0), np.float32)
    I = np.concatenate(Is) if Is else np.empty((0, 0), np.int64)  # noqa: E741
    if args.out and args.out.endswith(".npz"):
        with atomic_file(args.out) as f:
            np.savez(f, D=D, I=I)
    else:
        lines = "".join(
            json.dumps({"query": i, "ids": ids.tolist(), "scores": [float(v) for v in ds]}) + "\n"
            for i, (ds, ids) in enumerate(zip(D, I, strict=True))
        )
        if args.out:
            with atomic_file(args.out, "w") as f:
                f.write(lines)
        else:
            sys.stdout.write(lines)
    if args.out:
        print(f"wrote {args.out}: {len(I)} queries x {I.shape[1]} results", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- plan
def run_plan(args: argparse.Namespace) -> int:
    """Print the storage plan as a Markdown table (and write it as JSON with ``--json``)."""
    emb = queries = None
    if args.embeddings:
        emb = _load_npy(args.embeddings, "embeddings")
        if args.queries:
            queries = _load_npy(args.queries, "queries")
        else:  # hold out the last rows as queries
            if len(emb) <= args.holdout:
                raise ValueError(f"--holdout {args.holdout} leaves no embeddings to search")
            emb, queries = emb[: -args.holdout], emb[-args.holdout :]
    elif args.queries:
        raise ValueError("--queries needs --embeddings")
    dims = [int(v) for v in args.dims.split(",")] if args.dims else None
    precisions = args.precisions.split(",") if args.precisions else PRECISIONS
    plan = plan_storage(
        args.n,
        args.budget,
        d=args.d,
        dims=dims,
        precisions=precisions,
        embeddings=emb,
        queries=queries,
        metric=args.metric,
        k=args.k,
        sample=args.sample,
        progress=not args.quiet,
    )
    sys.stdout.write(plan_table(plan, only_fitting=args.fitting_only))
    if args.json:
        write_json(args.json, plan)
    return 0


# ---------------------------------------------------------------------- parsers
def add_index_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``index`` (with ``build``), ``search`` and ``plan`` to the command's subparsers."""
    p = sub.add_parser(
        "index",
        help="build a MatryoshkaIndex folder from embeddings",
        description="Index commands. `matryoshka index build EMB.npy --out DIR` stores each "
        "vector once; `matryoshka search` then searches it at any size or through a funnel.",
    )
    isub = p.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    b = isub.add_parser(
        "build",
        help="store embeddings in an index folder (atomic write)",
        description="Read EMBEDDINGS (.npy, memory-mapped) in batches and write an index folder: "
        "manifest.json with checksums plus memory-mappable arrays, built beside OUT and "
        "renamed into place.",
    )
    b.add_argument("embeddings", help="embeddings .npy of shape (N, d)")
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
    b.add_argument("--batch", type=int, default=100_000, help="vectors per batch (default 100000)")
    b.add_argument("--ann", choices=ANN_KINDS, help="also build and save an approximate stage")
    b.add_argument("--ann-dim", type=int, help="size the approximate stage searches at")
    b.add_argument(
        "--ann-param",
        action="append",
        metavar="KEY=VALUE",
        help="approximate stage setting, repeatable (see `matryoshka search --help`)",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=run_index_build)

    p = sub.add_parser(
        "search",
        help="search an index at one size or through a funnel",
        description="Search INDEX with QUERIES (.npy). Give -k and optionally --dim, or a "
        "--funnel such as 32:400,128:50,512:10 (keep 400 at size 32, 50 of those at 128, "
        "return 10 at 512). --ann builds an approximate first stage with faiss before "
        "searching. Writes JSON lines {query, ids, scores} to stdout or --out (.jsonl), or "
        "arrays D and I to --out *.npz.",
    )
    p.add_argument("index", help="index folder written by `matryoshka index build`")
    p.add_argument("--queries", required=True, help="queries .npy of shape (nq, d)")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--dim", type=int, help="search size (default: the full size)")
    p.add_argument("--funnel", help="stages dim:k,dim:k,... (sizes up, shortlists down)")
    p.add_argument(
        "--ann",
        choices=(*ANN_KINDS, "saved"),
        help="approximate first stage (needs faiss): build one of these kinds now, or use the "
        "one saved in the index ('saved')",
    )
    p.add_argument("--ann-dim", type=int, help="size the approximate stage searches at")
    p.add_argument(
        "--ann-param",
        action="append",
        metavar="KEY=VALUE",
        help="approximate stage setting, repeatable: M=32, ef_search=128, nlist=1024, "
        "nprobe=16, pq_m=8, cluster_dim=64",
    )
    p.add_argument("--out", help="output file: .jsonl (default stdout) or .npz")
    p.add_argument("--batch", type=int, default=4096, help="queries per batch (default 4096)")
    p.add_argument("--no-verify", action="store_true", help="skip the index's checksums")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_search)

    p = sub.add_parser(
        "plan",
        help="choose a size and precision for N vectors in a memory budget",
        description="List sizes x precisions (float32, float16, int8, binary) with their bytes "
        "(decimal units) for N vectors, mark what fits BUDGET and recommend one. With "
        "--embeddings (and --queries, or the last --holdout rows as queries) every row gets "
        "its recall@k against exact full-size search on a sample, and the recommendation is "
        "the best measured recall that fits.",
    )
    p.add_argument("--n", type=int, required=True, help="number of vectors to store")
    p.add_argument("--budget", required=True, help="memory budget, e.g. 100GB or 64GiB")
    p.add_argument("--d", type=int, help="full embedding size (default: embeddings' or 2048)")
    p.add_argument("--dims", help="sizes to list, comma-separated (default: 8,16,...,d)")
    p.add_argument("--precisions", help="comma-separated subset (default: all four)")
    p.add_argument("--embeddings", help="embeddings .npy to measure recall on")
    p.add_argument("--queries", help="queries .npy (default: the last --holdout embeddings)")
    p.add_argument("--holdout", type=int, default=1000, help="held-out queries (default 1000)")
    p.add_argument("--metric", choices=METRICS, default="cosine", help="default: cosine")
    p.add_argument("-k", type=int, default=10, help="recall@k (default 10)")
    p.add_argument("--sample", type=int, default=100_000, help="embeddings searched (default 1e5)")
    p.add_argument("--fitting-only", action="store_true", help="list only rows that fit")
    p.add_argument("--json", help="also write the plan as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_plan)
