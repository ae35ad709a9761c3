"""Text retrieval and similarity at every size from one encoded matrix.

Corpus and queries are encoded once at full size; each size ``m`` scores the renormalised first
``m`` columns (cosine). Retrieval metrics come from :mod:`matryoshka.eval.retrieval` (BEIR qrels),
search from :func:`matryoshka.index.exact_search`. Results are
``{"method": ..., "dims": {m: {...}}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from matryoshka.dims import truncate, validate_dims
from matryoshka.eval.classification import PCABaseline
from matryoshka.eval.retrieval import retrieval_metrics, run_from_search
from matryoshka.index.exact import exact_search

__all__ = [
    "RETRIEVAL_METRICS",
    "pca_baseline",
    "prefix_cosine",
    "retention",
    "retrieval_per_size",
    "spearman",
    "sts_per_size",
]

RETRIEVAL_METRICS = ("ndcg@10", "recall@100", "map@100")


def _sizes(sizes: Sequence[int], d: int) -> list[int]:
    return list(validate_dims(sorted({int(m) for m in sizes}), d, "sizes"))


def retrieval_per_size(
    xq: np.ndarray,
    xb: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    sizes: Sequence[int],
    method: str = "original",
    metrics: Sequence[str] = RETRIEVAL_METRICS,
    exclude_self: bool = False,
) -> dict[str, Any]:
    """nDCG@10, recall@100 and MAP@100 (by default) of cosine search at every size.

    Queries come first, as in ``faiss.knn(xq, xb, k)`` and sentence-transformers'
    ``semantic_search(queries, corpus)``; keyword calls read the same either way.

    Parameters
    ----------
    xq : ndarray of shape (nq, d)
        Query embeddings, row ``j`` for ``query_ids[j]``.
    xb : ndarray of shape (N, d)
        Corpus embeddings, row ``i`` for ``doc_ids[i]``, encoded once at full size.
    query_ids, doc_ids : sequence of str
    qrels : dict of query id -> dict of doc id -> int relevance
    sizes : sequence of int
        Prefix sizes ``m`` to score, each at most ``d``.
    metrics : sequence of str
        Keys of :func:`~matryoshka.eval.retrieval.retrieval_metrics`, ``"<name>@<k>"``; the
        search depth is the largest ``k``.
    exclude_self : bool
        The queries are documents of the corpus (the same ids): a query's own document is left
        out of its results, so P@k and nDCG@k count other documents only.

    Returns
    -------
    dict
        ``{"method": method, "dims": {m: {"ndcg@10": ..., ...}}, "queries": nq_judged}``
    """
    xb, xq = np.asarray(xb), np.asarray(xq)
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(
            f"xb (N, d) and xq (nq, d) must share d, got shapes {xb.shape} and {xq.shape}"
        )
    if len(doc_ids) != len(xb) or len(query_ids) != len(xq):
        raise ValueError(
            f"one id per row: {len(xb)} corpus rows, {len(doc_ids)} doc ids; "
            f"{len(xq)} query rows, {len(query_ids)} query ids"
        )
    if exclude_self and not set(query_ids) <= set(doc_ids):
        stray = sorted(set(query_ids) - set(doc_ids))[:3]
        raise ValueError(
            f"exclude_self: the queries must be documents of the corpus, but {stray} are not; "
            "leave exclude_self off for separate queries"
        )
    ks = []
    for name in metrics:
        try:
            ks.append(int(name.split("@")[1]))
        except (IndexError, ValueError):
            raise ValueError(f"metric names look like 'ndcg@10', got {name!r}") from None
    k = min(max(ks) + int(exclude_self), len(xb))
    out: dict[int, dict[str, float]] = {}
    queries = 0
    for m in _sizes(sizes, xb.shape[1]):
        # (nq, k) at size m, each prefix renormalised
        D, I = exact_search(xq=xq, xb=xb, k=k, metric="cosine", dim=m)  # noqa: E741
        run = run_from_search(D, I, query_ids, doc_ids)
        if exclude_self:  # a corpus as its own queries: a document does not retrieve itself
            run = {q: {doc: s for doc, s in docs.items() if doc != q} for q, docs in run.items()}
        scores = retrieval_metrics(qrels, run, ks)
        queries = int(scores["queries"])
        out[m] = {name: float(scores[name]) for name in metrics}
    return {"method": method, "dims": out, "queries": queries}


def prefix_cosine(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    """Row-wise cosine of the first ``m`` columns.

    Parameters
    ----------
    a, b : ndarray of shape (n, d)

    Returns
    -------
    ndarray of shape (n,), float64
    """
    a = truncate(np.asarray(a, dtype=np.float64), m)  # (n, m), unit rows (zero rows stay zero)
    b = truncate(np.asarray(b, dtype=np.float64), m)
    return (a * b).sum(1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (ties get their average rank)."""
    from scipy.stats import spearmanr  # scipy comes with scikit-learn, a core dependency

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    return float(spearmanr(x, y).statistic)


def sts_per_size(
    e1: np.ndarray,
    e2: np.ndarray,
    scores: np.ndarray,
    sizes: Sequence[int],
    method: str = "original",
) -> dict[str, Any]:
    """Spearman correlation of prefix cosine similarity with gold scores, at every size.

    Parameters
    ----------
    e1, e2 : ndarray of shape (n, d)
        Embeddings of the first and second sentence of each pair, encoded once.
    scores : ndarray of shape (n,)
        Gold similarity (STS-B: 0 to 5).

    Returns
    -------
    dict
        ``{"method": method, "dims": {m: {"spearman": ...}}}``
    """
    e1, e2, scores = np.asarray(e1), np.asarray(e2), np.asarray(scores)
    if e1.shape != e2.shape or e1.ndim != 2 or scores.shape != (len(e1),):
        raise ValueError(
            f"e1 and e2 must both be (n, d) and scores (n,), got {e1.shape}, {e2.shape}, "
            f"{scores.shape}"
        )
    dims = {
        m: {"spearman": spearman(prefix_cosine(e1, e2, m), scores)}
        for m in _sizes(sizes, e1.shape[1])
    }
    return {"method": method, "dims": dims}


def pca_baseline(fit_on: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """PCA of full-size embeddings fitted on ``fit_on`` (e.g. the corpus), applied to each array.

    The size-``m`` PCA embedding is the first ``m`` columns of the output, so the result goes
    through :func:`retrieval_per_size` or :func:`sts_per_size` like any Matryoshka embedding.

    Parameters
    ----------
    fit_on : ndarray of shape (N, d)
    *arrays : ndarray of shape (n_i, d)

    Returns
    -------
    list of ndarray of shape (n_i, min(N, d)), float32, one per array (``fit_on`` itself when
    none are given)
    """
    pca = PCABaseline().fit(fit_on)
    return [pca.transform(a) for a in (arrays or (fit_on,))]


def retention(
    result: Mapping[str, Any], metric: str = "ndcg@10", ref: int | None = None
) -> dict[int, float]:
    """Each size's score as a fraction of the score at ``ref`` (default the largest size)."""
    dims = {int(m): v for m, v in result["dims"].items()}
    ref = max(dims) if ref is None else int(ref)
    base = dims[ref][metric]
    return {m: (v[metric] / base if base else float("nan")) for m, v in sorted(dims.items())}
