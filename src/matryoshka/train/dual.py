"""Train a dual encoder on labelled images with class-prompt captions, at every nested size.

Each image is paired with a caption of its class from a random training template ("a blurry photo
of a {}."), drawn afresh every step. The loss is the symmetric contrastive loss applied to every
renormalised prefix of both sides (:class:`~matryoshka.nn.MatryoshkaLoss`); a fixed-feature
baseline of size ``m`` is the same run with ``dims=[m]`` on a model of ``d = m``. Captions of one
class repeat within a batch, so pairs of the same class all count as matches (``labels``, as
UniCL; see :func:`~matryoshka.nn.clip_contrastive_loss`).

The text tower is frozen but its last ``text_unfreeze`` blocks. Frozen entirely, the features of
the ``C x T`` captions are computed once and only the projection trains on them; otherwise the
batch's distinct captions go through the tower at every step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from matryoshka._runtime import progress_bar, progress_write
from matryoshka.data.captions import DEFAULT_TEMPLATES, class_prompts
from matryoshka.dims import validate_dims
from matryoshka.models.dual import DualEncoder
from matryoshka.nn.loss import MatryoshkaLoss, clip_contrastive_loss

__all__ = ["DualTrainConfig", "fit_dual"]


@dataclass
class DualTrainConfig:
    """How a dual encoder is trained on labelled images (see :func:`fit_dual`).

    ``dims``: the sizes the loss is applied at (None: the model's); ``weights``: one per size
    (None: all 1). AdamW with ``lr`` for everything but the text tower's unfrozen blocks, which
    use ``text_lr`` (weight decay on matrices only); linear warm-up over ``warmup_epochs``, then
    cosine decay to 0. Each model trains in one go: a reproduction resumes model by model.
    ``class_matches``: same-class pairs of a batch are all matches (else only the own caption).
    """

    dims: list[int] | None = None
    weights: list[float] | None = None
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    text_lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    text_unfreeze: int = 0
    image_unfreeze: int | None = None  # None: the whole image tower trains
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    class_matches: bool = True
    seed: int = 0
    max_steps: int | None = None  # a cap on steps (tests, smoke runs)

    def check(self) -> None:
        """Raise ``ValueError`` on a field out of range."""
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "text_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if min(self.weight_decay, self.warmup_epochs, self.text_unfreeze,
               self.image_unfreeze or 0) < 0:  # fmt: skip
            raise ValueError("weight_decay, warmup_epochs and the unfrozen blocks must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 or None, got {self.max_steps}")
        class_prompts(["x"], self.templates)  # every template holds {} once


def _optimizer(model: DualEncoder, cfg: DualTrainConfig) -> torch.optim.Optimizer:
    """AdamW; the text tower's blocks at ``text_lr``; no weight decay on biases, norms and the
    temperature (as CLIP), which would otherwise be pulled toward 0."""
    text = {id(p) for p in model.text_tower.parameters()}
    groups = []
    for in_text in (False, True):
        for decay in (True, False):
            params = [p for p in model.parameters() if p.requires_grad
                      and (id(p) in text) == in_text and (p.ndim >= 2) == decay]  # fmt: skip
            if params:
                groups.append({"params": params, "lr": cfg.text_lr if in_text else cfg.lr,
                               "weight_decay": cfg.weight_decay if decay else 0.0})  # fmt: skip
    return torch.optim.AdamW(groups)


def _schedule(warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


class _Captions:
    """The ``C x T`` captions and, with a frozen text tower, their features computed once."""

    def __init__(self, model: DualEncoder, classes: Sequence[str], templates: Sequence[str],
                 cached: bool) -> None:  # fmt: skip
        self.texts = [t for row in class_prompts(classes, templates) for t in row]  # c * T + t
        self.T = len(templates)
        self.features: Tensor | None = None
        if cached:
            with torch.no_grad():
                self.features = model.text_tower_features(self.texts)  # (C * T, f)

    def embed(self, model: DualEncoder, labels: Tensor, template: Tensor) -> Tensor:
        """(B, d) caption embeddings of the batch, full size, not normalised."""
        idx = labels * self.T + template  # (B,)
        if self.features is not None:
            feats = self.features[idx.to(self.features.device)]
        else:
            unique, inverse = torch.unique(idx, return_inverse=True)
            feats = model.text_tower_features([self.texts[i] for i in unique.tolist()])[inverse]
        return model.text_proj(feats)


def fit_dual(
    model: DualEncoder,
    train: Dataset,
    classes: Sequence[str],
    cfg: DualTrainConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` on ``train`` (items ``(image (C, H, W), label)``) with class-prompt captions.

    ``classes``: the class names ``label`` indexes. The image tower and both projections train
    from where they are; the text tower is frozen but its last ``cfg.text_unfreeze`` blocks.

    Returns
    -------
    dict
        ``config`` (the recipe), ``steps``, ``seconds``, ``history`` (one record per epoch:
        ``loss`` and ``loss@m`` for every size, ``logit_scale``).
    """
    cfg = cfg or DualTrainConfig()
    cfg.check()
    dims = validate_dims(cfg.dims if cfg.dims is not None else model.dims, model.d)
    loss_fn = MatryoshkaLoss(clip_contrastive_loss, dims, cfg.weights, slice_embeddings=True,
                             normalize=True)  # fmt: skip
    model.to(device)
    if cfg.image_unfreeze is None:
        model.unfreeze("image")
    else:
        model.freeze("image", unfreeze_last=cfg.image_unfreeze)
    model.freeze("text", unfreeze_last=cfg.text_unfreeze).train()
    captions = _Captions(model, classes, cfg.templates, cached=cfg.text_unfreeze == 0)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        generator=g)  # fmt: skip
    if len(loader) == 0:
        raise ValueError(f"{len(train)} images are fewer than one batch of {cfg.batch_size}")
    total = cfg.epochs * len(loader) if cfg.max_steps is None else cfg.max_steps
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _schedule(round(cfg.warmup_epochs * len(loader)), total)
    )
    history, step, start = [], 0, time.perf_counter()
    bar = progress_bar(total=total, desc="dual encoder", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        sums: dict[str, float] = {}
        n = 0
        for images, labels in loader:
            if step >= total:
                break
            template = torch.randint(len(cfg.templates), labels.shape, generator=g)
            image = model.embed_image(images.to(device))
            text = captions.embed(model, labels, template)
            matches = labels.to(device) if cfg.class_matches else None
            loss, per_size = loss_fn((image, text), model.logit_scale(), matches)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at step {step}: "
                                         "lower lr or check the images")  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step, n = step + 1, n + 1
            for key, v in {
                "loss": loss.detach(),
                **{f"loss@{m}": per_size[m] for m in dims},
            }.items():
                sums[key] = sums.get(key, 0.0) + float(v)
            bar.update(1)
            bar.set_postfix_str(f"loss {loss.item():.3f}")
        if n:
            record = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                      "logit_scale": model.logit_scale().item()}  # fmt: skip
            history.append(record)
            if progress:
                progress_write(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}")
    bar.close()
    model.eval()
    return {"config": asdict(cfg), "dims": list(dims), "steps": step,
            "seconds": time.perf_counter() - start, "history": history}  # fmt: skip
