"""Retrieval metrics against hand-computed values (trec_eval definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matryoshka.eval.retrieval import (
    knn_label_accuracy,
    recall_at_k,
    retrieval_metrics,
    run_from_search,
)


def test_recall_at_k():
    gt = np.array([[1, 2, 3], [4, 5, 6]])
    I = np.array([[3, 9, 1], [-1, -1, -1]])  # noqa: E741
    assert recall_at_k(I, gt) == pytest.approx(2 / 6)
    assert recall_at_k(I, gt, k=1) == 0.0
    assert recall_at_k(gt, gt) == 1.0
    with pytest.raises(ValueError, match="k must be between 1 and 3"):
        recall_at_k(I, gt, k=4)


def test_metrics_by_hand():
    qrels = {"q1": {"a": 2, "b": 1, "c": 0}, "q2": {"x": 1}, "q3": {"z": 0}}
    run = {"q1": {"a": 0.1, "b": 0.9, "d": 0.5}, "q2": {"y": 2.0, "x": 1.0}}
    m = retrieval_metrics(qrels, run, ks=(1, 2, 3))
    assert m["queries"] == 2  # q3 has no relevant document
    # q1 ranking: b (1), d (0), a (2); ideal: 2, 1
    dcg3 = 1 / math.log2(2) + 0 + 2 / math.log2(4)
    idcg3 = 2 / math.log2(2) + 1 / math.log2(3)
    # q2 ranking: y (0), x (1); ideal: 1
    ndcg2_q2 = (1 / math.log2(3)) / 1
    assert m["ndcg@3"] == pytest.approx((dcg3 / idcg3 + ndcg2_q2) / 2)
    assert m["ndcg@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["precision@1"] == pytest.approx((1 + 0) / 2)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["recall@3"] == pytest.approx((1 + 1) / 2)
    # AP@3 q1: relevant at ranks 1 and 3 -> (1/1 + 2/3) / 2; q2: rank 2 -> (1/2) / 1
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert m["map@1"] == pytest.approx((1 / 2 + 0) / 2)


def test_a_judged_query_without_results_is_left_out_or_counted_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 3, "c": 1}}
    run = {"q1": {"a": 1.0}}
    skip = retrieval_metrics(qrels, run, ks=[10])  # BEIR / MTEB: the mean over q1 alone
    assert skip["queries"] == 1 and skip["ndcg@10"] == pytest.approx(1.0)
    zero = retrieval_metrics(qrels, run, ks=[10], missing="zero")  # trec_eval -c
    assert zero["queries"] == 2 and zero["ndcg@10"] == pytest.approx(0.5)
    assert retrieval_metrics(qrels, {}, ks=[10])["queries"] == 0
    perfect = {"q1": {"a": 1.0}, "q2": {"b": 2.0, "c": 1.0}}
    m = retrieval_metrics(qrels, perfect, ks=[10])
    assert m["ndcg@10"] == pytest.approx(1.0) and m["map@10"] == pytest.approx(1.0)
    assert m["recall@10"] == pytest.approx(1.0) and m["precision@10"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="missing must be one of"):
        retrieval_metrics(qrels, run, missing="ignore")
    with pytest.raises(ValueError, match="scores document 'a' as NaN"):
        retrieval_metrics(qrels, {"q1": {"a": float("nan")}})


def _random_case(seed: int):
    """Graded judgements and a run with tied scores, missing queries and unjudged queries."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i:02d}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(30):
        judged = rng.choice(docs, size=rng.integers(1, 8), replace=False)
        qrels[f"q{q}"] = {d: int(rng.integers(-1, 4)) for d in judged}  # some all-nonrelevant
        if q % 7 == 3:
            continue  # judged, no results
        retrieved = rng.choice(docs, size=rng.integers(0, 25), replace=False)
        run[f"q{q}"] = {d: float(rng.integers(0, 6)) / 5 for d in retrieved}  # many ties
    run["unjudged"] = {"d00": 1.0}
    return qrels, run


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("missing", ["skip", "zero"])
def test_agrees_with_pytrec_eval(seed, missing):
    import pytrec_eval  # pytrec-eval-terrier, a dev dependency

    qrels, run = _random_case(seed)
    ks = (1, 3, 10, 100)
    ours = retrieval_metrics(qrels, run, ks=ks, missing=missing)
    ref_run = dict(run)
    if missing == "zero":  # trec_eval -c: a judged query without results is scored as empty
        ref_run.update({q: {} for q in qrels if q not in run})
    names = {f"{m}.{k}" for k in ks for m in ("ndcg_cut", "map_cut", "P", "recall")}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, names).evaluate(ref_run)
    assert ours["queries"] == len(per_query)
    assert len(per_query) == (26 if missing == "skip" else 30)
    for ours_name, theirs in (("ndcg", "ndcg_cut"), ("map", "map_cut"), ("precision", "P"),
                              ("recall", "recall")):  # fmt: skip
        for k in ks:
            mean = sum(v[f"{theirs}_{k}"] for v in per_query.values()) / len(per_query)
            assert abs(ours[f"{ours_name}@{k}"] - mean) <= 1e-9, (ours_name, k)


def test_run_from_search_feeds_the_metrics():
    D = np.array([[0.1, 0.5], [3.0, -np.inf]], np.float32)
    I = np.array([[1, 0], [2, -1]])  # noqa: E741
    run = run_from_search(D, I, ["q1", "q2"], ["d0", "d1", "d2"])
    assert run == {"q1": {"d1": pytest.approx(0.1), "d0": 0.5}, "q2": {"d2": 3.0}}
    run = run_from_search(D, I, ["q1", "q2"], ["d0", "d1", "d2"], metric="l2")
    assert run["q2"]["d2"] == -3.0


def test_knn_label_accuracy_at_a_prefix():
    xb = np.array([[1, 0, 0], [0, 1, 5], [-1, 0, 0]], np.float32)
    yb = np.array([0, 1, 2])
    xq = np.array([[0.9, 0.1, 0], [0.1, 1, -9]], np.float32)
    assert knn_label_accuracy(xq, np.array([0, 1]), xb, yb) == 0.5  # at full size q2 -> row 0
    assert knn_label_accuracy(xq, np.array([0, 1]), xb, yb, dim=2) == 1.0
    with pytest.raises(ValueError, match="one label per vector"):
        knn_label_accuracy(xq, np.array([0, 1]), xb, yb[:2])
