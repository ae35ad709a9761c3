"""Approximate first stages (faiss HNSW, IVF, IVF-PQ, AdANNS-IVF) checked against exact search."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from matryoshka.index import MatryoshkaIndex, recall_at_k

faiss = pytest.importorskip("faiss")


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    # tiny indexes: OpenMP threads only spin, and on a busy machine they spin for seconds
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((32, d))
    x = centers[rng.integers(0, 32, n)] + 0.5 * rng.standard_normal((n, d))
    return (x * (1.0 + np.arange(d)) ** -0.5).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered(4000, 64, 0), clustered(50, 64, 1)


CASES = [
    ("hnsw", {"M": 16, "ef_search": 64}, 0.95),
    ("hnsw", {"M": 16, "ef_search": 64, "bits": 8}, 0.93),  # 8-bit codes in the graph
    ("hnsw", {"M": 16, "ef_search": 64, "bits": 16}, 0.95),
    ("ivf", {"nlist": 32, "nprobe": 12}, 0.95),
    ("ivfpq", {"nlist": 32, "nprobe": 8, "pq_m": 8, "nbits": 6}, 0.9),
    ("adanns", {"cluster_dim": 8, "nlist": 32, "nprobe": 8}, 0.9),  # cluster small, scan large
    ("adanns", {"cluster_dim": 64, "nlist": 32, "nprobe": 8}, 0.9),  # cluster large, scan small
]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("kind, params, floor", CASES)
def test_approximate_first_stage_against_exact(data, kind, params, floor, metric):
    xb, xq = data
    index = MatryoshkaIndex(64, metric).add(xb, ids=np.arange(len(xb)) + 1000)
    index.build_ann(kind, 16, **params)
    _, gt = index.search(xq, 10)
    D, I = index.search(xq, funnel=[(16, 200), (64, 10)], ann=True)
    assert recall_at_k(I, gt) >= floor
    assert I.min() >= 1000
    De, _ = index.search(xq, 10)
    hit = I == gt
    np.testing.assert_allclose(D[hit], De[hit], rtol=1e-5, atol=1e-5)  # reranked exactly


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_search_agrees_with_faiss_knn(data, metric):
    from matryoshka.index import exact_search

    xb, xq = data
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    D0, I0 = faiss.knn(xq, xb, 10, metric=fmetric)  # queries first, then the database
    D, I = exact_search(xq, xb, 10, metric)
    assert recall_at_k(I, I0) >= 0.99  # ids may swap only on ties
    np.testing.assert_allclose(D, D0, rtol=1e-4, atol=1e-4)


def test_approximate_first_stage_alone_and_padding():
    xb = clustered(30, 16, 2)
    index = MatryoshkaIndex(16, "l2").add(xb)
    index.build_ann("hnsw", 16)
    D, I = index.search(xb[:3], 5, dim=16, ann=True)
    assert (I[:, 0] == [0, 1, 2]).all() and np.allclose(D[:, 0], 0, atol=1e-4)
    D, I = index.search(xb[:2], funnel=[(16, 50), (16, 40)], ann=True)  # k > N
    assert (I[:, 30:] == -1).all() and np.isinf(D[:, 30:]).all()


def test_ann_follows_add_and_is_dropped_by_remove(data):
    xb, xq = data
    index = MatryoshkaIndex(64).add(xb[:3000])
    index.build_ann("ivf", 32, nlist=16, nprobe=16)  # every list probed: exact at size 32
    index.add(xb[3000:])
    _, I = index.search(xb[3500:3510], funnel=[(32, 5), (64, 1)], ann=True)
    assert (I[:, 0] == np.arange(3500, 3510)).all()
    index.remove([0])
    with pytest.raises(ValueError, match="call build_ann first"):
        index.search(xq, funnel=[(32, 5), (64, 1)], ann=True)


def test_ann_errors(data):
    xb, _ = data
    index = MatryoshkaIndex(64).add(xb[:100])
    with pytest.raises(ValueError, match="kind must be one of"):
        index.build_ann("lsh", 16)
    with pytest.raises(ValueError, match="needs cluster_dim"):
        index.build_ann("adanns", 16)
    with pytest.raises(ValueError, match="nlist=500 is more than the 100 stored vectors"):
        index.build_ann("ivf", 16, nlist=500)
    with pytest.raises(ValueError, match="pq_m must divide"):
        index.build_ann("ivfpq", 16, nlist=4, pq_m=5)
    with pytest.raises(ValueError, match="dim must be between 1 and d=64"):
        index.build_ann("hnsw", 65)
    with pytest.raises(ValueError, match="hnsw has no setting 'nprobe'; its settings: M, ef_con"):
        index.build_ann("hnsw", 16, nprobe=3)
    with pytest.raises(ValueError, match="ivf setting nlist must be a positive integer, got 'abc'"):
        index.build_ann("ivf", 16, nlist="abc")
    with pytest.raises(ValueError, match="ivf has no setting 'pq_m'"):
        index.build_ann("ivf", 16, pq_m=4)
    with pytest.raises(ValueError, match=r"hnsw setting bits must be one of \(32, 16, 8\), got 4"):
        index.build_ann("hnsw", 16, bits=4)
    index.build_ann("hnsw", 16)
    with pytest.raises(ValueError, match="searches at size 16, but the funnel's first stage is"):
        index.search(xb[:2], funnel=[(32, 10), (64, 2)], ann=True)
    with pytest.raises(ValueError, match="add vectors before build_ann"):
        MatryoshkaIndex(8).build_ann("hnsw", 8)


@pytest.mark.parametrize("bits", [8, 16])
def test_quantised_graph_holding_every_row_equals_exact(data, bits):
    # a shortlist of every row reranked at full size is the exact search, whatever the codes
    xb, xq = data
    index = MatryoshkaIndex(64, "cosine").add(xb[:300])
    index.build_ann("hnsw", 16, M=16, ef_search=300, bits=bits)
    De, Ie = index.search(xq, 10)
    D, I = index.search(xq, funnel=[(16, 300), (64, 10)], ann=True)
    np.testing.assert_array_equal(I, Ie)
    np.testing.assert_allclose(D, De, rtol=1e-6, atol=1e-6)
    index.add(xb[300:400])  # rows added after the build join the graph
    _, Ie = index.search(xq, 10)
    _, I = index.search(xq, funnel=[(16, 400), (64, 10)], ann=True)
    assert index.ann_.faiss_index.ntotal == 400
    np.testing.assert_array_equal(I, Ie)


def test_missing_faiss_names_the_extra(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    index = MatryoshkaIndex(64).add(data[0][:100])
    with pytest.raises(ImportError, match=r"pip install 'matryoshka\[index\]'"):
        index.build_ann("hnsw", 16)


def test_import_matryoshka_does_not_load_faiss():
    code = (
        "import sys, matryoshka, matryoshka.index, matryoshka.index.planner;"
        "from matryoshka.index import MatryoshkaIndex, exact_search;"
        "assert 'faiss' not in sys.modules, 'faiss was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "kind, params",
    [
        ("hnsw", {"M": 8}),
        ("hnsw", {"M": 8, "bits": 8}),
        ("ivfpq", {"nlist": 16, "nprobe": 4, "pq_m": 4, "nbits": 5}),
        ("adanns", {"cluster_dim": 8, "nlist": 16, "nprobe": 4}),
    ],
)
def test_approximate_stage_is_saved_and_loaded(tmp_path, data, kind, params):
    xb, xq = data
    index = MatryoshkaIndex(64, "l2").add(xb[:1000]).build_ann(kind, 16, **params)
    index.save(tmp_path / "ix")
    back = MatryoshkaIndex.load(tmp_path / "ix")
    assert back.ann_.kind == kind and back.ann_.params() == index.ann_.params()
    funnel = [(16, 50), (64, 5)]
    D1, I1 = index.search(xq, funnel=funnel, ann=True)
    D2, I2 = back.search(xq, funnel=funnel, ann=True)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2)


def test_saved_stage_without_faiss_loads_the_index_and_warns(tmp_path, data, monkeypatch):
    MatryoshkaIndex(64).add(data[0][:200]).build_ann("hnsw", 16).save(tmp_path / "ix")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.warns(UserWarning, match=r"needs faiss: pip install 'matryoshka\[index\]'"):
        back = MatryoshkaIndex.load(tmp_path / "ix")
    assert len(back) == 200 and back.ann_ is None
