"""Matryoshka fine-tuning of a sentence-transformers encoder on (anchor, positive) text pairs.

Paper: Kusupati et al., "Matryoshka Representation Learning", https://arxiv.org/abs/2205.13147

One small loop trains three methods on the same batches, schedule and seed, so that they differ
only in the loss:

* ``"mrl"``: our :class:`~matryoshka.nn.MatryoshkaLoss` around :func:`in_batch_contrastive_loss`
  on every renormalised prefix of one forward pass per column; per-size losses are logged every
  step. Optional ``distill`` adds, for each smaller size, the KL divergence from the full-size
  in-batch score distribution (detached) to the prefix's, which pulls prefix rankings toward the
  full-size ranking.
* ``"plain"``: the same contrastive loss at full size only (a plain fine-tune, no nesting).
* ``"st-peer"``: sentence-transformers' own ``MatryoshkaLoss(MultipleNegativesRankingLoss)``
  (the peer), with its own forward caching, inside the same loop.

The loop follows the defaults of sentence-transformers' trainer (AdamW, linear warm-up then linear
decay, gradient norm clipped at 1, ``NO_DUPLICATES`` batches: no text twice in a batch, so no
in-batch negative is a copy of a positive). :func:`fit_st_trainer` runs the peer through
``SentenceTransformerTrainer`` itself where ``datasets`` and ``accelerate`` are installed.

A trained model is saved with :func:`save_text_model` as a sentence-transformers folder plus
``matryoshka.json`` (sizes, recipe, loss log), so ``SentenceTransformer(path, truncate_dim=m)``
loads it.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from matryoshka._io import FolderKind, atomic_dir, resolve_dir, write_json
from matryoshka._runtime import progress_bar
from matryoshka.dims import nesting_dims, truncate, validate_dims, validate_weights
from matryoshka.models.text import load_sentence_encoder, require_sentence_transformers
from matryoshka.nn.loss import MatryoshkaLoss, in_batch_contrastive_loss
from matryoshka.train.config import TEXT_METHODS, TextTrainConfig

__all__ = [
    "TEXT_METHODS",
    "TextTrainConfig",
    "fit_st_trainer",
    "fit_text",
    "load_text_model",
    "no_duplicate_batches",
    "save_text_model",
]

META_FILE = "matryoshka.json"
# a sentence-transformers folder with our matryoshka.json; its file names depend on the model
TEXT_MODEL_FOLDER = FolderKind("matryoshka text model", META_FILE, keys=("d", "dims"))


def _check_pairs(pairs: Sequence[tuple[str, str]], batch_size: int) -> list[tuple[str, str]]:
    pairs = list(pairs)
    for i, p in enumerate(pairs):
        if len(p) != 2 or not all(isinstance(t, str) and t for t in p):
            raise ValueError(
                f"pairs[{i}] must be two non-empty strings (anchor, positive), got {p!r}"
            )
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs for in-batch negatives, got {len(pairs)}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 for in-batch negatives, got {batch_size}")
    return pairs


def no_duplicate_batches(
    pairs: Sequence[tuple[str, str]], batch_size: int, seed: int, epoch: int = 0
) -> list[list[int]]:
    """Shuffled batches of pair indices in which no text appears twice.

    A pair whose anchor or positive is already in the batch waits for a later batch, as in
    sentence-transformers' ``NoDuplicatesBatchSampler``; the last batch may be smaller.

    Returns
    -------
    list of lists of int, every index once, ``ceil(n / batch_size)`` batches when duplicates allow
    """
    g = torch.Generator().manual_seed(seed + epoch)
    remaining = torch.randperm(len(pairs), generator=g).tolist()
    batches = []
    while remaining:
        batch: list[int] = []
        seen: set[str] = set()
        rest = []
        for i in remaining:
            a, p = pairs[i]
            if len(batch) < batch_size and a not in seen and p not in seen:
                batch.append(i)
                seen.update((a, p))
            else:
                rest.append(i)
        batches.append(batch)
        remaining = rest
    return batches


def _shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _features(model: Any, texts: list[str]) -> dict[str, Any]:
    """Tokenised inputs on the model's device."""
    features = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    return {k: (v.to(model.device) if isinstance(v, Tensor) else v) for k, v in features.items()}


def _embed(model: Any, texts: list[str]) -> Tensor:
    """One forward pass: (B, d) sentence embeddings, with gradients."""
    return model(_features(model, texts))["sentence_embedding"]


def _distill_loss(a: Tensor, p: Tensor, dims: Sequence[int], temperature: float) -> Tensor:
    """Mean over sizes below d of KL(full-size in-batch distribution || prefix distribution)."""
    d = a.shape[1]
    full = (truncate(a, d) @ truncate(p, d).T).float() / temperature  # (B, B)
    target = F.softmax(full.detach(), dim=-1)
    terms = []
    for m in dims:
        if m >= d:
            continue
        s = (truncate(a, m) @ truncate(p, m).T).float()  # (B, B), prefixes renormalised
        terms.append(
            F.kl_div(F.log_softmax(s / temperature, dim=-1), target, reduction="batchmean")
        )
    return torch.stack(terms).mean() if terms else a.new_zeros(())


def _adamw(params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where the device allows: on CPU the per-tensor loop costs ~8x more."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _st_losses() -> Any:
    """sentence-transformers' losses module (moved under ``sentence_transformer`` in v6)."""
    st = require_sentence_transformers()
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
        losses = st.losses
    return losses


def _lr_lambda(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


class _Stepper:
    """One optimisation step of a text fine-tune: the loss of a batch of pairs, then AdamW."""

    def __init__(self, model: Any, cfg: TextTrainConfig, total: int) -> None:
        d = model.get_embedding_dimension()
        dims = validate_dims(cfg.dims or nesting_dims(d, start=16), d)
        self.dims = (d,) if cfg.method == "plain" else dims
        weights = validate_weights(cfg.weights, dims) if cfg.method != "plain" else (1.0,)
        self.model, self.cfg = model, cfg
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        criterion = partial(
            in_batch_contrastive_loss, temperature=cfg.temperature, symmetric=cfg.symmetric
        )
        self.ours = MatryoshkaLoss(criterion, self.dims, weights, slice_embeddings=True,
                                   normalize=True)  # fmt: skip
        self.peer = None
        if cfg.method == "st-peer":
            losses = _st_losses()
            mnrl = losses.MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature)
            # the peer's own order: largest size first, weights follow their sizes
            self.peer = losses.MatryoshkaLoss(model, mnrl, list(self.dims), list(weights))
        warmup = math.ceil(cfg.warmup_ratio * total)
        self.opt = _adamw(model.parameters(), cfg.lr, cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, partial(_lr_lambda, warmup=warmup, total=total)
        )

    def __call__(self, anchors: list[str], positives: list[str], row: dict[str, float]) -> float:
        """Train on one batch; per-size losses go into ``row``; returns the total loss."""
        cfg, model = self.cfg, self.model
        if self.peer is not None:
            feats = [_features(model, anchors), _features(model, positives)]
            loss = self.peer(feats, None)
        else:
            a = _embed(model, anchors)  # (B, d), one forward pass per column
            p = _embed(model, positives)  # (B, d)
            loss, per_size = self.ours((a, p))  # every size sliced from those two passes
            row.update({f"loss@{m}": float(v) for m, v in per_size.items()})
            if cfg.distill:
                kl = _distill_loss(a, p, self.dims, cfg.temperature)
                row["distill"] = float(kl.detach())
                loss = loss + cfg.distill * kl
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def _epoch_batches(pairs: list[tuple[str, str]], cfg: TextTrainConfig, epoch: int) -> list:
    if cfg.no_duplicates:
        return no_duplicate_batches(pairs, cfg.batch_size, cfg.seed, epoch)
    return _shuffled_batches(len(pairs), cfg.batch_size, cfg.seed, epoch)


def _epoch_means(rows: list[dict[str, float]], epoch: int) -> dict[str, float]:
    """Mean loss (and per-size losses) of one epoch's steps."""
    if not rows:
        raise ValueError(
            "no batch of at least 2 pairs without repeated texts: every pair shares a "
            "text with all others; add distinct pairs or set no_duplicates=False"
        )
    keys = [k for k in rows[0] if k == "loss" or k.startswith(("loss@", "distill"))]
    return {"epoch": epoch, **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def fit_text(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    cfg: TextTrainConfig,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on (anchor, positive) pairs with in-batch negatives.

    Parameters
    ----------
    model : SentenceTransformer
    pairs : sequence of (str, str)
        E.g. (query, relevant document) from :func:`matryoshka.data.text.beir_train_pairs`.
    cfg : TextTrainConfig
        ``cfg.method`` picks the loss: ``"mrl"``, ``"plain"`` or ``"st-peer"``;
        ``cfg.trainer="sentence-transformers"`` hands ``"st-peer"`` to :func:`fit_st_trainer`.
    progress : bool
        Show a progress bar with the loss.

    Returns
    -------
    dict
        ``{"method", "dims", "steps", "seconds", "history": [{"step", "epoch", "lr", "loss",
        "loss@m"...}], "epochs": [{"epoch", "loss", "loss@m"...}]}``; ``loss@m`` (mean per-size
        criterion) for ``"mrl"`` and ``"plain"``.
    """
    cfg.check()
    if cfg.trainer == "sentence-transformers":
        return fit_st_trainer(model, pairs, cfg, progress=progress)
    pairs = _check_pairs(pairs, cfg.batch_size)
    if cfg.max_seq_length is not None:
        model.max_seq_length = int(cfg.max_seq_length)
    total = cfg.max_steps or cfg.epochs * math.ceil(len(pairs) / cfg.batch_size)
    step_fn = _Stepper(model, cfg, total)
    history: list[dict[str, float]] = []
    epochs: list[dict[str, float]] = []
    step, epoch, t0 = 0, 0, time.perf_counter()
    bar = progress_bar(total=total, desc=f"fine-tune {cfg.method}", disable=not progress)
    model.train()
    try:
        while step < total:
            first = len(history)
            for idx in _epoch_batches(pairs, cfg, epoch):
                if step >= total:
                    break
                if len(idx) < 2:  # a lone pair has no negatives
                    continue
                row = {"step": step + 1, "epoch": epoch, "lr": step_fn.sched.get_last_lr()[0]}
                row["loss"] = step_fn([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], row)
                history.append(row)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            epochs.append(_epoch_means(history[first:], epoch))
            epoch += 1
    finally:
        bar.close()
        model.eval()
    return {
        "method": cfg.method,
        "dims": list(step_fn.dims) if cfg.method != "plain" else [],
        "steps": step,
        "seconds": time.perf_counter() - t0,
        "history": history,
        "epochs": epochs,
    }


def save_text_model(
    model: Any,
    path: str | os.PathLike,
    dims: Sequence[int],
    overwrite: bool = False,
    **meta: Any,
) -> Path:
    """Save a sentence-transformers folder and ``matryoshka.json`` (sizes, ``meta``), atomically.

    ``dims`` are the sizes the model is meant to be cut to (all sizes for a plain fine-tune).
    Load with :func:`load_text_model` or ``SentenceTransformer(path, truncate_dim=m)``.
    """
    d = model.get_embedding_dimension()
    dims = list(validate_dims(dims, d))
    with atomic_dir(path, TEXT_MODEL_FOLDER, overwrite=overwrite) as tmp:
        model.save(str(tmp))
        write_json(tmp / META_FILE, {"format": 1, "d": d, "dims": dims, **meta})
    return Path(path)


def load_text_model(
    path: str | os.PathLike, truncate_dim: int | None = None, device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """A model saved by :func:`save_text_model` and its ``matryoshka.json``.

    Raises ``FileNotFoundError`` when the folder or its ``matryoshka.json`` is missing and
    ``ValueError`` for a ``truncate_dim`` outside 1..d.
    """
    path = resolve_dir(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: not a model saved by save_text_model")
    meta = json.loads(meta_path.read_text())
    if truncate_dim is not None and not 1 <= int(truncate_dim) <= int(meta["d"]):
        raise ValueError(f"truncate_dim must be between 1 and d={meta['d']}, got {truncate_dim}")
    return load_sentence_encoder(path, device=device, truncate_dim=truncate_dim), meta


def fit_st_trainer(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    cfg: TextTrainConfig,
    progress: bool = True,
) -> dict[str, Any]:
    """The peer trained by sentence-transformers' own ``SentenceTransformerTrainer``.

    ``MatryoshkaLoss(MultipleNegativesRankingLoss)`` over ``cfg.dims`` with the trainer's
    ``NO_DUPLICATES`` batch sampler, ``cfg.seed``, ``cfg.lr`` and ``cfg.warmup_ratio``. Needs
    ``datasets`` and ``accelerate`` (``pip install 'matryoshka[st]'``); without them use
    :func:`fit_text` with ``method="st-peer"``, the same loss in our loop.

    Returns
    -------
    dict
        ``{"method": "st-peer", "trainer": "sentence-transformers", "dims", "steps", "seconds",
        "history", "epochs": []}``
    """
    cfg.check()
    if cfg.method != "st-peer":
        raise ValueError(f"fit_st_trainer trains method 'st-peer' only, not {cfg.method!r}")
    st = require_sentence_transformers()
    from sentence_transformers.util import is_training_available

    if not is_training_available():
        raise ImportError(
            "SentenceTransformerTrainer needs datasets and accelerate: pip install datasets "
            "accelerate, or pip install 'matryoshka[st]' (or run fit_text with "
            "method='st-peer', the same loss in our loop)"
        )
    from datasets import Dataset

    pairs = _check_pairs(pairs, cfg.batch_size)
    d = model.get_embedding_dimension()
    dims = validate_dims(cfg.dims or nesting_dims(d, start=16), d)
    weights = validate_weights(cfg.weights, dims)
    if cfg.max_seq_length is not None:
        model.max_seq_length = int(cfg.max_seq_length)
    data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    losses = _st_losses()
    mnrl = losses.MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature)
    loss = losses.MatryoshkaLoss(model, mnrl, list(dims), list(weights))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        args = st.SentenceTransformerTrainingArguments(
            output_dir=out,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr,
            warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the steps
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            batch_sampler="no_duplicates",
            seed=cfg.seed,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            dataloader_pin_memory=torch.cuda.is_available(),
            disable_tqdm=not progress,
        )
        trainer = st.SentenceTransformerTrainer(
            model=model, args=args, train_dataset=data, loss=loss
        )
        out_state = trainer.train()
        history = [r for r in trainer.state.log_history if "loss" in r]
    model.eval()
    return {
        "method": "st-peer",
        "trainer": "sentence-transformers",
        "dims": list(dims),
        "steps": int(out_state.global_step),
        "seconds": time.perf_counter() - t0,
        "history": history,
        "epochs": [],
        "config": asdict(cfg),
    }
