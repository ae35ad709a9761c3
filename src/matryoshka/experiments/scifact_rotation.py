"""The learned-rotation step of ``reproduce scifact``: a trained model, turned so that its prefixes
rank well, its full size unchanged.

After a recipe is trained (the plain fine-tune, by default), its embeddings of the training
anchors, of their positive documents and of one hard negative per pair are enough to fit an
orthogonal rotation with the nested contrastive loss
(:func:`~matryoshka.train.prefix_rotation.fit_prefix_rotation`), started at the PCA ordering of
its corpus embeddings. Nothing passes through the encoder again besides the anchors (encoded once):
the fit takes about a minute on the CPU. The rotation is then put into a copy of the model as a
``Dense`` layer (:func:`~matryoshka.models.text_rotation.add_rotation`), so
``SentenceTransformer(path, truncate_dim=m)`` gives the rotated prefix, and the row's scores come
from the cached embeddings turned by it (the same numbers, without encoding everything again).

What it is fitted on: the recipe's training pairs (SciFact's train claims and the corpus' titles,
each with the document it belongs to) and the corpus; no test query and no test judgement.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_file, sha256_file, write_json
from matryoshka.experiments.scifact_recipes import Pair
from matryoshka.models.text import load_sentence_encoder
from matryoshka.models.text_rotation import Rotation, add_rotation, pca_rotation
from matryoshka.train.prefix_rotation import fit_prefix_rotation
from matryoshka.train.text import save_text_model

__all__ = [
    "ROTATED",
    "ROTATION_EPOCHS",
    "FittedRotation",
    "anchor_embeddings",
    "learned_rotation",
    "save_rotated",
]

ROTATED = "+rot"  # a row name: the recipe's name, then this
ROTATION_EPOCHS = 10


@dataclass
class FittedRotation:
    """A recipe's learned rotation and how it was made.

    Attributes
    ----------
    rotation : orthogonal (d, d) rotation, uncentred; ``rotation.apply(X)`` turns embeddings
    pairs : how many training pairs it was fitted on
    seconds : the fit's wall time (when it was done)
    fresh : whether this call fitted it (False: read from ``out_dir``)
    """

    rotation: Rotation
    pairs: int
    seconds: float
    fresh: bool


def _as_rotation(R: np.ndarray, corpus: np.ndarray) -> Rotation:
    """An orthogonal matrix as a :class:`Rotation`, its variance shares measured on ``corpus``."""
    second = ((np.asarray(corpus, np.float64) @ R.T) ** 2).mean(0)
    return Rotation(R, None, second / max(second.sum(), 1e-300))


def learned_rotation(
    folder: Path,
    pairs: list[Pair],
    anchors: np.ndarray,
    corpus: np.ndarray,
    negatives: np.ndarray | None,
    sizes: list[int],
    key: dict[str, Any],
    epochs: int = ROTATION_EPOCHS,
    seed: int = 0,
    progress: bool = True,
) -> FittedRotation:
    """Fit (or read from ``folder``) the rotation of one model's embeddings.

    Parameters
    ----------
    folder : where ``rotation.npy`` and ``meta.json`` are kept; reused when ``key`` matches
    pairs : the recipe's training pairs; a pair whose positive is not a corpus row is left out
    anchors : ndarray of shape (len(pairs), d), the model's embeddings of each pair's anchor
    corpus : ndarray of shape (N, d), the model's corpus embeddings (positives, negatives, PCA)
    negatives : ndarray of shape (len(pairs),) of corpus rows, or None: one hard negative a pair
    sizes : the prefix sizes the loss is averaged over (those below ``d`` are used)
    key : what the cached rotation must have been fitted from (model, data, settings)
    progress : show the fit's progress bar
    """
    key = {**key, "epochs": epochs, "seed": seed, "pairs": len(pairs), "sizes": list(sizes)}
    meta_path = folder / "meta.json"
    if meta_path.is_file() and (folder / "rotation.npy").is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            R = np.load(folder / "rotation.npy")
            return FittedRotation(_as_rotation(R, corpus), meta["pairs"], meta["seconds"], False)
    if len(anchors) != len(pairs):
        raise ValueError(f"one anchor embedding per pair: {len(anchors)} for {len(pairs)} pairs")
    keep = np.array([p.row >= 0 for p in pairs])
    rows = np.array([p.row for p in pairs])[keep]
    t0 = time.perf_counter()
    R = fit_prefix_rotation(
        anchors[keep], corpus[rows], None if negatives is None else corpus[negatives[keep]],
        sizes=sizes, start=pca_rotation(corpus).matrix, epochs=epochs, seed=seed, progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / "rotation.npy", "wb") as f:
        np.save(f, R)
    write_json(meta_path, {"key": key, "pairs": int(keep.sum()), "seconds": seconds})
    return FittedRotation(_as_rotation(R, corpus), int(keep.sum()), seconds, True)


def save_rotated(
    folder: Path,
    source: Path,
    rotation: Rotation,
    dims: list[int],
    max_seq_length: int,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """A copy of the model in ``source`` with ``rotation`` as its last layers, in ``folder``.

    ``dims``: the sizes it is meant to be cut to (written into its ``matryoshka.json``).
    Reused when ``folder`` already holds this rotation of the same weights. ``SentenceTransformer
    (folder, truncate_dim=m)`` then gives the first ``m`` rotated coordinates.
    """
    key = {"source": str(source), "source_sha256": sha256_file(Path(source) / "model.safetensors"),
           "rotation_sha256": _digest(rotation.matrix)}  # fmt: skip
    meta_path = Path(folder) / "matryoshka.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("rotated") == key:
        return Path(folder)
    model = load_sentence_encoder(source, device=device, max_seq_length=max_seq_length,
                                  progress=progress)  # fmt: skip
    add_rotation(model, rotation)
    meta = json.loads((Path(source) / "matryoshka.json").read_text())
    info = {k: meta[k] for k in ("method", "base_model", "config") if k in meta}
    return save_text_model(model, folder, dims, overwrite=True,
                           progress=progress, name=Path(folder).name, rotated=key,
                           **info)  # fmt: skip


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, np.float64).tobytes()).hexdigest()


def anchor_embeddings(pairs: list[Pair], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """(len(pairs), d): each pair's anchor embedded by ``encode`` (each distinct anchor once)."""
    unique = list(dict.fromkeys(p.anchor for p in pairs))
    at = {a: i for i, a in enumerate(unique)}
    return encode(unique)[[at[p.anchor] for p in pairs]]
