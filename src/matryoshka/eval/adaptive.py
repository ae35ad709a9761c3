"""Adaptive classification: try sizes from small to large, stop at the first confident one.

MRL paper, Section 4.2.2: a cascade over the nested heads. Size ``dims[k]`` answers when its
maximum softmax probability clears threshold ``t_k``; otherwise the next size is tried, and the
largest size always answers. The cost of an example is the size that answered; the expected size
over a data set is what the cascade saves against always using ``d``.

Thresholds are tuned on held-out data (never on the test split): for a target precision ``p``,
``t_k`` is the smallest confidence at which size ``k``'s answers on the held-out set are right at
least a fraction ``p`` of the time; sizes below a chosen starting size never answer. Sweeping
both traces accuracy against expected size, and the operating point is picked on held-out data.
Confidences are computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "softmax_confidence",
    "cascade",
    "thresholds_for_precision",
    "adaptive_classification",
    "pareto_front",
    "select_operating_point",
]


def softmax_confidence(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max softmax probability and arg-max of per-size logits.

    Parameters
    ----------
    logits : ndarray of shape (N, K, C)

    Returns
    -------
    conf : ndarray of shape (N, K), float32
    pred : ndarray of shape (N, K), int64
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (N, K, C), got {logits.shape}")
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return p.max(axis=-1), p.argmax(axis=-1).astype(np.int64)


def cascade(
    conf: np.ndarray, pred: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Run the cascade. Returns (stage index that answered (N,), prediction (N,)).

    ``thresholds`` has one value per size; the last size always answers whatever its value.
    """
    conf = np.asarray(conf)
    N, K = conf.shape
    t = np.asarray(thresholds, dtype=np.float32)
    if t.shape != (K,):
        raise ValueError(f"need one threshold per size: {K} sizes, got {t.shape[0]} thresholds")
    ok = conf >= t[None, :]  # (N, K)
    ok[:, -1] = True
    stage = ok.argmax(axis=1)  # first confident size
    return stage, pred[np.arange(N), stage]


def thresholds_for_precision(
    conf: np.ndarray, correct: np.ndarray, precision: float, min_count: int = 20
) -> np.ndarray:
    """Per-size thresholds: the lowest confidence whose answers reach ``precision`` (held out).

    For size ``k`` the held-out examples are sorted by confidence, most confident first; the
    threshold is the confidence of the last example of the longest such prefix whose accuracy is at
    least ``precision`` (and that has at least ``min_count`` examples). A size that never reaches
    it gets a threshold above 1 (it never answers, except the last).

    Parameters
    ----------
    conf, correct : ndarray of shape (N, K): confidence, and whether the size's answer is right
    precision : float in (0, 1]
    """
    conf = np.asarray(conf, dtype=np.float32)
    correct = np.asarray(correct, dtype=bool)
    N, K = conf.shape
    out = np.full(K, 2.0, dtype=np.float32)
    for k in range(K):
        order = np.argsort(-conf[:, k], kind="stable")
        acc = np.cumsum(correct[order, k]) / np.arange(1, N + 1)  # accuracy of each prefix
        good = np.flatnonzero((acc >= precision) & (np.arange(1, N + 1) >= min_count))
        if len(good):
            out[k] = conf[order[good[-1]], k]
    return out


def adaptive_classification(
    holdout_logits: np.ndarray,
    holdout_y: np.ndarray,
    test_logits: np.ndarray,
    test_y: np.ndarray,
    dims: Sequence[int],
    precisions: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy against expected size, thresholds tuned on held-out data.

    Each operating point is a starting size (smaller sizes never answer) and a target precision
    that sets the thresholds of the sizes from there on. Starting above the smallest size is what
    lets the cascade use, say, 16 dimensions for every example when 8 are not enough.

    Parameters
    ----------
    holdout_logits, test_logits : ndarray of shape (N, K, C), one slice per size in ``dims``
    holdout_y, test_y : ndarray of shape (N,)
    dims : the sizes, ascending
    precisions : target precisions to sweep (default 0.50 ... 0.999)

    Returns
    -------
    dict with ``dims``, ``fixed`` (test top-1 of each size alone), ``holdout_fixed`` (the same on
    the held-out data) and ``points``: one dict per
    (start, precision) with ``start`` (a size), ``precision``, ``thresholds``, ``expected_size``
    and ``top1`` on the test split, and the same two measured on the held-out data
    (``holdout_expected_size``, ``holdout_top1``); ``front``, the points no other beats on
    both test expected size and test top-1.
    """
    dims = [int(m) for m in dims]
    hc, hp = softmax_confidence(holdout_logits)
    tc, tp = softmax_confidence(test_logits)
    if hc.shape[1] != len(dims) or tc.shape[1] != len(dims):
        raise ValueError(f"logits must hold one slice per size {dims}")
    hy, ty = np.asarray(holdout_y), np.asarray(test_y)
    sizes = np.asarray(dims, dtype=np.float64)
    if precisions is None:
        precisions = [0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999]
    base = {p: thresholds_for_precision(hc, hp == hy[:, None], p) for p in precisions}
    points = []
    for start in range(len(dims)):
        for p in precisions:
            t = base[p].copy()
            t[:start] = 2.0  # sizes below the start never answer
            h_stage, h_pred = cascade(hc, hp, t)
            t_stage, t_pred = cascade(tc, tp, t)
            points.append(
                {
                    "start": dims[start],
                    "precision": float(p),
                    "thresholds": [float(v) for v in t],
                    "expected_size": float(sizes[t_stage].mean()),
                    "top1": float((t_pred == ty).mean()),
                    "holdout_expected_size": float(sizes[h_stage].mean()),
                    "holdout_top1": float((h_pred == hy).mean()),
                }
            )
    fixed = {m: float((tp[:, k] == ty).mean()) for k, m in enumerate(dims)}
    holdout_fixed = {m: float((hp[:, k] == hy).mean()) for k, m in enumerate(dims)}
    return {"dims": dims, "fixed": fixed, "holdout_fixed": holdout_fixed, "points": points,
            "front": pareto_front(points)}  # fmt: skip


def select_operating_point(
    adaptive: dict[str, Any], holdout_target: float, tolerance: float = 0.005
) -> dict[str, Any] | None:
    """The point of smallest held-out expected size whose held-out top-1 reaches the target.

    Chosen on held-out data only: its test numbers are then an honest estimate.
    """
    ok = [p for p in adaptive["points"] if p["holdout_top1"] >= holdout_target - tolerance]
    return min(ok, key=lambda p: p["holdout_expected_size"]) if ok else None


def pareto_front(points: Sequence[dict[str, Any]], size: str = "expected_size",
                 acc: str = "top1") -> list[dict[str, Any]]:  # fmt: skip
    """Points no other point beats on both size (smaller) and accuracy (larger), by size."""
    front: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda q: (q[size], -q[acc])):
        if not front or p[acc] > front[-1][acc]:
            front.append(p)
    return front
