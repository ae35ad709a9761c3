"""2-D maps of the embedding space at every size, aligned so that moving between sizes moves
points smoothly, and how much of the prefix space's structure a map keeps.

Each size's prefix ``X[:, :m]`` is renormalised to unit length (cosine geometry) and projected to
2-D: by PCA (numpy, always available), t-SNE (openTSNE) or UMAP (umap-learn), the latter two only
when installed (extra ``maps``). The default, ``"auto"``, is t-SNE where openTSNE is installed and
PCA elsewhere: measured on SciFact abstracts and on digits, t-SNE keeps the most neighbourhood
structure at every size, UMAP less at a similar cost, PCA far less but in well under a second
(``docs/results/maps.md``). The maps of different sizes are then put in one frame by
orthogonal Procrustes with scaling (rotation or reflection, one scale, one shift): the full size's
map is centred and scaled to unit RMS radius, and each smaller size is fitted to the size above
it (``align="chain"``, the default) or to the full size (``align="full"``). t-SNE and UMAP at each
size start from the aligned map of the size above, so neighbouring maps stay alike.

:func:`map_quality` scores a map against its prefix: the share of each point's ``k`` nearest
neighbours (cosine) it keeps in 2-D, trustworthiness, and with labels the k-NN label accuracy
in 2-D beside the same in the prefix space.

Imports nothing of the package but the leaf helpers.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from matryoshka._optional import require

__all__ = [
    "MAP_METHODS",
    "embedding_maps",
    "map_quality",
    "procrustes_align",
    "project_2d",
    "resolve_method",
    "sample_rows",
    "unit_rms",
]

MAP_METHODS = ("auto", "pca", "tsne", "umap")
_PACKAGES = {"tsne": ("openTSNE", "t-SNE maps"), "umap": ("umap", "UMAP maps")}


def resolve_method(method: str) -> str:
    """The projection ``method`` names: ``"auto"`` is t-SNE where openTSNE is installed (it
    keeps the most neighbourhood structure, see ``docs/results/maps.md``), else PCA."""
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {list(MAP_METHODS)}, got {method!r}")
    if method != "auto":
        return method
    try:
        importlib.import_module("openTSNE")
    except ImportError:
        return "pca"
    return "tsne"


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as float32. (n, m) -> (n, m)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def sample_rows(
    n: int, sample: int | None, seed: int = 0, labels: np.ndarray | None = None
) -> np.ndarray:
    """The rows a map of ``n`` points draws: all of them, or ``sample`` of them at random.

    With ``labels`` (n,) the draw is stratified: every class keeps its share of the sample (at
    least one row each while the sample allows). Returns sorted int64 row indices, shape (k,).
    """
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be a positive number of points, got {sample}")
    if sample is None or sample >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, size=sample, replace=False)).astype(np.int64)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    share = np.maximum(1, np.floor(counts * sample / n)).astype(int)
    while share.sum() > sample:  # more classes than the sample holds: drop from the largest
        share[np.argmax(share)] -= 1
    left = sample - share.sum()  # rows the rounding left over go to the largest remainders
    order = np.argsort(-(counts * sample / n - share), kind="stable")
    for c in order[:left]:
        share[c] += 1
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=min(s, cnt), replace=False)
        for c, s, cnt in zip(classes, share, counts)
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def procrustes_align(Y: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``Y`` rotated (or reflected), scaled and shifted to lie as close as it can to ``target``.

    Orthogonal Procrustes with scaling: minimises ``||s (Y - mean Y) R + t - target||`` over an
    orthogonal ``R``, a scale ``s > 0`` and a shift ``t``. Both arrays are (n, 2) (any (n, k)
    works); returns float32 (n, k).
    """
    Y, target = np.asarray(Y, np.float64), np.asarray(target, np.float64)
    if Y.shape != target.shape:
        raise ValueError(f"maps to align must have one shape, got {Y.shape} and {target.shape}")
    mu_y, mu_t = Y.mean(0), target.mean(0)
    A, B = Y - mu_y, target - mu_t
    U, S, Vt = np.linalg.svd(A.T @ B)
    R = U @ Vt
    denom = float((A**2).sum())
    s = float(S.sum()) / denom if denom > 0 else 1.0
    return (s * A @ R + mu_t).astype(np.float32)


def unit_rms(Y: np.ndarray) -> np.ndarray:
    """Centred and scaled to root-mean-square radius 1. (n, 2) -> (n, 2) float32."""
    Y = np.asarray(Y, np.float64)
    Y = Y - Y.mean(0)
    rms = float(np.sqrt((Y**2).sum(1).mean()))
    return (Y / rms if rms > 0 else Y).astype(np.float32)


def _pca_2d(Xn: np.ndarray) -> np.ndarray:
    """The first two principal components' scores of (n, m) rows; (n, 2), zero-padded when
    ``m`` or ``n`` allows fewer."""
    A = np.asarray(Xn, np.float64)
    A = A - A.mean(0)
    U, S, _ = np.linalg.svd(A, full_matrices=False)
    Y = np.zeros((len(A), 2))
    k = min(2, len(S))
    Y[:, :k] = U[:, :k] * S[:k]
    return Y.astype(np.float32)


def _tsne_2d(
    Xn: np.ndarray, init: np.ndarray | None, seed: int, perplexity: float = 30.0
) -> np.ndarray:
    """openTSNE on unit rows (euclidean ranks = cosine ranks), started from ``init`` (n, 2).

    Without ``init``: openTSNE's defaults from the PCA layout (250 early-exaggeration steps, 500
    more). From the map of the size above: no early exaggeration and 250 steps, which keeps the
    same share of neighbours in about a third of the time (``docs/results/maps.md``).
    """
    openTSNE = require(_PACKAGES["tsne"][0], _PACKAGES["tsne"][1], extra="maps")
    perplexity = min(perplexity, max(1.0, (len(Xn) - 1) / 3))
    steps = {"early_exaggeration_iter": 0, "n_iter": 250} if init is not None else {}
    init = np.asarray(_pca_2d(Xn) if init is None else init, np.float64)
    init = (init - init.mean(0)) * (1e-4 / max(float(init[:, 0].std()), 1e-12))
    tsne = openTSNE.TSNE(
        n_components=2, perplexity=perplexity, metric="euclidean", initialization=init,
        random_state=seed, n_jobs=1, verbose=False, **steps,
    )  # fmt: skip
    return np.asarray(tsne.fit(np.asarray(Xn, np.float64)), np.float32)


def _umap_2d(Xn: np.ndarray, init: np.ndarray | None, seed: int) -> np.ndarray:
    """umap-learn on unit rows, started from ``init`` (n, 2) or its spectral layout."""
    umap = require(_PACKAGES["umap"][0], _PACKAGES["umap"][1], extra="maps")
    start: Any = "spectral" if init is None else np.asarray(unit_rms(init) * 5, np.float64)
    reducer = umap.UMAP(
        n_components=2, n_neighbors=min(15, len(Xn) - 1), metric="euclidean", init=start,
        random_state=seed, n_jobs=1,
    )  # fmt: skip
    return np.asarray(reducer.fit_transform(Xn), np.float32)


def project_2d(
    X: np.ndarray, method: str = "pca", init: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """One (n, m) matrix's rows, renormalised, projected to 2-D: (n, 2) float32, not aligned.

    ``init`` (n, 2): where t-SNE and UMAP start (PCA ignores it). A method whose package is
    missing raises ``ImportError`` naming the package and the extra ``maps``.
    """
    method = resolve_method(method)
    Xn = _unit_rows(X)
    if method == "pca":
        return _pca_2d(Xn)
    if len(Xn) < 5:
        raise ValueError(f"{method} needs at least 5 points, got {len(Xn)}")
    if method == "tsne":
        return _tsne_2d(Xn, init, seed)
    return _umap_2d(Xn, init, seed)


def _check_sizes(sizes: Sequence[int], d: int) -> list[int]:
    out = sorted({int(m) for m in sizes})
    bad = [m for m in out if not 2 <= m <= d]
    if not out or bad:
        raise ValueError(f"map sizes must lie between 2 and d = {d}, got {list(sizes)}")
    return out


def embedding_maps(
    X: np.ndarray,
    sizes: Sequence[int],
    method: str = "auto",
    sample: int | None = 2000,
    seed: int = 0,
    labels: np.ndarray | None = None,
    align: str = "chain",
    times: dict[int, float] | None = None,
) -> dict[int, np.ndarray]:
    """Aligned 2-D maps of the prefixes ``X[:, :m]`` for every ``m`` in ``sizes``.

    Parameters
    ----------
    X : array of shape (N, d)
        Full-size embeddings (any float dtype; a memory map works).
    sizes : the sizes to map, each between 2 and d
    method : ``"pca"`` (built in), ``"tsne"`` (openTSNE), ``"umap"`` (umap-learn), or
        ``"auto"``: t-SNE where openTSNE is installed, else PCA (:func:`resolve_method`)
    sample : draw this many rows (None: all); the rows are :func:`sample_rows` (N, sample,
        seed, labels), so a caller can find the points' labels or names
    seed : the sample's and the projections' seed (same seed, same maps)
    labels : array of shape (N,), optional: the draw keeps every class's share
    align : ``"chain"`` (each size onto the aligned size above it), ``"full"`` (every size onto
        the largest) or ``"none"``
    times : a dict to fill with each size's seconds (projection and alignment)

    Returns
    -------
    dict
        ``{m: (n, 2) float32}`` in ascending ``m``; the largest size's map is centred with RMS
        radius 1 and the others are in its frame.
    """
    X = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if X.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, d), got {X.shape}")
    if align not in ("chain", "full", "none"):
        raise ValueError(f"align must be 'chain', 'full' or 'none', got {align!r}")
    method = resolve_method(method)
    sizes = _check_sizes(sizes, X.shape[1])
    rows = sample_rows(len(X), sample, seed, labels)
    Xs = np.asarray(X[rows], np.float32)  # (n, d)
    maps: dict[int, np.ndarray] = {}
    above: np.ndarray | None = None  # the aligned map of the size above
    for m in reversed(sizes):
        t0 = time.perf_counter()
        Y = project_2d(Xs[:, :m], method, init=above, seed=seed)
        if above is None:
            Y = unit_rms(Y)
        elif align != "none":
            Y = procrustes_align(Y, above if align == "chain" else maps[sizes[-1]])
        maps[m] = Y
        above = Y
        if times is not None:
            times[m] = time.perf_counter() - t0
    return {m: maps[m] for m in sizes}


def _neighbours(A: np.ndarray, k: int, cosine: bool, block: int = 512) -> tuple[Any, ...]:
    """Each row's ``k`` nearest other rows, nearest first (n, k), and a function giving, for
    rows ``i`` and candidates ``J`` (b, c), their ranks among ``i``'s neighbours (1 = nearest)."""
    A = _unit_rows(A) if cosine else np.asarray(A, np.float32)
    sq = (A.astype(np.float64) ** 2).sum(1)

    def scores(lo: int, hi: int) -> np.ndarray:  # higher = nearer; self at -inf
        s = A[lo:hi].astype(np.float64) @ A.T.astype(np.float64)
        s = s if cosine else 2 * s - sq[lo:hi, None] - sq[None, :]
        s[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        return s

    idx = np.empty((len(A), k), np.int64)
    for lo in range(0, len(A), block):
        s = scores(lo, min(lo + block, len(A)))
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
        idx[lo : lo + len(s)] = np.take_along_axis(part, order, 1)

    def ranks(lo: int, hi: int, J: np.ndarray) -> np.ndarray:
        s = scores(lo, hi)
        vals = np.take_along_axis(s, J, 1)  # (b, c)
        return (s[:, None, :] > vals[:, :, None]).sum(-1) + 1

    return idx, ranks


def _knn_label_accuracy(idx: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out majority vote of each row's neighbours ``idx`` (n, k); ties to the
    smallest label."""
    _, y = np.unique(labels, return_inverse=True)
    votes = np.zeros((len(y), int(y.max()) + 1), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(y)), idx.shape[1]), y[idx].ravel()), 1)
    return float((votes.argmax(1) == y).mean())


def map_quality(
    X_prefix: np.ndarray, Y2d: np.ndarray, labels: np.ndarray | None = None, k: int = 10
) -> dict[str, float]:
    """How much of the prefix space's neighbourhoods a 2-D map keeps.

    Parameters
    ----------
    X_prefix : array of shape (n, m): the rows the map shows, at its size (cosine geometry:
        rows are renormalised here)
    Y2d : array of shape (n, 2): the map (euclidean)
    labels : array of shape (n,), optional
    k : neighbours per point, ``1 <= k < n / 2``

    Returns
    -------
    dict
        ``knn_kept``: mean share of each point's ``k`` nearest neighbours in the prefix space
        that are among its ``k`` nearest on the map (1 = all kept); ``trustworthiness``: 1 minus
        the rank-weighted intrusion of map neighbours that are far in the prefix space (1 =
        none, as in scikit-learn's ``trustworthiness``); with labels, ``knn_acc_2d`` and
        ``knn_acc_prefix``: leave-one-out ``k``-NN label accuracy on the map and in the prefix.
    """
    X_prefix, Y2d = np.asarray(X_prefix), np.asarray(Y2d)
    n = len(X_prefix)
    if Y2d.shape[0] != n or X_prefix.ndim != 2 or Y2d.ndim != 2:
        raise ValueError(f"X_prefix (n, m) and Y2d (n, 2) must have n rows each, got "
                         f"{X_prefix.shape} and {Y2d.shape}")  # fmt: skip
    if not 1 <= k < n / 2:
        raise ValueError(f"k must be at least 1 and below n / 2 = {n / 2:g}, got {k}")
    hi_idx, hi_ranks = _neighbours(X_prefix, k, cosine=True)
    lo_idx, _ = _neighbours(Y2d, k, cosine=False)
    kept = np.array([len(np.intersect1d(a, b)) for a, b in zip(hi_idx, lo_idx)]) / k
    penalty, block = 0.0, 256
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        r = hi_ranks(lo, hi, lo_idx[lo:hi])  # (b, k): ranks in the prefix space
        penalty += float(np.clip(r - k, 0, None).sum())
    out = {
        "knn_kept": float(kept.mean()),
        "trustworthiness": 1.0 - 2.0 * penalty / (n * k * (2 * n - 3 * k - 1)),
    }
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        out["knn_acc_2d"] = _knn_label_accuracy(lo_idx, labels)
        out["knn_acc_prefix"] = _knn_label_accuracy(hi_idx, labels)
    return out
