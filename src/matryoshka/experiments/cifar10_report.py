"""The CIFAR-10 report (``cifar10.md`` and its figures), rendered from the results dict alone.

:func:`render_cifar10` reads nothing but the dict that :func:`reproduce_cifar10` writes as
``cifar10.json`` (and the Grad-CAM maps it stores beside it), so ``matryoshka reproduce cifar10
--report-only`` redraws the report without training or encoding, timing section included. Every
size, model name and count in the text comes from that dict, never from a constant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_file, write_text
from matryoshka.experiments.common import describe_augment, duration, number_word, try_pyplot
from matryoshka.experiments.compare import plot_comparison
from matryoshka.viz import (
    markdown_table,
    plot_adaptive,
    plot_gradcam_grid,
    results_table,
    save_figure,
)

__all__ = ["claims", "interpolation_gap", "load_gradcam", "render_cifar10", "save_gradcam"]


def save_gradcam(path: Path, maps: dict[str, Any]) -> dict[str, Any]:
    """Write Grad-CAM images and maps as a compressed ``.npz``; return its entry in the results.

    ``maps``: ``images`` (B, 3, H, W) in [0, 1], ``cams`` (B, S, H, W) in [0, 1], ``labels``.
    Stored as float16: the figure needs no more.
    """
    with atomic_file(path) as f:
        images = np.asarray(maps["images"], np.float16)  # (B, 3, H, W)
        np.savez_compressed(f, images=images, cams=np.asarray(maps["cams"], np.float16))
    return {"file": Path(path).name, "labels": list(maps["labels"])}


def load_gradcam(docs_dir: Path, entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The arrays :func:`save_gradcam` wrote (as float32), or None when there are none."""
    if not entry or not (Path(docs_dir) / entry["file"]).is_file():
        return None
    with np.load(Path(docs_dir) / entry["file"]) as z:
        return {"images": z["images"].astype(np.float32), "cams": z["cams"].astype(np.float32),
                "labels": entry["labels"]}  # fmt: skip


def _figures(results: dict[str, Any], docs_dir: Path) -> dict[str, Path]:
    """Accuracy against size, the adaptive curve and the Grad-CAM grid, as PNGs."""
    plt = try_pyplot("plots")
    if plt is None:
        return {}
    dims, adaptive = results["dims"], results["adaptive"]
    out = {}
    out["accuracy"] = plot_comparison(
        results["comparison"], dims, docs_dir / "cifar10_accuracy_vs_dim.png",
        "CIFAR-10: accuracy at every size",
    )  # fmt: skip
    ax = plot_adaptive(adaptive, {"FF at full size": adaptive["ff_full_top1"]},
                       title="CIFAR-10: adaptive classification")  # fmt: skip
    out["adaptive"] = docs_dir / "cifar10_adaptive.png"
    save_figure(ax.figure, out["adaptive"])
    plt.close(ax.figure)
    maps = load_gradcam(docs_dir, results.get("gradcam"))
    if maps is not None:
        fig = plot_gradcam_grid(maps["images"], maps["cams"], dims, row_labels=maps["labels"])
        out["gradcam"] = docs_dir / "cifar10_gradcam.png"
        save_figure(fig, out["gradcam"])
        plt.close(fig)
    return out


def _gap_table(by: dict[str, Any], dims: list[int]) -> str:
    header = ["size", "MRL − FF top-1", "MRL − PCA top-1", "MRL − truncation top-1"]
    rows = []
    for m in dims:
        mrl = by["mrl"][m]["top1"]
        gaps = [f"{100 * (mrl - by[b][m]['top1']):+.1f}" for b in ("ff", "pca", "truncation")]
        rows.append([m, *gaps])
    return markdown_table(header, rows)


def _adaptive_table(adaptive: dict[str, Any]) -> str:
    header = ["start size", "target precision", "expected size", "test top-1", "held-out top-1"]
    rows = [
        [
            p["start"],
            f"{p['precision']:.3f}",
            f"{p['expected_size']:.1f}",
            f"{100 * p['top1']:.2f}",
            f"{100 * p['holdout_top1']:.2f}",
        ]  # fmt: skip
        for p in adaptive["front"]
    ]
    return markdown_table(header, rows)


def _selection_text(adaptive: dict[str, Any], d: int) -> tuple[str, str]:
    """The held-out choice, and what the test curve alone would say."""
    sel, match = adaptive.get("selected"), adaptive.get("match")
    sel_text = (
        f"Chosen on the held-out images alone (smallest held-out expected size whose held-out "
        f"top-1 reaches both FF-{d}'s held-out "
        f"{100 * adaptive['ff_full_holdout_top1']:.2f}% and the MRL-{d} head's "
        f"{100 * adaptive['holdout_fixed'][d]:.2f}%): start at {sel['start']}, target "
        f"precision {sel['precision']}. On the test split it uses **{sel['expected_size']:.1f}** "
        f"dimensions on average ({d / sel['expected_size']:.1f}× smaller than "
        f"d = {d}) for **{100 * sel['top1']:.2f}%** top-1, against "
        f"{100 * adaptive['ff_full_top1']:.2f}% for FF-{d}."
        if sel
        else "No operating point reached full-size top-1 on the held-out images."
    )
    match_text = (
        f"The smallest expected size whose test top-1 is within 0.5 points of full-size FF "
        f"({100 * adaptive['ff_full_top1']:.2f}%) is **{match['expected_size']:.1f}** "
        f"({100 * match['top1']:.2f}%, target precision {match['precision']}), "
        f"{d / match['expected_size']:.1f}× smaller than d = {d}."
        if match
        else "No operating point reached full-size FF top-1 within 0.5 points."
    )
    return sel_text, match_text


def interpolation_gap(curve: dict[int, dict[str, float]], dims: list[int], key: str) -> float:
    """Largest |value - straight line between the trained neighbours| at in-between sizes, in
    points."""
    worst = 0.0
    for lo, hi in zip(dims, dims[1:]):
        for m, row in curve.items():
            if lo < m < hi and row.get(key) is not None:
                t = (m - lo) / (hi - lo)
                line = (1 - t) * curve[lo][key] + t * curve[hi][key]
                worst = max(worst, abs(row[key] - line))
    return 100 * worst


def claims(by: dict[str, Any], dims: list[int], adaptive: dict[str, Any]) -> list[str]:
    """The paper's claims on this data, each with the number this run measured."""
    gap_ff = min(100 * (by["mrl"][m]["top1"] - by["ff"][m]["top1"]) for m in dims if m >= 16)
    small = [m for m in dims if m <= 32]
    vs = {
        b: {m: 100 * (by["mrl"][m]["top1"] - by[b][m]["top1"]) for m in small}
        for b in ("pca", "truncation")
    }
    fmt = lambda g: ", ".join(f"{m}: {v:+.1f}" for m, v in g.items())  # noqa: E731
    sel, d = adaptive.get("selected"), dims[-1]
    if sel:
        short = 100 * (adaptive["ff_full_top1"] - sel["top1"])
        ad = (
            f"held-out-chosen cascade: expected size {sel['expected_size']:.1f} "
            f"({'≤' if sel['expected_size'] <= d / 4 else '>'} d/4 = {d / 4:g}), test top-1 "
            f"{100 * sel['top1']:.2f}% vs FF-{d} {100 * adaptive['ff_full_top1']:.2f}% "
            f"({'within' if short <= 0.5 else 'more than'} 0.5 points: {-short:+.2f})"
        )
    else:
        ad = "no operating point reached full-size top-1 on the held-out images"
    return [
        "## The claims, as measured in this run",
        "",
        f"- MRL within 1 point of FF or above at every trained size ≥ 16: worst MRL − FF "
        f"= {gap_ff:+.2f} points.",
        f"- MRL above PCA at sizes ≤ 32 (points): {fmt(vs['pca'])}.",
        f"- MRL above truncation at sizes ≤ 32 (points): {fmt(vs['truncation'])}.",
        f"- In-between sizes against the straight line between their trained neighbours: "
        f"MRL 1-NN off by at most {interpolation_gap(by['mrl'], dims, 'knn1'):.2f} points, "
        f"MRL-E top-1 by at most {interpolation_gap(by['mrl-e'], dims, 'top1'):.2f}.",
        f"- Adaptive classification, {ad}.",
        "",
    ]


def _spread(spread: dict[int, dict[str, list[float]]] | None, seed0: int) -> list[str]:
    if not spread:
        return ["One seed per model: the spread over seeds is not measured in this run.", ""]
    n = max(len(v["mrl"]) for v in spread.values())

    def mean_sd(a: np.ndarray) -> str:
        return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else "–"

    rows = []
    for m, v in spread.items():
        mrl, ff = 100 * np.asarray(v["mrl"]), 100 * np.asarray(v.get("ff", []))
        gap = f"{mrl.mean() - ff.mean():+.2f}" if len(ff) else "–"
        per = [" / ".join(f"{x:.2f}" for x in a) or "–" for a in (mrl, ff)]
        rows.append([m, mean_sd(mrl), mean_sd(ff), gap, *per])
    header = ["size", "MRL", "FF", "MRL − FF (means)", "MRL per seed", "FF per seed"]
    return [
        f"## Spread over seeds ({n} seeds: {seed0}…{seed0 + n - 1})",
        "",
        "Test top-1 (%) of each seed's own head, mean ± standard deviation over seeds; the "
        "extra seeds retrain MRL and FF at a few sizes with the same recipe.",
        "",
        markdown_table(header, rows),
    ]


def _source(results: dict[str, Any]) -> str:
    """Where the run's CIFAR-10 came from: torchvision's files or an ImageNet-layout JPEG copy."""
    root = results["config"]["data"].get("root")
    if results.get("data_source") == "torchvision":
        return f"CIFAR-10 through torchvision from `{root}`"
    return (f"a JPEG copy of CIFAR-10 in `{root}` (JPEG compression costs a few points against "
            "published CIFAR-10 figures)")  # fmt: skip


def _title(dims: list[int]) -> list[str]:
    """The report's title; a schedule starting below 8 says why it exists."""
    if dims[0] >= 8:
        return ["# CIFAR-10: MRL against its baselines at every size", ""]
    return [
        f"# CIFAR-10 with sizes from {dims[0]}: MRL against its baselines at every size",
        "",
        "The main report ([../cifar10.md](../cifar10.md)) trains sizes from 8, as the paper's "
        f"schedule starts at 8. This one adds {', '.join(str(m) for m in dims if m < 8)}: below "
        "the 9-dimensional subspace in which a 10-class linear classifier lives, where PCA and "
        "truncation of the FF embedding fall far below MRL. The FF models of the sizes both "
        "schedules share can serve both reports (a fixed-feature model does not depend on its "
        "siblings' sizes).",
        "",
    ]


def _header(results: dict[str, Any]) -> list[str]:
    cfg, dims = results["config"], results["dims"]
    model, optim = cfg["model"], cfg["optim"]
    return [
        *_title(dims),
        "Reproduced with (from the repository root, CPU):",
        "",
        "```",
        results["command"],
        "```",
        "",
        f"Data: {_source(results)}; {cfg['data']['holdout']} training images held out for "
        f"tuning the adaptive "
        f"thresholds, {results['n_train']:,} for training; test = the {results['n_test']:,} test "
        f"images. Backbone `{model['backbone']}` {model['backbone_kwargs']}, d = "
        f"{model['d']}, sizes {dims}. Recipe shared by every model: {cfg['epochs']} epoch(s), "
        f"{optim['name']} lr {optim['lr']} (nesterov {optim['nesterov']}), "
        f"weight decay {optim['weight_decay']}, {optim['warmup_epochs']:g} warm-up epoch(s), "
        f"cosine decay, batch {cfg['batch_size']}, label smoothing {cfg['label_smoothing']}, "
        f"{describe_augment(cfg['data'])}, seed {cfg['seed']}. Training time of all "
        f"{results['models']} models: {duration(results['train_seconds'])} on this machine.",
        "",
    ]


def render_cifar10(results: dict[str, Any], docs_dir: str | Path) -> str:
    """Write ``docs_dir/cifar10.md`` and its figures from a CIFAR-10 results dict; return the text.

    ``results`` is what :func:`~matryoshka.experiments.cifar10.reproduce_cifar10` returns (or
    ``cifar10.json`` read back with :func:`matryoshka.eval.read_json`).
    """
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    dims, adaptive, d = results["dims"], results["adaptive"], results["dims"][-1]
    by = {r["method"]: r["dims"] for r in results["comparison"]}
    plots = _figures(results, docs_dir)
    lines = _header(results) + [
        "## Accuracy at every size",
        "",
        "Top-1 (%) on the test split. MRL, MRL-E and FF use their own heads; PCA and truncation "
        "(of the full-size FF embedding) get a logistic-regression probe fitted on the train "
        "split at each size. 1-NN: cosine nearest neighbour, database = train split. * = never "
        "trained (interpolation; MRL has no head there).",
        "",
        results_table(results["comparison"], trained=dims),
    ]
    if "accuracy" in plots:
        lines += [f"![accuracy vs size]({plots['accuracy'].name})", ""]
    p_full, n_test = by["ff"][d]["top1"], results["n_test"]
    se = 100 * (p_full * (1 - p_full) / n_test) ** 0.5
    lines += [
        "Differences at each trained size (points):",
        "",
        _gap_table(by, dims),
        f"Sampling noise alone: the standard error of a top-1 near {100 * p_full:.0f}% on "
        f"{n_test:,} test images is {se:.2f} points, so a difference between two methods needs "
        f"about {2 * 2**0.5 * se:.1f} points to stand out at two standard errors.",
        "",
        *_spread(results.get("seeds"), results["config"]["seed"]),
        *claims(by, dims, adaptive),
        *_finetune_section(results, d),
        *_adaptive_section(adaptive, dims, plots),
    ]
    if "gradcam" in plots:
        n = len(results["gradcam"]["labels"])
        lines += [
            "## Where the model looks at each size",
            "",
            "Grad-CAM of the last convolutional stage through the MRL head of each size, for the "
            f"first test image of {number_word(n)} classes, explaining each size's own "
            "prediction.",
            "",
            f"![Grad-CAM per size]({plots['gradcam'].name})",
            "",
        ]
    text = "\n".join(lines)
    write_text(docs_dir / "cifar10.md", text)
    return text


def _finetune_section(results: dict[str, Any], d: int) -> list[str]:
    return [
        "## Fine-tuning from the full-size FF model (paper, Appendix K)",
        "",
        f"The nested loss for a few epochs starting from the FF-{d} checkpoint, with only the "
        "nested heads trainable (`ft-head`), with the last block too (`ft-last1`), or with "
        "everything (`ft-all`), against MRL trained from scratch and FF per size.",
        "",
        results_table(results["finetune"], trained=results["dims"]),
    ]


def _adaptive_section(
    adaptive: dict[str, Any], dims: list[int], plots: dict[str, Path]
) -> list[str]:
    sel_text, match_text = _selection_text(adaptive, dims[-1])
    lines = [
        "## Adaptive classification",
        "",
        f"The MRL heads as a cascade from {dims[0]} to {dims[-1]} dimensions: stop at the first "
        "size whose "
        "max softmax probability clears its threshold; sizes below a starting size never "
        "answer. Thresholds are tuned on the held-out training images for each target "
        "precision. The table lists the operating points no other point beats on both test "
        "expected size and test top-1.",
        "",
        _adaptive_table(adaptive),
        sel_text,
        "",
        "Read off the test curve instead (descriptive only): " + match_text,
        "",
    ]
    if "adaptive" in plots:
        lines += [f"![adaptive classification]({plots['adaptive'].name})", ""]
    return lines
