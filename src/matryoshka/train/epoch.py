"""One epoch of training: the loader with its per-epoch seed, the steps, the per-size record.

Every size's logits come from one backbone pass per batch; the losses are computed in float32
even under AMP; a non-finite loss stops the run before the weights change, and labels outside the
classes are refused naming the batch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from matryoshka._runtime import progress_bar
from matryoshka.nn import MatryoshkaLoss
from matryoshka.train.config import TrainConfig

__all__ = ["epoch_loader", "epoch_seed", "head_accuracy", "run_epoch", "summary_line"]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


@torch.no_grad()
def head_accuracy(
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


def epoch_loader(
    ds: Dataset, cfg: TrainConfig, per_rank: int, rank: int, world: int, epoch: int, drop: bool
) -> DataLoader:
    g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0))
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


def _check_labels(y: torch.Tensor, num_classes: int, desc: str, step: int) -> None:
    """Integer labels in ``[0, num_classes)``, or a ``ValueError`` naming the batch."""
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be integers (class indices), got {y.dtype} at {desc}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.max()) if int(y.max()) >= num_classes else int(y.min())
        raise ValueError(
            f"label {bad} at {desc}, step {step} is not a class index in [0, {num_classes})"
        )


def run_epoch(
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
    bar = progress_bar(loader, desc=desc, disable=not show, leave=False)
    for step, (x, y) in enumerate(bar, start=1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _check_labels(y, model.head.num_classes, desc, step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = wrapped(x)  # (B, K, C): all sizes from one backbone pass
        total, per_size = criterion(logits.float(), y)  # losses in float32, even under AMP
        if not torch.isfinite(total):  # stop before the weights are spoiled; keep the checkpoint
            loss = float(total.detach())
            raise ValueError(
                f"the loss became {loss} at {desc}, step {step}: training stopped and the last "
                "checkpoint is kept; lower optim.lr, or check the data for NaN"
            )
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


def summary_line(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    per = " ".join(f"{m}:{v:.3f}" for m, v in record["loss_per_size"].items())
    parts.append(f"loss/size {per}")
    if "test_top1" in record:
        acc = " ".join(f"{m}:{v:.3f}" for m, v in record["test_top1"].items())
        parts.append(f"test top-1 {acc}")
    parts.append(f"{record['seconds']:.1f}s")
    return " | ".join(parts)
