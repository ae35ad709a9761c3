"""Training-step overhead of nested heads on a CIFAR-stem ResNet-18 (d=512, 10 classes), CPU.

Four heads on identical backbones, measured interleaved (round-robin, one step each per round) so
that a slow moment of the machine hits every configuration alike:

* ``single``: one ``Linear(512, 10)`` and one cross-entropy (the baseline);
* ``mrl``: :class:`MatryoshkaHead` over 8..512, all sizes' logits from one product;
* ``mrl_e``: the same with the shared, sliced weight;
* ``loop``: the reference code's style, a Python loop of per-size ``Linear`` layers and losses.

Prints one JSON line: median step seconds per head; ``ratio_vs_single``, the median over rounds of
each round's step time divided by the ``single`` step of the same round (robust to a burst of load
from elsewhere); and ``head_loss_ms``, the head + loss forward and backward alone on a fixed (B, d)
batch, which is the part that differs between the configurations.
Usage: python benchmarks/train_overhead.py [--steps 8] [--batch 128] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from matryoshka.dims import nesting_dims
from matryoshka.models import resnet
from matryoshka.nn import FixedFeatureHead, MatryoshkaHead, MatryoshkaLoss


class LoopHead(nn.Module):
    """The reference implementation's style: one Linear per size, called in a Python loop."""

    def __init__(self, dims: list[int], num_classes: int) -> None:
        super().__init__()
        self.dims = dims
        self.layers = nn.ModuleList(nn.Linear(m, num_classes) for m in dims)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        return [layer(z[:, :m]) for layer, m in zip(self.layers, self.dims)]


def make(kind: str, dims: list[int], d: int, classes: int) -> tuple[nn.Module, nn.Module, object]:
    torch.manual_seed(0)
    backbone = resnet("resnet18", d=d, cifar_stem=True)
    ce = nn.CrossEntropyLoss()
    if kind == "single":
        head = FixedFeatureHead(d, classes)
        return backbone, head, lambda out, y: ce(out[:, 0], y)
    if kind == "loop":
        head = LoopHead(dims, classes)
        return backbone, head, lambda outs, y: sum(ce(o, y) for o in outs) / len(outs)
    head = MatryoshkaHead(d, classes, dims, efficient=kind == "mrl_e")
    loss = MatryoshkaLoss(ce, dims)
    return backbone, head, lambda out, y: loss(out, y)[0]


def head_loss_ms(setup: tuple, batch: int, d: int, y: torch.Tensor, reps: int = 50) -> float:
    """Milliseconds for the head and loss alone, forward and backward, on a fixed (B, d) batch."""
    _, head, loss_fn, _ = setup
    z = torch.randn(batch, d, requires_grad=True)
    for _ in range(5):
        loss_fn(head(z), y).backward()
    t0 = time.perf_counter()
    for _ in range(reps):
        loss_fn(head(z), y).backward()
    return 1000 * (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per head (after 1 warm-up)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d, classes = 512, 10
    dims = nesting_dims(d)
    kinds = ["single", "mrl", "mrl_e", "loop"]
    setups = {}
    for kind in kinds:
        backbone, head, loss_fn = make(kind, dims, d, classes)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        setups[kind] = (backbone.train(), head.train(), loss_fn, opt)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, classes, (args.batch,), generator=g)

    def step(kind: str) -> float:
        backbone, head, loss_fn, opt = setups[kind]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(head(backbone(x)), y)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in kinds}
    for kind in kinds:  # warm-up
        step(kind)
    for r in range(args.steps):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate who goes first
        for kind in order:
            times[kind].append(step(kind))
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = {k: statistics.median(t / s for t, s in zip(times[k], times["single"])) for k in kinds}
    head_ms = {k: head_loss_ms(setups[k], x.shape[0], d, y) for k in kinds}
    print(
        json.dumps(
            {
                "benchmark": "train_overhead",
                "model": "resnet18-cifar-stem",
                "d": d,
                "dims": dims,
                "classes": classes,
                "batch": args.batch,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
                "step_s": {k: round(v, 4) for k, v in med.items()},
                "ratio_vs_single": {k: round(paired[k], 4) for k in kinds},
                "ratio_of_medians": {k: round(med[k] / med["single"], 4) for k in kinds},
                "head_loss_ms": {k: round(v, 3) for k, v in head_ms.items()},
                "all_step_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
