import numpy as np
import pytest

from matryoshka.eval import (
    adaptive_classification,
    cascade,
    select_operating_point,
    softmax_confidence,
    thresholds_for_precision,
)


def test_softmax_confidence_known_values():
    logits = np.array([[[0.0, 0.0], [np.log(3.0), 0.0]]])  # (1, K=2, C=2)
    conf, pred = softmax_confidence(logits)
    np.testing.assert_allclose(conf, [[0.5, 0.75]], atol=1e-6)
    assert pred.tolist() == [[0, 0]]
    with pytest.raises(ValueError, match=r"shape \(N, K, C\)"):
        softmax_confidence(np.zeros((3, 2)))


def test_cascade_stops_at_first_confident_size():
    conf = np.array([[0.9, 0.9, 0.9], [0.2, 0.8, 0.9], [0.1, 0.1, 0.1]])
    pred = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    stage, answer = cascade(conf, pred, [0.5, 0.5, 0.99])
    assert stage.tolist() == [0, 1, 2]  # the last size always answers
    assert answer.tolist() == [1, 5, 9]
    with pytest.raises(ValueError, match="one threshold per size: 3 sizes, got 2"):
        cascade(conf, pred, [0.5, 0.5])


def test_thresholds_for_precision():
    # size 0: the 30 most confident are right, the rest wrong; size 1: always right
    conf = np.stack([np.linspace(1.0, 0.01, 100), np.full(100, 0.5)], axis=1)
    correct = np.stack([np.arange(100) < 30, np.ones(100, bool)], axis=1)
    t = thresholds_for_precision(conf, correct, precision=1.0)
    assert t[0] == pytest.approx(conf[29, 0])
    assert t[1] == pytest.approx(0.5)
    never = thresholds_for_precision(conf, ~correct, precision=0.9)
    assert never[1] > 1.0  # a size that never reaches the precision never answers


def test_adaptive_classification_trades_size_for_accuracy():
    rng = np.random.default_rng(0)
    N, C, dims = 2000, 5, [8, 16, 32]
    y = rng.integers(0, C, N)
    logits = rng.normal(size=(N, 3, C))
    # larger sizes are more often right; a confident small size is right
    for k, strength in enumerate([1.5, 3.0, 6.0]):
        logits[np.arange(N), k, y] += strength * rng.random(N) * 2
    half = N // 2
    res = adaptive_classification(logits[:half], y[:half], logits[half:], y[half:], dims)
    first = [p for p in res["points"] if p["start"] == 8]
    assert [p["precision"] for p in first] == sorted(p["precision"] for p in first)
    sizes = [p["expected_size"] for p in first]
    assert sizes[0] < sizes[-1]  # stricter targets use larger sizes
    assert all(8 <= s <= 32 for s in sizes)
    assert first[-1]["top1"] >= first[0]["top1"]
    assert set(res["fixed"]) == set(dims)
    # each size alone on the held-out half, as the cascade started at that size never stopping
    for k, m in enumerate(dims):
        alone = (logits[:half, k].argmax(1) == y[:half]).mean()
        assert res["holdout_fixed"][m] == pytest.approx(alone)
    assert len(res["points"]) == 3 * len(first)
    # starting at 32 means every example is answered at 32
    assert all(p["expected_size"] == 32 for p in res["points"] if p["start"] == 32)
    front = res["front"]
    assert [p["expected_size"] for p in front] == sorted(p["expected_size"] for p in front)
    assert all(a["top1"] < b["top1"] for a, b in zip(front, front[1:]))


def test_select_operating_point_uses_held_out_numbers_only():
    points = [
        {"holdout_top1": 0.90, "holdout_expected_size": 10.0, "top1": 0.99, "expected_size": 5},
        {"holdout_top1": 0.95, "holdout_expected_size": 20.0, "top1": 0.50, "expected_size": 9},
        {"holdout_top1": 0.96, "holdout_expected_size": 30.0, "top1": 0.60, "expected_size": 1},
    ]
    chosen = select_operating_point({"points": points}, holdout_target=0.953)
    assert chosen is points[1]
    assert select_operating_point({"points": points}, holdout_target=0.99) is None
