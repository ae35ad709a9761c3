"""MatryoshkaIndex and exact search against a plain numpy reference: tiny, seeded, CPU-only."""

from __future__ import annotations

import numpy as np
import pytest

from matryoshka.index import (
    MatryoshkaIndex,
    check_funnel,
    exact_search,
    format_funnel,
    parse_funnel,
    recall_at_k,
)
from matryoshka.index.planner import parse_bytes, plan_storage
from matryoshka.viz import plan_table

METRICS = ("cosine", "ip", "l2")
PRECISIONS = ("float32", "float16", "int8", "binary")


def mrl_like(n: int, d: int, seed: int) -> np.ndarray:
    """Clustered vectors whose per-dimension scale decays like a Matryoshka embedding's."""
    rng = np.random.default_rng(seed)
    scale = (1.0 + np.arange(d)) ** -0.5
    centers = rng.standard_normal((16, d))
    x = centers[rng.integers(0, 16, n)] + 0.7 * rng.standard_normal((n, d))
    return (x * scale).astype(np.float32)


def reference(xq: np.ndarray, xb: np.ndarray, k: int, metric: str, m: int):
    """Brute force in float64 numpy: (D, I) of shape (nq, k), best first (queries first)."""
    b, q = xb[:, :m].astype(np.float64), xq[:, :m].astype(np.float64)
    if metric == "cosine":
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    if metric == "l2":
        s = -((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    else:
        s = q @ b.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    D = np.take_along_axis(s, order, 1)
    return (-D if metric == "l2" else D), order


@pytest.fixture(scope="module")
def data():
    xb = mrl_like(3000, 64, seed=0)
    xq = mrl_like(40, 64, seed=1)
    return xb, xq


# ---------------------------------------------------------------- exact search
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("m", [8, 32, 64])
def test_exact_search_matches_numpy(data, metric, m):
    xb, xq = data
    D, I = exact_search(xq, xb, 7, metric, dim=m, block_size=500)
    Dr, Ir = reference(xq, xb, 7, metric, m)
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-4)
    assert recall_at_k(I, Ir) > 0.99  # ids may swap only on exact ties


@pytest.mark.parametrize("metric", METRICS)
def test_threshold_path_is_exact(metric):
    # N >= 4 * 2048 takes the sampled-threshold path; k large and small
    xb = mrl_like(12_000, 16, seed=2)
    xq = mrl_like(30, 16, seed=3)
    for k in (1, 10, 300):
        D, I = exact_search(xq, xb, k, metric, block_size=2500)
        Dr, _ = reference(xq, xb, k, metric, 16)
        np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-4)
        assert (I >= 0).all() and all(len(set(r)) == k for r in I)


def test_threshold_path_split_across_threads_is_exact(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # 3 workers over 200 query rows
    xb = mrl_like(12_000, 16, seed=2)
    xq = mrl_like(200, 16, seed=3)
    D, I = exact_search(xq, xb, 50, "cosine", block_size=3000)
    Dr, _ = reference(xq, xb, 50, "cosine", 16)
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-4)
    assert (I >= 0).all() and all(len(set(r)) == 50 for r in I)


def test_threshold_path_with_ties_falls_back_exactly():
    # many identical vectors: the sampled threshold ties with the true k-th score
    rng = np.random.default_rng(0)
    xb = np.repeat(rng.standard_normal((50, 8)).astype(np.float32), 400, axis=0)  # (20000, 8)
    xq = rng.standard_normal((5, 8)).astype(np.float32)
    D, I = exact_search(xq, xb, 500, "ip")
    Dr, _ = reference(xq, xb, 500, "ip", 8)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    assert all(len(set(r)) == 500 for r in I)


def test_exact_search_pads_when_k_exceeds_n():
    xb = mrl_like(5, 8, seed=0)
    D, I = exact_search(xb[:2], xb, 8, "l2")
    assert (I[:, 5:] == -1).all() and np.isinf(D[:, 5:]).all() and (D[:, 5:] > 0).all()
    assert (I[:, 0] == [0, 1]).all()
    D, I = exact_search(xb[:2], xb, 8, "ip")
    assert (D[:, 5:] == -np.inf).all()


def test_exact_search_rejects_nan_and_bad_sizes(data):
    xb, xq = data
    bad = xq.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values .*row 3"):
        exact_search(bad, xb, 5)
    with pytest.raises(ValueError, match="dim must be between 1 and d=64"):
        exact_search(xq, xb, 5, dim=65)
    with pytest.raises(ValueError, match="metric must be one of"):
        exact_search(xq, xb, 5, metric="dot")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        exact_search(xq, xb, 0)


def test_exact_search_takes_queries_first_like_faiss_knn():
    import inspect

    # same width, different rows: swapping them is a different search, not an error
    xq, xb = mrl_like(3, 8, seed=10), mrl_like(40, 8, seed=11)
    assert list(inspect.signature(exact_search).parameters)[:3] == ["xq", "xb", "k"]
    assert "faiss.knn(xq, xb, k)" in exact_search.__doc__
    D, I = exact_search(xq, xb, 5, "l2")
    Dr, Ir = reference(xq, xb, 5, "l2", 8)
    assert I.shape == (3, 5) and I.tolist() == Ir.tolist()
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-4)
    D2, I2 = exact_search(xb=xb, xq=xq, k=5, metric="l2")  # keywords in either order
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_array_equal(D2, D)
    Ds, Is = exact_search(xb, xq, 5, "l2")  # swapped: 40 queries against a database of 3
    assert Is.shape == (40, 5) and (Is[:, 3:] == -1).all() and (Is[:, :3] < 3).all()
    assert Is[:, :3].tolist() == reference(xb, xq, 3, "l2", 8)[1].tolist()


# ---------------------------------------------------------------- the index
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_against_exact(data, metric, precision):
    xb, xq = data
    index = MatryoshkaIndex(64, metric, precision).add(xb)
    _, gt = reference(xq, xb, 10, metric, 64)
    _, I = index.search(xq, 10)
    # one bit per dimension of 64 keeps little: binary is only useful with a float rerank. Its
    # floors sit just under the measured recall@10 (cosine 0.19, ip 0.1125, l2 0.185); random ids
    # would score about 10 / 3000 = 0.003, and so would a codec that lost the bits
    floors = {"float32": 0.99, "float16": 0.97, "int8": 0.85}
    floors["binary"] = {"cosine": 0.18, "ip": 0.10, "l2": 0.17}[metric]
    assert recall_at_k(I, gt) >= floors[precision]
    if precision in ("int8", "binary"):  # a float copy for the last stage lifts quantised storage
        index = MatryoshkaIndex(64, metric, precision, rerank="float32").add(xb)
        shortlist, lifted = (100, 0.99) if precision == "int8" else (400, 0.75)
        _, I2 = index.search(xq, funnel=[(64, shortlist), (64, 10)])
        assert recall_at_k(I2, gt) >= lifted


@pytest.mark.parametrize("metric", METRICS)
def test_search_at_any_size_equals_exact_on_the_prefix(data, metric):
    xb, xq = data
    index = MatryoshkaIndex(64, metric).add(xb)
    for m in (8, 20, 32, 64):
        D, I = index.search(xq, 5, dim=m)
        Dr, Ir = reference(xq, xb, 5, metric, m)
        np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-4)
        assert recall_at_k(I, Ir) > 0.99
    # queries may be given at the prefix width only
    D2, _ = index.search(xq[:, :20], 5, dim=20)
    np.testing.assert_allclose(D2, index.search(xq, 5, dim=20)[0], rtol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_funnel_with_everything_shortlisted_equals_exact(data, metric):
    xb, xq = data
    index = MatryoshkaIndex(64, metric).add(xb)
    D, I = index.search(xq, funnel=[(8, len(xb)), (32, len(xb)), (64, 10)])
    De, Ie = index.search(xq, 10)
    np.testing.assert_allclose(D, De, rtol=1e-5, atol=1e-5)
    assert recall_at_k(I, Ie) > 0.99
    # a shortlist larger than N behaves the same
    D2, _ = index.search(xq, funnel=[(8, 10 * len(xb)), (64, 10)])
    np.testing.assert_allclose(D2, De, rtol=1e-5, atol=1e-5)


def test_funnel_recall_on_mrl_like_data(data):
    xb, xq = data
    index = MatryoshkaIndex(64).add(xb)
    _, gt = index.search(xq, 10)
    _, I = index.search(xq, 10, funnel=[(16, 300), (32, 60), (64, 10)])
    assert recall_at_k(I, gt) >= 0.95


def test_ids_padding_and_k_larger_than_n():
    xb = mrl_like(6, 16, seed=4)
    index = MatryoshkaIndex(16, "ip").add(xb, ids=[100, 7, 55, 3, 9, 42])
    D, I = index.search(xb[:2], 10)
    assert I.shape == (2, 10) and (I[:, 6:] == -1).all() and (D[:, 6:] == -np.inf).all()
    assert set(I[0, :6]) == {100, 7, 55, 3, 9, 42}
    D, I = index.search(xb[:1], funnel=[(4, 50), (16, 8)])
    assert (I[0, 6:] == -1).all() and set(I[0, :6]) == {100, 7, 55, 3, 9, 42}
    index.add(mrl_like(2, 16, seed=5))  # default ids continue after the largest
    assert index.ids.tolist() == [100, 7, 55, 3, 9, 42, 101, 102]
    np.testing.assert_array_equal(
        index.reconstruct([7, 102]), np.concatenate([xb[1:2], mrl_like(2, 16, 5)[1:]])
    )


def test_empty_index_returns_padding():
    index = MatryoshkaIndex(8)
    D, I = index.search(np.ones((3, 8), np.float32), 4)
    assert (I == -1).all() and np.isneginf(D).all() and len(index) == 0


def test_duplicate_and_zero_vectors():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((20, 16)).astype(np.float32)
    xb = np.concatenate([base, base[:5], np.zeros((3, 16), np.float32)])  # dups, zeros
    for metric in METRICS:
        index = MatryoshkaIndex(16, metric).add(xb)
        D, I = index.search(base[:5], 2)
        assert np.isfinite(D).all()
        for row, i in zip(I, range(5), strict=True):
            assert set(row) == {i, 20 + i}  # both copies, best
        Dz, _ = index.search(np.zeros((1, 16), np.float32), 3)  # a zero query is legal
        assert np.isfinite(Dz).all()
    index = MatryoshkaIndex(16, "cosine").add(xb)
    D, I = index.search(-base[:1], 30)
    assert set(I[0, -8:]) >= {0, 20}  # the opposite vector and its copy score worst ...
    assert np.allclose(D[0][np.isin(I[0], [25, 26, 27])], 0)  # ... zero vectors score 0


def test_remove():
    xb = mrl_like(50, 16, seed=7)
    index = MatryoshkaIndex(16, "l2").add(xb)
    assert index.remove([3, 10, 999]) == 2 and len(index) == 48
    D, I = index.search(xb[[3, 4]], 1)
    assert I[0, 0] != 3 and I[1, 0] == 4 and D[1, 0] == pytest.approx(0, abs=1e-4)
    index.add(xb[:1], ids=[3])  # the id may come back, here on a copy of vector 0
    D, I = index.search(xb[[0, 3]], 2)
    assert set(I[0]) == {0, 3} and np.allclose(D[0], 0, atol=1e-4)  # vector 0 and its copy
    # vector 3 itself stays gone: its neighbours are the numpy reference's without it
    rest = np.setdiff1d(np.arange(50), [3, 10])
    near = rest[np.argsort(((xb[rest] - xb[3]) ** 2).sum(1))[:2]]
    assert I[1].tolist() == near.tolist() == [18, 37]
    np.testing.assert_array_equal(index.reconstruct([3]), xb[:1])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(xb[:1], ids=[4])


def test_clear_errors():
    xb = mrl_like(30, 16, seed=8)
    index = MatryoshkaIndex(16).add(xb)
    bad = xb.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values .*row 2"):
        index.add(bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.search(bad, 3)
    with pytest.raises(ValueError, match="xb has 12 columns but the index holds d=16"):
        index.add(xb[:, :12])
    with pytest.raises(ValueError, match="queries have 8 columns; this search needs between 16"):
        index.search(xb[:, :8], 3)
    with pytest.raises(ValueError, match="queries have 20 columns"):
        index.search(np.ones((2, 20), np.float32), 3)
    with pytest.raises(ValueError, match="ids must be unique"):
        index.add(xb[:2], ids=[50, 50])
    with pytest.raises(ValueError, match="ids must be non-negative"):
        index.add(xb[:1], ids=[-1])
    with pytest.raises(ValueError, match=r"ids must have shape \(2,\)"):
        index.add(xb[:2], ids=[1])
    with pytest.raises(ValueError, match="metric must be one of"):
        MatryoshkaIndex(16, metric="dot")
    with pytest.raises(ValueError, match="precision must be one of"):
        MatryoshkaIndex(16, precision="int4")
    with pytest.raises(ValueError, match="rerank='float16' is for quantised"):
        MatryoshkaIndex(16, precision="float32", rerank="float16")
    with pytest.raises(ValueError, match="dim must be between 1 and d=16"):
        index.search(xb, 3, dim=17)
    with pytest.raises(ValueError, match="either dim or funnel"):
        index.search(xb, 3, dim=8, funnel=[(8, 3)])
    with pytest.raises(ValueError, match="k=5 differs from the funnel's last shortlist 3"):
        index.search(xb, 5, funnel=[(8, 10), (16, 3)])
    with pytest.raises(ValueError, match="call build_ann first"):
        index.search(xb, funnel=[(8, 10), (16, 3)], ann=True)


@pytest.mark.parametrize(
    "funnel, message",
    [
        ([], "non-empty list"),
        ([(16, 10), (8, 5)], "must not decrease, got 8 after 16"),
        ([(8, 10), (16, 20)], "shortlists cannot grow"),
        ([(8, 0)], "shortlist lengths must be positive"),
        ([(0, 5)], "between 1 and d=16"),
        ([(32, 5)], "between 1 and d=16"),
        ([(8, 5, 1)], r"\(dim, k\) pair"),
        ([(8.0, 5)], "dim must be an integer"),
        ("8,5", "non-empty list"),
    ],
)
def test_bad_funnels(funnel, message):
    with pytest.raises(ValueError, match=message):
        check_funnel(funnel, 16)


@pytest.mark.parametrize(
    "text, stages",
    [
        ("32:400,128:50,512:10", [(32, 400), (128, 50), (512, 10)]),
        ("8:5", [(8, 5)]),
        (" 16 : 100 , 64:10", [(16, 100), (64, 10)]),
    ],
)
def test_parse_and_format_funnel(text, stages):
    assert parse_funnel(text) == stages
    assert parse_funnel(format_funnel(stages)) == stages
    assert format_funnel(stages) == ",".join(f"{m}:{k}" for m, k in stages)


@pytest.mark.parametrize("text", ["32-400", "", "32:400,128", "a:b", "8:5:1", "8:5,"])
def test_parse_funnel_rejects_other_text(text):
    with pytest.raises(ValueError, match="funnel must look like 32:400,128:50,512:10"):
        parse_funnel(text)
    with pytest.raises(ValueError, match="^--funnel must look like"):
        parse_funnel(text, name="--funnel")


def test_recall_at_k_is_the_one_implementation():
    from matryoshka.eval import retrieval

    assert retrieval.recall_at_k is recall_at_k
    gt = np.array([[1, 2, 3], [4, 5, -1]])
    assert recall_at_k(np.array([[3, 9, 1], [5, 4, 7]]), gt) == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="equal nq"):
        recall_at_k(gt[:1], gt)


def test_float16_rejects_overflow():
    with pytest.raises(ValueError, match="too large for float16"):
        MatryoshkaIndex(4, precision="float16").add(np.full((1, 4), 1e6, np.float32))


# ---------------------------------------------------------------- planner
def test_planner_50m_vectors_in_100gb():
    plan = plan_storage(50_000_000, "100GB")
    assert plan["budget_bytes"] == 100 * 10**9
    assert plan["largest_fit"] == {"float32": 500, "float16": 1000, "int8": 2000, "binary": 2048}
    rows = {(r["dim"], r["precision"]): r for r in plan["rows"]}
    assert rows[(500, "float32")]["fits"] and not rows[(512, "float32")]["fits"]
    assert rows[(500, "float32")]["bytes"] == 100 * 10**9
    assert {r["precision"] for r in plan["rows"]} == set(PRECISIONS)
    table = plan_table(plan)
    assert "| 500 | float32 | 2000 | 100.0 GB | yes |" in table
    assert "float32 500, float16 1000, int8 2000, binary 2048" in table


def test_planner_measures_recall(data):
    xb, xq = data
    plan = plan_storage(10_000, "320KB", embeddings=xb, queries=xq, dims=[8, 16, 32, 64])
    rows = {(r["dim"], r["precision"]): r for r in plan["rows"]}
    assert rows[(64, "float32")]["recall"] == pytest.approx(1.0)
    assert rows[(8, "float32")]["recall"] < rows[(32, "float32")]["recall"]
    best = plan["recommended"]
    assert best["fits"] and best["bytes"] <= 320_000
    assert best["recall"] == max(r["recall"] for r in plan["rows"] if r["fits"])


@pytest.mark.parametrize(
    "text, value", [("100GB", 10**11), ("1.5 MB", 1_500_000), ("2GiB", 2 * 2**30), (4096, 4096)]
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_parse_bytes_rejects_nonsense():
    with pytest.raises(ValueError, match="budget must be a number of bytes"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="budget must be positive"):
        parse_bytes(0)


class _Untouchable(np.ndarray):
    """A panel that fails if anything reads it."""

    def __getitem__(self, key):
        raise AssertionError("a panel beyond the search size was read")


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("precision", ["float32", "int8", "binary"])
def test_a_search_at_size_m_reads_only_the_panels_it_needs(data, metric, precision):
    xb, xq = data
    index = MatryoshkaIndex(64, metric, precision).add(xb)
    D, I = index.search(xq, funnel=[(16, 100), (32, 5)])
    index._store.panels[1] = index._store.panels[1].view(_Untouchable)  # columns 32:64
    D2, I2 = index.search(xq, funnel=[(16, 100), (32, 5)])
    np.testing.assert_array_equal(I, I2)
    index._norms.clear()
    with pytest.raises(AssertionError, match="beyond the search size"):
        index.search(xq, 5, dim=33)


@pytest.mark.parametrize("module", ["core", "exact", "funnel", "metrics"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"matryoshka.index.{module}")
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0


def test_planner_counts_what_an_engine_stores():
    from matryoshka.index.engines.qdrant import QdrantIndex

    plan = plan_storage(10_000_000, "20GB", d=512, dims=[64, 256, 512], engine="qdrant",
                        prefix_sizes=[64])  # fmt: skip
    by_dim = {r["dim"]: r for r in plan["rows"]}
    assert {r["precision"] for r in plan["rows"]} == {"float32"}
    assert by_dim[512]["bytes_per_vector"] == QdrantIndex.bytes_per_vector(512, [64])["total"]
    assert by_dim[512]["bytes_per_vector"] > 4 * (512 + 64)  # the prefix copy and the graph
    assert by_dim[64]["bytes_per_vector"] == QdrantIndex.bytes_per_vector(64, [])["total"]
    m = plan["largest_fit"]["float32"]
    assert 1e7 * QdrantIndex.bytes_per_vector(m, [64])["total"] <= 20e9
    assert 1e7 * QdrantIndex.bytes_per_vector(m + 1, [64])["total"] > 20e9
    assert plan["recommended"]["dim"] == m and plan["engine"] == "qdrant"
    with pytest.raises(ValueError, match="engine must be one of"):
        plan_storage(10, "1GB", d=8, engine="elastic")
