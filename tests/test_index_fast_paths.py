"""The fast paths of a search, each checked against exact search in float64 numpy.

One to four queries are scored by numpy products over the stored float32 panels in one pass; a
small batch of queries scores the panels in place (no copy of the rows); a rerank of float32
panels scores each candidate where it is stored through faiss (no gathered copy). Each must rank
exactly as the copying paths do, for every metric, at sizes that cut a panel, with padding, zero
vectors, ties and one query at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matryoshka.index import MatryoshkaIndex, recall_at_k
from matryoshka.index.exact import prepare_queries
from matryoshka.index.scoring import _rerank_gathered, rerank

METRICS = ("cosine", "ip", "l2")


def mrl_like(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, d))
    x = centers[rng.integers(0, 16, n)] + 0.7 * rng.standard_normal((n, d))
    return (x * (1.0 + np.arange(d)) ** -0.5).astype(np.float32)


def reference(xq: np.ndarray, xb: np.ndarray, k: int, metric: str, m: int):
    b, q = xb[:, :m].astype(np.float64), xq[:, :m].astype(np.float64)
    if metric == "cosine":
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    s = -((q[:, None] - b[None]) ** 2).sum(-1) if metric == "l2" else q @ b.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    D = np.take_along_axis(s, order, 1)
    return (-D if metric == "l2" else D), order


@pytest.fixture(scope="module")
def data():
    xb = mrl_like(2500, 100, 0)  # d = 100: panels [0, 32), [32, 64), [64, 100)
    xb[7] = 0  # a zero vector
    return xb, mrl_like(12, 100, 1)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("m", [8, 32, 50, 100])
def test_small_batches_score_panels_in_place_exactly(data, metric, m):
    xb, xq = data
    index = MatryoshkaIndex(100, metric).add(xb)
    Dr, Ir = reference(xq, xb, 7, metric, m)
    for batch in (xq[:1], xq[:5], xq):  # 1, 5 and 12 queries: all in place
        D, I = index.search(batch, 7, dim=m, block_size=700)  # several blocks, merged
        np.testing.assert_allclose(D, Dr[: len(batch)], rtol=1e-4, atol=1e-4)
        assert recall_at_k(I, Ir[: len(batch)]) > 0.99
    many = np.repeat(xq, 4, axis=0)  # 48 queries: the copying path, same answers
    D, _ = index.search(many, 7, dim=m, block_size=700)
    np.testing.assert_allclose(D, np.repeat(Dr, 4, axis=0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("m", [8, 50, 100])
def test_a_few_queries_match_the_batch_path(data, metric, m):
    xb, xq = data
    xb = np.concatenate([xb, xb[:300]])  # rows 2500.. repeat rows 0..: tied scores
    index = MatryoshkaIndex(100, metric).add(xb)
    Dr, Ir = reference(xq, xb, 9, metric, m)
    Db, Ib = index.search(np.repeat(xq, 3, axis=0), 9, dim=m)  # 36 queries: the batch path
    for nq in (1, 2, 4):  # the numpy path, one query at a time too
        for s in range(0, len(xq), nq):
            D, I = index.search(xq[s : s + nq], 9, dim=m)
            np.testing.assert_allclose(D, Dr[s : s + nq], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(D, Db[3 * s : 3 * s + 3 * nq : 3], rtol=1e-5, atol=1e-5)
            for row, ref in zip(I, Ir[s : s + nq], strict=True):
                assert set(row % 2500) == set(ref % 2500)  # same rows, up to the repeats
                for a, b in zip(row, row[1:]):  # a tie keeps the lower position first
                    if a % 2500 == b % 2500:
                        assert a < b
    if metric != "l2":  # a zero query: every score ties at 0, any three rows will do
        D, I = index.search(xq[:1] * 0, 3, dim=m)
        np.testing.assert_array_equal(D, [[0, 0, 0]])
        assert len(set(I[0])) == 3 and I.min() >= 0
    D, I = MatryoshkaIndex(100, metric).add(xb[:5]).search(xq[:2], 8, dim=m)  # k > N: padding
    assert (I[:, 5:] == -1).all() and (I[:, :5] >= 0).all()
    assert np.isinf(D[:, 5:]).all()


@pytest.mark.parametrize("metric", METRICS)
def test_one_query_through_a_funnel_matches_the_batch(data, metric):
    xb, xq = data
    index = MatryoshkaIndex(100, metric).add(xb)
    funnel = [(16, 300), (50, 40), (100, 5)]
    D, I = index.search(xq, funnel=funnel)
    for i in range(len(xq)):
        d1, i1 = index.search(xq[i : i + 1], funnel=funnel)
        np.testing.assert_allclose(d1[0], D[i], rtol=1e-5, atol=1e-5)
        assert (i1[0] == I[i]).mean() >= 0.8  # ids may swap only on near-ties


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("m", [20, 64, 100])
def test_fused_rerank_equals_the_gathered_rerank(data, metric, m):
    pytest.importorskip("faiss")
    xb, xq = data
    index = MatryoshkaIndex(100, metric).add(xb)
    rng = np.random.default_rng(2)
    pos = torch.from_numpy(rng.integers(0, len(xb), (len(xq), 60)))
    pos[:, 50:] = -1  # padding from a first stage that found fewer
    pos[0, 0] = 7  # the zero vector
    store, norm = index._store, index._norm_or_none(m, index._store)
    S1, P1 = rerank(store, norm, metric, xq, pos, m, 55)
    q, _ = prepare_queries(xq, m, metric)
    S2, P2 = _rerank_gathered(store, norm, metric, q, pos, 55)
    np.testing.assert_allclose(S1.numpy(), S2.numpy(), rtol=1e-5, atol=1e-5)
    assert (P1[:, 50:] == -1).all() and torch.isinf(S1[:, 50:]).all()
    assert not torch.isnan(S1).any()
    # one query at a time, and four: numpy's take-and-multiply path
    for rows in [slice(i, i + 1) for i in range(4)] + [slice(0, 4), slice(4, 8), slice(8, 12)]:
        S3, P3 = rerank(store, norm, metric, xq[rows], pos[rows], m, 55)
        assert len(S3) == rows.stop - rows.start
        np.testing.assert_allclose(S3.numpy(), S2[rows].numpy(), rtol=1e-5, atol=1e-5)
        assert (P3[:, 50:] == -1).all() and not torch.isnan(S3).any()


@pytest.mark.parametrize("metric", METRICS)
def test_fused_rerank_after_an_approximate_first_stage(data, metric):
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        xb, xq = data
        index = MatryoshkaIndex(100, metric).add(xb)
        index.build_ann("hnsw", 32, M=16, ef_search=100)
        _, gt = reference(xq, xb, 10, metric, 100)
        D, I = index.search(xq, funnel=[(32, 100), (100, 10)], ann=True)
        assert recall_at_k(I, gt) >= 0.95
        De, _ = reference(xq, xb, 10, metric, 100)
        hit = I == gt
        np.testing.assert_allclose(D[hit], De[hit], rtol=1e-4, atol=1e-4)
    finally:
        faiss.omp_set_num_threads(before)
