"""The MRL paper's image claims on data that fits a laptop: ``matryoshka reproduce cifar10``.

MRL, MRL-E and a fixed-feature model per size with one recipe; PCA and truncation of the full-size
FF embedding; head top-1 and 1-NN at trained and in-between sizes; fine-tuning from the FF model
with the heads, the last block or everything trainable (paper, Appendix K); adaptive
classification with thresholds tuned on held-out train images; Grad-CAM per size. Every model is
trained once into its own folder and reused; an interrupted run resumes.

:func:`reproduce_cifar10` computes one results dict (everything the report shows, written as
``cifar10.json``); :mod:`matryoshka.experiments.cifar10_report` renders it, so the report and its
figures can be redrawn from that file alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matryoshka.data import default_data_root
from matryoshka.eval import (
    adaptive_classification,
    encode,
    evaluate_embeddings,
    gradcam_per_size,
    select_operating_point,
)
from matryoshka.experiments.cifar10_report import render_cifar10, save_gradcam
from matryoshka.experiments.common import RunClock, command_line, write_results
from matryoshka.experiments.compare import (
    METHODS,
    compare_methods,
    method_configs,
    model_dims,
    train_jobs,
)
from matryoshka.train import (
    TrainConfig,
    config_to_dict,
    load_config,
    load_data,
    load_holdout,
    load_model,
    read_metrics,
    resolve_device,
)

__all__ = ["FINETUNE_MODES", "cifar10_jobs", "reproduce_cifar10", "seed_jobs", "seed_spread"]

FINETUNE_MODES = ("head", "last1", "all")


def cifar10_jobs(
    base: TrainConfig, finetune_epochs: int = 2, finetune_lr: float = 0.02
) -> dict[str, TrainConfig]:
    """Every model folder of the reproduction, in training order.

    The full-size FF model comes first (the baselines and fine-tuning start from it), then MRL,
    MRL-E, the other FF sizes, and the three fine-tuning runs.
    """
    dims = model_dims(base)
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
    if not 1 <= seeds <= 100:
        raise ValueError(f"seeds must be between 1 and 100, got {seeds}")
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


def _final_top1(out_dir: str) -> dict[str, float]:
    history = (read_metrics(out_dir) or {}).get("history", [])
    return history[-1].get("test_top1", {}) if history else {}


def seed_spread(
    main: dict[str, TrainConfig], extra: dict[str, TrainConfig], dims: Sequence[int]
) -> dict[int, dict[str, list[float]]]:
    """Final test top-1 of every seed, from each model folder's ``metrics.json``.

    Returns ``{size: {"mrl": [top1 per seed], "ff": [top1 per seed]}}`` (FF only where an
    extra seed of FF at that size was trained).
    """
    ff_sizes = sorted({int(k.split("-")[1]) for k in extra if k.startswith("ff-")})
    mrl_runs = [main["mrl"], *(c for k, c in extra.items() if k.startswith("mrl-"))]
    out: dict[int, dict[str, list[float]]] = {}
    mrl_final = [_final_top1(c.out_dir) for c in mrl_runs]
    for m in dims:
        row = {"mrl": [f[str(m)] for f in mrl_final if str(m) in f]}
        if m in ff_sizes:
            ff_runs = [main[f"ff-{m}"], *(c for k, c in extra.items() if k.startswith(f"ff-{m}-"))]
            row["ff"] = [_final_top1(c.out_dir)[str(m)] for c in ff_runs]
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


def _smallest_match(adaptive: dict[str, Any], target: float, tolerance: float) -> dict | None:
    """The operating point of smallest expected size whose test top-1 is within tolerance."""
    ok = [p for p in adaptive["points"] if p["top1"] >= target - tolerance]
    return min(ok, key=lambda p: p["expected_size"]) if ok else None


def _finetune(
    jobs: dict[str, TrainConfig], comparison: dict[str, Any], splits: tuple, device: Any
) -> list[dict[str, Any]]:
    """MRL from scratch, the three fine-tuning runs and FF per size, each scored at its sizes."""
    train_ds, test_ds = splits
    by = {r["method"]: r for r in comparison["results"]}
    out = [by["mrl"]]
    for mode in FINETUNE_MODES:
        model, _, _ = load_model(jobs[f"finetune-{mode}"].out_dir, device)
        Xtr, ytr = encode(model, train_ds, device=device)
        Xte, yte = encode(model, test_ds, device=device)
        dims = comparison["trained"]
        out.append(
            evaluate_embeddings(f"ft-{mode}", Xtr, ytr, Xte, yte, dims, head=model.head.cpu())
        )
    return [*out, by["ff"]]


def _adaptive(
    base: TrainConfig,
    jobs: dict[str, TrainConfig],
    comparison: dict[str, Any],
    mrl: Any,
    device: Any,
) -> dict[str, Any]:
    """The MRL cascade, thresholds tuned on held-out images, the operating point chosen there."""
    dims = comparison["trained"]
    holdout = load_holdout(base, progress=False)  # decoded by the training already
    Xho, yho = encode(mrl, holdout, device=device)
    enc = comparison["encoded"]["mrl"]  # the test split, encoded once by compare_methods
    adaptive = adaptive_classification(
        _head_logits(mrl, Xho), yho, _head_logits(mrl, enc.Xte), enc.yte, dims
    )
    by = {r["method"]: r for r in comparison["results"]}
    adaptive["ff_full_top1"] = by["ff"]["dims"][dims[-1]]["top1"]
    adaptive["match"] = _smallest_match(adaptive, adaptive["ff_full_top1"], tolerance=0.005)
    ff_model, _, _ = load_model(jobs[f"ff-{dims[-1]}"].out_dir, device)
    X_ff_ho, _ = encode(ff_model, holdout, device=device)
    ff_ho_logits = _head_logits(ff_model, X_ff_ho)[:, 0]  # (N, C)
    adaptive["ff_full_holdout_top1"] = float((ff_ho_logits.argmax(1) == yho).mean())
    # The cascade must reach, on held-out data and with no slack, both FF's full-size top-1 and
    # its own largest head's: then it loses nothing to full size on data it was tuned on, and
    # the test split's own noise is what a 0.5-point margin is left for.
    adaptive["holdout_target"] = max(
        adaptive["ff_full_holdout_top1"], adaptive["holdout_fixed"][dims[-1]]
    )
    adaptive["selected"] = select_operating_point(
        adaptive, adaptive["holdout_target"], tolerance=0.0
    )
    return adaptive


def _gradcam(model: Any, test_ds: Any, classes: list[str], dims: list[int], n: int = 6) -> dict:
    """Grad-CAM maps of each size for the first test image of ``n`` classes, as arrays."""
    labels = np.asarray(test_ds.labels)
    picks = [int(np.flatnonzero(labels == c)[0]) for c in range(min(n, len(classes)))]
    x = torch.stack([test_ds[i][0] for i in picks])  # (n, 3, H, W), normalised
    cams = gradcam_per_size(model, x, dims)  # (n, S, H, W)
    mean = torch.tensor(test_ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(test_ds.std).view(1, 3, 1, 1)
    images = (x * std + mean).clamp(0, 1).numpy()  # (n, 3, H, W) in [0, 1]
    return {"images": images, "cams": cams, "labels": [classes[labels[i]] for i in picks]}


def _cifar10_recipe(config: str | Path, overrides: list[str] | None) -> TrainConfig:
    base = load_config(config, overrides)
    if base.data.name != "cifar10":
        raise ValueError(
            f"reproduce cifar10 runs on CIFAR-10, but the recipe's data is {base.data.name!r}; "
            "for MRL against its baselines on other data use `matryoshka compare`"
        )
    if base.eval_every < 1:  # the seed spread reads each model's last test score
        raise ValueError(
            f"reproduce cifar10 reads every model's final test top-1: eval_every must be at least "
            f"1 (e.g. eval_every={base.epochs}, once at the end), got {base.eval_every}"
        )
    return base


def _data_source(base: TrainConfig) -> str:
    """``"torchvision"`` (its pickled batches) or ``"jpeg"`` (an ImageNet-layout copy)."""
    root = Path(base.data.root) if base.data.root else default_data_root("cifar10")
    return "torchvision" if (root / "cifar-10-batches-py").exists() else "jpeg"


def _train_seconds(jobs: dict[str, TrainConfig]) -> float:
    """Training time of every job, from the per-epoch seconds in each model folder."""
    return sum(
        h.get("seconds", 0.0)
        for c in jobs.values()
        for h in (read_metrics(c.out_dir) or {}).get("history", [])
    )


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
    out_dir : where the comparison's own report and ``results.json`` go (model folders follow
        ``out_dir`` of the config)
    docs_dir : where ``cifar10.md``, ``cifar10.json`` (the results dict the report is rendered
        from), the figures and ``cifar10_gradcam.npz`` (the Grad-CAM maps) go
    seeds : models per seed count for MRL and for FF at ``seed_sizes`` (default: 16 and d), to
        show the spread between seeds beside the gap between MRL and FF
    train_only : stop after training every model (e.g. to train on one machine, report on another)

    Returns
    -------
    dict
        The results dict written to ``cifar10.json`` (see :func:`render_cifar10`), or
        ``{"trained": [...], "seconds": ...}`` with ``train_only``.
    """
    clock = RunClock()
    base = _cifar10_recipe(config, overrides)
    dims = model_dims(base)
    jobs = cifar10_jobs(base, finetune_epochs=finetune_epochs)
    if seed_sizes is None:
        seed_sizes = sorted({m for m in (16, dims[-1]) if m in dims})
    extra = seed_jobs(base, dims, seeds, seed_sizes)
    for cfg in {**jobs, **extra}.values():  # every recipe checked before hours of training
        cfg.check()
    train_jobs(jobs, progress)  # the main run first: its report does not wait for the seeds
    train_jobs(extra, progress)
    if train_only:
        return {"trained": [*jobs, *extra], **clock.stamp()}
    out_dir, docs_dir = Path(out_dir), Path(docs_dir)
    command = command or command_line()
    comparison = compare_methods(
        base, out_dir, METHODS, dims, progress=progress, command=command,
        title=f"CIFAR-10, {base.model.backbone}, d = {base.model.d}",
    )  # fmt: skip
    device = resolve_device(base.device)
    train_ds, test_ds, classes = load_data(base, augment=False, progress=progress)
    finetune = _finetune(jobs, comparison, (train_ds, test_ds), device)
    mrl, _, _ = load_model(jobs["mrl"].out_dir, device)
    adaptive = _adaptive(base, jobs, comparison, mrl, device)
    maps = _gradcam(mrl.cpu(), test_ds, classes, dims)
    docs_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "experiment": "cifar10",
        "command": command,
        "config": config_to_dict(base),
        "dims": dims,
        "sizes": comparison["sizes"],
        "data_source": _data_source(base),
        "n_train": len(train_ds),
        "n_test": len(test_ds),
        "models": len(jobs) + len(extra),
        "train_seconds": _train_seconds({**jobs, **extra}),
        "comparison": comparison["results"],
        "finetune": finetune,
        "adaptive": adaptive,
        "seeds": seed_spread(jobs, extra, dims) if extra else None,
        "gradcam": save_gradcam(docs_dir / "cifar10_gradcam.npz", maps),
        **clock.stamp(),
    }
    render_cifar10(results, docs_dir)
    write_results([out_dir / "results.json", docs_dir / "cifar10.json"], results)
    return results
