"""Train a text model into a folder, or reuse the one already there: the text job of
``matryoshka train --config text.yaml`` and of the SciFact comparison.

A finished folder is reused only when it was trained with exactly the requested recipe (a recipe
saved before a field existed counts as having that field's default); another recipe is refused
with the differences, never silently replaced. Writes go through the project's crash-safe folder
swap, and a folder that holds something else is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matryoshka._io import check_destination
from matryoshka.data.records import load_pairs
from matryoshka.dims import nesting_dims
from matryoshka.models.text import DEFAULT_BASE, load_sentence_encoder
from matryoshka.models.text_rotation import Rotation
from matryoshka.train.config import TextJobConfig, TextTrainConfig
from matryoshka.train.text import TEXT_MODEL_FOLDER, fit_text, load_text_model, save_text_model

__all__ = ["TrainedText", "fit_or_reuse", "run_text_job"]


@dataclass
class TrainedText:
    """A text model folder's ``matryoshka.json`` and whether this call trained it."""

    meta: dict[str, Any]
    fresh: bool


def _reuse(folder: Path, cfg: TextTrainConfig, name: str, progress: bool) -> TrainedText | None:
    if not (folder / "matryoshka.json").is_file():
        return None
    _, meta = load_text_model(folder, progress=progress)  # checks the folder
    want = asdict(cfg)
    have = {**asdict(TextTrainConfig()), **(meta.get("config") or {})}
    if have != want:
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        raise ValueError(
            f"{folder} holds a model {name!r} trained with another recipe (have, want): "
            f"{diff}; choose another out_dir or delete the folder"
        )
    return TrainedText(meta, fresh=False)


def fit_or_reuse(
    folder: str | os.PathLike,
    cfg: TextTrainConfig,
    pairs: list[tuple[str, ...]],
    base_model: str | os.PathLike | None = None,
    name: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    rotation: Rotation | None = None,
    **meta: Any,
) -> TrainedText:
    """Fine-tune ``base_model`` on ``pairs`` into ``folder``, unless it holds that run already.

    ``meta`` (e.g. ``data``, the pairs' source) is stored in ``matryoshka.json`` and the card;
    ``rotation`` is the one ``cfg.init`` starts from (default: fitted on the pairs' documents).
    """
    folder = Path(folder)
    name = name or folder.name
    check_destination(folder, TEXT_MODEL_FOLDER, overwrite)
    reused = _reuse(folder, cfg, name, progress)
    if reused is not None:
        return reused
    model = load_sentence_encoder(
        base_model, device=device, max_seq_length=cfg.max_seq_length, progress=progress
    )
    log = fit_text(model, pairs, cfg, progress=progress, rotation=rotation)
    # the sizes the model is meant to be cut to: a plain fine-tune is cut like the others
    dims = log["dims"] or list(cfg.dims or nesting_dims(model.get_embedding_dimension(), 16))
    base = str(base_model) if base_model is not None else DEFAULT_BASE
    info = {
        "method": cfg.method, "name": name, "base_model": base, "config": asdict(cfg),
        "pairs": len(pairs), "steps": log["steps"], "seconds": log["seconds"],
        "epochs": log["epochs"], "history": log["history"], **meta,
    }  # fmt: skip
    save_text_model(model, folder, dims, overwrite=overwrite, progress=progress, **info)
    return TrainedText(json.loads((folder / "matryoshka.json").read_text()), fresh=True)


def run_text_job(job: TextJobConfig, progress: bool = True, overwrite: bool = False) -> TrainedText:
    """The whole text job of a recipe: read its pairs, then :func:`fit_or_reuse`."""
    job.check()
    pairs = load_pairs(job.data.pairs, job.data.anchor, job.data.positive, job.data.negative)
    return fit_or_reuse(
        job.out_dir, job.train, pairs, base_model=job.base_model, device=job.device,
        progress=progress, overwrite=overwrite, data=str(job.data.pairs),
    )  # fmt: skip
