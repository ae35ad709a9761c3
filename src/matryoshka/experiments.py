"""Side-by-side comparisons: MRL, MRL-E, FF per size, PCA and truncation, scored at every size.

This is the job behind ``matryoshka demo`` (and the reproductions built on it). It trains each
model once (a finished model folder is reused, an interrupted one resumes), encodes each split once
per model, and scores every size from those matrices. It may import every other module; only the
command line imports it.
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
from tqdm.auto import tqdm

from matryoshka._io import write_text
from matryoshka.dims import interpolated_dims, nesting_dims, validate_dims
from matryoshka.eval import (
    PCABaseline,
    encode,
    evaluate_embeddings,
    merge_results,
    results_table,
    save_results,
)
from matryoshka.train import (
    TrainConfig,
    is_complete,
    load_data,
    load_model,
    read_metrics,
    resolve_device,
    train,
)

__all__ = [
    "plot_comparison",
    "METHODS",
    "compare_methods",
    "demo_config",
    "method_configs",
    "run_demo",
    "train_jobs",
]

METHODS = ("mrl", "mrl-e", "ff", "pca", "truncation")


def demo_config(out_dir: str | Path = "runs/demo", epochs: int = 30, seed: int = 0) -> TrainConfig:
    """The demo's recipe: digits, an MLP to d=64, sizes 2, 4, ..., 64, SGD with cosine decay."""
    cfg = TrainConfig()
    cfg.data.name = "digits"
    cfg.model.backbone = "mlp"
    cfg.model.backbone_kwargs = {"hidden": [256, 256]}
    cfg.model.d = 64
    cfg.model.dims_start = 2
    cfg.optim.name = "sgd"
    cfg.optim.lr = 0.05
    cfg.optim.weight_decay = 5e-4
    cfg.optim.warmup_epochs = 1.0
    cfg.epochs = epochs
    cfg.batch_size = 64
    cfg.seed = seed
    cfg.eval_every = 0
    cfg.device = "cpu"
    cfg.out_dir = str(Path(out_dir) / "models")
    return cfg


def method_configs(base: TrainConfig, dims: Sequence[int], methods: Sequence[str]) -> dict:
    """Model folders to train: mrl, mrl-e, one FF model per size (full size for the baselines)."""
    root = Path(base.out_dir)
    jobs: dict[str, TrainConfig] = {}
    for head in ("mrl", "mrl-e"):
        if head in methods:
            cfg = copy.deepcopy(base)
            cfg.model.head = head
            cfg.model.dims = list(dims)
            cfg.out_dir = str(root / head)
            jobs[head] = cfg
    ff_sizes = list(dims) if "ff" in methods else []
    if {"pca", "truncation"} & set(methods) and dims[-1] not in ff_sizes:
        ff_sizes.append(dims[-1])
    for m in ff_sizes:
        cfg = copy.deepcopy(base)
        cfg.model.head = "ff"
        cfg.model.d = m
        cfg.model.dims = None
        cfg.out_dir = str(root / f"ff-{m}")
        jobs[f"ff-{m}"] = cfg
    return jobs


def train_jobs(jobs: dict[str, TrainConfig], progress: bool = True) -> None:
    """Train every job whose model folder is not finished yet (interrupted ones resume)."""
    todo = {k: c for k, c in jobs.items() if not is_complete(c.out_dir, c)}
    total_epochs = sum(c.epochs - _epochs_done(c.out_dir) for c in todo.values())
    with tqdm(total=total_epochs, desc="train", unit="epoch", disable=not progress) as bar:
        for name, cfg in todo.items():
            bar.set_postfix_str(name)
            train(cfg, progress=False, callback=lambda _rec: bar.update(1))


def _epochs_done(out_dir: str) -> int:
    return int((read_metrics(out_dir) or {}).get("epochs_done", 0))


def compare_methods(
    base: TrainConfig,
    out_dir: str | Path,
    methods: Sequence[str] = METHODS,
    dims: Sequence[int] | None = None,
    progress: bool = True,
    command: str | None = None,
    title: str = "Accuracy at every size",
) -> dict[str, Any]:
    """Train (or reuse) every method's models, evaluate each at trained and in-between sizes.

    Parameters
    ----------
    base : TrainConfig
        The shared recipe; ``base.out_dir`` is the folder that holds one model folder per job.
    out_dir : path
        Where ``results.json``, ``report.md`` and ``accuracy_vs_dim.png`` go.
    methods : subset of :data:`METHODS`
    dims : trained sizes (default: ``base.model.dims`` or the doubling schedule to ``d``)

    Returns
    -------
    dict with ``results`` (one dict per method, keyed by size), ``table`` (Markdown),
    ``trained``, ``sizes`` and ``encoded`` (each model folder's ``(Xtr, ytr, Xte, yte)``, so a
    caller scores more without encoding again).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    d = base.model.d
    if dims is None:
        dims = base.model.dims or nesting_dims(d, base.model.dims_start)
    dims = list(validate_dims(dims, d))
    sizes = sorted(set(dims) | set(interpolated_dims(dims)))
    out_dir = Path(out_dir)
    t0 = time.perf_counter()

    jobs = method_configs(base, dims, methods)
    train_jobs(jobs, progress)

    device = resolve_device(base.device)
    train_ds, test_ds, _ = load_data(base, augment=False)
    encoded: dict[str, tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for name, cfg in tqdm(jobs.items(), desc="encode", disable=not progress):
        model, _, _ = load_model(cfg.out_dir, device)
        Xtr, ytr = encode(model, train_ds, device=device)
        Xte, yte = encode(model, test_ds, device=device)
        encoded[name] = (model.head.cpu(), Xtr, ytr, Xte, yte)

    results = []
    with tqdm(total=len(methods), desc="evaluate", disable=not progress) as bar:
        for method in methods:
            if method in ("mrl", "mrl-e"):
                head, Xtr, ytr, Xte, yte = encoded[method]
                results.append(evaluate_embeddings(method, Xtr, ytr, Xte, yte, sizes, head=head))
            elif method == "ff":
                parts = [
                    evaluate_embeddings(
                        "ff", *encoded[f"ff-{m}"][1:], [m], head=encoded[f"ff-{m}"][0]
                    )
                    for m in dims
                ]
                results.append(merge_results("ff", parts))
            else:
                _, Xtr, ytr, Xte, yte = encoded[f"ff-{d}"]
                if method == "pca":
                    pca = PCABaseline().fit(Xtr)
                    Xtr, Xte = pca.transform(Xtr), pca.transform(Xte)
                results.append(evaluate_embeddings(method, Xtr, ytr, Xte, yte, sizes, probe=True))
            bar.update(1)

    table = results_table(results, trained=dims)
    command = command or " ".join(shlex.quote(a) for a in ["matryoshka", *sys.argv[1:]])
    out_dir.mkdir(parents=True, exist_ok=True)
    save_results(out_dir / "results.json", results, trained=dims, sizes=sizes, command=command)
    plot_path = plot_comparison(results, dims, out_dir / "accuracy_vs_dim.png", title)
    write_text(out_dir / "report.md", _report(table, command, dims, plot_path, base, title))
    return {
        "results": results,
        "table": table,
        "trained": dims,
        "sizes": sizes,
        "encoded": {name: enc[1:] for name, enc in encoded.items()},
        "seconds": time.perf_counter() - t0,
    }


def plot_comparison(results: list[dict], dims: list[int], path: Path, title: str) -> Path | None:
    """Top-1 and 1-NN against size, side by side, as a PNG (None without matplotlib)."""
    try:
        from matryoshka.viz import plot_accuracy_vs_dim, save_figure
        from matryoshka.viz.plots import _pyplot

        plt = _pyplot()
    except ImportError as e:  # the report is still written; say why the plot is missing
        print(f"warning: no plot ({e})", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    plot_accuracy_vs_dim(results, "top1", ax=axes[0], trained=dims, title="head / probe top-1")
    plot_accuracy_vs_dim(results, "knn1", ax=axes[1], trained=dims, title="1-NN top-1")
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
    return path


def _report(
    table: str, command: str, dims: list[int], plot: Path | None, base: TrainConfig, title: str
) -> str:
    lines = [
        f"# {title}",
        "",
        f"Data: `{base.data.name}`; backbone `{base.model.backbone}`, d = {base.model.d}; "
        f"trained sizes {dims}; {base.epochs} epochs, {base.optim.name} lr {base.optim.lr}, "
        f"batch {base.batch_size}, seed {base.seed}.",
        "",
        "Top-1 in percent on the test split. `top-1` is each method's own head (MRL, MRL-E, FF; "
        "MRL has no classifier at an in-between size, MRL-E slices its shared one) or, for PCA and "
        "truncation, a logistic-regression probe fitted on the train split at that size. `1-NN` "
        "is cosine nearest neighbour with the train split as database. Sizes marked * were never "
        "trained. PCA and truncation start from the full-size FF model's embedding.",
        "",
        table,
    ]
    if plot is not None:
        lines += [f"![accuracy vs size]({plot.name})", ""]
    lines += ["Reproduce with:", "", "```", command, "```", ""]
    return "\n".join(lines)


def run_demo(
    out_dir: str | Path = "runs/demo", epochs: int = 30, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """The main job: every method on the built-in digits, scored at every size.

    Writes ``report.md``, ``results.json`` and ``accuracy_vs_dim.png`` to ``out_dir``.
    """
    cfg = demo_config(out_dir, epochs=epochs, seed=seed)
    return compare_methods(
        cfg,
        out_dir,
        progress=progress,
        command=f"matryoshka demo --out {out_dir} --epochs {epochs} --seed {seed}",
        title="MRL on scikit-learn digits (8x8), MLP backbone, d = 64",
    )
