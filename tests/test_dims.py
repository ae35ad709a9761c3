import numpy as np
import pytest
import torch

from matryoshka.dims import (
    interpolated_dims,
    nesting_dims,
    truncate,
    validate_dim,
    validate_dims,
    validate_weights,
)


@pytest.mark.parametrize(
    "d, start, expected",
    [
        (384, 8, [8, 16, 32, 64, 128, 256, 384]),
        (2048, 8, [8, 16, 32, 64, 128, 256, 512, 1024, 2048]),
        (512, 8, [8, 16, 32, 64, 128, 256, 512]),
        (64, 2, [2, 4, 8, 16, 32, 64]),
        (100, 8, [8, 16, 32, 64, 100]),
        (8, 8, [8]),
        (5, 8, [5]),
    ],
)
def test_nesting_dims(d, start, expected):
    assert nesting_dims(d, start) == expected


def test_nesting_dims_errors():
    with pytest.raises(ValueError, match="d must be positive, got d=0"):
        nesting_dims(0)
    with pytest.raises(ValueError, match="start must be positive, got start=-1"):
        nesting_dims(64, start=-1)
    with pytest.raises(ValueError, match="d must be an integer, got 6.5"):
        nesting_dims(6.5)


def test_validate_dims_messages():
    assert validate_dims([8, 16, 32], d=32) == (8, 16, 32)
    with pytest.raises(ValueError, match="strictly ascending, got 16 after 32"):
        validate_dims([8, 32, 16])
    with pytest.raises(ValueError, match="strictly ascending, got 8 after 8"):
        validate_dims([8, 8])
    with pytest.raises(ValueError, match="must be positive, got 0"):
        validate_dims([0, 8])
    with pytest.raises(ValueError, match="must be positive, got -4"):
        validate_dims([-4, 8])
    with pytest.raises(ValueError, match="at most d=64, got 128"):
        validate_dims([8, 128], d=64)
    with pytest.raises(ValueError, match="empty"):
        validate_dims([])
    with pytest.raises(ValueError, match="integer, got 8.5"):
        validate_dims([8.5, 16])


def test_validate_weights_messages():
    assert validate_weights(None, (8, 16)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="got 3 weights .* for 2 sizes"):
        validate_weights([1, 1, 1], (8, 16))
    with pytest.raises(ValueError, match="non-negative, got -1.0"):
        validate_weights([1, -1], (8, 16))
    with pytest.raises(ValueError, match="finite and non-negative, got nan"):
        validate_weights([1, float("nan")], (8, 16))
    with pytest.raises(ValueError, match="at least one weight must be positive"):
        validate_weights([0, 0], (8, 16))


def test_validate_dim():
    assert validate_dim(3, 8) == 3
    with pytest.raises(ValueError, match="between 1 and d=8, got m=9"):
        validate_dim(9, 8)


def test_interpolated_dims():
    assert interpolated_dims([8, 16, 32, 64]) == [12, 24, 48]
    assert interpolated_dims([256, 384]) == [320]
    assert interpolated_dims([1, 2]) == []


def test_truncate_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    x[2] = 0  # a zero vector stays zero instead of becoming NaN
    tn = truncate(x, 4)
    tt = truncate(torch.from_numpy(x), 4).numpy()
    assert tn.shape == (5, 4)
    np.testing.assert_allclose(tn, tt, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(tn[[0, 1, 3, 4]], axis=1), 1.0, atol=1e-6)
    assert np.all(tn[2] == 0)
    raw = truncate(x, 4, normalize=False)
    assert np.shares_memory(raw, x)


def test_truncate_errors():
    with pytest.raises(ValueError, match="between 1 and d=16, got m=17"):
        truncate(np.zeros((2, 16)), 17)
    with pytest.raises(ValueError, match="must be an array"):
        truncate([1.0, 2.0], 1)
