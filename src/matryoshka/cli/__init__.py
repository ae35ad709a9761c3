"""The ``matryoshka`` command line: one package for every command. Nothing imports it.

matryoshka demo                      every method on the built-in digits, at every size
matryoshka train --config C [k=v..]  train one model with the nested loss
matryoshka eval MODEL [--dims ...]   score a trained model at trained and in-between sizes
matryoshka embed MODEL --out DIR     encode a data split once at full size
matryoshka compare [--config C]      MRL against FF, PCA and truncation on any data
matryoshka reproduce cifar10|scifact the paper's claims on CIFAR-10 and SciFact
matryoshka index build|search|plan|info
                                     store embeddings once and search them at any size
matryoshka serve --model M --index I an HTTP service: embeddings with dimensions, search, a page
matryoshka report RUN_DIR            one self-contained HTML page of a run's results

A user's mistake is one line on stderr and exit status 2 (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse

from matryoshka import __version__
from matryoshka.cli._common import OneLineParser, report_error
from matryoshka.cli.compare import add_compare_command
from matryoshka.cli.index import add_index_commands
from matryoshka.cli.models import add_model_commands
from matryoshka.cli.report import add_report_command
from matryoshka.cli.reproduce import add_reproduce_command
from matryoshka.cli.serve import add_serve_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (each has its own ``--help``)."""
    parser = OneLineParser(
        prog="matryoshka",
        description="Matryoshka Representation Learning: train embeddings that can be cut to "
        "any size, compare them with the baselines, score them at every size and search them "
        "at any size.",
    )
    parser.add_argument("--version", action="version", version=f"matryoshka {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_model_commands(sub)
    add_compare_command(sub)
    add_reproduce_command(sub)
    add_index_commands(sub)
    add_serve_command(sub)
    add_report_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``matryoshka`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come before or after options; argparse only takes one run of them
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-")
                                                     for e in extra):  # fmt: skip
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    command = " ".join(filter(None, [args.command, getattr(args, "index_command", None)]))
    return report_error(command, lambda: args.func(args), debug=getattr(args, "debug", False))
