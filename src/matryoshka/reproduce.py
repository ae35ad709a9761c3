"""Reproductions of the MRL paper's claims on data that fits a laptop: ``matryoshka reproduce``.

``cifar10``: MRL, MRL-E and a fixed-feature model per size with one recipe; PCA and truncation of
the full-size FF embedding; head top-1 and 1-NN at trained and in-between sizes; fine-tuning from
the FF model with the heads, the last block or everything trainable (paper, Appendix K); adaptive
classification with thresholds tuned on held-out train images; Grad-CAM per size. Every model is
trained once into its own folder and reused; an interrupted run resumes.
"""

from __future__ import annotations

import copy
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matryoshka._io import write_json, write_text
from matryoshka.dims import nesting_dims, validate_dims
from matryoshka.eval import (
    adaptive_classification,
    encode,
    evaluate_embeddings,
    results_table,
    select_operating_point,
)
from matryoshka.eval.gradcam import gradcam_per_size
from matryoshka.experiments import (
    METHODS,
    compare_methods,
    method_configs,
    plot_comparison,
    train_jobs,
)
from matryoshka.train import (
    TrainConfig,
    load_config,
    load_holdout,
    load_model,
    read_metrics,
    resolve_device,
)
from matryoshka.train.loop import load_data

__all__ = ["FINETUNE_MODES", "cifar10_jobs", "reproduce_cifar10", "seed_jobs", "seed_spread"]

FINETUNE_MODES = ("head", "last1", "all")


def _dims(base: TrainConfig) -> list[int]:
    dims = base.model.dims or nesting_dims(base.model.d, base.model.dims_start)
    return list(validate_dims(dims, base.model.d))


def cifar10_jobs(
    base: TrainConfig, finetune_epochs: int = 2, finetune_lr: float = 0.02
) -> dict[str, TrainConfig]:
    """Every model folder of the reproduction, in training order.

    The full-size FF model comes first (the baselines and fine-tuning start from it), then MRL,
    MRL-E, the other FF sizes, and the three fine-tuning runs.
    """
    dims = _dims(base)
    jobs = method_configs(base, dims, METHODS)
    full = f"ff-{dims[-1]}"
    ordered = {full: jobs.pop(full), **jobs}
    for mode in FINETUNE_MODES:
        cfg = copy.deepcopy(base)
        cfg.model.head = "mrl"
        cfg.model.dims = dims
        cfg.init_from = ordered[full].out_dir
        cfg.trainable = mode
        cfg.epochs = finetune_epochs
        cfg.optim.lr = finetune_lr
        cfg.optim.warmup_epochs = 0.0
        cfg.out_dir = str(Path(base.out_dir) / f"finetune-{mode}")
        ordered[f"finetune-{mode}"] = cfg
    return ordered


def seed_jobs(
    base: TrainConfig, dims: Sequence[int], seeds: int, ff_sizes: Sequence[int]
) -> dict[str, TrainConfig]:
    """Extra seeds of MRL and of FF at ``ff_sizes``: ``mrl-seed1``, ``ff-16-seed1``, ...

    Seed ``base.seed`` is the main run's; these add ``base.seed + 1`` ... ``base.seed + seeds - 1``
    with the same recipe, so the spread between seeds can be set against the gap between methods.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    bad = [m for m in ff_sizes if m not in dims]
    if bad:
        raise ValueError(f"seed sizes {bad} are not trained sizes; choose from {list(dims)}")
    jobs: dict[str, TrainConfig] = {}
    for s in range(1, seeds):
        shifted = copy.deepcopy(base)
        shifted.seed = base.seed + s
        for name, cfg in method_configs(shifted, dims, ("mrl", "ff")).items():
            if name == "mrl" or int(name.split("-")[1]) in ff_sizes:
                cfg.out_dir = str(Path(base.out_dir) / f"{name}-seed{s}")
                jobs[f"{name}-seed{s}"] = cfg
    return jobs


def seed_spread(
    main: dict[str, TrainConfig], extra: dict[str, TrainConfig], dims: Sequence[int]
) -> dict[int, dict[str, list[float]]]:
    """Final test top-1 of every seed, from each model folder's ``metrics.json``.

    Returns ``{size: {"mrl": [top1 per seed], "ff": [top1 per seed]}}`` (FF only where an
    extra seed of FF at that size was trained).
    """

    def final(out_dir: str) -> dict[str, float]:
        history = (read_metrics(out_dir) or {}).get("history", [])
        return history[-1].get("test_top1", {}) if history else {}

    ff_sizes = sorted({int(k.split("-")[1]) for k in extra if k.startswith("ff-")})
    mrl_runs = [main["mrl"], *(c for k, c in extra.items() if k.startswith("mrl-"))]
    out: dict[int, dict[str, list[float]]] = {}
    mrl_final = [final(c.out_dir) for c in mrl_runs]
    for m in dims:
        row = {"mrl": [f[str(m)] for f in mrl_final if str(m) in f]}
        if m in ff_sizes:
            ff_runs = [main[f"ff-{m}"], *(c for k, c in extra.items() if k.startswith(f"ff-{m}-"))]
            row["ff"] = [final(c.out_dir)[str(m)] for c in ff_runs]
        out[m] = row
    return out


@torch.no_grad()
def _head_logits(model: Any, X: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Per-size logits (N, K, C) from stored embeddings X (N, d)."""
    head = model.head.eval().cpu()
    out = [
        head(torch.from_numpy(np.ascontiguousarray(X[i : i + batch]))).float().numpy()
        for i in range(0, len(X), batch)
    ]
    return np.concatenate(out)


def reproduce_cifar10(
    config: str | Path = "configs/cifar10.yaml",
    overrides: list[str] | None = None,
    out_dir: str | Path = "runs/cifar10",
    docs_dir: str | Path = "docs/results",
    finetune_epochs: int = 2,
    seeds: int = 1,
    seed_sizes: Sequence[int] | None = None,
    train_only: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the CIFAR-10 reproduction and write ``docs_dir/cifar10.md`` with its figures.

    Parameters
    ----------
    config : the shared recipe (YAML); ``overrides`` are ``key=value`` strings on top of it
    out_dir : where results, logs and per-stage JSON go (model folders follow ``out_dir`` of
        the config)
    docs_dir : where ``cifar10.md`` and its PNGs go
    seeds : models per seed count for MRL and for FF at ``seed_sizes`` (default: 16 and d), to
        show the spread between seeds beside the gap between MRL and FF
    train_only : stop after training every model (e.g. to train on one machine, report on another)
    """
    t0 = time.perf_counter()
    base = load_config(config, overrides)
    dims = _dims(base)
    jobs = cifar10_jobs(base, finetune_epochs=finetune_epochs)
    if seed_sizes is None:
        seed_sizes = sorted({m for m in (16, dims[-1]) if m in dims})
    extra = seed_jobs(base, dims, seeds, seed_sizes)
    train_jobs(jobs, progress)  # the main run first: its report does not wait for the seeds
    train_jobs(extra, progress)
    if train_only:
        return {"trained": [*jobs, *extra], "seconds": time.perf_counter() - t0}
    out_dir, docs_dir = Path(out_dir), Path(docs_dir)
    command = command or " ".join(shlex.quote(a) for a in ["matryoshka", *sys.argv[1:]])

    comparison = compare_methods(
        base, out_dir, METHODS, dims, progress=progress, command=command,
        title="CIFAR-10, SmallCNN, d = 256",
    )  # fmt: skip
    device = resolve_device(base.device)
    train_ds, test_ds, classes = load_data(base, augment=False)

    finetune = [r for r in comparison["results"] if r["method"] == "mrl"]
    for mode in FINETUNE_MODES:
        model, _, _ = load_model(jobs[f"finetune-{mode}"].out_dir, device)
        Xtr, ytr = encode(model, train_ds, device=device)
        Xte, yte = encode(model, test_ds, device=device)
        finetune.append(
            evaluate_embeddings(f"ft-{mode}", Xtr, ytr, Xte, yte, dims, head=model.head.cpu())
        )
    finetune.append(next(r for r in comparison["results"] if r["method"] == "ff"))

    holdout = load_holdout(base)
    mrl, _, _ = load_model(jobs["mrl"].out_dir, device)
    Xho, yho = encode(mrl, holdout, device=device)
    _, _, Xte, yte = comparison["encoded"]["mrl"]  # encoded once, by compare_methods
    adaptive = adaptive_classification(
        _head_logits(mrl, Xho), yho, _head_logits(mrl, Xte), yte, dims
    )
    ff_full = comparison["results"][[r["method"] for r in comparison["results"]].index("ff")]
    ff_top1 = ff_full["dims"][dims[-1]]["top1"]
    adaptive["ff_full_top1"] = ff_top1
    adaptive["match"] = _smallest_match(adaptive, ff_top1, tolerance=0.005)
    ff_model, _, _ = load_model(jobs[f"ff-{dims[-1]}"].out_dir, device)
    X_ff_ho, _ = encode(ff_model, holdout, device=device)
    ff_ho_logits = _head_logits(ff_model, X_ff_ho)[:, 0]  # (N, C)
    adaptive["ff_full_holdout_top1"] = float((ff_ho_logits.argmax(1) == yho).mean())
    # The cascade must reach, on held-out data and with no slack, both FF's full-size top-1 and
    # its own largest head's: then it loses nothing to full size, and the test split's own noise
    # is what the 0.5-point margin is left for.
    adaptive["holdout_target"] = max(
        adaptive["ff_full_holdout_top1"], adaptive["holdout_fixed"][dims[-1]]
    )
    adaptive["selected"] = select_operating_point(
        adaptive, adaptive["holdout_target"], tolerance=0.0
    )
    spread = seed_spread(jobs, extra, dims) if extra else None

    cams_path = _gradcam_figure(mrl.cpu(), test_ds, classes, dims, docs_dir / "cifar10_gradcam.png")
    write_json(out_dir / "finetune.json", {"results": finetune})
    write_json(out_dir / "adaptive.json", adaptive)
    if spread is not None:
        write_json(out_dir / "seeds.json", {str(m): v for m, v in spread.items()})
    plots = _figures(comparison, adaptive, dims, docs_dir)
    seconds = time.perf_counter() - t0
    text = _report(
        base,
        comparison,
        finetune,
        adaptive,
        dims,
        plots,
        cams_path,
        command,
        {**jobs, **extra},
        len(train_ds),
        len(test_ds),
        spread,
    )
    write_text(docs_dir / "cifar10.md", text)
    return {
        "comparison": comparison,
        "finetune": finetune,
        "adaptive": adaptive,
        "seeds": spread,
        "seconds": seconds,
    }


def _smallest_match(adaptive: dict[str, Any], target: float, tolerance: float) -> dict | None:
    """The operating point of smallest expected size whose test top-1 is within tolerance."""
    ok = [p for p in adaptive["points"] if p["top1"] >= target - tolerance]
    return min(ok, key=lambda p: p["expected_size"]) if ok else None


def _gradcam_figure(
    model: Any, test_ds: Any, classes: list[str], dims: list[int], path: Path, n: int = 6
) -> Path | None:
    try:
        from matryoshka.viz import plot_gradcam_grid, save_figure
        from matryoshka.viz.plots import _pyplot

        plt = _pyplot()
    except ImportError as e:
        print(f"warning: no Grad-CAM figure ({e})", file=sys.stderr)
        return None
    labels = np.asarray(test_ds.labels)
    picks = [int(np.flatnonzero(labels == c)[0]) for c in range(min(n, len(classes)))]
    x = torch.stack([test_ds[i][0] for i in picks])  # (n, 3, H, W), normalised
    cams = gradcam_per_size(model, x, dims)  # (n, S, H, W)
    mean = torch.tensor(test_ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(test_ds.std).view(1, 3, 1, 1)
    images = (x * std + mean).clamp(0, 1).numpy()
    fig = plot_gradcam_grid(images, cams, dims, row_labels=[classes[labels[i]] for i in picks])
    save_figure(fig, path)
    plt.close(fig)
    return path


def _figures(
    comparison: dict[str, Any], adaptive: dict[str, Any], dims: list[int], docs_dir: Path
) -> dict[str, Path]:
    try:
        from matryoshka.viz import plot_adaptive, save_figure
        from matryoshka.viz.plots import _pyplot

        plt = _pyplot()
    except ImportError as e:
        print(f"warning: no plots ({e})", file=sys.stderr)
        return {}
    out = {}
    out["accuracy"] = plot_comparison(
        comparison["results"], dims, docs_dir / "cifar10_accuracy_vs_dim.png",
        "CIFAR-10: accuracy at every size",
    )  # fmt: skip
    ax = plot_adaptive(adaptive, {"FF at full size": adaptive["ff_full_top1"]},
                       title="CIFAR-10: adaptive classification")  # fmt: skip
    out["adaptive"] = docs_dir / "cifar10_adaptive.png"
    save_figure(ax.figure, out["adaptive"])
    plt.close(ax.figure)
    return out


def _report(
    base: TrainConfig,
    comparison: dict[str, Any],
    finetune: list[dict[str, Any]],
    adaptive: dict[str, Any],
    dims: list[int],
    plots: dict[str, Path],
    cams: Path | None,
    command: str,
    jobs: dict[str, TrainConfig],
    n_train: int,
    n_test: int,
    spread: dict[int, dict[str, list[float]]] | None = None,
) -> str:
    by = {r["method"]: r["dims"] for r in comparison["results"]}
    gap_rows = ["| size | MRL − FF top-1 | MRL − PCA top-1 | MRL − truncation top-1 |",
                "|---:|---:|---:|---:|"]  # fmt: skip
    for m in dims:
        mrl = by["mrl"][m]["top1"]
        gap_rows.append(
            f"| {m} | {100 * (mrl - by['ff'][m]['top1']):+.1f} | "
            f"{100 * (mrl - by['pca'][m]['top1']):+.1f} | "
            f"{100 * (mrl - by['truncation'][m]['top1']):+.1f} |"
        )
    ad_rows = ["| start size | target precision | expected size | test top-1 | held-out top-1 |",
               "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for p in adaptive["front"]:
        ad_rows.append(
            f"| {p['start']} | {p['precision']:.3f} | {p['expected_size']:.1f} | "
            f"{100 * p['top1']:.2f} | {100 * p['holdout_top1']:.2f} |"
        )
    sel = adaptive.get("selected")
    sel_text = (
        f"Chosen on the held-out images alone (smallest held-out expected size whose held-out "
        f"top-1 reaches both FF-{dims[-1]}'s held-out "
        f"{100 * adaptive['ff_full_holdout_top1']:.2f}% and the MRL-{dims[-1]} head's "
        f"{100 * adaptive['holdout_fixed'][dims[-1]]:.2f}%): start at {sel['start']}, target "
        f"precision {sel['precision']}. On the test split it uses **{sel['expected_size']:.1f}** "
        f"dimensions on average ({dims[-1] / sel['expected_size']:.1f}× smaller than "
        f"d = {dims[-1]}) for **{100 * sel['top1']:.2f}%** top-1, against "
        f"{100 * adaptive['ff_full_top1']:.2f}% for FF-{dims[-1]}."
        if sel
        else "No operating point reached full-size top-1 on the held-out images."
    )
    match = adaptive["match"]
    match_text = (
        f"The smallest expected size whose test top-1 is within 0.5 points of full-size FF "
        f"({100 * adaptive['ff_full_top1']:.2f}%) is **{match['expected_size']:.1f}** "
        f"({100 * match['top1']:.2f}%, target precision {match['precision']}), "
        f"{dims[-1] / match['expected_size']:.1f}× smaller than d = {dims[-1]}."
        if match
        else "No operating point reached full-size FF top-1 within 0.5 points."
    )
    epochs_s = sum(_seconds(c.out_dir) for c in jobs.values())
    lines = [
        "# CIFAR-10: MRL against its baselines at every size",
        "",
        "Reproduced with (from the repository root, CPU):",
        "",
        "```",
        command,
        "```",
        "",
        f"Data: CIFAR-10 JPEG copy (quality 75, so a few points below published CIFAR-10 "
        f"figures); {base.data.holdout} training images held out for tuning the adaptive "
        f"thresholds, {n_train:,} for training; test = the {n_test:,} test images. "
        f"Backbone `{base.model.backbone}` {base.model.backbone_kwargs}, d = "
        f"{base.model.d}, sizes {dims}. Recipe shared by every model: {base.epochs} epoch(s), "
        f"{base.optim.name} lr {base.optim.lr} (nesterov {base.optim.nesterov}), "
        f"weight decay {base.optim.weight_decay}, {base.optim.warmup_epochs:g} warm-up epoch(s), "
        f"cosine decay, batch {base.batch_size}, label smoothing {base.label_smoothing}, "
        f"pad-4 crop + flip, seed {base.seed}. Training time of all {len(jobs)} models: "
        f"{epochs_s / 60:.0f} min on this machine.",
        "",
        "## Accuracy at every size",
        "",
        "Top-1 (%) on the test split. MRL, MRL-E and FF use their own heads; PCA and truncation "
        "(of the full-size FF embedding) get a logistic-regression probe fitted on the train "
        "split at each size. 1-NN: cosine nearest neighbour, database = train split. * = never "
        "trained (interpolation; MRL has no head there).",
        "",
        comparison["table"],
    ]
    if "accuracy" in plots:
        lines += [f"![accuracy vs size]({plots['accuracy'].name})", ""]
    p_full = by["ff"][dims[-1]]["top1"]
    se = 100 * (p_full * (1 - p_full) / n_test) ** 0.5
    lines += [
        "Differences at each trained size (points):",
        "",
        *gap_rows,
        "",
        f"Sampling noise alone: the standard error of a top-1 near {100 * p_full:.0f}% on "
        f"{n_test:,} test images is {se:.2f} points, so a difference between two methods needs "
        f"about {2 * 2**0.5 * se:.1f} points to stand out at two standard errors.",
        "",
    ]
    lines += _spread_section(spread, base.seed)
    lines += _claims(by, dims, adaptive)
    lines += [
        "## Fine-tuning from the full-size FF model (paper, Appendix K)",
        "",
        "The nested loss for a few epochs starting from the FF-256 checkpoint, with only the "
        "nested heads trainable (`ft-head`), with the last block too (`ft-last1`), or with "
        "everything (`ft-all`), against MRL trained from scratch and FF per size.",
        "",
        results_table(finetune, trained=dims),
        "## Adaptive classification",
        "",
        f"The MRL heads as a cascade from {dims[0]} to {dims[-1]} dimensions: stop at the first "
        "size whose "
        "max softmax probability clears its threshold; sizes below a starting size never "
        "answer. Thresholds are tuned on the held-out training images for each target "
        "precision. The table lists the operating points no other point beats on both test "
        "expected size and test top-1.",
        "",
        *ad_rows,
        "",
        sel_text,
        "",
        "Read off the test curve instead (descriptive only): " + match_text,
        "",
    ]
    if "adaptive" in plots:
        lines += [f"![adaptive classification]({plots['adaptive'].name})", ""]
    if cams is not None:
        lines += [
            "## Where the model looks at each size",
            "",
            "Grad-CAM of the last convolutional stage through the MRL head of each size, for the "
            "first test image of six classes, explaining each size's own prediction.",
            "",
            f"![Grad-CAM per size]({cams.name})",
            "",
        ]
    return "\n".join(lines)


def _interpolation_gap(curve: dict[int, dict[str, float]], dims: list[int], key: str) -> float:
    """Largest |value - straight line between the trained neighbours| at in-between sizes."""
    worst = 0.0
    for lo, hi in zip(dims, dims[1:]):
        for m, row in curve.items():
            if lo < m < hi and row.get(key) is not None:
                t = (m - lo) / (hi - lo)
                line = (1 - t) * curve[lo][key] + t * curve[hi][key]
                worst = max(worst, abs(row[key] - line))
    return 100 * worst


def _claims(by: dict[str, Any], dims: list[int], adaptive: dict[str, Any]) -> list[str]:
    """The issue's claims, each with the number this run measured."""
    big = [m for m in dims if m >= 16]
    gap_ff = min(100 * (by["mrl"][m]["top1"] - by["ff"][m]["top1"]) for m in big)
    small = [m for m in dims if m <= 32]
    vs = {
        b: {m: 100 * (by["mrl"][m]["top1"] - by[b][m]["top1"]) for m in small}
        for b in ("pca", "truncation")
    }
    fmt = lambda g: ", ".join(f"{m}: {v:+.1f}" for m, v in g.items())  # noqa: E731
    sel = adaptive.get("selected")
    d = dims[-1]
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
        f"MRL 1-NN off by at most {_interpolation_gap(by['mrl'], dims, 'knn1'):.2f} points, "
        f"MRL-E top-1 by at most {_interpolation_gap(by['mrl-e'], dims, 'top1'):.2f}.",
        f"- Adaptive classification, {ad}.",
        "",
    ]


def _spread_section(spread: dict[int, dict[str, list[float]]] | None, seed0: int) -> list[str]:
    if not spread:
        return ["One seed per model: the spread over seeds is not measured in this run.", ""]
    n = max(len(v["mrl"]) for v in spread.values())
    rows = [
        f"## Spread over seeds ({n} seeds: {seed0}…{seed0 + n - 1})",
        "",
        "Test top-1 (%) of each seed's own head, mean ± standard deviation over seeds; the "
        "extra seeds retrain MRL and FF at a few sizes with the same recipe.",
        "",
        "| size | MRL | FF | MRL − FF (means) | MRL per seed | FF per seed |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for m, v in spread.items():
        mrl = 100 * np.asarray(v["mrl"])
        ff = 100 * np.asarray(v.get("ff", []))
        fmt = lambda a: f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else "–"  # noqa: E731
        gap = f"{mrl.mean() - ff.mean():+.2f}" if len(ff) else "–"
        per = lambda a: " / ".join(f"{x:.2f}" for x in a) or "–"  # noqa: E731
        rows.append(f"| {m} | {fmt(mrl)} | {fmt(ff)} | {gap} | {per(mrl)} | {per(ff)} |")
    return [*rows, ""]


def _seconds(out_dir: str) -> float:
    metrics = read_metrics(out_dir) or {}
    return sum(h.get("seconds", 0.0) for h in metrics.get("history", []))
