"""``matryoshka index tune``: the fastest funnel that meets a recall target on sample queries.

Registered by :func:`matryoshka.cli.index.add_index_commands` (kept here so that module stays
short). Prints every timed candidate, fastest first, and the chosen funnel with its measured
recall and queries per second; ``--json`` writes the whole result.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from matryoshka.cli._common import add_common

__all__ = ["add_tune_command"]


def _tune(args: argparse.Namespace) -> int:
    """Load the index and the sample queries, tune, print the candidates and the choice."""
    from matryoshka._io import write_json
    from matryoshka.index import MatryoshkaIndex, format_funnel, read_vectors

    if not 0 < args.target_recall <= 1:
        raise ValueError(f"--target-recall must be in (0, 1], got {args.target_recall}")
    if args.k < 1 or args.sample < 1:
        raise ValueError("-k and --sample must be positive")
    index = MatryoshkaIndex.load(args.index, mmap=True, verify=not args.no_verify)
    xq = read_vectors(args.queries, args.column)[0]
    if xq.ndim != 2 or xq.shape[1] != index.d:
        raise ValueError(f"--queries must be (nq, {index.d}) like the index, got {xq.shape}")
    if len(xq) > args.sample:  # a seeded random sample: files are often written class by class
        pick = np.random.default_rng(args.seed).choice(len(xq), args.sample, replace=False)
        xq = xq[np.sort(pick)]
    if args.ann == "saved" and index.ann_ is None:
        raise ValueError(f"{args.index} holds no approximate first stage (build one with --ann)")
    ann = {"saved": True, "none": False, "auto": None}[args.ann]
    threads = args.threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    print(f"tuning on {len(xq)} queries, target recall@{args.k} {args.target_recall} ...",
          file=sys.stderr)  # fmt: skip
    result = index.tune(np.asarray(xq, np.float32), args.target_recall, args.k, ann)
    _print(result)
    if args.json:
        write_json(args.json, result)
    best = result
    knob = f", {index.ann_.kind} setting {best['ann_params']}" if best["ann"] else ""
    print(
        f"chosen: --funnel {format_funnel(best['funnel'])}{' --ann saved' if best['ann'] else ''}"
        f"{knob}: recall@{args.k} {best['recall']:.4f} ({best['confirm_recall']:.4f} on the "
        f"confirming half of the queries), {best['qps']:,.0f} queries/s"
    )
    return 0


def _print(result: dict[str, Any]) -> None:
    from matryoshka.index import format_funnel

    print("| funnel | first stage | recall | confirmed | queries/s |")
    print("|---|---|---:|---:|---:|")
    for row in result["tried"]:
        first = f"approximate ({row['ann_params']})" if row["ann"] else "exact"
        confirmed = f"{row['confirm_recall']:.4f}" if "confirm_recall" in row else "–"
        print(f"| {format_funnel(row['funnel'])} | {first} | {row['recall']:.4f} | "
              f"{confirmed} | {row['qps']:,.0f} |")  # fmt: skip


def add_tune_command(isub: argparse._SubParsersAction) -> None:
    """Add ``index tune`` to the ``index`` subcommands."""
    t = add_common(
        isub.add_parser(
            "tune",
            help="find the fastest funnel that meets a recall target on sample queries",
            description="Search funnel shapes (exact full size; two and three stages from every "
            "first size; from the saved approximate stage at a few settings of its search knob) "
            "on sample queries against exact full-size results, and print the fastest that "
            "meets --target-recall, with its measured recall and queries per second.",
        ),
        quiet=False,
    )
    t.add_argument("index", help="index folder written by `matryoshka index build`")
    t.add_argument("--queries", required=True, help="sample query vectors (nq, d): .npy, ...")
    t.add_argument("--column", help="the queries' array, column or key (.npz, .parquet, .jsonl)")
    t.add_argument("--target-recall", type=float, default=0.95, help="default 0.95")
    t.add_argument("-k", type=int, default=10, help="recall@k (default 10)")
    t.add_argument("--sample", type=int, default=500, help="queries used (default 500)")
    t.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    t.add_argument(
        "--ann",
        choices=("auto", "saved", "none"),
        default="auto",
        help="funnels from the saved approximate stage: auto (when there is one), saved "
        "(required), none",
    )
    t.add_argument("--threads", type=int, help="torch threads while timing (default: torch's)")
    t.add_argument("--json", help="also write the result (every candidate) as JSON here")
    t.add_argument("--no-verify", action="store_true", help="skip the index's checksums")
    t.set_defaults(func=_tune)
