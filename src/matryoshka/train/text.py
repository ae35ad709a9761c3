"""Matryoshka fine-tuning of a sentence-transformers encoder on text pairs (or triples).

Paper: Kusupati et al., "Matryoshka Representation Learning", https://arxiv.org/abs/2205.13147

One small loop trains three methods on the same batches, schedule and seed, so that they differ
only in the loss:

* ``"mrl"``: our :class:`~matryoshka.nn.MatryoshkaLoss` around :func:`in_batch_contrastive_loss`
  on every renormalised prefix of one forward pass per column (anchors, positives and, given
  triples, hard negatives, which join the in-batch negatives); per-size losses are logged every
  step. ``loss="cached"`` computes the same loss with GradCache for batches larger than memory.
  Optional ``distill`` adds, for each smaller size, the KL divergence from the full-size in-batch
  score distribution (detached) to the prefix's, which pulls prefix rankings toward the full-size
  ranking.
* ``"plain"``: the same contrastive loss at full size only (a plain fine-tune, no nesting).
* ``"st-peer"``: sentence-transformers' own ``MatryoshkaLoss(MultipleNegativesRankingLoss)``
  (the peer), with its own forward caching, inside the same loop.

The loop follows the defaults of sentence-transformers' trainer (AdamW, linear warm-up then linear
decay, gradient norm clipped at 1, ``NO_DUPLICATES`` batches: no text twice in a batch, so no
in-batch negative is a copy of a positive). :func:`fit_st_trainer` runs the peer through
``SentenceTransformerTrainer`` itself where ``datasets`` and ``accelerate`` are installed.

A trained model is saved with :func:`save_text_model` as a sentence-transformers folder plus
``matryoshka.json`` (sizes, recipe, loss log), a model card of its own and
``matryoshka_dimensions`` in ``config.json``, so ``SentenceTransformer(path, truncate_dim=m)``
loads it and other tools know its sizes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matryoshka._io import FolderKind, atomic_dir, resolve_dir, write_json, write_text
from matryoshka._runtime import progress_bar
from matryoshka.dims import nesting_dims, validate_dims, validate_weights
from matryoshka.models.text import (
    load_sentence_encoder,
    quiet_transformers,
    require_sentence_transformers,
)
from matryoshka.models.text_rotation import Rotation, add_rotation, fit_model_rotation
from matryoshka.train.cards import mark_matryoshka_config, text_card
from matryoshka.train.config import TEXT_METHODS, TextTrainConfig
from matryoshka.train.text_batches import check_pairs, epoch_batches, no_duplicate_batches
from matryoshka.train.text_steps import TextStepper, st_losses

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


def _columns(pairs: list[tuple[str, ...]], idx: list[int], cfg: TextTrainConfig) -> list[list]:
    """The batch's texts by column (anchors, positives[, negatives]), prompts put in front."""
    prompts = [cfg.query_prompt or ""] + [cfg.document_prompt or ""] * (len(pairs[0]) - 1)
    return [[prompt + pairs[i][c] for i in idx] for c, prompt in enumerate(prompts)]


def _epoch_means(rows: list[dict[str, float]], epoch: int) -> dict[str, float]:
    """Mean loss (and per-size losses) of one epoch's steps."""
    if not rows:
        raise ValueError(
            "no batch of at least 2 pairs without repeated texts: every pair shares a "
            "text with all others; add distinct pairs or set no_duplicates=False"
        )
    keys = [k for k in rows[0] if k == "loss" or k.startswith(("loss@", "distill"))]
    return {"epoch": epoch, **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def _start(
    model: Any,
    pairs: list[tuple[str, ...]],
    cfg: TextTrainConfig,
    rotation: Rotation | None,
    progress: bool,
) -> Any:
    """Put the PCA rotation into ``model`` (``cfg.init``) and load the teacher, if any."""
    if cfg.init is not None:
        if rotation is None:  # fitted on the documents of the pairs, each once
            docs = list(dict.fromkeys(t for p in pairs for t in p[1:]))
            rotation = fit_model_rotation(model, docs, center=cfg.init == "pca-centered",
                                          progress=progress)  # fmt: skip
        add_rotation(model, rotation)
    if cfg.teacher is None:
        return None
    teacher = load_sentence_encoder(cfg.teacher, device=str(model.device), progress=progress)
    teacher.max_seq_length = model.max_seq_length
    return teacher.eval().requires_grad_(False)


def fit_text(
    model: Any,
    pairs: Sequence[tuple[str, ...]],
    cfg: TextTrainConfig,
    progress: bool = True,
    rotation: Rotation | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on (anchor, positive[, negative]) texts, in-batch negatives.

    Parameters
    ----------
    model : SentenceTransformer
    pairs : sequence of (str, str) or (str, str, str)
        E.g. (query, relevant document) from :func:`matryoshka.data.text.beir_train_pairs`, or
        triples whose third text is a hard negative (:func:`matryoshka.data.load_pairs`).
    cfg : TextTrainConfig
        ``cfg.method`` picks the loss: ``"mrl"``, ``"plain"`` or ``"st-peer"``; ``cfg.loss``
        ``"in-batch"`` or ``"cached"``; ``cfg.trainer="sentence-transformers"`` hands
        ``"st-peer"`` to :func:`fit_st_trainer`.
    progress : bool
        Show a progress bar with the loss.
    rotation : Rotation, optional
        With ``cfg.init``: the rotation to start from (default: PCA of ``model``'s embeddings of
        the pairs' documents, fitted here). It becomes a trained layer of the model.

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
    pairs = check_pairs(pairs, cfg.batch_size)
    if cfg.max_seq_length is not None:  # otherwise the model keeps the limit it was loaded with
        model.max_seq_length = int(cfg.max_seq_length)
    total = cfg.max_steps or cfg.epochs * math.ceil(len(pairs) / cfg.batch_size)
    teacher = _start(model, pairs, cfg, rotation, progress)
    step_fn = TextStepper(model, cfg, total, teacher)
    history: list[dict[str, float]] = []
    epochs: list[dict[str, float]] = []
    step, epoch, t0 = 0, 0, time.perf_counter()
    bar = progress_bar(total=total, desc=f"fine-tune {cfg.method}", disable=not progress)
    model.train()
    try:
        while step < total:
            first = len(history)
            for idx in epoch_batches(pairs, cfg.batch_size, cfg.seed, epoch, cfg.no_duplicates):
                if step >= total:
                    break
                if len(idx) < 2:  # a lone pair has no negatives
                    continue
                row = {"step": step + 1, "epoch": epoch, "lr": step_fn.sched.get_last_lr()[0]}
                row["loss"] = step_fn(_columns(pairs, idx, cfg), row)
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
    progress: bool = True,
    **meta: Any,
) -> Path:
    """Save a sentence-transformers folder, ``matryoshka.json`` and a model card, atomically.

    ``dims`` are the sizes the model is meant to be cut to (all sizes for a plain fine-tune);
    ``meta`` (``base_model``, ``data``, ``config``, ...) goes into ``matryoshka.json`` and the
    card (``README.md``); ``config.json`` gains ``matryoshka_dimensions``. Load with
    :func:`load_text_model` or ``SentenceTransformer(path, truncate_dim=m)``.
    """
    d = model.get_embedding_dimension()
    dims = list(validate_dims(dims, d))
    with atomic_dir(path, TEXT_MODEL_FOLDER, overwrite=overwrite) as tmp:
        with quiet_transformers(not progress):
            model.save(str(tmp))
        write_json(tmp / META_FILE, {"format": 1, "d": d, "dims": dims, **meta})
        write_text(tmp / "README.md", text_card(Path(path).name, d, dims, meta))
        mark_matryoshka_config(tmp, dims)
    return Path(path)


def load_text_model(
    path: str | os.PathLike,
    truncate_dim: int | None = None,
    device: str = "cpu",
    progress: bool = True,
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
    model = load_sentence_encoder(path, device=device, truncate_dim=truncate_dim,
                                  progress=progress)  # fmt: skip
    return model, meta


def _st_dataset(pairs: list[tuple[str, ...]], cfg: TextTrainConfig) -> Any:
    from datasets import Dataset

    names = ["anchor", "positive", "negative"][: len(pairs[0])]
    columns = {n: [p[i] for p in pairs] for i, n in enumerate(names)}
    prompts = {"anchor": cfg.query_prompt, "positive": cfg.document_prompt,
               "negative": cfg.document_prompt}  # fmt: skip
    return Dataset.from_dict({n: [(prompts[n] or "") + t for t in v] for n, v in columns.items()})


def _st_loss(model: Any, cfg: TextTrainConfig, dims: Sequence[int], weights: Any) -> Any:
    losses = st_losses()
    if cfg.loss == "cached":
        inner = losses.CachedMultipleNegativesRankingLoss(
            model, scale=1.0 / cfg.temperature, mini_batch_size=cfg.mini_batch_size
        )
    else:
        inner = losses.MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature)
    return losses.MatryoshkaLoss(model, inner, list(dims), list(weights))


def fit_st_trainer(
    model: Any,
    pairs: Sequence[tuple[str, ...]],
    cfg: TextTrainConfig,
    progress: bool = True,
) -> dict[str, Any]:
    """The peer trained by sentence-transformers' own ``SentenceTransformerTrainer``.

    ``MatryoshkaLoss`` around ``MultipleNegativesRankingLoss`` (``cfg.loss="cached"``: its
    cached, GradCache form) over ``cfg.dims``, with the trainer's ``NO_DUPLICATES`` batch
    sampler, ``cfg.seed``, ``cfg.lr`` and ``cfg.warmup_ratio``; triples give hard negatives.
    Needs ``datasets`` and ``accelerate`` (``pip install 'matryoshka[st]'``); without them use
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
    pairs = check_pairs(pairs, cfg.batch_size)
    d = model.get_embedding_dimension()
    dims = validate_dims(cfg.dims or nesting_dims(d, start=16), d)
    weights = validate_weights(cfg.weights, dims)
    if cfg.max_seq_length is not None:
        model.max_seq_length = int(cfg.max_seq_length)
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
            model=model, args=args, train_dataset=_st_dataset(pairs, cfg),
            loss=_st_loss(model, cfg, dims, weights),
        )  # fmt: skip
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
