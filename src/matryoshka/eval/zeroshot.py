"""Dual encoders at every size from one encoding of each side: zero-shot classification and
image <-> text recall@k.

Images and texts are encoded once at full size ``d``; each size ``m`` scores the renormalised
first ``m`` columns of both (cosine). Nothing is re-encoded per size. Results are
``{"method": ..., "dims": {m: {...}}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from matryoshka.dims import truncate, validate_dims

__all__ = ["class_embeddings_at", "cross_modal_recall_per_size", "zero_shot_per_size"]

BLOCK = 1024  # rows of the (N, N) similarity matrix scored at a time


def class_embeddings_at(class_text_emb: np.ndarray, m: int) -> np.ndarray:
    """Each class's text embedding at size ``m``: (C, m), unit length.

    ``class_text_emb`` (C, T, d), one embedding per class and prompt template, or (C, d): every
    prompt is cut to ``m`` and renormalised, the class's prompts are averaged at that size and
    the mean renormalised (CLIP's prompt ensembling, done per size).
    """
    emb = np.asarray(class_text_emb, dtype=np.float32)
    if emb.ndim == 2:
        emb = emb[:, None, :]
    if emb.ndim != 3:
        raise ValueError(f"class text embeddings must be (C, T, d) or (C, d), got {emb.shape}")
    return truncate(truncate(emb, m).mean(axis=1), m)  # (C, m)


def zero_shot_per_size(
    image_emb: np.ndarray,
    class_text_emb: np.ndarray,
    labels: np.ndarray,
    dims: Sequence[int],
    method: str = "mrl",
) -> dict[str, Any]:
    """Zero-shot top-1 at every size: each image goes to the class whose prompts are nearest.

    Parameters
    ----------
    image_emb : ndarray of shape (N, d), encoded once at full size
    class_text_emb : ndarray of shape (C, T, d) (T prompt templates per class) or (C, d)
    labels : ndarray of shape (N,), ints in ``0..C-1``
    dims : sizes ``m`` to score, each at most ``d``
    method : the name the result carries

    Returns
    -------
    dict
        ``{"method": method, "dims": {m: {"top1": float}}}``
    """
    X = np.asarray(image_emb, dtype=np.float32)
    T = np.asarray(class_text_emb, dtype=np.float32)
    y = np.asarray(labels)
    if X.ndim != 2 or T.ndim not in (2, 3) or X.shape[1] != T.shape[-1]:
        raise ValueError(
            f"image embeddings (N, d) and class text embeddings (C, T, d) or (C, d) must share d, "
            f"got {X.shape} and {T.shape}"
        )
    if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be N={X.shape[0]} integers, got {y.dtype} {y.shape}")
    C = T.shape[0]
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels must lie in 0..{C - 1} (one per class), got {y.min()}..{y.max()}")
    out: dict[int, dict[str, float]] = {}
    for m in validate_dims(dims, X.shape[1]):
        scores = truncate(X, m) @ class_embeddings_at(T, m).T  # (N, C) cosines
        top1 = float((scores.argmax(axis=1) == y).mean()) if y.size else float("nan")
        out[m] = {"top1": top1}
    return {"method": method, "dims": out}


def _match_ranks(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """For each query ``i``, how many database rows score above its match ``xb[i]``.

    A tie with the match counts as above it (the pessimistic rank), so a collapsed embedding
    cannot look good. Scored ``BLOCK`` query rows at a time: memory (BLOCK, N), not (N, N).
    """
    N = xq.shape[0]
    ranks = np.empty(N, dtype=np.int64)
    for s in range(0, N, BLOCK):
        rows = np.arange(s, min(s + BLOCK, N))
        S = xq[rows] @ xb.T  # (b, N)
        match = S[np.arange(len(rows)), rows]  # (b,)
        S[np.arange(len(rows)), rows] = -np.inf  # the match itself is not ahead of itself
        ranks[rows] = (S >= match[:, None]).sum(axis=1)
    return ranks


def cross_modal_recall_per_size(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    dims: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    method: str = "mrl",
) -> dict[str, Any]:
    """Image -> text and text -> image recall@k at every size; pair ``i`` is the match.

    Recall@k is the fraction of queries whose match ranks among the ``k`` best by cosine (ties
    with the match count against it).

    Parameters
    ----------
    image_emb : ndarray of shape (N, d), encoded once at full size
    text_emb : ndarray of shape (N, d), row ``i`` the caption of image ``i``
    dims : sizes ``m`` to score, each at most ``d``
    ks : cut-offs

    Returns
    -------
    dict
        ``{"method": method, "dims": {m: {"i2t_recall@1": ..., "t2i_recall@1": ..., ...}}}``
    """
    X = np.asarray(image_emb, dtype=np.float32)
    Y = np.asarray(text_emb, dtype=np.float32)
    if X.ndim != 2 or X.shape != Y.shape:
        raise ValueError(
            f"image and text embeddings must both be (N, d), one caption per image, got "
            f"{X.shape} and {Y.shape}"
        )
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    out: dict[int, dict[str, float]] = {}
    for m in validate_dims(dims, X.shape[1]):
        Xm, Ym = truncate(X, m), truncate(Y, m)
        row: dict[str, float] = {}
        for name, ranks in (("i2t", _match_ranks(Xm, Ym)), ("t2i", _match_ranks(Ym, Xm))):
            for k in ks:
                row[f"{name}_recall@{k}"] = float((ranks < k).mean()) if len(ranks) else 0.0
        out[m] = row
    return {"method": method, "dims": out}
