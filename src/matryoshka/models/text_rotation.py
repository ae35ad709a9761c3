"""A rotation inside a sentence encoder, so that its prefixes are its principal components.

PCA of a model's embeddings orders their directions by variance: the first ``m`` principal
components are the best ``m``-dimensional linear summary of them, which plain truncation of a model
not trained for it is not. :func:`pca_rotation` fits that ordering on embeddings (e.g. a corpus),
and :func:`add_rotation` puts it into the model as a ``Dense`` layer (no activation) after its
last module (and a ``Normalize`` after it when the model ended in one), so the saved folder is an
ordinary sentence-transformers model:
``SentenceTransformer(path, truncate_dim=m)`` then gives the size-``m`` PCA embedding.

Uncentred (the default), the rotation is orthogonal and the full size keeps every cosine
similarity of the model unchanged; only the order of the directions changes. Centred, it
subtracts the fitted mean first (a bias in the layer), which changes full-size similarities.
The same layer is the learned output projection of a Matryoshka fine-tune started from PCA's
ordering (``TextTrainConfig(init="pca")``): it is trained with the rest of the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from matryoshka.models.text import encode_texts, require_sentence_transformers

__all__ = ["Rotation", "add_rotation", "fit_model_rotation", "pca_rotation"]


class Rotation:
    """An ordering of embedding directions: ``y = R (x - mean)``.

    Attributes
    ----------
    matrix : ndarray of shape (d, d), float64; rows are directions, by variance descending
    mean : ndarray of shape (d,) or None (uncentred: the rotation is orthogonal and keeps norms)
    variance : ndarray of shape (d,), the share of the (second moment or) variance along each row
    """

    def __init__(self, matrix: np.ndarray, mean: np.ndarray | None, variance: np.ndarray) -> None:
        self.matrix, self.mean, self.variance = matrix, mean, variance

    @property
    def d(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(N, d) -> (N, d) float32, columns ordered by the fitted variance."""
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ValueError(f"expected embeddings of shape (N, {self.d}), got {X.shape}")
        if self.mean is not None:
            X = X - self.mean
        return (X @ self.matrix.T).astype(np.float32)


def pca_rotation(X: np.ndarray, center: bool = False) -> Rotation:
    """Principal directions of embeddings ``X`` (N, d), as a full (d, d) rotation.

    Uncentred (default): eigenvectors of the second moment ``X^T X / N``, an orthogonal
    rotation that keeps full-size similarities; centred: of the covariance, with the mean kept.
    Each direction's sign is fixed so that its largest coordinate is positive (the same fit
    gives the same rotation). Needs at least ``d`` finite rows for a full ordering.
    """
    X = np.asarray(X, np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (N, d), got {X.shape}")
    n, d = X.shape
    if n < 2:
        raise ValueError(f"a rotation needs at least 2 embeddings, got {n}")
    if not np.isfinite(X).all():
        bad = int(np.flatnonzero(~np.isfinite(X).all(1))[0])
        raise ValueError(f"embedding row {bad} holds NaN or inf; fit on finite embeddings")
    mean = X.mean(0) if center else None
    Xc = X - mean if center else X
    values, vectors = np.linalg.eigh(Xc.T @ Xc / n)  # ascending
    order = np.argsort(values)[::-1]
    R = vectors[:, order].T  # (d, d), rows = directions
    flip = np.sign(R[np.arange(d), np.abs(R).argmax(1)])
    R *= flip[:, None]
    values = np.clip(values[order], 0.0, None)
    return Rotation(R, mean, values / max(values.sum(), 1e-300))


def _dense_class() -> Any:
    st = require_sentence_transformers()
    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError:  # sentence-transformers < 6
        Dense = st.models.Dense
    return Dense


def add_rotation(model: Any, rotation: Rotation) -> Any:
    """Put ``rotation`` into a ``SentenceTransformer`` as a ``Dense`` layer; returns ``model``.

    The layer goes after the model's last module, where the embeddings the rotation was fitted on
    come out (``model.encode``), with identity activation, on the model's device and dtype; a
    model that ended in ``Normalize`` gets another after it, so its embeddings stay unit length.
    The layer's weights are trainable like the rest. The model's embedding size must equal the
    rotation's ``d``.
    """
    d = model.get_embedding_dimension()
    if d != rotation.d:
        raise ValueError(f"the rotation is for {rotation.d}-dim embeddings, the model has {d}")
    weight = torch.as_tensor(rotation.matrix, dtype=torch.float32)
    bias = None
    if rotation.mean is not None:
        bias = -weight @ torch.as_tensor(rotation.mean, dtype=torch.float32)
    layer = _dense_class()(d, d, bias=bias is not None, activation_function=torch.nn.Identity(),
                           init_weight=weight, init_bias=bias)  # fmt: skip
    param = next(model.parameters())
    layer.to(device=param.device, dtype=param.dtype)
    normalized = type(model[-1]).__name__ == "Normalize"
    model.append(layer)
    if normalized:
        model.append(type(model[-2])())
    return model


def fit_model_rotation(
    model: Any, texts: list[str], center: bool = False, batch_size: int = 64, progress: bool = True
) -> Rotation:
    """:func:`pca_rotation` of ``model``'s embeddings of ``texts`` (encoded once, no gradients)."""
    was_training = model.training
    model.eval()
    try:
        X = encode_texts(model, texts, batch_size=batch_size, progress=progress,
                         desc="fit the rotation" if progress else None)  # fmt: skip
    finally:
        model.train(was_training)
    return pca_rotation(X, center=center)
