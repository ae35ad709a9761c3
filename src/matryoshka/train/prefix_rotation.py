"""A learned rotation of a model's embeddings, so that its prefixes rank as well as they can.

PCA orders a model's output directions by variance; this orders them by usefulness. Given the
model's embeddings of training anchors, their positives and (optionally) hard negatives, an
orthogonal ``R = exp(S - S^T)`` (``S`` from zero, or on top of a starting rotation such as PCA's)
is fitted with the nested in-batch contrastive loss at every size below the full one. ``R`` is
orthogonal, so every full-size cosine similarity of the model is unchanged: only the order in
which information reaches the prefixes moves. Fitting needs no pass through the encoder: it works
on cached embeddings, in seconds per epoch on one CPU thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from matryoshka._runtime import progress_bar
from matryoshka.dims import validate_dims

__all__ = ["fit_prefix_rotation"]


def _unit(x: np.ndarray, name: str, d: int | None = None) -> torch.Tensor:
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        want = f"(N, {d})" if d is not None else "(N, d)"
        raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or inf; fit on finite embeddings")
    return F.normalize(torch.from_numpy(x), dim=-1)


def fit_prefix_rotation(
    anchors: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray | None = None,
    sizes: Sequence[int] = (16, 32, 64, 128, 256),
    start: np.ndarray | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    temperature: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """An orthogonal (d, d) matrix ``R``; use it as ``X @ R.T`` on the model's embeddings.

    Parameters
    ----------
    anchors, positives : ndarray of shape (N, d), row ``i`` of each a training pair
    negatives : ndarray of shape (N, d) or None, one hard negative per pair (joins the candidates)
    sizes : the prefix sizes whose in-batch contrastive losses are averaged (each < d)
    start : ndarray of shape (d, d) or None, an orthogonal rotation to start from (e.g.
        :func:`matryoshka.models.text_rotation.pca_rotation`'s matrix); the identity when None
    epochs, batch_size, lr : Adam over the pairs, the learning rate decaying linearly to 0
    temperature : the softmax temperature of the contrastive loss
    seed : the shuffling's seed
    progress : show a progress bar over the epochs, with the last batch's loss
    """
    a = _unit(anchors, "anchors")
    d = a.shape[1]
    p = _unit(positives, "positives", d)
    cols = [p] + ([_unit(negatives, "negatives", d)] if negatives is not None else [])
    if any(len(c) != len(a) for c in cols):
        raise ValueError(f"one positive (and negative) per anchor: {[len(c) for c in cols]}")
    sizes = [m for m in validate_dims(sorted(set(sizes)), d, "sizes") if m < d]
    if not sizes:
        raise ValueError(f"sizes must include at least one size below d={d}")
    if len(a) < 2 or batch_size < 2:
        raise ValueError("a rotation needs at least 2 pairs and batches of at least 2")
    r0 = torch.eye(d) if start is None else torch.as_tensor(start, dtype=torch.float32)
    if r0.shape != (d, d) or not torch.allclose(r0 @ r0.T, torch.eye(d), atol=1e-4):
        raise ValueError(f"start must be an orthogonal ({d}, {d}) matrix")
    batch = min(batch_size, len(a))
    steps = epochs * (len(a) // batch)
    g = torch.Generator().manual_seed(seed)
    S = torch.zeros(d, d, requires_grad=True)
    opt = torch.optim.Adam([S], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: max(0.0, 1 - k / max(1, steps)))
    target = torch.arange(batch)
    bar = progress_bar(range(epochs), desc="fit the rotation", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(a), generator=g)
        for i in range(0, len(a) - batch + 1, batch):
            idx = order[i : i + batch]
            R = torch.matrix_exp(S - S.T) @ r0  # (d, d), orthogonal
            q, c = a[idx] @ R.T, torch.cat([col[idx] for col in cols]) @ R.T
            loss = torch.stack([
                F.cross_entropy(F.normalize(q[:, :m], dim=-1)
                                @ F.normalize(c[:, :m], dim=-1).T / temperature, target)
                for m in sizes
            ]).mean()  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    with torch.no_grad():
        return (torch.matrix_exp(S - S.T) @ r0).double().numpy()
