"""Side-by-side comparisons: MRL, MRL-E, FF per size, PCA and truncation, scored at every size.

This is the job behind ``matryoshka demo`` and the core of the CIFAR-10 reproduction. Each model is
trained once (a finished model folder is reused, an interrupted one resumes), each split is encoded
once per model, and every size is scored from those matrices. The report (Markdown table, plot)
is rendered from the results dict alone, so ``--report-only`` redraws it from ``results.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from matryoshka._io import write_text
from matryoshka._runtime import progress_bar, threads_for, torch_threads
from matryoshka.dims import interpolated_dims, nesting_dims, validate_dims
from matryoshka.eval import PCABaseline, encode, evaluate_embeddings, merge_results
from matryoshka.experiments.common import (
    RunClock,
    command_line,
    describe_augment,
    describe_data,
    duration,
    try_pyplot,
    write_results,
)
from matryoshka.train import (
    TrainConfig,
    config_to_dict,
    is_complete,
    load_data,
    load_model,
    read_metrics,
    resolve_device,
    train,
)
from matryoshka.viz import plot_accuracy_vs_dim, results_table, save_figure

__all__ = [
    "METHODS",
    "EncodedSplits",
    "compare_methods",
    "demo_config",
    "method_configs",
    "model_dims",
    "plot_comparison",
    "render_comparison",
    "run_demo",
    "train_jobs",
]

METHODS = ("mrl", "mrl-e", "ff", "pca", "truncation")


@dataclass
class EncodedSplits:
    """One model's train and test splits, each encoded once at full size, and its head.

    Attributes
    ----------
    head : the model's head (MRL, MRL-E or FF), on the CPU
    Xtr : ndarray of shape (N_train, d), float32
    ytr : ndarray of shape (N_train,), int64
    Xte : ndarray of shape (N_test, d), float32
    yte : ndarray of shape (N_test,), int64
    """

    head: nn.Module
    Xtr: np.ndarray
    ytr: np.ndarray
    Xte: np.ndarray
    yte: np.ndarray

    def evaluate(self, method: str, sizes: Sequence[int], **kw: Any) -> dict[str, Any]:
        """:func:`~matryoshka.eval.evaluate_embeddings` on these matrices."""
        return evaluate_embeddings(method, self.Xtr, self.ytr, self.Xte, self.yte, sizes, **kw)


def demo_config(
    out_dir: str | Path = "runs/demo", epochs: int = 30, seed: int = 0, threads: int | None = None
) -> TrainConfig:
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
    cfg.threads = threads
    cfg.out_dir = str(Path(out_dir) / "models")
    return cfg


def model_dims(base: TrainConfig) -> list[int]:
    """The trained sizes a recipe names: ``model.dims``, else doubling from ``dims_start`` to d."""
    dims = base.model.dims or nesting_dims(base.model.d, base.model.dims_start)
    return list(validate_dims(dims, base.model.d))


def method_configs(
    base: TrainConfig, dims: Sequence[int], methods: Sequence[str]
) -> dict[str, TrainConfig]:
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


def train_jobs(jobs: dict[str, TrainConfig], progress: bool = True) -> list[str]:
    """Train every job whose model folder is not finished yet (interrupted ones resume).

    Returns the names of the jobs trained (or resumed) by this call.
    """
    todo = {k: c for k, c in jobs.items() if not is_complete(c.out_dir, c)}
    total_epochs = sum(c.epochs - _epochs_done(c.out_dir) for c in todo.values())
    with progress_bar(total=total_epochs, desc="train", unit="epoch", disable=not progress) as bar:
        for name, cfg in todo.items():
            bar.set_postfix_str(name)
            train(cfg, progress=False, callback=lambda _rec: bar.update(1))
    return list(todo)


def _epochs_done(out_dir: str) -> int:
    return int((read_metrics(out_dir) or {}).get("epochs_done", 0))


def encode_jobs(
    base: TrainConfig, jobs: dict[str, TrainConfig], progress: bool = True
) -> dict[str, EncodedSplits]:
    """Each job's model encodes the train and test splits once (no augmentation)."""
    device = resolve_device(base.device)
    train_ds, test_ds, _ = load_data(base, augment=False, progress=progress)
    encoded = {}
    for name, cfg in progress_bar(jobs.items(), desc="encode", disable=not progress):
        model, _, _ = load_model(cfg.out_dir, device)
        Xtr, ytr = encode(model, train_ds, device=device, threads=base.threads)  # (N_train, d)
        Xte, yte = encode(model, test_ds, device=device, threads=base.threads)  # (N_test, d)
        encoded[name] = EncodedSplits(model.head.cpu(), Xtr, ytr, Xte, yte)
    return encoded


def _probe_flops(enc: EncodedSplits) -> float:
    """Work of one full-batch step of a linear probe (the largest evaluation step), in FLOPs."""
    n, d = enc.Xtr.shape
    classes = int(enc.ytr.max()) + 1 if len(enc.ytr) else 1
    return 6.0 * n * d * classes  # forward and backward of (N, d) @ (d, C)


def _evaluate(
    method: str, encoded: dict[str, EncodedSplits], dims: list[int], sizes: list[int]
) -> dict[str, Any]:
    """One method's result dict at every size (trained and in-between)."""
    if method in ("mrl", "mrl-e"):
        enc = encoded[method]
        return enc.evaluate(method, sizes, head=enc.head)
    if method == "ff":  # one model per size, each scored at its own size
        parts = [encoded[f"ff-{m}"].evaluate("ff", [m], head=encoded[f"ff-{m}"].head) for m in dims]
        return merge_results("ff", parts)
    enc = encoded[f"ff-{dims[-1]}"]  # the baselines start from the full-size FF embedding
    if method == "pca":
        pca = PCABaseline().fit(enc.Xtr)
        enc = EncodedSplits(enc.head, pca.transform(enc.Xtr), enc.ytr, pca.transform(enc.Xte),
                            enc.yte)  # fmt: skip
    return enc.evaluate(method, sizes, probe=True)


def compare_methods(
    base: TrainConfig,
    out_dir: str | Path,
    methods: Sequence[str] = METHODS,
    dims: Sequence[int] | None = None,
    progress: bool = True,
    command: str | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Train (or reuse) every method's models, evaluate each at trained and in-between sizes.

    Parameters
    ----------
    base : TrainConfig
        The shared recipe; ``base.out_dir`` is the folder that holds one model folder per job.
    out_dir : path
        Where ``results.json``, ``report.md`` and ``accuracy_vs_dim.png`` go.
    methods : subset of :data:`METHODS`
    dims : trained sizes (default: :func:`model_dims` of ``base``)
    title : the report's title (default: the methods and the data, from ``base``)

    Returns
    -------
    dict
        What ``results.json`` holds (``results``: one dict per method keyed by size, ``trained``,
        ``sizes``, ``command``, ``title``, ``config``), plus ``table`` (Markdown), ``seconds``
        and ``encoded`` (each model folder's :class:`EncodedSplits`, so a caller scores more
        without encoding again).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    dims = list(validate_dims(dims, base.model.d)) if dims is not None else model_dims(base)
    sizes = sorted(set(dims) | set(interpolated_dims(dims)))
    clock = RunClock()
    jobs = method_configs(base, dims, methods)
    train_jobs(jobs, progress)
    encoded = encode_jobs(base, jobs, progress)
    # probes and 1-NN on these small matrices: as many threads as the model would get
    enc = next(iter(encoded.values()))
    threads = threads_for(_probe_flops(enc), base.threads)
    with torch_threads(threads):
        results = [_evaluate(m, encoded, dims, sizes) for m in progress_bar(
            methods, desc="evaluate", disable=not progress)]  # fmt: skip
    config = config_to_dict(base)
    data = {
        "results": results,
        "trained": dims,
        "sizes": sizes,
        "command": command or command_line(),
        "title": title or f"MRL against its baselines on {describe_data(config['data'])}",
        "config": config,
        "n_train": len(enc.Xtr),
        "n_test": len(enc.Xte),
        "run_seconds": clock.stamp()["seconds"],  # training (or reuse), encoding, scoring
    }
    out_dir = Path(out_dir)
    write_results([out_dir / "results.json"], data)
    table = render_comparison(data, out_dir)
    return {**data, "table": table, "encoded": encoded, "seconds": clock.stamp()["seconds"]}


def plot_comparison(
    results: list[dict[str, Any]], dims: list[int], path: Path, title: str
) -> Path | None:
    """Top-1 and 1-NN against size, side by side, as a PNG (None without matplotlib)."""
    plt = try_pyplot("plot")
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    plot_accuracy_vs_dim(results, "top1", ax=axes[0], trained=dims, title="head / probe top-1")
    plot_accuracy_vs_dim(results, "knn1", ax=axes[1], trained=dims, title="1-NN top-1")
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
    return path


def render_comparison(data: dict[str, Any], out_dir: str | Path) -> str:
    """Write ``report.md`` and ``accuracy_vs_dim.png`` from a comparison's results dict.

    Returns the Markdown table. Reads nothing but ``data``, so a saved ``results.json`` renders
    the same report without training or encoding.
    """
    out_dir = Path(out_dir)
    dims, cfg = data["trained"], data["config"]
    table = results_table(data["results"], trained=dims)
    plot = plot_comparison(data["results"], dims, out_dir / "accuracy_vs_dim.png", data["title"])
    optim = cfg["optim"]
    seen = ""
    if "n_train" in data:  # what the run saw and how long it took (older files lack them)
        seen = (f" {data['n_train']:,} training and {data['n_test']:,} test examples; the run "
                f"(training or reusing the models, encoding, scoring) took "
                f"{duration(data['run_seconds'])}.")  # fmt: skip
    lines = [
        f"# {data['title']}",
        "",
        f"Data: {describe_data(cfg['data'])} (`{cfg['data']['name']}`), "
        f"{describe_augment(cfg['data'])}; backbone `{cfg['model']['backbone']}`, d = "
        f"{cfg['model']['d']}; trained sizes {dims}; {cfg['epochs']} epochs, {optim['name']} lr "
        f"{optim['lr']}, batch {cfg['batch_size']}, seed {cfg['seed']}.{seen}",
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
    lines += ["Reproduce with:", "", "```", data["command"], "```", ""]
    write_text(out_dir / "report.md", "\n".join(lines))
    return table


def run_demo(
    out_dir: str | Path = "runs/demo",
    epochs: int = 30,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """The main job: every method on the built-in digits, scored at every size.

    Writes ``report.md``, ``results.json`` and ``accuracy_vs_dim.png`` to ``out_dir``.
    ``threads``: CPU threads (default: one, the demo's models being small).
    """
    cfg = demo_config(out_dir, epochs=epochs, seed=seed, threads=threads)
    return compare_methods(
        cfg,
        out_dir,
        progress=progress,
        command=f"matryoshka demo --out {out_dir} --epochs {epochs} --seed {seed}",
        title=f"MRL on scikit-learn digits (8x8), MLP backbone, d = {cfg.model.d}",
    )
