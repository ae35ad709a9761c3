"""The int8 and binary codecs of ``Storage``: error bounds and exact decodings, on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matryoshka.index.storage import Storage


def decoded(store: Storage, m: int) -> list[np.ndarray]:
    """The stored rows at size ``m`` through each way of reading them: rows, take and gather."""
    n = len(store)
    pos = np.arange(n)
    out = [store.rows(0, n, m), store.take(pos, m)]
    cols = []
    for i, (lo, hi) in enumerate(store.bounds):
        if lo < m:
            buf = torch.empty(n, hi - lo)
            cols.append(store.gather(i, torch.from_numpy(pos), buf).numpy()[:, : min(hi, m) - lo])
    out.append(np.concatenate(cols, axis=1))
    return out


def test_int8_known_answer():
    store = Storage(2, "int8")
    store.append(np.array([[1.27, -2.54], [-0.633, 0.013]], np.float32))  # scale (0.01, 0.02)
    np.testing.assert_allclose(store.params[0], [0.01, 0.02], rtol=1e-6)
    np.testing.assert_array_equal(store.panels[0], [[127, -127], [-63, 1]])  # -63.3, 0.65 rounded
    for x in decoded(store, 2):
        np.testing.assert_allclose(x, [[1.27, -2.54], [-0.63, 0.02]], rtol=1e-6)


@pytest.mark.parametrize("d", [5, 40])  # one panel; two panels (0:32, 32:40)
def test_int8_decodes_within_half_a_step_and_clips_outside_the_fitted_range(d):
    rng = np.random.default_rng(0)
    fit = (rng.standard_normal((200, d)) * np.linspace(0.1, 3, d)).astype(np.float32)
    store = Storage(d, "int8")
    store.append(fit)  # learns scale_j = max |x_j| / 127 from these rows
    scale = np.abs(fit).max(axis=0) / 127
    np.testing.assert_allclose(store.params[0], scale, rtol=1e-6)
    inside = (rng.uniform(-1, 1, (100, d)) * np.abs(fit).max(axis=0)).astype(np.float32)
    outside = np.concatenate([3 * np.abs(fit).max(axis=0, keepdims=True)] * 2)  # (2, d)
    outside[1] *= -1
    store.append(np.concatenate([inside, outside]).astype(np.float32))
    for x in decoded(store, d):
        err = np.abs(x[:300] - np.concatenate([fit, inside]))  # (300, d)
        assert (err <= scale / 2 * (1 + 1e-5)).all()  # half a step, up to float rounding
        np.testing.assert_allclose(x[300:], [127 * scale, -127 * scale], rtol=1e-6)  # clipped


def test_binary_known_answer():
    store = Storage(2, "binary")
    store.append(np.array([[0, 4], [2, -4]], np.float32))  # t = (1, 0), a = (1, 4)
    np.testing.assert_array_equal(store.params, [[1, 0], [1, 4]])
    store.append(np.array([[1, 0], [5, -0.5]], np.float32))  # x == t is not above it
    for x in decoded(store, 2):
        np.testing.assert_array_equal(x, [[0, 4], [2, -4], [0, -4], [2, -4]])


@pytest.mark.parametrize("d", [7, 45])  # one panel; two panels, widths 32 and 13 bits
def test_binary_decodes_to_t_minus_or_plus_a_by_the_side_of_t(d):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((300, d)) * np.linspace(0.2, 2, d) + np.linspace(-1, 1, d)).astype(
        np.float32
    )
    store = Storage(d, "binary")
    store.append(x)
    t, a = x.mean(axis=0), np.abs(x - x.mean(axis=0)).mean(axis=0)
    np.testing.assert_allclose(store.params, [t, a], rtol=1e-5, atol=1e-6)
    t, a = store.params
    above = x > t  # (300, d): the side each value was coded on
    assert above.any(axis=0).all() and (~above).any(axis=0).all()  # both sides in every column
    for m in (d, 3):
        tm, am, side = t[:m], a[:m], above[:, :m]
        for y in decoded(store, m):
            np.testing.assert_array_equal(y, np.where(side, y.max(axis=0), tm - am))  # two values
            # the lower is t - a exactly; the upper is decoded as (t - a) + 2a, which float32
            # may round one unit in the last place away from t + a
            np.testing.assert_allclose(y.max(axis=0), tm + am, rtol=1e-6, atol=1e-7)
