"""scikit-learn's built-in digits (1,797 grey 8x8 images, 10 classes): the offline default data."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["load_digits_split"]


def load_digits_split(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """Stratified train/test split of the digits, pixels scaled to [0, 1].

    Returns
    -------
    train, test : TensorDataset of (x float32 of shape (N, 1, 8, 8), y int64 of shape (N,))
    classes : list of str, ``["0", ..., "9"]``
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)  # (1797,)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    train = TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr))
    test = TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te))
    return train, test, [str(c) for c in range(10)]
