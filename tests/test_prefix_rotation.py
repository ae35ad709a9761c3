import numpy as np
import pytest

from matryoshka.train.prefix_rotation import fit_prefix_rotation


def _pairs(seed: int = 0, n: int = 256, d: int = 32, useful: int = 4):
    """Pairs whose matching signal lives in the last ``useful`` directions; the first ones are
    noise as strong as the signal, so truncation to a few dimensions cannot match the pairs."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, useful))
    a = np.concatenate([rng.normal(size=(n, d - useful)), signal], 1)
    p = np.concatenate([rng.normal(size=(n, d - useful)),
                        signal + 0.05 * rng.normal(size=(n, useful))], 1)  # fmt: skip
    return a.astype(np.float32), p.astype(np.float32)


def _top1(a: np.ndarray, p: np.ndarray, m: int) -> float:
    an = a[:, :m] / np.linalg.norm(a[:, :m], axis=1, keepdims=True)
    pn = p[:, :m] / np.linalg.norm(p[:, :m], axis=1, keepdims=True)
    return float(((an @ pn.T).argmax(1) == np.arange(len(a))).mean())


def test_rotation_is_orthogonal_and_keeps_full_size_cosines():
    a, p = _pairs()
    R = fit_prefix_rotation(a, p, sizes=(4, 8), epochs=2, seed=1)
    assert R.shape == (32, 32)
    np.testing.assert_allclose(R @ R.T, np.eye(32), atol=1e-5)
    cos = lambda x, y: (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)  # noqa: E731
    np.testing.assert_allclose(cos(a @ R.T, p @ R.T), cos(a, p), atol=1e-5)


def test_rotation_brings_the_useful_directions_to_the_front():
    a, p = _pairs()
    assert _top1(a, p, 4) < 0.1  # truncation sees only noise
    R = fit_prefix_rotation(a, p, sizes=(4, 8), epochs=30, lr=5e-2, seed=0)
    ta, tp = _pairs(seed=1)  # fresh pairs of the same kind: the rotation generalises
    assert _top1(ta @ R.T, tp @ R.T, 4) > 0.5  # truncation: under 0.1


def test_rotation_is_seeded_and_checks_its_input():
    a, p = _pairs(n=64)
    R1 = fit_prefix_rotation(a, p, sizes=(8,), epochs=1, seed=3)
    R2 = fit_prefix_rotation(a, p, sizes=(8,), epochs=1, seed=3)
    np.testing.assert_array_equal(R1, R2)
    with pytest.raises(ValueError, match="shape"):
        fit_prefix_rotation(a, p[:, :16])
    bad = a.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_prefix_rotation(bad, p)
    with pytest.raises(ValueError, match="below d"):
        fit_prefix_rotation(a, p, sizes=(32,))
    with pytest.raises(ValueError, match="orthogonal"):
        fit_prefix_rotation(a, p, sizes=(8,), start=2 * np.eye(32))
