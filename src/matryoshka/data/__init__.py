"""Data loaders. Imports nothing else of the package.

``load_dataset(name, ...)`` returns ``(train, test, classes)`` for the names the configs use.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from matryoshka.data.digits import load_digits_split

__all__ = ["DATASETS", "load_dataset", "load_digits_split"]

DATASETS = ("digits",)


def load_dataset(
    name: str, seed: int = 0, test_fraction: float = 0.2, **kwargs: Any
) -> tuple[Dataset, Dataset, list[str]]:
    """Train split, test split and class names of a named data set.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    seed : int
        Seeds any random split.
    test_fraction : float
        Held-out share, for data sets without a fixed test split (digits).
    """
    if name == "digits":
        return load_digits_split(test_fraction=test_fraction, seed=seed)
    raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
