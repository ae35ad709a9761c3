"""Interpolate a fine-tuned text model's weights back toward the model it started from.

A fine-tune that continues from an earlier model (a Matryoshka phase two started from a plain
fine-tune and its PCA rotation) moves its weights from ``W_start`` to ``W_end``. The models on the
straight line between them, ``W_start + alpha * (W_end - W_start)``, often score better than either
end on what each end is good at (weight-space ensembles: Wortsman et al. 2022, "Robust
fine-tuning of zero-shot models", https://arxiv.org/abs/2109.01903). For nested embeddings the
line trades the end's small prefixes against the start's full size: on SciFact, halfway between a
plain fine-tune (with its rotation) and the two-phase Matryoshka fine-tune scored above both at
384 dimensions while keeping most of the Matryoshka model's gain at 64
(``docs/results/scifact-recipes/README.md``).

Both models must have the same modules with the same shapes: a start without the rotation the
fine-tune began with gets it first (:func:`~matryoshka.models.text_rotation.add_rotation`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["interpolate_weights"]


def interpolate_weights(start: Any, end: Any, alpha: float) -> Any:
    """Set ``start``'s weights to ``W_start + alpha * (W_end - W_start)``; returns ``start``.

    ``start`` and ``end`` are torch modules (e.g. two ``SentenceTransformer`` models) with the same
    state-dict keys and shapes; ``alpha`` in [0, 1] (0: the start, 1: the end). Integer buffers
    (token type ids, position ids) are taken from ``end``. The result is on ``start``'s device.

    Raises ``ValueError`` on an ``alpha`` outside [0, 1] or models whose weights do not match.
    """
    alpha = float(alpha)
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1] (0: the start, 1: the end), got {alpha}")
    w0, w1 = start.state_dict(), end.state_dict()
    if w0.keys() != w1.keys():
        only0, only1 = sorted(w0.keys() - w1.keys()), sorted(w1.keys() - w0.keys())
        raise ValueError(
            "the two models have different modules (only in the start: "
            f"{only0[:4]}, only in the end: {only1[:4]}); interpolate a fine-tune with the model "
            "it started from, with the same rotation layer added (add_rotation)"
        )
    bad = [k for k in w0 if w0[k].shape != w1[k].shape]
    if bad:
        raise ValueError(f"weights differ in shape: {bad[:4]} (start {tuple(w0[bad[0]].shape)}, "
                         f"end {tuple(w1[bad[0]].shape)})")  # fmt: skip
    mixed = {}
    with torch.no_grad():
        for k, a in w0.items():
            b = w1[k].to(a.device)
            mixed[k] = torch.lerp(a, b.to(a.dtype), alpha) if a.is_floating_point() else b.clone()
    start.load_state_dict(mixed)
    return start
