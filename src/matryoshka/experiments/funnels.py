"""Funnels measured on real queries: quality, multiply-adds and time against full-size search."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from matryoshka.eval import retrieval_metrics, run_from_search
from matryoshka.index import MatryoshkaIndex, check_funnel, format_funnel

__all__ = ["funnel_macs", "funnel_table"]


def funnel_macs(n: int, stages: Sequence[tuple[int, int]]) -> int:
    """Multiply-adds per query of exact funnel ``[(m1, k1), (m2, k2), ...]`` over ``n`` vectors:
    ``n m1 + k1 m2 + k2 m3 + ...``."""
    return int(n * stages[0][0] + sum(k * m for (_, k), (m, _) in zip(stages, stages[1:])))


def _time(index: MatryoshkaIndex, xq: np.ndarray, kw: dict[str, Any], repeats: int):
    """Best time over ``repeats`` of all queries in one batch and one query at a time."""
    best = best_one = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        D, I = index.search(xq, **kw)  # noqa: E741  all queries in one batch
        best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(len(xq)):  # one query at a time, as a server answers them
            index.search(xq[i : i + 1], **kw)
        best_one = min(best_one, time.perf_counter() - t0)
    return D, I, best, best_one


def funnel_table(
    xq: np.ndarray,
    xb: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    funnels: Sequence[Sequence[Sequence[int]]],
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """nDCG@10, multiply-adds per query and measured time of full-size search and each funnel.

    Parameters
    ----------
    xq : ndarray of shape (nq, d)
        Queries, row ``j`` for ``query_ids[j]`` (queries first, as in ``faiss.knn``).
    xb : ndarray of shape (N, d)
        Corpus, row ``i`` for ``doc_ids[i]``.
    qrels : dict of query id -> dict of doc id -> relevance
    funnels : list of funnels ``[(m1, k1), (m2, k2), ...]``, each returning at least 10
    repeats : the time is the best of this many runs

    Returns
    -------
    list of dict with keys ``funnel``, ``ndcg@10``, ``macs`` (:func:`funnel_macs`; ``N d`` for
    full size), ``cost_ratio`` (full / this), ``ms_per_query``, ``speedup`` (full time / this),
    the same two one query at a time (``ms_one_query``, ``speedup_one_query``); full size first
    """
    n, d = xb.shape
    index = MatryoshkaIndex(d, metric="cosine", precision="float32").add(xb)
    rows = []
    for funnel in [None, *funnels]:
        stages = [(d, 10)] if funnel is None else check_funnel(funnel, d)
        if stages[-1][1] < 10:
            raise ValueError(f"a funnel must return at least 10 results for nDCG@10, got {funnel}")
        kw: dict[str, Any] = {"k": 10, "dim": d} if funnel is None else {"funnel": stages}
        D, I, best, best_one = _time(index, xq, kw, repeats)  # noqa: E741
        run = run_from_search(D, I, query_ids, doc_ids)
        rows.append({
            "funnel": "full" if funnel is None else format_funnel(stages),
            "ndcg@10": retrieval_metrics(qrels, run, (10,))["ndcg@10"],
            "macs": funnel_macs(n, stages),
            "ms_per_query": 1000 * best / max(1, len(xq)),
            "ms_one_query": 1000 * best_one / max(1, len(xq)),
        })  # fmt: skip
    for r in rows:
        r["cost_ratio"] = rows[0]["macs"] / r["macs"]
        r["speedup"] = rows[0]["ms_per_query"] / max(r["ms_per_query"], 1e-9)
        r["speedup_one_query"] = rows[0]["ms_one_query"] / max(r["ms_one_query"], 1e-9)
    return rows
