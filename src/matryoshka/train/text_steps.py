"""One optimisation step of a text fine-tune: the nested loss of a batch, then AdamW.

Every size comes from one forward pass per column (anchors, positives, hard negatives): the nested
loss slices those embeddings. With ``loss="cached"`` (GradCache, Gao et al. 2021,
https://arxiv.org/abs/2101.06983) a large batch is embedded in mini-batches without gradients,
the nested loss is taken on the whole batch's embeddings, and each mini-batch is then run again
with gradients and given its slice of the embeddings' gradient; the random state of each
mini-batch is replayed, so dropout masks match. The batch's negatives are as many as with
``"in-batch"``, the memory that of one mini-batch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from matryoshka.dims import nesting_dims, truncate, validate_dims, validate_weights
from matryoshka.models.text import require_sentence_transformers
from matryoshka.nn.loss import MatryoshkaLoss, in_batch_contrastive_loss
from matryoshka.train.config import TextTrainConfig

__all__ = ["TextStepper", "embed", "features", "lr_factor"]


def features(model: Any, texts: list[str]) -> dict[str, Any]:
    """Tokenised inputs on the model's device."""
    out = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    return {k: (v.to(model.device) if isinstance(v, Tensor) else v) for k, v in out.items()}


def embed(model: Any, texts: list[str]) -> Tensor:
    """One forward pass: (B, d) sentence embeddings, with gradients."""
    return model(features(model, texts))["sentence_embedding"]


def distill_loss(
    a: Tensor,
    p: Tensor,
    dims: Sequence[int],
    temperature: float,
    target: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Mean over sizes of KL(target in-batch distribution || the prefix's distribution).

    ``a`` (B, d) anchors and ``p`` (P, d) candidates of the student. Without ``target``, the
    target is the student's own full size (detached), over every smaller size; with ``target``,
    a teacher's full-size (anchors (B, d_t), candidates (P, d_t)), over every size, the full size
    too, so the teacher anchors it.
    """
    d = a.shape[1]
    if target is None:
        full = (truncate(a, d) @ truncate(p, d).T).float().detach()  # (B, P)
        sizes = [m for m in dims if m < d]
    else:
        ta, tp = target
        full = (truncate(ta, ta.shape[1]) @ truncate(tp, tp.shape[1]).T).float()  # (B, P)
        sizes = list(dims)
    soft = F.softmax(full / temperature, dim=-1)
    terms = []
    for m in sizes:
        s = (truncate(a, m) @ truncate(p, m).T).float()  # (B, P), prefixes renormalised
        terms.append(F.kl_div(F.log_softmax(s / temperature, dim=-1), soft, reduction="batchmean"))
    return torch.stack(terms).mean() if terms else a.new_zeros(())


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``.

    Step 0 of a warm-up runs at 0, as in sentence-transformers' trainer (so the peer in our loop
    and in its own trainer take the same steps); :class:`TextStepper` keeps the warm-up shorter
    than the run, so every run takes at least one step at a learning rate above 0.
    """
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _adamw(params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where the device allows: on CPU the per-tensor loop costs ~8x more."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def st_losses() -> Any:
    """sentence-transformers' losses module (moved under ``sentence_transformer`` in v6)."""
    st = require_sentence_transformers()
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
        losses = st.losses
    return losses


def _rng_state() -> tuple[Tensor, list[Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def cached_backward(
    model: Any, columns: list[list[str]], mini: int, loss_fn: Callable[[list[Tensor]], Tensor]
) -> Tensor:
    """GradCache: the loss of whole columns, its gradient pushed through mini-batches.

    Returns the (detached) loss; the model's parameters hold its gradient afterwards.
    """
    reps, states = [], []
    with torch.no_grad():
        for col in columns:
            chunks = []
            for i in range(0, len(col), mini):
                states.append(_rng_state())
                chunks.append(embed(model, col[i : i + mini]))  # (<=mini, d)
            reps.append(torch.cat(chunks))  # (B_col, d)
    leaves = [r.detach().requires_grad_() for r in reps]
    loss = loss_fn(leaves)
    loss.backward()  # gradients of the embeddings only: the model was not in this graph
    k = 0
    for col, leaf in zip(columns, leaves, strict=True):
        for i in range(0, len(col), mini):
            _set_rng_state(states[k])  # the same dropout masks as the pass without gradients
            k += 1
            embed(model, col[i : i + mini]).backward(leaf.grad[i : i + mini])
    return loss.detach()


class TextStepper:
    """The loss of one batch of columns (anchors, positives[, negatives]), then one AdamW step."""

    def __init__(
        self, model: Any, cfg: TextTrainConfig, total: int, teacher: Any | None = None
    ) -> None:
        d = model.get_embedding_dimension()
        dims = validate_dims(cfg.dims or nesting_dims(d, start=16), d)
        self.dims = (d,) if cfg.method == "plain" else dims
        weights = validate_weights(cfg.weights, dims) if cfg.method != "plain" else (1.0,)
        self.model, self.cfg, self.teacher = model, cfg, teacher
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        criterion = partial(
            in_batch_contrastive_loss, temperature=cfg.temperature, symmetric=cfg.symmetric
        )
        self.ours = MatryoshkaLoss(criterion, self.dims, weights, slice_embeddings=True,
                                   normalize=True)  # fmt: skip
        self.peer = self._peer(model, cfg, weights) if cfg.method == "st-peer" else None
        warmup = min(math.ceil(cfg.warmup_ratio * total), total - 1)
        self.opt = _adamw(model.parameters(), cfg.lr, cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, partial(lr_factor, warmup=warmup, total=total)
        )

    def _peer(self, model: Any, cfg: TextTrainConfig, weights: Sequence[float]) -> Any:
        losses = st_losses()
        scale = 1.0 / cfg.temperature
        if cfg.loss == "cached":
            inner = losses.CachedMultipleNegativesRankingLoss(
                model, scale=scale, mini_batch_size=cfg.mini_batch_size
            )
        else:
            inner = losses.MultipleNegativesRankingLoss(model, scale=scale)
        # the peer's own order: largest size first, weights follow their sizes
        return losses.MatryoshkaLoss(model, inner, list(self.dims), list(weights))

    def _ours(
        self, embs: list[Tensor], row: dict[str, float], taught: list[Tensor] | None = None
    ) -> Tensor:
        """The nested loss of (anchors (B, d), positives (P, d)): negatives join the positives.

        ``taught``: the teacher's embeddings of the same columns, whose full-size rankings of
        every candidate are distilled into every size; without one, the model's own full size
        is distilled into the smaller sizes over the positives.
        """
        a, p = embs[0], torch.cat(embs[1:])  # (B, d), (B or 2B, d): hard negatives appended
        loss, per_size = self.ours((a, p))  # every size sliced from the columns' passes
        row.update({f"loss@{m}": float(v) for m, v in per_size.items()})
        if self.cfg.distill:
            if taught is None:
                kl = distill_loss(a, embs[1], self.dims, self.cfg.temperature)
            else:
                target = (taught[0], torch.cat(taught[1:]))
                kl = distill_loss(a, p, self.dims, self.cfg.temperature, target)
            row["distill"] = float(kl.detach())
            loss = loss + self.cfg.distill * kl
        return loss

    def __call__(self, columns: list[list[str]], row: dict[str, float]) -> float:
        """Train on one batch of text columns; per-size losses go into ``row``; the total loss."""
        cfg, model = self.cfg, self.model
        taught = None
        if self.teacher is not None:
            with torch.no_grad():
                taught = [embed(self.teacher, col) for col in columns]  # (B, d_t) each
        if self.peer is not None:
            loss = self.peer([features(model, col) for col in columns], None)
            loss.backward()
        elif cfg.loss == "cached":
            loss = cached_backward(model, columns, cfg.mini_batch_size,
                                   lambda embs: self._ours(embs, row, taught))  # fmt: skip
        else:
            loss = self._ours([embed(model, col) for col in columns], row, taught)  # one pass each
            loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())
