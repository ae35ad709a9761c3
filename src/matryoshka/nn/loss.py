"""``MatryoshkaLoss``: one loss, applied at every nested size, averaged with weights.

Paper: Kusupati et al., "Matryoshka Representation Learning", https://arxiv.org/abs/2205.13147

Two ways in, both from one forward pass:

* per-size outputs (a head's logits of shape (B, K, C), or a list of K tensors): the criterion is
  applied to each size's slice ``outputs[:, k]``;
* embeddings (``slice_embeddings=True``): one or more (B, d) tensors, cut to their first ``m``
  columns (and renormalised when ``normalize=True``) before the criterion sees them, e.g. anchors
  and positives of an in-batch contrastive loss, or the image and text embeddings of a dual
  encoder with :func:`clip_contrastive_loss` (its learnable scale passed as an extra argument:
  ``MatryoshkaLoss(clip_contrastive_loss, dims, slice_embeddings=True, normalize=True)((image,
  text), scale)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matryoshka.dims import truncate, validate_dims, validate_weights

__all__ = ["MatryoshkaLoss", "clip_contrastive_loss", "in_batch_contrastive_loss"]


class MatryoshkaLoss(nn.Module):
    """Weighted mean over sizes of ``criterion`` on each size's output.

    ``total = (1 / K) * sum_k weights[k] * criterion(output at dims[k], *args)``; with the default
    weights (all 1) this is the plain mean over sizes.

    Parameters
    ----------
    criterion : callable
        Any loss returning a scalar tensor, e.g. ``nn.CrossEntropyLoss(label_smoothing=0.1)``.
    dims : sequence of int
        The nested sizes, ascending.
    weights : sequence of float, optional
        One non-negative weight per size (default all 1).
    slice_embeddings : bool, default False
        False: ``outputs`` already hold one entry per size. True: ``outputs`` are (B, d)
        embeddings (a tensor or a tuple of tensors) and are sliced to each size here.
    normalize : bool, default False
        With ``slice_embeddings``, L2-renormalise each prefix (what cosine losses need).

    Returns (from ``forward``)
    -------
    total : Tensor, scalar
    per_size : dict[int, Tensor]
        Each size's criterion value, detached, for logging.
    """

    def __init__(
        self,
        criterion: Callable[..., Tensor],
        dims: Sequence[int],
        weights: Sequence[float] | None = None,
        slice_embeddings: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.criterion = criterion
        self.dims = validate_dims(dims)
        self.weights = validate_weights(weights, self.dims)
        self.slice_embeddings = slice_embeddings
        self.normalize = normalize

    def _per_size_inputs(self, outputs: Any) -> list[tuple[Tensor, ...]]:
        K = len(self.dims)
        if self.slice_embeddings:
            embs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
            for e in embs:
                if e.ndim != 2 or e.shape[1] < self.dims[-1]:
                    raise ValueError(
                        f"embeddings must have shape (B, d) with d >= {self.dims[-1]} "
                        f"(the largest size), got shape {tuple(e.shape)}"
                    )
            # each (B, m): the prefix, renormalised when asked (the one prefix helper)
            return [tuple(truncate(e, m, self.normalize) for e in embs) for m in self.dims]
        if isinstance(outputs, Tensor):
            if outputs.ndim < 2 or outputs.shape[1] != K:
                raise ValueError(
                    f"outputs must have shape (B, K={K}, ...) with one entry per size "
                    f"{list(self.dims)}, got shape {tuple(outputs.shape)}"
                )
            return [(outputs[:, k],) for k in range(K)]
        outputs = list(outputs)
        if len(outputs) != K:
            raise ValueError(
                f"outputs must hold one entry per size {list(self.dims)}, got {len(outputs)}"
            )
        return [(o,) for o in outputs]

    def forward(self, outputs: Any, *args: Any) -> tuple[Tensor, dict[int, Tensor]]:
        per_size_inputs = self._per_size_inputs(outputs)
        values = [self.criterion(*inp, *args) for inp in per_size_inputs]
        total = sum(w * v for w, v in zip(self.weights, values)) / len(values)
        return total, {m: v.detach() for m, v in zip(self.dims, values)}

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}, weights={list(self.weights)}"


def in_batch_contrastive_loss(
    anchors: Tensor, positives: Tensor, temperature: float = 0.05, symmetric: bool = False
) -> Tensor:
    """In-batch contrastive (InfoNCE / multiple-negatives ranking) loss.

    Row ``i`` of ``positives`` is the positive for anchor ``i``; every other row is a negative.
    Inputs should be L2-normalised when cosine similarity is meant.

    Parameters
    ----------
    anchors : Tensor of shape (B, m)
    positives : Tensor of shape (P, m), P >= B (extra rows are hard negatives)
    temperature : float
        Similarities are divided by it (0.05 is a scale of 20).
    symmetric : bool
        Also score positives against anchors and average both directions.
    """
    if anchors.ndim != 2 or positives.ndim != 2 or anchors.shape[1] != positives.shape[1]:
        raise ValueError(
            f"anchors (B, m) and positives (P, m) must share m, got {tuple(anchors.shape)} "
            f"and {tuple(positives.shape)}"
        )
    B = anchors.shape[0]
    if positives.shape[0] < B:
        raise ValueError(f"need at least B={B} positives, got {positives.shape[0]}")
    scores = (anchors @ positives.T).float() / temperature  # (B, P)
    return _info_nce(scores, symmetric)


def _info_nce(scores: Tensor, symmetric: bool) -> Tensor:
    """Cross-entropy of (B, P) scores whose diagonal holds the matches (targets ``arange(B)``);
    ``symmetric``: averaged with the cross-entropy of the (B, B) block's columns."""
    B = scores.shape[0]
    target = torch.arange(B, device=scores.device)
    loss = F.cross_entropy(scores, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(scores[:, :B].T, target))
    return loss


def clip_contrastive_loss(
    image: Tensor, text: Tensor, logit_scale: Tensor | float, labels: Tensor | None = None
) -> Tensor:
    """The symmetric contrastive loss of CLIP (Radford et al. 2021) and ALIGN (Jia et al. 2021).

    ``logits = logit_scale * image @ text.T`` (B, B); the loss is the mean of the cross-entropy
    over rows (image -> text) and over columns (text -> image), pair ``i`` being the match of
    row and column ``i``; every other pair of the batch is a negative.

    Parameters
    ----------
    image : Tensor of shape (B, m), L2-normalised
    text : Tensor of shape (B, m), L2-normalised, row ``i`` the caption of image ``i``
    logit_scale : scalar Tensor or float
        The multiplier of the cosine similarities (the exponentiated learnable temperature of
        a dual encoder, e.g. ``1 / 0.07``); gradients flow into it when it is a tensor.
    labels : Tensor of shape (B,), optional
        Pairs whose labels are equal are all matches (captions made from class names, where a
        batch holds several images of a class: UniCL, Yang et al. 2022,
        https://arxiv.org/abs/2204.03610): each row's and each column's target is spread
        evenly over its matches instead of one-hot. None: only pair ``i`` matches ``i``.

    Returns
    -------
    Tensor, scalar
    """
    if image.ndim != 2 or text.ndim != 2 or image.shape != text.shape:
        raise ValueError(
            f"image and text embeddings must both have shape (B, m), one caption per image, got "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    if isinstance(logit_scale, Tensor) and logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
    logits = logit_scale * (image @ text.T).float()  # (B, B)
    if labels is None:
        return _info_nce(logits, symmetric=True)
    if labels.shape != (image.shape[0],):
        raise ValueError(f"labels must have shape ({image.shape[0]},), got {tuple(labels.shape)}")
    match = (labels[:, None] == labels[None, :]).float()  # (B, B), symmetric, diagonal 1
    target = match / match.sum(dim=1, keepdim=True)
    rows = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    cols = -(target * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return 0.5 * (rows + cols)
