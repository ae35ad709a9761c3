"""The training loop: one backbone pass per batch, the nested loss over every size.

Runs alone (``matryoshka train``) or under ``torchrun`` (PyTorch DDP; gloo on CPU, NCCL on GPU).
Each epoch ends with a checkpoint; a run restarted with the same ``out_dir`` resumes where the last
checkpoint left off and ends with the same weights as an uninterrupted run: the random state at
the start of each epoch is derived from ``(seed, epoch, rank)``, never carried over.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from matryoshka.data import load_dataset, split_holdout
from matryoshka.models import backbone_blocks
from matryoshka.nn import MatryoshkaLoss
from matryoshka.train.checkpoint import (
    build_model,
    load_model,
    load_train_state,
    read_metrics,
    save_checkpoint,
)
from matryoshka.train.config import TrainConfig, config_diff, config_from_dict, config_to_dict
from matryoshka.train.device import resolve_device

__all__ = ["DataSplits", "train", "is_complete", "load_data", "load_holdout"]


def is_complete(out_dir: str, cfg: TrainConfig | None = None) -> bool:
    """Whether ``out_dir`` holds a finished run (its metrics say all epochs are done).

    With ``cfg``, a finished run trained with another recipe is an error, not a silent reuse.
    """
    metrics = read_metrics(out_dir)
    if not (metrics and metrics.get("complete")):
        return False
    if cfg is not None:
        _check_same_recipe(out_dir, cfg)
    return True


def _check_same_recipe(out_dir: str, cfg: TrainConfig) -> None:
    _, saved, _ = load_model(out_dir)
    diff = config_diff(saved, cfg)
    if diff:
        raise ValueError(
            f"{out_dir} holds a run with another recipe (differs in {', '.join(diff)}); pick "
            "another out_dir, or start over with resume disabled (--no-resume)"
        )


def _dist_setup(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world_size, initialised_here) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


def _set_trainable(model: nn.Module, spec: str) -> None:
    """``all``; ``head`` (backbone frozen); ``last<k>``: the head and the last k backbone blocks."""
    if spec == "all":
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    if spec == "head":
        return
    if spec.startswith("last") and spec[4:].isdigit() and int(spec[4:]) > 0:
        for block in backbone_blocks(model.backbone)[-int(spec[4:]) :]:
            block.requires_grad_(True)
        return
    raise ValueError(f"trainable must be 'all', 'head' or 'last<k>' (e.g. last1), got {spec!r}")


def _schedule(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
    floor = cfg.optim.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _loss_weights(cfg: TrainConfig, K: int) -> list[float]:
    """Per-size weights for :class:`MatryoshkaLoss`, which averages over sizes.

    ``sum`` multiplies them by K, so the total is the paper's sum over sizes: each size's head
    then learns at the rate a lone head would, and the backbone gets every size's gradient.
    Averaging instead gives each head 1/K of that, which trains the heads K times slower.
    """
    weights = list(cfg.loss_weights) if cfg.loss_weights is not None else [1.0] * K
    if cfg.loss_reduction == "sum":
        return [w * K for w in weights]
    if cfg.loss_reduction == "mean":
        return weights
    raise ValueError(f"loss_reduction must be 'sum' or 'mean', got {cfg.loss_reduction!r}")


def _optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {o.name!r}")


@torch.no_grad()
def _head_accuracy(
    model: nn.Module, ds: Dataset, batch_size: int, device: torch.device, use_amp: bool
) -> dict[int, float]:
    """Top-1 of every trained size's head on a data set (one backbone pass per batch)."""
    model.eval()
    correct: torch.Tensor | None = None
    n = 0
    for x, y in DataLoader(ds, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)  # (B, K, C)
        hits = (logits.float().argmax(-1) == y[:, None]).sum(0)  # (K,)
        correct = hits if correct is None else correct + hits
        n += len(y)
    model.train()
    dims = model.head.dims
    return {m: float(c) / max(n, 1) for m, c in zip(dims, correct.tolist())}


@dataclass
class _Run:
    """What one training run holds between epochs (built by :func:`_start`)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    model: nn.Module
    wrapped: nn.Module  # the model, or its DDP wrapper
    train_ds: Dataset
    test_ds: Dataset
    classes: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: MatryoshkaLoss
    per_rank: int  # batch size of one process
    drop_last: bool
    start_epoch: int
    history: list[dict[str, Any]]

    @property
    def use_amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"


def _start(cfg: TrainConfig, device: torch.device, rank: int, world: int, resume: bool) -> _Run:
    """Data, model, optimizer, schedule and loss of a run, restored from its checkpoint if any.

    The order of the random draws (seed, data, model initialisation) is fixed: a resumed or
    repeated run must end with the same weights.
    """
    torch.manual_seed(cfg.seed)
    train_ds, test_ds, classes = load_data(cfg)
    if cfg.model.backbone == "mlp" and "in_features" not in cfg.model.backbone_kwargs:
        cfg.model.backbone_kwargs["in_features"] = int(train_ds[0][0].numel())
    model = build_model(cfg.model, len(classes))
    if cfg.init_from:
        _init_from(model, cfg.init_from)
    _set_trainable(model, cfg.trainable)
    model.to(device)
    per_rank = max(1, cfg.batch_size // world)
    drop_last = len(train_ds) >= per_rank * world * 2
    n_batches = len(train_ds) / (per_rank * world)
    steps = int(n_batches) if drop_last else math.ceil(n_batches)
    optimizer = _optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, steps))
    criterion = MatryoshkaLoss(
        nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        model.head.dims,
        _loss_weights(cfg, len(model.head.dims)),
    )
    start_epoch, history = 0, []
    state = load_train_state(cfg.out_dir) if resume else None
    if state is not None:
        start_epoch, history = _restore(model, optimizer, scheduler, state, cfg, device)
    wrapped: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return _Run(cfg, device, rank, world, model, wrapped, train_ds, test_ds, classes, optimizer,
                scheduler, criterion, per_rank, drop_last, start_epoch, history)  # fmt: skip


def _epoch(run: _Run, epoch: int, show: bool) -> dict[str, Any]:
    """Train one epoch, score the test split when due, and write the checkpoint (rank 0)."""
    cfg = run.cfg
    torch.manual_seed(_epoch_seed(cfg.seed, epoch, run.rank))
    loader = _loader(run.train_ds, cfg, run.per_rank, run.rank, run.world, epoch, run.drop_last)
    record = _run_epoch(
        run.wrapped, run.model, loader, run.criterion, run.optimizer, run.scheduler, run.device,
        run.use_amp, desc=f"epoch {epoch + 1}/{cfg.epochs}", show=show,
    )  # fmt: skip
    record["epoch"] = epoch + 1
    last = epoch + 1 == cfg.epochs
    due = last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
    if run.rank == 0 and due:
        record["test_top1"] = _head_accuracy(run.model, run.test_ds, 512, run.device, run.use_amp)
    run.history.append(record)
    if run.rank == 0:
        state = {"epoch": epoch + 1, "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "history": run.history}  # fmt: skip
        metrics = {"epochs_done": epoch + 1, "epochs": cfg.epochs, "complete": last,
                   "history": run.history}  # fmt: skip
        save_checkpoint(cfg.out_dir, run.model, cfg, run.classes, state=state, metrics=metrics)
    if run.world > 1:
        dist.barrier()
    return record


def train(
    cfg: TrainConfig,
    resume: bool = True,
    stop_after_epoch: int | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a model with the nested loss and write its folder to ``cfg.out_dir``.

    Parameters
    ----------
    cfg : TrainConfig
    resume : bool
        Continue from the checkpoint in ``cfg.out_dir`` when there is one.
    stop_after_epoch : int, optional
        Stop once this many epochs are done (the schedule still spans ``cfg.epochs``), as if the
        run were interrupted there.
    progress : bool
        A progress bar per epoch and a summary line after each.
    callback : callable, optional
        Called with each epoch's record (loss, per-size loss and top-1).

    Returns
    -------
    dict with ``epochs_done``, ``complete`` and ``history`` (one record per epoch).
    """
    cfg = config_from_dict(config_to_dict(cfg))  # a private copy, resolved below
    device = resolve_device(cfg.device)
    rank, world, own_group = _dist_setup(device)
    show = progress and rank == 0
    try:
        run = _start(cfg, device, rank, world, resume)
        for epoch in range(run.start_epoch, cfg.epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            record = _epoch(run, epoch, show)
            if show:
                tqdm.write(_summary_line(record, cfg.epochs))
            if callback is not None:
                callback(record)
        history = run.history
        return {
            "epochs_done": history[-1]["epoch"] if history else 0,
            "complete": bool(history) and history[-1]["epoch"] == cfg.epochs,
            "history": history,
        }
    finally:
        if own_group:
            dist.destroy_process_group()


class DataSplits(NamedTuple):
    """A recipe's data: unpack as ``train, test, classes = load_data(cfg)``."""

    train: Dataset  # what the model trains on (held-out examples and subset applied)
    test: Dataset
    classes: list[str]


def load_data(cfg: TrainConfig, augment: bool | None = None) -> DataSplits:
    """The train and test splits a config names, and the class names.

    The train split is what the model trains on: without ``data.holdout`` examples (set aside
    for tuning, e.g. adaptive-classification thresholds) and cut to ``data.train_subset``.
    Pass ``augment=False`` to encode the train split.
    """
    train, test, classes = _load_raw(cfg, augment)
    if cfg.data.holdout or cfg.data.train_subset:
        train, _ = split_holdout(train, cfg.data.holdout, cfg.data.train_subset, cfg.seed)
    return DataSplits(train, test, classes)


def load_holdout(cfg: TrainConfig) -> Dataset:
    """The ``data.holdout`` examples set aside from the train split, without augmentation."""
    if not cfg.data.holdout:
        raise ValueError("this config sets no data.holdout; set e.g. data.holdout=5000")
    train, _, _ = _load_raw(cfg, augment=False)
    return split_holdout(train, cfg.data.holdout, None, cfg.seed)[1]


def _load_raw(cfg: TrainConfig, augment: bool | None) -> tuple[Dataset, Dataset, list[str]]:
    kwargs = _data_kwargs(cfg)
    if augment is not None and kwargs:
        kwargs["augment"] = augment
    return load_dataset(
        cfg.data.name, seed=cfg.seed, test_fraction=cfg.data.test_fraction, **kwargs
    )


def _data_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.data.name == "digits":
        return {}
    kw = {"root": cfg.data.root, "augment": cfg.data.augment, "cache_dir": cfg.data.cache_dir}
    if cfg.data.name == "image_folder":
        kw.update(image_size=cfg.data.image_size, test_split=cfg.data.test_split)
    return kw


def _init_from(model: nn.Module, path: str) -> None:
    """Start from another model folder: its backbone always, its head when the shapes match."""
    src, _, _ = load_model(path)
    model.backbone.load_state_dict(src.backbone.state_dict())
    src_head = src.head.state_dict()
    dst_head = model.head.state_dict()
    if src_head.keys() == dst_head.keys() and all(
        src_head[k].shape == dst_head[k].shape for k in src_head
    ):
        model.head.load_state_dict(src_head)


def _restore(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[int, list[dict[str, Any]]]:
    _check_same_recipe(cfg.out_dir, cfg)
    saved, _, _ = load_model(cfg.out_dir, device)
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]), list(state.get("history", []))


def _loader(
    ds: Dataset, cfg: TrainConfig, per_rank: int, rank: int, world: int, epoch: int, drop: bool
) -> DataLoader:
    g = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, 0))
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=drop
        )
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(ds, generator=g)
    return DataLoader(
        ds,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=drop,
        generator=g,
        persistent_workers=False,
    )


def _run_epoch(
    wrapped: nn.Module,
    model: nn.Module,
    loader: DataLoader,
    criterion: MatryoshkaLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    use_amp: bool,
    desc: str,
    show: bool,
) -> dict[str, Any]:
    dims = model.head.dims
    K = len(dims)
    loss_sum = torch.zeros(K, dtype=torch.float64, device=device)  # per size, summed over examples
    correct = torch.zeros(K, dtype=torch.float64, device=device)
    n = torch.zeros((), dtype=torch.float64, device=device)
    t0 = time.perf_counter()
    wrapped.train()
    bar = tqdm(loader, desc=desc, disable=not show, leave=False, dynamic_ncols=True)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = wrapped(x)  # (B, K, C): all sizes from one backbone pass
        total, per_size = criterion(logits.float(), y)  # losses in float32, even under AMP
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        B = len(y)
        loss_sum += torch.stack([per_size[m] for m in dims]).double() * B
        correct += (logits.detach().argmax(-1) == y[:, None]).sum(0).double()
        n += B
        if show:
            bar.set_postfix(loss=f"{total.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
    if dist.is_initialized():
        for t in (loss_sum, correct, n):
            dist.all_reduce(t)
    per_loss = (loss_sum / n.clamp(min=1)).tolist()
    per_acc = (correct / n.clamp(min=1)).tolist()
    weights = criterion.weights
    return {
        "loss": sum(w * v for w, v in zip(weights, per_loss)) / K,
        "loss_per_size": dict(zip(dims, per_loss)),
        "train_top1": dict(zip(dims, per_acc)),
        "lr": scheduler.get_last_lr()[0],
        "seconds": time.perf_counter() - t0,
    }


def _summary_line(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    per = " ".join(f"{m}:{v:.3f}" for m, v in record["loss_per_size"].items())
    parts.append(f"loss/size {per}")
    if "test_top1" in record:
        acc = " ".join(f"{m}:{v:.3f}" for m, v in record["test_top1"].items())
        parts.append(f"test top-1 {acc}")
    parts.append(f"{record['seconds']:.1f}s")
    return " | ".join(parts)
