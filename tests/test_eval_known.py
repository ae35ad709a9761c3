"""Known answers for per-size classification scores: hand-set heads, hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matryoshka.eval import evaluate_embeddings, head_top1, knn1_top1, linear_probe_top1
from matryoshka.nn import MatryoshkaHead

# Three classes in three dimensions. Train split: one vector per class (the 1-NN database).
XTR = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0]], np.float32)
YTR = np.array([0, 1, 2])
# Test split. Size 1 sees only the sign of column 0, so the second query looks like class 0.
XTE = np.array([[2, 0.1, 0], [0.1, 3, 0], [-1, -0.5, 0]], np.float32)
YTE = np.array([0, 2, 1])
W = [[1, 0, 0], [-1, 0, 0], [0, 1, 0]]  # class scores (x0, -x0, x1)


def set_head(efficient: bool) -> MatryoshkaHead:
    """MRL (classifiers at sizes 1 and 3) or MRL-E (one shared weight), weights set by hand."""
    head = MatryoshkaHead(3, 3, dims=[1, 3], efficient=efficient)
    with torch.no_grad():
        head.bias.zero_()
        if efficient:
            head.weight.copy_(torch.tensor(W, dtype=torch.float32))
        else:
            head.weight[0] = torch.tensor(W, dtype=torch.float32) * head.mask[0]  # column 0 only
            head.weight[1] = torch.tensor(W, dtype=torch.float32)
    return head


def test_head_top1_mrl_scores_trained_sizes_only():
    # size 1: scores (x0, -x0, 0): right, wrong (class 0 for a class-2 query), right
    # size 3: scores (x0, -x0, x1): all three right
    assert head_top1(set_head(False), XTE, YTE, [1, 2, 3]) == pytest.approx({1: 2 / 3, 3: 1.0})


def test_head_top1_mrl_e_scores_every_size():
    got = head_top1(set_head(True), XTE, YTE, [1, 2, 3])
    assert got == pytest.approx({1: 2 / 3, 2: 1.0, 3: 1.0})


def test_knn1_top1_at_each_prefix():
    # size 1 (cosine of one column: its sign): query 2 finds class 0; from size 2 all are right
    got = knn1_top1(XTR, YTR, XTE, YTE, [1, 2, 3])
    assert got == pytest.approx({1: 2 / 3, 2: 1.0, 3: 1.0})


def test_linear_probe_uses_only_the_prefix():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    X = np.zeros((40, 2), np.float32)  # column 0 carries nothing (constant), column 1 the class
    X[:, 1] = np.where(y == 0, 1.0, -1.0) * rng.uniform(1, 2, 40)
    got = linear_probe_top1(X, y, X[::-1].copy(), y[::-1].copy(), [1, 2])
    # size 1: every test point looks the same, so one class is predicted for all: half right
    assert got == {1: 0.5, 2: 1.0}


def test_evaluate_embeddings_assembles_every_size():
    res = evaluate_embeddings("mrl", XTR, YTR, XTE, YTE, [3, 1, 2], head=set_head(False),
                              extra={"note": "hand-made"})  # fmt: skip
    assert res["method"] == "mrl" and res["note"] == "hand-made"
    assert list(res["dims"]) == [1, 2, 3]  # sorted; MRL has no head at 2
    expected = {1: {"top1": 2 / 3, "knn1": 2 / 3}, 2: {"knn1": 1.0}, 3: {"top1": 1.0, "knn1": 1.0}}
    assert res["dims"] == {m: pytest.approx(v) for m, v in expected.items()}
    probe = evaluate_embeddings("pca", XTR, YTR, XTE, YTE, [1], probe=True, knn=False)
    assert set(probe["dims"][1]) == {"top1"}


# two tight pairs, each pair split between labels 0 and 1: a row's nearest other row is its
# partner, of the other label
_PAIRS = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]], dtype=np.float32)
_LABELS = np.array([0, 1, 0, 1])


def test_knn_with_the_corpus_as_queries_excludes_each_row_itself():
    from matryoshka.eval.retrieval import knn_label_accuracy

    assert knn_label_accuracy(_PAIRS, _LABELS, _PAIRS, _LABELS) == 1.0  # each row finds itself
    assert knn_label_accuracy(_PAIRS, _LABELS, _PAIRS, _LABELS, exclude_self=True) == 0.0
    got = knn1_top1(_PAIRS, _LABELS, _PAIRS, _LABELS, sizes=[1, 2], exclude_self=True)
    assert got[2] == 0.0
    with pytest.raises(ValueError, match="must be the database"):
        knn_label_accuracy(_PAIRS[:3], _LABELS[:3], _PAIRS, _LABELS, exclude_self=True)


def test_retrieval_with_the_corpus_as_queries_excludes_each_document_itself():
    from matryoshka.eval.text import retrieval_per_size

    ids = ["a", "b", "c", "d"]
    qrels = {"a": {"b": 1}, "b": {"a": 1}, "c": {"d": 1}, "d": {"c": 1}}
    kw = {"sizes": [2], "metrics": ["ndcg@10", "precision@1"]}
    with_self = retrieval_per_size(_PAIRS, _PAIRS, ids, ids, qrels, **kw)["dims"][2]
    without = retrieval_per_size(_PAIRS, _PAIRS, ids, ids, qrels, exclude_self=True, **kw)
    assert with_self["precision@1"] == 0.0  # every query's first hit is itself
    assert without["dims"][2] == {"ndcg@10": 1.0, "precision@1": 1.0}  # then its partner
    with pytest.raises(ValueError, match="must be documents of the corpus"):
        retrieval_per_size(_PAIRS, _PAIRS, ["q", *ids[1:]], ids, qrels, [2], exclude_self=True)


def test_an_ff_model_reports_its_own_size_only():
    from matryoshka.nn import FixedFeatureHead

    head = FixedFeatureHead(3, 3)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor(W, dtype=torch.float32))
        head.linear.bias.zero_()
    # its classifier was trained at size 3 only: sizes 1 and 2 would be the model cut short
    assert head_top1(head, XTE, YTE, [1, 2, 3]) == {3: 1.0}
    assert not head.can_classify(2) and head.can_classify(3)
