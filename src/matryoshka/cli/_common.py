"""What every command shares: argument types, the common flags, and one-line errors."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any

__all__ = [
    "USER_ERRORS",
    "OneLineParser",
    "add_common",
    "dims_arg",
    "progress_bar",
    "report_error",
    "search_in_batches",
    "threads_arg",
]

# A user's mistake (a bad flag value, a missing or corrupt file, a missing extra) is one of these:
# the command prints one line and exits with status 2. Anything else is a bug and keeps its
# traceback. OSError covers missing files, folders where files are expected, and permissions.
USER_ERRORS = (ValueError, KeyError, OSError, ImportError)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``--help`` shows the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def dims_arg(text: str) -> list[int]:
    """``"8,16,32"`` -> ``[8, 16, 32]``: the one spelling of a list of sizes on the command line."""
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes such as 8,16,32, got {text!r}"
        )
    return out


def add_common(p: argparse.ArgumentParser, quiet: bool = True) -> argparse.ArgumentParser:
    """``--quiet`` (no progress bars) and ``--debug`` (tracebacks) on one command's parser."""
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    # SUPPRESS: a subcommand's unset --debug must not hide the one given before the command
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="on an error, show the full traceback instead of one line",
    )  # fmt: skip
    return p


def threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads for models (default: one for small ones, else free cores)."""
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: 1 for a small model, else the cores not busy)",
    )


def progress_bar(total: int, desc: str, quiet: bool, unit: str = "vec") -> Any:
    """A bar on stderr (results go to stdout), started only once the inputs are checked; plain
    lines instead of a bar when stderr is not a terminal."""
    from matryoshka._runtime import progress_bar as bar

    return bar(total=total, desc=desc, unit=unit, disable=quiet)


def search_in_batches(
    search: Callable[..., tuple[Any, Any]], xq: Any, k: int | None, batch: int, quiet: bool,
    **kw: Any,
) -> tuple[Any, Any]:  # fmt: skip
    """``search(q, k, **kw)`` over the queries (nq, d) ``batch`` at a time with a progress bar:
    ``D``, ``I`` (nq, k'). Every check of the search runs first on no queries at all (sizes,
    funnel, k against the funnel, query width), so a mistake costs no waiting."""
    import numpy as np

    D, I = search(np.zeros((0, xq.shape[1]), np.float32), k, **kw)  # noqa: E741
    Ds, Is = [D], [I]
    with progress_bar(len(xq), "search", quiet) as bar:
        for s in range(0, len(xq), batch):
            D, I = search(np.asarray(xq[s : s + batch], dtype=np.float32), k, **kw)  # noqa: E741
            Ds.append(D)
            Is.append(I)
            bar.update(len(D))
    return np.concatenate(Ds), np.concatenate(Is)


def _one_line(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip()) or repr(e)


def report_error(command: str, run: Callable[[], int], debug: bool) -> int:
    """Run a command; a user's mistake becomes ``matryoshka CMD: error: ...`` and status 2."""
    try:
        return int(run() or 0)
    except USER_ERRORS as e:
        if debug:
            traceback.print_exc()
        print(f"matryoshka {command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"matryoshka {command}: interrupted", file=sys.stderr)
        return 130
