"""The Qdrant back end against Qdrant's real engine, embedded (Qdrant Edge) in this process.

The client path (what an ``http://`` address uses) runs here in qdrant-client's local mode
(``":memory:"``), which executes the same requests in Python: no Qdrant server runs in the tests.
"""

from __future__ import annotations

import json
import socket

import engine_contract as contract
import numpy as np
import pytest

pytest.importorskip("qdrant_edge", reason="the Qdrant back end needs matryoshka[qdrant]")
pytest.importorskip("qdrant_client", reason="the Qdrant back end needs matryoshka[qdrant]")

from matryoshka.index import MatryoshkaIndex, recall_at_k  # noqa: E402
from matryoshka.index.engines import EngineError, open_engine  # noqa: E402
from matryoshka.index.engines.qdrant import QdrantIndex  # noqa: E402

TARGETS = ["edge", "client"]


def _target(kind: str, tmp_path) -> str:
    return str(tmp_path / "qdrant") if kind == "edge" else ":memory:"


def test_full_shortlist_is_exact(tmp_path):
    contract.check_full_shortlist_is_exact(QdrantIndex, tmp_path / "q")


def test_full_shortlist_is_exact_through_the_client():
    # the client's local mode scores in Python: one metric keeps it short
    contract.check_full_shortlist_is_exact(QdrantIndex, ":memory:", metrics=("l2",))


def test_recall_of_the_engines_graph_funnel(tmp_path):
    # tiny thresholds make Edge build its HNSW graphs for 1,500 points; the funnel then runs
    # on the graphs, not a scan
    def build(engine: QdrantIndex) -> None:
        engine.optimize()
        assert engine._t.shard.info().indexed_vectors_count > 0

    options = {"indexing_threshold": 1, "full_scan_threshold": 1}
    contract.check_recall_against_index(QdrantIndex, tmp_path / "q", prepare=build, **options)


@pytest.mark.parametrize("kind", TARGETS)
def test_export_keeps_ids_and_names(kind, tmp_path):
    contract.check_export_keeps_ids_and_names(QdrantIndex, _target(kind, tmp_path))


def test_interrupted_export_resumes(tmp_path, monkeypatch):
    contract.check_interrupted_export_resumes(QdrantIndex, tmp_path / "q", monkeypatch)


def test_layout_errors(tmp_path):
    contract.check_layout_errors(QdrantIndex, tmp_path / "q")


def test_the_funnel_is_one_nested_prefetch_request(tmp_path, monkeypatch):
    xb, xq = contract.data(n=50, nq=2)
    sent = []
    with QdrantIndex(tmp_path / "q", d=64, sizes=[16, 32]) as engine:
        engine.add(xb)
        real = engine._t.shard.query_batch
        monkeypatch.setattr(engine._t, "shard", _Spy(engine._t.shard, sent))
        engine.search(xq, funnel=[(16, 20), (32, 8), (64, 3)])
        assert real is not None
    (batch,) = sent  # one call for both queries
    (first, _) = batch.queries
    assert first.limit == 3
    (mid,) = first.prefetches
    assert mid.limit == 8 and len(mid.prefetches) == 1 and mid.prefetches[0].limit == 20


class _Spy:
    """Records the batches a shard is asked to run, and runs them."""

    def __init__(self, shard, sent):
        self.shard, self.sent = shard, sent

    def query_batch(self, request):
        self.sent.append(request)
        return self.shard.query_batch(request)

    def __getattr__(self, name):
        return getattr(self.shard, name)


def test_bad_addresses_and_a_server_that_is_down(tmp_path):
    with pytest.raises(EngineError, match="not a Qdrant address"):
        QdrantIndex("ftp://example.org/x", d=8)
    with pytest.raises(EngineError, match="not a Qdrant address"):
        QdrantIndex("http://", d=8)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match=rf"cannot reach Qdrant at http://127.0.0.1:{port}"):
        QdrantIndex(f"http://127.0.0.1:{port}", d=8, timeout=2)


def test_a_shard_open_twice_is_a_clear_error(tmp_path):
    with QdrantIndex(tmp_path, d=8, sizes=[4]):
        with pytest.raises(EngineError, match="open elsewhere"):
            QdrantIndex(tmp_path)


def test_open_engine_and_bytes_per_vector(tmp_path):
    with open_engine("qdrant", str(tmp_path), d=32, sizes=[8]) as engine:
        engine.add(np.eye(32, dtype=np.float32), names=[f"n{i}" for i in range(32)])
        assert engine.count() == 32
        assert engine.names_of(np.array([[3, -1]])) == [["n3", None]]
    b = QdrantIndex.bytes_per_vector(512, [64], name_bytes=10, hnsw_m=16)
    assert b["vectors"] == 4 * (512 + 64)
    assert b["total"] == b["vectors"] + b["ids"] + b["names"] + b["index"]


def test_a_graph_only_on_the_first_stage_size(tmp_path):
    xb, xq = contract.data(n=1500)
    options = {"indexing_threshold": 1, "full_scan_threshold": 1}
    with QdrantIndex(tmp_path, d=64, sizes=[16], graphs=[16], **options) as engine:
        engine.add(xb)
        engine.optimize()
        _, I = engine.search(xq, funnel=[(16, 100), (64, 10)])
    saved = json.loads((tmp_path / "matryoshka" / "edge_config.json").read_text())["vectors"]
    assert saved["full"]["hnsw_config"]["m"] == 0 and saved["m16"].get("hnsw_config") is None
    _, I0 = MatryoshkaIndex(64).add(xb).search(xq, funnel=[(16, 100), (64, 10)])
    assert recall_at_k(I, I0, 10) >= 0.99
    with pytest.raises(ValueError, match="must be among the stored sizes"):
        QdrantIndex(tmp_path / "other", d=64, sizes=[16], graphs=[8])
