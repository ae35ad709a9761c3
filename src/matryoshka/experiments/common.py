"""Small pieces every experiment shares: the command line that ran it, figures that may be missing,
and the results file a report is rendered from."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from matryoshka._io import write_json
from matryoshka.eval import read_json

__all__ = [
    "RunClock",
    "command_line",
    "describe_augment",
    "describe_data",
    "duration",
    "number_word",
    "read_results",
    "try_pyplot",
    "write_results",
]

_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The ``matryoshka ...`` command that is running, quoted for a shell."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(shlex.quote(a) for a in ["matryoshka", *args])


def number_word(n: int) -> str:
    """``6`` -> ``"six"`` up to ten, digits above (for prose in reports)."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def describe_data(data: dict[str, Any]) -> str:
    """A recipe's ``data`` section in words: which data set, from where."""
    name, root = data.get("name"), data.get("root")
    if name == "digits":
        return "scikit-learn's 8x8 digits"
    if name == "cifar10":
        return f"CIFAR-10 from `{root}`" if root else "CIFAR-10 (torchvision's copy)"
    words = f"the image folder `{root}`"
    if data.get("image_size"):
        words += f" at {data['image_size']}x{data['image_size']} pixels"
    return words


def describe_augment(data: dict[str, Any]) -> str:
    """The training augmentation a recipe's ``data`` section asks for, in words."""
    if data.get("name") == "digits" or not data.get("augment", True):
        return "no augmentation"
    parts = [f"pad-{data.get('padding', 4)} crop"] if data.get("crop", True) else []
    if data.get("flip", True):
        parts.append("flip")
    return " + ".join(parts) or "no augmentation"


def duration(seconds: float) -> str:
    """``"42 s"`` under 90 seconds, else whole minutes: ``"7 min"``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def try_pyplot(what: str) -> Any | None:
    """``matplotlib.pyplot``, or None after saying on stderr why ``what`` is not drawn."""
    from matryoshka.viz import pyplot

    try:
        return pyplot()
    except ImportError as e:  # the report's text is still written; say why a figure is missing
        print(f"warning: no {what} ({e})", file=sys.stderr)
        return None


def write_results(paths: Sequence[str | Path], results: dict[str, Any]) -> None:
    """Write one results dict to each path (atomically): the file a report is rendered from."""
    for path in paths:
        write_json(path, results)


def read_results(path: str | Path, required: Sequence[str], what: str) -> dict[str, Any]:
    """A results file a report is rendered from, size keys as ints.

    Raises ``ValueError`` when it lacks any of the ``required`` keys (another experiment's file,
    or not a results file at all); ``what`` names the command that writes the right one.
    """
    data = read_json(path)
    missing = [k for k in required if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(
            f"{path} is not a results file of {what}: it lacks {', '.join(missing)}; pass the "
            "JSON that command wrote"
        )
    return data


class RunClock:
    """Wall time and torch's thread count of a run, for the report's run-time section."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def stamp(self) -> dict[str, Any]:
        """``{"seconds": wall time so far, "threads": torch CPU threads}``."""
        return {"seconds": time.perf_counter() - self.t0, "threads": torch.get_num_threads()}
