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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_file, write_json
from matryoshka.models.text import encode_texts
from matryoshka.models.text_rotation import Rotation
from matryoshka.train import TextTrainConfig
from matryoshka.train.text_job import TrainedText, fit_or_reuse

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
    rotation: Rotation | None = None,
) -> TrainedText:
    """Train into ``folder`` unless a model trained with exactly ``cfg`` is there already
    (:func:`matryoshka.train.text_job.fit_or_reuse`); ``rotation``: where ``cfg.init`` starts.

    Raises ``ValueError`` when the folder holds a model trained with another recipe.
    """
    return fit_or_reuse(folder, cfg, pairs, base_model=model_path, name=name, device=device,
                        progress=progress, rotation=rotation)  # fmt: skip
