"""Results as data: per-size dicts, merged, written as JSON and rendered as a Markdown table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matryoshka._io import write_json

__all__ = ["merge_results", "results_table", "save_results", "load_results"]

METRIC_NAMES = {"top1": "top-1", "knn1": "1-NN"}


def merge_results(method: str, parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One result dict from several (e.g. one FF model per size): sizes are united."""
    dims: dict[int, dict[str, float]] = {}
    for part in parts:
        for m, vals in part["dims"].items():
            dims.setdefault(int(m), {}).update(vals)
    return {"method": method, "dims": dict(sorted(dims.items()))}


def results_table(
    results: Sequence[dict[str, Any]],
    metrics: Sequence[str] = ("top1", "knn1"),
    trained: Iterable[int] | None = None,
    digits: int = 1,
) -> str:
    """A Markdown table: one row per size, one column per (method, metric), values in percent.

    Sizes not in ``trained`` are marked with ``*`` (they were never trained: interpolation).
    A method with no value at a size shows ``–``.
    """
    trained_set = None if trained is None else {int(m) for m in trained}
    sizes = sorted({int(m) for r in results for m in r["dims"]})
    header = ["size"] + [
        f"{r['method']} {METRIC_NAMES.get(k, k)}" for r in results for k in metrics
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for m in sizes:
        label = f"{m}*" if trained_set is not None and m not in trained_set else str(m)
        row = [label]
        for r in results:
            vals = r["dims"].get(m) or r["dims"].get(str(m)) or {}
            for k in metrics:
                v = vals.get(k)
                row.append("–" if v is None else f"{100 * v:.{digits}f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def save_results(path: str | Path, results: Sequence[dict[str, Any]], **meta: Any) -> None:
    """Write results (and any metadata, e.g. the command) as JSON, atomically."""
    write_json(path, {**meta, "results": list(results)})


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Read results written by :func:`save_results`; size keys come back as ints."""
    data = json.loads(Path(path).read_text())
    out = []
    for r in data["results"]:
        r = dict(r)
        r["dims"] = {int(m): v for m, v in r["dims"].items()}
        out.append(r)
    return out
