"""Seeded, stratified splits: a held-out part set aside first, then a training subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from matryoshka.data import dataset_labels, split_holdout, stratified_indices

LABELS = np.arange(12) % 3  # (12,): classes 0, 1, 2, 0, 1, 2, ...


def _dataset(labels: np.ndarray) -> TensorDataset:
    ds = TensorDataset(torch.zeros(len(labels), 1), torch.as_tensor(labels))
    ds.labels = torch.as_tensor(labels)
    return ds


class _ItemsOnly(Dataset):
    """No ``labels`` or ``targets``: labels come from the items."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(1), i % 2


def test_dataset_labels_from_an_attribute_or_the_items() -> None:
    assert dataset_labels(_dataset(LABELS)).tolist() == LABELS.tolist()
    ds = TensorDataset(torch.zeros(3, 1))
    ds.targets = [2, 0, 1]
    assert dataset_labels(ds).tolist() == [2, 0, 1]
    labels = dataset_labels(_ItemsOnly())
    assert labels.shape == (5,) and labels.tolist() == [0, 1, 0, 1, 0]


def test_stratified_indices_known_answer() -> None:
    picked = stratified_indices(LABELS, 6, seed=0)
    assert picked.tolist() == [0, 5, 6, 7, 10, 11]  # the draws the training runs were made with
    assert np.bincount(LABELS[picked]).tolist() == [2, 2, 2]
    assert np.bincount(LABELS[stratified_indices(LABELS, 1, seed=0)]).tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    ("holdout", "subset", "seed", "train", "held"),
    [
        (6, None, 0, [4, 5, 6, 7, 8, 9], [0, 1, 2, 3, 10, 11]),
        (6, 3, 0, [4, 5, 6], [0, 1, 2, 3, 10, 11]),
        (3, None, 1, [0, 3, 4, 5, 6, 7, 8, 10, 11], [1, 2, 9]),
        (0, 6, 0, [0, 5, 6, 7, 10, 11], []),
        (0, None, 0, list(range(12)), []),
    ],
)
def test_split_holdout_known_answers(
    holdout: int, subset: int | None, seed: int, train: list[int], held: list[int]
) -> None:
    tr, he = split_holdout(_dataset(LABELS), holdout, subset, seed)
    assert tr.indices == train and he.indices == held


def test_parts_are_disjoint_balanced_and_repeatable() -> None:
    labels = np.repeat(np.arange(4), 25)  # (100,): 4 classes of 25
    ds = _dataset(labels)
    train, held = split_holdout(ds, 20, None, seed=3)
    assert not set(train.indices) & set(held.indices)
    assert sorted(train.indices + held.indices) == list(range(100))
    assert np.bincount(labels[held.indices]).tolist() == [5, 5, 5, 5]
    assert np.bincount(labels[train.indices]).tolist() == [20, 20, 20, 20]
    again = split_holdout(ds, 20, None, seed=3)
    assert again[0].indices == train.indices and again[1].indices == held.indices
    assert split_holdout(ds, 20, None, seed=4)[1].indices != held.indices


def test_subset_is_taken_after_the_holdout() -> None:
    labels = np.repeat(np.arange(4), 25)
    ds = _dataset(labels)
    _, held_alone = split_holdout(ds, 20, None, seed=0)
    train, held = split_holdout(ds, 20, 40, seed=0)
    assert held.indices == held_alone.indices  # the subset does not change what is held out
    assert len(train) == 40 and not set(train.indices) & set(held.indices)
    assert np.bincount(labels[train.indices]).tolist() == [10, 10, 10, 10]
    whole, _ = split_holdout(ds, 20, 1000, seed=0)  # a subset beyond the remainder keeps it all
    assert len(whole) == 80


def test_holdout_as_large_as_the_data_is_refused() -> None:
    with pytest.raises(ValueError, match="data.holdout=12 leaves nothing of 12 to train on"):
        split_holdout(_dataset(LABELS), 12, None, seed=0)
    with pytest.raises(ValueError, match="leaves nothing"):
        split_holdout(_dataset(LABELS), 50, 3, seed=0)
