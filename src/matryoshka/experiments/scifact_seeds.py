"""Several SciFact runs that differ only in their seed, summarised: means, paired differences
with their standard errors, and the quality targets on the means (``scifact-seeds.md``).

Each run is a ``scifact.json`` written by ``matryoshka reproduce scifact --seed S``; methods
trained in every run are compared. A recipe's difference from the plain fine-tune is taken seed
by seed (the same seed gives both the same batches), so its standard error is that of the paired
differences: ``std(d, ddof=1) / sqrt(n)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import write_text
from matryoshka.experiments.scifact_recipes import PLAIN_TITLES
from matryoshka.experiments.scifact_report import quality_rows, ranked_rows
from matryoshka.viz import markdown_table

__all__ = ["render_seeds", "seed_scores"]


def seed_scores(outs: Sequence[dict[str, Any]], key: str = "retrieval", metric: str = "ndcg@10"):
    """method -> size -> (n_runs,) array of scores, for the methods scored in every run."""
    per_run = [
        {r["method"]: {int(m): v[metric] for m, v in r["dims"].items()} for r in out[key]}
        for out in outs
    ]
    common = [m for m in per_run[0] if all(m in run for run in per_run)]
    return {
        name: {m: np.array([run[name][m] for run in per_run]) for m in per_run[0][name]}
        for name in common
    }


def _se(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def _mean_table(scores: dict[str, dict[int, np.ndarray]]) -> str:
    sizes = sorted({m for v in scores.values() for m in v})
    rows = [
        [m] + [f"{100 * v[m].mean():.1f} ± {100 * _se(v[m]):.1f}" if m in v else "–"
               for v in scores.values()]
        for m in sizes
    ]  # fmt: skip
    return markdown_table(["size", *scores], rows)


def _paired_table(scores: dict[str, dict[int, np.ndarray]], ours: list[str], ref: str) -> str:
    sizes = sorted(scores[ref])
    rows = []
    for m in sizes:
        row: list[Any] = [m]
        for n in ours:
            d = scores[n][m] - scores[ref][m]
            row.append(f"{100 * d.mean():+.1f} ± {100 * _se(d):.1f}")
        rows.append(row)
    return markdown_table(["size", *[f"{n} − {ref}" for n in ours]], rows)


def render_seeds(
    outs: Sequence[dict[str, Any]],
    docs_dir: str | Path,
    plain: str | None = None,
    note: str = "",
    base: str = "scifact-seeds",
) -> str:
    """Write ``docs_dir/<base>.md`` summarising runs that differ in their seed; return the text.

    ``plain``: the plain fine-tune the Matryoshka recipes are paired with (default
    :data:`~matryoshka.experiments.scifact_recipes.PLAIN_TITLES`); ``note``: a line on where
    they ran.
    """
    if len(outs) < 2:
        raise ValueError(f"a summary of seeds needs at least 2 runs, got {len(outs)}")
    plain = plain or PLAIN_TITLES
    ndcg, sts = seed_scores(outs), seed_scores(outs, "sts", "spearman")
    if plain not in ndcg:
        raise ValueError(f"{plain!r} is not trained in every run; runs share {sorted(ndcg)}")
    seeds = [next(iter(o["training"].values()))["config"]["seed"] for o in outs]
    ours = [n for n in ranked_rows(outs[0]) if n in ndcg]
    mean = {n: {m: float(v.mean()) for m, v in d.items()} for n, d in ndcg.items()}
    sts_mean = {n: {m: float(v.mean()) for m, v in d.items()} for n, d in sts.items()}
    head, rows = quality_rows(mean, sts_mean, ours, plain)
    lines = [
        f"# SciFact recipes over {len(outs)} seeds ({', '.join(map(str, seeds))})",
        "",
        *([note, ""] if note else []),
        "Commands:",
        "",
        *[f"- `{o['command']}`" for o in outs],
        "",
        "## nDCG@10 (%), mean ± standard error over the seeds",
        "",
        _mean_table(ndcg),
        "",
        f"## Paired differences from `{plain}` (points, mean ± paired standard error)",
        "",
        _paired_table(ndcg, ours, plain),
        "",
        "## The targets, on the means",
        "",
        markdown_table(head, rows, ["l"] + ["r"] * (len(head) - 1)),
        "",
        "## STS-B test Spearman (%), mean ± standard error",
        "",
        _mean_table(sts),
        "",
    ]
    text = "\n".join(lines)
    write_text(Path(docs_dir) / f"{base}.md", text)
    return text
