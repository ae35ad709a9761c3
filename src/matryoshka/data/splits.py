"""Seeded, class-balanced splits of a data set: a held-out part set aside, then a training subset.

:func:`split_holdout` is what the training loop uses for ``data.holdout`` (examples set aside, e.g.
to tune adaptive-classification thresholds) and ``data.train_subset`` (a smaller training set).
Both picks are stratified (:func:`stratified_indices`: the classes in equal shares) and drawn
from NumPy generators seeded from ``seed`` alone, so a config gives the same split on every run.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset

__all__ = ["dataset_labels", "split_holdout", "stratified_indices"]


def dataset_labels(ds: Dataset) -> np.ndarray:
    """The label of every example of ``ds``.

    Parameters
    ----------
    ds : Dataset
        Read from its ``labels`` or ``targets`` attribute when it has one, otherwise item by item
        (``int(ds[i][1])``).

    Returns
    -------
    ndarray of shape (N,).
    """
    for attr in ("labels", "targets"):
        if getattr(ds, attr, None) is not None:
            return np.asarray(getattr(ds, attr))
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded pick of about ``n`` indices with the classes in equal shares, sorted.

    Each class present in ``labels`` gives ``max(1, n // n_classes)`` of its indices (all of
    them when it has fewer), drawn with ``np.random.default_rng(seed)`` class by class in sorted
    class order.

    Parameters
    ----------
    labels : ndarray of shape (N,)
    n : int
        How many indices to pick in all: rounded down to a multiple of the number of classes,
        at least one per class.
    seed : int

    Returns
    -------
    int ndarray of shape (M,), sorted, M <= ``max(1, n // n_classes) * n_classes``.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(picked))


def split_holdout(
    ds: Dataset, holdout: int, subset: int | None, seed: int
) -> tuple[Subset, Subset]:
    """(training part, held-out part) of ``ds``: the held-out part is set aside first.

    Parameters
    ----------
    ds : Dataset
        Its labels are read with :func:`dataset_labels`.
    holdout : int
        About how many examples to set aside (stratified, seed ``seed + 1``); 0 sets none aside.
    subset : int, optional
        About how many of the remaining examples to train on (stratified among them, seed
        ``seed``); None, 0 or at least the remainder keeps them all.
    seed : int

    Returns
    -------
    train : Subset
        Indices into ``ds`` in increasing order, none of them held out.
    held_out : Subset
        Indices into ``ds`` in increasing order (empty when ``holdout`` is 0).

    Raises
    ------
    ValueError
        When ``holdout`` is at least ``len(ds)``: nothing would be left to train on.
    """
    labels = dataset_labels(ds)  # (N,)
    idx = np.arange(len(ds))
    held = np.array([], dtype=np.int64)
    if holdout:
        if holdout >= len(ds):
            raise ValueError(f"data.holdout={holdout} leaves nothing of {len(ds)} to train on")
        held = stratified_indices(labels, holdout, seed + 1)
        idx = np.setdiff1d(idx, held)
    if subset and subset < len(idx):
        idx = idx[stratified_indices(labels[idx], subset, seed)]
    return Subset(ds, idx.tolist()), Subset(ds, held.tolist())
