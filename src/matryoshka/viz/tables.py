"""Markdown tables from result dicts: the one table writer every report and command uses.

Results are plain dicts keyed by size (``{"method": "mrl", "dims": {8: {"top1": 0.76}, ...}}``);
these functions render them and return the text, so a caller prints it, writes it into a report
or asserts on it. Nothing here computes a number a table shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from matryoshka._markdown import markdown_table

__all__ = ["METRIC_NAMES", "format_bytes", "markdown_table", "plan_table", "results_table"]

METRIC_NAMES = {"top1": "top-1", "knn1": "1-NN"}


def results_table(
    results: Sequence[dict[str, Any]],
    metrics: Sequence[str] = ("top1", "knn1"),
    trained: Iterable[int] | None = None,
    digits: int = 1,
) -> str:
    """One row per size, one column per (method, metric), values in percent.

    Sizes not in ``trained`` are marked with ``*`` (they were never trained: interpolation).
    A method with no value at a size shows ``–``.

    Parameters
    ----------
    results : sequence of result dicts ``{"method": str, "dims": {m: {metric: value}}}``
        Size keys may be ints or, as read back from JSON, strings.
    metrics : metric keys to show, e.g. ``("ndcg@10",)``
    trained : the trained sizes, optional
    digits : decimals of the percentages
    """
    trained_set = None if trained is None else {int(m) for m in trained}
    sizes = sorted({int(m) for r in results for m in r["dims"]})
    header = ["size"] + [
        f"{r['method']} {METRIC_NAMES.get(k, k)}" for r in results for k in metrics
    ]
    rows = []
    for m in sizes:
        label = f"{m}*" if trained_set is not None and m not in trained_set else str(m)
        row = [label]
        for r in results:
            vals = r["dims"].get(m) or r["dims"].get(str(m)) or {}
            for k in metrics:
                v = vals.get(k)
                row.append("–" if v is None else f"{100 * v:.{digits}f}")
        rows.append(row)
    return markdown_table(header, rows)


def format_bytes(b: float) -> str:
    """Decimal units: ``2.0e11`` -> ``"200.0 GB"``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def plan_table(plan: dict[str, Any], only_fitting: bool = False) -> str:
    """A storage plan (:func:`matryoshka.index.plan_storage`) as a Markdown table.

    The largest size that fits at each precision and the recommendation follow the table.
    """
    has_recall = any(r["recall"] is not None for r in plan["rows"])
    header = ["size", "precision", "bytes/vector", "total", "fits"]
    header += [f"recall@{plan['k']}"] if has_recall else []
    rec = plan["recommended"]
    rows = []
    for r in plan["rows"]:
        if only_fitting and not r["fits"]:
            continue
        mark = " **<- recommended**" if r == rec else ""
        row = [r["dim"], r["precision"], f"{r['bytes_per_vector']:g}", format_bytes(r["bytes"])]
        row.append(f"{'yes' if r['fits'] else 'no'}{mark}")
        rows.append(row + ([f"{r['recall']:.4f}"] if has_recall else []))
    lines = [markdown_table(header, rows, "l")]
    lines.append(
        f"{plan['n']:,} vectors, budget {format_bytes(plan['budget_bytes'])}; largest size "
        "that fits: "
        + ", ".join(f"{p} {m if m else 'none'}" for p, m in plan["largest_fit"].items())
    )
    if plan.get("engine"):
        lines.append(
            f"bytes as {plan['engine']} stores them: the float32 vector, a float32 copy of each "
            f"prefix size {plan['prefix_sizes']} below it, the id and the graph's links"
        )
    if rec is not None:
        lines.append(
            f"recommended: size {rec['dim']} at {rec['precision']} "
            f"({format_bytes(rec['bytes'])}); rule: {plan['rule']}"
        )
    else:
        lines.append("nothing fits this budget")
    return "\n".join(lines) + "\n"
