"""The CIFAR-10 image-text report: ``cifar10-text.md`` and its figure, from the results dict alone
(``matryoshka reproduce cifar10-text --report-only`` redraws it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matryoshka._io import write_text
from matryoshka.experiments.common import duration, try_pyplot
from matryoshka.viz import markdown_table, plot_accuracy_vs_dim, results_table, save_figure

__all__ = ["render_cifar10_text"]

MRL_ROWS = ("mrl", "mrl-text1")


def _by(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    return {r["method"]: {int(m): v for m, v in r["dims"].items()} for r in rows}


def _differences(out: dict[str, Any], dims: list[int]) -> tuple[str, list[str]]:
    """MRL minus each baseline at every trained size, and the verdicts on them."""
    by = _by(out["zero_shot"])
    others = [b for b in ("ff", "pca", "truncation") if b in by]
    if not others:
        return "", []
    header = ["size"] + [f"{a} − {b}" for a in MRL_ROWS if a in by for b in others]
    rows = [[str(m)] + [f"{100 * (by[a][m]['top1'] - by[b][m]['top1']):+.1f}"
                        for a in MRL_ROWS if a in by for b in others] for m in dims]  # fmt: skip
    verdicts = []
    for a in (r for r in MRL_ROWS if r in by and "ff" in by):
        gaps = {m: 100 * (by[a][m]["top1"] - by["ff"][m]["top1"]) for m in dims if m >= 16}
        worst = min(gaps, key=gaps.get) if gaps else None
        if worst is not None:
            ok = "yes" if gaps[worst] >= -1.0 else "no"
            verdicts.append(f"{a} within 1 point of FF at every trained size ≥ 16: **{ok}** "
                            f"(worst {gaps[worst]:+.1f} at {worst})")  # fmt: skip
    if "truncation" in by and "mrl" in by:
        m = dims[0]
        gap = 100 * (by["mrl"][m]["top1"] - by["truncation"][m]["top1"])
        verdicts.append(f"at {m} dimensions MRL is {gap:+.1f} points from truncating the fixed "
                        "full-size model")  # fmt: skip
    return markdown_table(header, rows), verdicts


def _training(out: dict[str, Any]) -> str:
    rows = []
    for name, t in out["training"].items():
        last = t["history"][-1] if t["history"] else {}
        rows.append([name, ", ".join(map(str, t["dims"])), str(t["steps"]),
                     f"{t['seconds'] / 60:.1f}", f"{last.get('loss', float('nan')):.3f}",
                     f"{last.get('logit_scale', float('nan')):.1f}"])  # fmt: skip
    return markdown_table(["model", "loss at sizes", "steps", "minutes", "final loss",
                           "logit scale"], rows)  # fmt: skip


def _funnels(out: dict[str, Any]) -> str:
    rows = [[f["funnel"], f"{100 * f['ndcg@10']:.1f}", f"{f['macs']:,}",
             f"{f['cost_ratio']:.1f}×", f"{f['ms_per_query']:.3f}", f"{f['speedup']:.1f}×"]
            for f in out["funnels"]]  # fmt: skip
    return markdown_table(["search", "nDCG@10", "multiply-adds / query", "fewer than full",
                           "ms / query", "speed-up"], rows)  # fmt: skip


def _plot(out: dict[str, Any], dims: list[int], docs: Path) -> list[str]:
    plt = try_pyplot("the CIFAR-10 image-text plot")
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_accuracy_vs_dim(out["zero_shot"], metric="top1", ax=ax, trained=dims,
                         title="CIFAR-10 zero-shot top-1, unseen prompts (%)")  # fmt: skip
    save_figure(fig, docs / "cifar10-text_zero_shot.png")
    plt.close(fig)
    return ["cifar10-text_zero_shot.png"]


def render_cifar10_text(out: dict[str, Any], docs_dir: str | Path) -> Path:
    """Write ``docs_dir/cifar10-text.md`` (and its figure) from the results of
    :func:`~matryoshka.experiments.cifar10_text.reproduce_cifar10_text`."""
    docs = Path(docs_dir)
    cfg, counts, train = out["config"], out["counts"], out["config"]["train"]
    dims = [int(m) for m in cfg["dims"]]
    diffs, verdicts = _differences(out, dims)
    per_class = max(1, counts["test"] // max(1, counts["classes"]))
    towers = (f"open_clip `{cfg['open_clip']}` (both towers, from `{cfg['open_clip_weights']}`)"
              if cfg.get("open_clip") else
              f"the compact CNN (width {cfg['width']}) from scratch and all-MiniLM-L6-v2 "
              "(frozen; `mrl-text1`: its last block trained too)")  # fmt: skip
    figures = _plot(out, dims, docs)
    lines = [
        "# CIFAR-10 image–text: a Matryoshka dual encoder against its baselines at every size",
        "",
        f"Command: `{out['command']}`",
        "",
        f"Data: {counts['train']:,} training and {counts['test']:,} test images, "
        f"{counts['classes']} classes. Towers: {towers}, projected to d = {cfg['d']}, sizes "
        f"{', '.join(map(str, dims))}. Each training image is paired with its class's caption "
        f"from one of {len(out['templates']['train'])} training templates, drawn afresh every "
        f"step; zero-shot classification averages each class over "
        f"{len(out['templates']['test'])} templates never seen in training "
        f"({'; '.join(out['templates']['test'][:3])}; …). Recipe shared by every model: "
        f"{train['epochs']} epochs, batch {train['batch_size']}, AdamW lr {train['lr']:g} "
        f"(text blocks {train['text_lr']:g}), weight decay {train['weight_decay']:g}, seed "
        f"{train['seed']}. Same-class pairs of a batch all count as matches.",
        "",
        "## Zero-shot top-1 (%) on the test split, unseen prompts",
        "",
        "mrl, mrl-text1: one nested model; ff: a model trained at that size alone; truncation: "
        "the fixed full-size model cut; pca: it turned by the PCA rotation of its training image "
        "embeddings, then cut. * = never trained (interpolation).",
        "",
        results_table(out["zero_shot"], metrics=("top1",), trained=dims),
        "",
        *(f"![zero-shot top-1 against size]({f})" for f in figures),
        "",
        *(["Differences at each trained size (points):", "", diffs, ""] if diffs else []),
        *(f"- {v}" for v in verdicts),
        "",
        "## Text → image search",
        "",
        "Every unseen prompt is a query; the relevant images are the test images of its class. "
        f"With about {per_class:,} relevant images a query, MAP@100 cannot exceed the share of "
        f"them that fits in 100 results ({min(100.0, 1e4 / per_class):.0f}%): compare rows.",
        "",
        results_table(out["retrieval"], metrics=("ndcg@10", "map@100"), trained=dims),
        "",
        "Funnels over the MRL image embeddings (the index: shortlist with a short prefix, "
        "rerank at full size):",
        "",
        _funnels(out),
        "",
        "## Training",
        "",
        _training(out),
        "",
        f"Run time: {duration(out['seconds'])} with {out['threads']} CPU thread(s) "
        f"({', '.join(out['trained_here']) or 'nothing'} trained in this call).",
        "",
    ]
    path = docs / "cifar10-text.md"
    write_text(path, "\n".join(lines))
    return path
