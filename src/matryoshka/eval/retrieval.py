"""Retrieval metrics: recall@k against exact search, and nDCG@k, mAP@k, precision@k, recall@k
against relevance judgements in the BEIR layout, and 1-NN label accuracy.

Relevance judgements (``qrels``) and runs follow BEIR and ``pytrec_eval``: ``qrels`` is
``{query_id: {doc_id: relevance}}`` (relevance an int, > 0 means relevant) and a run is
``{query_id: {doc_id: score}}``. A document's rank in a run is by score, higher first (ties by
document id, descending, as in ``trec_eval``). Definitions follow ``trec_eval``:

- nDCG@k: ``sum rel_i / log2(i + 1)`` over the first ``k`` ranks, over the same for the ideal
  ordering of the judged documents (gain is the relevance itself, as in BEIR's numbers);
- mAP@k (``map_cut``): the sum of precision@i at each relevant document within the first ``k``,
  divided by the number of relevant documents;
- precision@k: relevant documents in the first ``k``, over ``k``;
- recall@k: relevant documents in the first ``k``, over the number of relevant documents.

Each metric is the mean over the queries that have at least one relevant document; a query with
no run counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "recall_at_k",
    "retrieval_metrics",
    "run_from_search",
    "knn_label_accuracy",
]


def recall_at_k(I: np.ndarray, I_true: np.ndarray, k: int | None = None) -> float:  # noqa: E741
    """Fraction of the exact top-``k`` ids found in the first ``k`` ids of an approximate result.

    Parameters
    ----------
    I : ndarray of shape (nq, >= k), int
        Ids returned by the search under test (``-1`` for none).
    I_true : ndarray of shape (nq, >= k), int
        Ids of exact (e.g. full-size) search, best first.
    k : int, optional
        Default the width of ``I_true``.

    Returns
    -------
    float
        ``|I[:, :k] & I_true[:, :k]| / |I_true[:, :k]|`` summed over queries (``-1`` ignored).
    """
    I, I_true = np.asarray(I), np.asarray(I_true)  # noqa: E741
    if I.ndim != 2 or I_true.ndim != 2 or I.shape[0] != I_true.shape[0]:
        raise ValueError(
            f"I and I_true must be (nq, k) with equal nq, got {I.shape}, {I_true.shape}"
        )
    k = I_true.shape[1] if k is None else int(k)
    if k < 1 or k > I.shape[1] or k > I_true.shape[1]:
        raise ValueError(f"k must be between 1 and {min(I.shape[1], I_true.shape[1])}, got k={k}")
    found = total = 0
    for a, b in zip(I[:, :k], I_true[:, :k], strict=True):
        b = b[b >= 0]
        found += len(np.intersect1d(a[a >= 0], b))
        total += len(b)
    return found / total if total else 0.0


def _ranked(scores: Mapping[str, float]) -> list[str]:
    # score descending, ties by doc id descending (trec_eval's order)
    return [doc for doc, _ in sorted(scores.items(), key=lambda t: (t[1], t[0]), reverse=True)]


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    ks: Iterable[int] = (1, 10, 100),
) -> dict[str, float]:
    """nDCG@k, mAP@k, precision@k and recall@k, averaged over the judged queries.

    Parameters
    ----------
    qrels : dict of query id -> dict of doc id -> int relevance
    run : dict of query id -> dict of doc id -> float score
    ks : iterable of int

    Returns
    -------
    dict
        ``{"ndcg@10": ..., "map@10": ..., "precision@10": ..., "recall@10": ..., ...}`` plus
        ``"queries"``, the number of queries averaged over.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("ndcg", "map", "precision", "recall")}
    nq = 0
    for qid, judged in qrels.items():
        relevant = {doc for doc, rel in judged.items() if rel > 0}
        if not relevant:
            continue
        nq += 1
        ranked = _ranked(run.get(qid, {}))
        ideal = sorted((rel for rel in judged.values() if rel > 0), reverse=True)
        for k in ks:
            top = ranked[:k]
            gains = [judged.get(doc, 0) if judged.get(doc, 0) > 0 else 0 for doc in top]
            dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
            idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
            hits, ap = 0, 0.0
            for i, doc in enumerate(top):
                if doc in relevant:
                    hits += 1
                    ap += hits / (i + 1)
            sums[f"ndcg@{k}"] += dcg / idcg
            sums[f"map@{k}"] += ap / len(relevant)
            sums[f"precision@{k}"] += hits / k
            sums[f"recall@{k}"] += hits / len(relevant)
    out = {key: (v / nq if nq else 0.0) for key, v in sums.items()}
    out["queries"] = nq
    return out


def run_from_search(
    D: np.ndarray,
    I: np.ndarray,  # noqa: E741
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    metric: str = "cosine",
) -> dict[str, dict[str, float]]:
    """Turn a search result into a BEIR run.

    Parameters
    ----------
    D, I : ndarray of shape (nq, k)
        Scores and row ids from ``search``; ``-1`` ids are dropped.
    query_ids : sequence of str, length nq
    doc_ids : sequence of str
        The document id of every database row.
    metric : str
        For ``"l2"`` distances are negated so that higher is better.
    """
    D, I = np.asarray(D), np.asarray(I)  # noqa: E741
    if D.shape != I.shape or D.shape[0] != len(query_ids):
        raise ValueError(
            f"D {D.shape} and I {I.shape} must match and have one row per query id "
            f"({len(query_ids)})"
        )
    sign = -1.0 if metric == "l2" else 1.0
    return {
        str(q): {str(doc_ids[i]): sign * float(s) for s, i in zip(ds, ids, strict=True) if i >= 0}
        for q, ds, ids in zip(query_ids, D, I, strict=True)
    }


def knn_label_accuracy(
    xb: np.ndarray,
    yb: np.ndarray,
    xq: np.ndarray,
    yq: np.ndarray,
    dim: int | None = None,
    metric: str = "cosine",
) -> float:
    """1-NN label accuracy: how often a query's nearest database vector at size ``dim`` shares its
    label.

    Parameters
    ----------
    xb : ndarray of shape (N, d)
    yb : ndarray of shape (N,)
    xq : ndarray of shape (nq, d)
    yq : ndarray of shape (nq,)
    dim : int, optional
        Prefix size (default ``d``); cosine renormalises the prefix.
    """
    from matryoshka.index.exact import exact_search

    yb, yq = np.asarray(yb), np.asarray(yq)
    if len(yb) != len(xb) or len(yq) != len(xq):
        raise ValueError(
            f"one label per vector: {len(xb)} vectors, {len(yb)} labels; "
            f"{len(xq)} queries, {len(yq)} labels"
        )
    _, I = exact_search(xb, xq, 1, metric, dim=dim)  # noqa: E741
    return float(np.mean(yb[I[:, 0]] == yq)) if len(yq) else 0.0
