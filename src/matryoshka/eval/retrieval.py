"""Retrieval metrics: recall@k against exact search, and nDCG@k, mAP@k, precision@k, recall@k
against relevance judgements in the BEIR layout, and 1-NN label accuracy.

Relevance judgements (``qrels``) and runs follow BEIR and ``pytrec_eval``: ``qrels`` is
``{query_id: {doc_id: relevance}}`` (relevance an int, >= 1 means relevant) and a run is
``{query_id: {doc_id: score}}``. A document's rank in a run is by score, higher first (ties by
document id, descending, as in ``trec_eval``). Definitions follow ``trec_eval``:

- nDCG@k: ``sum rel_i / log2(i + 1)`` over the first ``k`` ranks (negative relevance counts 0),
  over the same for the ideal ordering of the judged documents (gain is the relevance itself, as
  in BEIR's numbers); 0 for a query with no relevant document;
- mAP@k (``map_cut``): the sum of precision@i at each relevant document within the first ``k``,
  divided by the number of relevant documents;
- precision@k: relevant documents in the first ``k``, over ``k``;
- recall@k: relevant documents in the first ``k``, over the number of relevant documents.

Averaging, as BEIR and MTEB do through ``pytrec_eval``: each metric is the mean over the queries
that have both judgements and an entry in the run. A judged query the run does not mention is left
out of the mean; ``missing="zero"`` applies ``trec_eval -c`` instead, which counts it as 0 and so
averages over every judged query. Queries in the run without judgements are ignored either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from matryoshka.index.metrics import recall_at_k

__all__ = [
    "recall_at_k",
    "retrieval_metrics",
    "run_from_search",
    "knn_label_accuracy",
]


def _ranked(scores: Mapping[str, float]) -> list[str]:
    # score descending, ties by doc id descending (trec_eval's order)
    return [doc for doc, _ in sorted(scores.items(), key=lambda t: (t[1], t[0]), reverse=True)]


def _query_metrics(
    judged: Mapping[str, int], scores: Mapping[str, float], ks: Sequence[int]
) -> dict[str, float]:
    """Every metric at every cut-off for one query (trec_eval's definitions)."""
    relevant = {doc for doc, rel in judged.items() if rel > 0}
    ranked = _ranked(scores)
    ideal = sorted((rel for rel in judged.values() if rel > 0), reverse=True)
    out = {}
    for k in ks:
        top = ranked[:k]
        dcg = sum(max(judged.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(top))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        hits, ap = 0, 0.0
        for i, doc in enumerate(top):
            if doc in relevant:
                hits += 1
                ap += hits / (i + 1)
        n_rel = max(len(relevant), 1)  # no relevant document: every metric is 0
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"map@{k}"] = ap / n_rel
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_rel
    return out


MISSING_RULES = ("skip", "zero")


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    ks: Iterable[int] = (1, 10, 100),
    missing: str = "skip",
) -> dict[str, float]:
    """nDCG@k, mAP@k, precision@k and recall@k, averaged over queries as BEIR and MTEB do.

    Parameters
    ----------
    qrels : dict of query id -> dict of doc id -> int relevance
    run : dict of query id -> dict of doc id -> float score
    ks : iterable of int
    missing : {"skip", "zero"}
        A judged query absent from ``run``: ``"skip"`` leaves it out of the mean (BEIR, MTEB,
        ``pytrec_eval``); ``"zero"`` counts it as 0 (``trec_eval -c``).

    Returns
    -------
    dict
        ``{"ndcg@10": ..., "map@10": ..., "precision@10": ..., "recall@10": ..., ...}`` plus
        ``"queries"``, the number of queries averaged over.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be one of {MISSING_RULES}, got {missing!r}")
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("ndcg", "map", "precision", "recall")}
    nq = 0
    for qid, judged in qrels.items():
        if qid not in run and missing == "skip":
            continue
        scores = run.get(qid, {})
        bad = next((doc for doc, s in scores.items() if math.isnan(s)), None)
        if bad is not None:
            raise ValueError(f"run for query {qid!r} scores document {bad!r} as NaN")
        nq += 1
        for key, value in _query_metrics(judged, scores, ks).items():
            sums[key] += value
    out: dict[str, float] = {key: (v / nq if nq else 0.0) for key, v in sums.items()}
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
    xq: np.ndarray,
    yq: np.ndarray,
    xb: np.ndarray,
    yb: np.ndarray,
    dim: int | None = None,
    metric: str = "cosine",
    exclude_self: bool = False,
) -> float:
    """1-NN label accuracy: how often a query's nearest database vector at size ``dim`` shares its
    label. Queries first, as in ``faiss.knn(xq, xb, k)``.

    Parameters
    ----------
    xq : ndarray of shape (nq, d)
    yq : ndarray of shape (nq,)
    xb : ndarray of shape (N, d)
    yb : ndarray of shape (N,)
    dim : int, optional
        Prefix size (default ``d``); cosine renormalises the prefix.
    exclude_self : bool
        The queries are the database (same rows, same order): row ``i``'s own match is skipped,
        so its nearest neighbour is another row (leave-one-out).
    """
    from matryoshka.index.exact import exact_search

    yb, yq = np.asarray(yb), np.asarray(yq)
    if len(yb) != len(xb) or len(yq) != len(xq):
        raise ValueError(
            f"one label per vector: {len(xb)} vectors, {len(yb)} labels; "
            f"{len(xq)} queries, {len(yq)} labels"
        )
    if exclude_self and len(xq) != len(xb):
        raise ValueError(f"exclude_self: queries ({len(xq)}) must be the database ({len(xb)})")
    k = 2 if exclude_self else 1
    _, I = exact_search(xq=xq, xb=xb, k=k, metric=metric, dim=dim)  # noqa: E741  (nq, k)
    if exclude_self:  # the first hit that is not the query itself (ties may put it second)
        own = I[:, 0] == np.arange(len(xq))
        I = np.where(own[:, None], I[:, 1:2], I[:, :1])  # noqa: E741
    return float(np.mean(yb[I[:, 0]] == yq)) if len(yq) else 0.0
