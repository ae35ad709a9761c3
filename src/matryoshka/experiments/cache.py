"""What an experiment computes once and reuses: trained text models and encoded text matrices.

A model folder is reused only when it was trained with exactly the requested recipe; an encoded
matrix only when its key (model folder, recipe, weights' checksum, data, token limit) matches.
An interrupted comparison therefore resumes where it stopped, and a retrained model is
re-encoded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_file, write_json
from matryoshka.dims import nesting_dims
from matryoshka.models.text import DEFAULT_BASE, encode_texts, load_sentence_encoder
from matryoshka.train import TextTrainConfig, fit_text, load_text_model, save_text_model

__all__ = ["EncodedTexts", "TrainedText", "encode_cached", "train_cached"]


@dataclass
class EncodedTexts:
    """Named text lists encoded once at full size.

    Attributes
    ----------
    arrays : dict of name -> ndarray of shape (N_name, d), float32
    seconds : dict of name -> seconds its encoding took (when it was done)
    fresh : whether they were encoded by this call (False: read from the cache)
    """

    arrays: dict[str, np.ndarray]
    seconds: dict[str, float]
    fresh: bool


@dataclass
class TrainedText:
    """A text model folder's ``matryoshka.json`` and whether this call trained it."""

    meta: dict[str, Any]
    fresh: bool


def _save_npy(path: Path, x: np.ndarray) -> None:
    with atomic_file(path, "wb") as f:
        np.save(f, x)


def encode_cached(
    folder: Path,
    key: dict[str, Any],
    model_fn: Callable[[], Any],
    texts: Mapping[str, list[str]],
    **enc: Any,
) -> EncodedTexts:
    """Encode each named list of texts once into ``folder/<name>.npy``; reused when ``key`` matches.

    ``model_fn`` loads the encoder, and is called only when something must be encoded; ``enc``
    goes to :func:`~matryoshka.models.text.encode_texts` (``batch_size``, ``progress``).
    """
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and all((folder / f"{n}.npy").is_file() for n in texts):
            arrays = {n: np.load(folder / f"{n}.npy") for n in texts}
            return EncodedTexts(arrays, meta["seconds"], fresh=False)
    model = model_fn()
    arrays, seconds = {}, {}
    for name, items in texts.items():
        t0 = time.perf_counter()
        arrays[name] = encode_texts(model, items, desc=f"encode {folder.name}/{name}", **enc)
        seconds[name] = time.perf_counter() - t0
    for name, x in arrays.items():
        _save_npy(folder / f"{name}.npy", x)
    counts = {n: len(t) for n, t in texts.items()}
    write_json(meta_path, {"key": key, "seconds": seconds, "counts": counts})
    return EncodedTexts(arrays, seconds, fresh=True)


def train_cached(
    name: str,
    cfg: TextTrainConfig,
    folder: Path,
    model_path: Any,
    pairs: list[tuple[str, str]],
    device: str = "cpu",
    progress: bool = True,
) -> TrainedText:
    """Train into ``folder`` unless a model trained with exactly ``cfg`` is there already.

    Raises ``ValueError`` when the folder holds a model trained with another recipe.
    """
    want = asdict(cfg)
    if (folder / "matryoshka.json").is_file():
        _, meta = load_text_model(folder, progress=progress)  # checks the folder
        # a recipe saved before a field existed had that field's default
        have = {**asdict(TextTrainConfig()), **(meta.get("config") or {})}
        if have != want:
            diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            raise ValueError(
                f"{folder} holds a model {name!r} trained with another recipe (have, want): "
                f"{diff}; choose another out_dir or delete the folder"
            )
        return TrainedText(meta, fresh=False)
    model = load_sentence_encoder(
        model_path, device=device, max_seq_length=cfg.max_seq_length, progress=progress
    )
    log = fit_text(model, pairs, cfg, progress=progress)
    # the sizes the model is meant to be cut to: a plain fine-tune is cut like the others
    dims = log["dims"] or list(cfg.dims or nesting_dims(model.get_embedding_dimension(), 16))
    base = str(model_path) if model_path is not None else DEFAULT_BASE
    meta = {
        "method": cfg.method, "name": name, "base_model": base, "config": want,
        "pairs": len(pairs),
        "steps": log["steps"], "seconds": log["seconds"], "epochs": log["epochs"],
        "history": log["history"],
    }  # fmt: skip
    save_text_model(model, folder, dims, progress=progress, **meta)
    return TrainedText(json.loads((folder / "matryoshka.json").read_text()), fresh=True)
