"""The training loop: one backbone pass per batch, the nested loss over every size.

Runs alone (``matryoshka train``) or under ``torchrun`` (PyTorch DDP; gloo on CPU, NCCL on GPU).
Each epoch ends with a checkpoint; a run restarted with the same ``out_dir`` resumes where the last
checkpoint left off and ends with the same weights as an uninterrupted run: the random state at
the start of each epoch is derived from ``(seed, epoch, rank)``, never carried over.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from matryoshka._io import check_destination, writer_lock
from matryoshka._runtime import progress_write, step_flops, threads_for, torch_threads
from matryoshka.models import backbone_blocks
from matryoshka.nn import MatryoshkaLoss
from matryoshka.train.checkpoint import (
    CONFIG,
    MODEL_FOLDER,
    STATE,
    build_model,
    load_model,
    load_train_state,
    read_metrics,
    save_checkpoint,
    saved_config,
)
from matryoshka.train.config import TrainConfig, config_diff, config_from_dict, config_to_dict
from matryoshka.train.data import data_channels, eval_split, load_data, resolve_data
from matryoshka.train.device import resolve_device
from matryoshka.train.epoch import epoch_loader, epoch_seed, head_accuracy, run_epoch, summary_line

__all__ = ["train", "is_complete"]


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
        blocks = backbone_blocks(model.backbone)
        if int(spec[4:]) > len(blocks):
            raise ValueError(
                f"trainable={spec} asks for more blocks than the backbone has ({len(blocks)}); "
                f"use last1 ... last{len(blocks)}, or all"
            )
        for block in blocks[-int(spec[4:]) :]:
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
    test_ds: Dataset  # what training scores: the test split, or its eval_subset pick
    classes: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: MatryoshkaLoss
    per_rank: int  # batch size of one process
    drop_last: bool
    start_epoch: int
    history: list[dict[str, Any]]
    overwrite: bool = False  # the first checkpoint may go over a folder of something else

    @property
    def use_amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"


def _start(
    cfg: TrainConfig, device: torch.device, rank: int, world: int, resume: bool, show: bool
) -> _Run:
    """Data, model, optimizer, schedule and loss of a run, restored from its checkpoint if any.

    The order of the random draws (seed, data, model initialisation) is fixed: a resumed or
    repeated run must end with the same weights. An image folder's channels, mean and std left
    null are the resumed run's, or found from the data, before anything is drawn.
    """
    if resume:
        _fill_measured(cfg)
    resolve_data(cfg, progress=show)
    torch.manual_seed(cfg.seed)
    train_ds, test_ds, classes = load_data(cfg, progress=show)
    test_ds = eval_split(test_ds, cfg)
    if cfg.model.backbone == "mlp" and "in_features" not in cfg.model.backbone_kwargs:
        cfg.model.backbone_kwargs["in_features"] = int(train_ds[0][0].numel())
    model = build_model(cfg.model, len(classes), data_channels(cfg))
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
    elif resume and (read_metrics(cfg.out_dir) or {}).get("epochs_done", 0) > 0:
        raise ValueError(
            f"{cfg.out_dir} holds a model trained for "
            f"{read_metrics(cfg.out_dir)['epochs_done']} epoch(s) but no {STATE} to resume "
            "from; starting again would replace it: pass --no-resume (resume=False) to do that"
        )
    wrapped: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return _Run(cfg, device, rank, world, model, wrapped, train_ds, test_ds, classes, optimizer,
                scheduler, criterion, per_rank, drop_last, start_epoch, history)  # fmt: skip


def _epoch(run: _Run, epoch: int, show: bool, threads: int) -> dict[str, Any]:
    """Train one epoch, score the test split when due, and write the checkpoint (rank 0)."""
    cfg = run.cfg
    torch.manual_seed(epoch_seed(cfg.seed, epoch, run.rank))
    loader = epoch_loader(
        run.train_ds, cfg, run.per_rank, run.rank, run.world, epoch, run.drop_last
    )
    record = run_epoch(
        run.wrapped, run.model, loader, run.criterion, run.optimizer, run.scheduler, run.device,
        run.use_amp, desc=f"epoch {epoch + 1}/{cfg.epochs}", show=show,
    )  # fmt: skip
    record["epoch"] = epoch + 1
    record["threads"] = threads  # CPU threads it ran with (results may differ in the last bits)
    last = epoch + 1 == cfg.epochs
    due = cfg.eval_every > 0 and (last or (epoch + 1) % cfg.eval_every == 0)  # 0: never
    if run.rank == 0 and due:
        record["test_top1"] = head_accuracy(run.model, run.test_ds, 512, run.device, run.use_amp)
        record["test_count"] = len(run.test_ds)  # the eval_subset pick, or the whole split
    run.history.append(record)
    if run.rank == 0:
        state = {"epoch": epoch + 1, "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "history": run.history}  # fmt: skip
        metrics = {"epochs_done": epoch + 1, "epochs": cfg.epochs, "complete": last,
                   "history": run.history}  # fmt: skip
        save_checkpoint(cfg.out_dir, run.model, cfg, run.classes, state=state, metrics=metrics,
                        overwrite=run.overwrite)  # fmt: skip
    if run.world > 1:
        dist.barrier()
    return record


def train(
    cfg: TrainConfig,
    resume: bool = True,
    stop_after_epoch: int | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
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
    overwrite : bool
        Write the model folder over an ``out_dir`` that holds something else (its other entries
        are kept). Without it such an ``out_dir`` is refused before anything is trained, and a
        second training run into the same ``out_dir`` is refused while the first runs.

    Returns
    -------
    dict with ``epochs_done``, ``complete`` and ``history`` (one record per epoch).
    """
    cfg = config_from_dict(config_to_dict(cfg))  # a private copy, resolved below
    check_destination(cfg.out_dir, MODEL_FOLDER, overwrite)  # before any data or model is built
    device = resolve_device(cfg.device)
    rank, world, own_group = _dist_setup(device)
    show = progress and rank == 0
    try:
        with contextlib.ExitStack() as stack:
            if rank == 0:  # one training run per folder: a second one is refused at once
                stack.enter_context(writer_lock(cfg.out_dir, timeout=0, name="run"))
            return _train(cfg, device, rank, world, resume, stop_after_epoch, show, callback,
                          overwrite)  # fmt: skip
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig,
    device: torch.device,
    rank: int,
    world: int,
    resume: bool,
    stop_after_epoch: int | None,
    show: bool,
    callback: Callable[[dict[str, Any]], None] | None,
    overwrite: bool,
) -> dict[str, Any]:
    """The epochs of :func:`train`, with the process group and the run lock already set up."""
    run = _start(cfg, device, rank, world, resume, show)
    run.overwrite = overwrite
    sample = run.train_ds[0][0].to(device)
    threads = threads_for(step_flops(run.model, sample, run.per_rank), cfg.threads)
    with torch_threads(threads):  # one thread for a small model: fast beside a busy core too
        for epoch in range(run.start_epoch, cfg.epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            record = _epoch(run, epoch, show, threads)
            if show:
                progress_write(summary_line(record, cfg.epochs))
            if callback is not None:
                callback(record)
    history = run.history
    return {
        "epochs_done": history[-1]["epoch"] if history else 0,
        "complete": bool(history) and history[-1]["epoch"] == cfg.epochs,
        "history": history,
    }


def _fill_measured(cfg: TrainConfig) -> None:
    """Resuming: data settings measured from the data and left null are the saved run's."""
    if not (Path(cfg.out_dir) / CONFIG).is_file():
        return
    try:
        saved = saved_config(cfg.out_dir).data
    except (OSError, ValueError):  # not ours, or corrupt: the resume itself reports it
        return
    for key in ("channels", "mean", "std"):
        if getattr(cfg.data, key) is None:
            setattr(cfg.data, key, getattr(saved, key))


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
