"""The Milvus back end against Milvus's real engine: Milvus Lite (a ``.db`` folder) in this process.

No Milvus server runs in the tests: an ``http://`` address is tested only for its errors (a
port nothing listens on).
"""

from __future__ import annotations

import socket
import subprocess
import sys

import engine_contract as contract
import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus back end needs matryoshka[milvus]")
pytest.importorskip("milvus_lite", reason="the Milvus back end needs matryoshka[milvus]")

from matryoshka.index.engines import EngineError, open_engine  # noqa: E402
from matryoshka.index.engines.milvus import MilvusIndex  # noqa: E402


def _db(tmp_path) -> str:
    return str(tmp_path / "m.db")


def test_full_shortlist_is_exact(tmp_path):
    contract.check_full_shortlist_is_exact(MilvusIndex, _db(tmp_path))


def test_recall_of_the_engines_graph_funnel(tmp_path):
    def flushed(engine: MilvusIndex) -> None:  # the rows now sit in a segment with its graph
        engine.optimize()
        assert engine._indexes["m16"][0] == "HNSW"

    contract.check_recall_against_index(MilvusIndex, _db(tmp_path), prepare=flushed)


def test_export_keeps_ids_and_names(tmp_path):
    contract.check_export_keeps_ids_and_names(MilvusIndex, _db(tmp_path))


def test_interrupted_export_resumes(tmp_path, monkeypatch):
    contract.check_interrupted_export_resumes(MilvusIndex, _db(tmp_path), monkeypatch)


def test_layout_errors(tmp_path):
    contract.check_layout_errors(MilvusIndex, _db(tmp_path))


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_both_rescoring_paths_match_the_index_funnel(metric, tmp_path):
    # a three-stage funnel: the client's rescoring and Milvus's filtered searches agree with
    # the index's exact funnel, ids and scores
    index, xq = contract.source_index(metric)
    funnel = [(16, 200), (32, 40), (contract.D, 10)]
    D0, I0 = index.search(xq, funnel=funnel)
    with contract.export(MilvusIndex, _db(tmp_path), index, "paths") as engine:
        for rerank in ("client", "engine"):
            engine.rerank = rerank
            D1, I1 = engine.search(xq, funnel=funnel, exact=True)
            np.testing.assert_array_equal(I1, I0, err_msg=rerank)
            np.testing.assert_allclose(D1, D0, rtol=1e-4, atol=1e-4 * np.abs(D0).max())


def test_a_funnel_is_one_search_then_one_get_per_later_stage(tmp_path, monkeypatch):
    xb, xq = contract.data(n=300, nq=7)
    with MilvusIndex(_db(tmp_path), d=64, sizes=[16, 32]) as engine:
        engine.add(xb)
        engine.search(xq[:1], 1)  # flushes the upload
        calls = []
        real = engine._t.c

        class Spy:
            def __getattr__(self, name):
                calls.append(name)
                return getattr(real, name)

        monkeypatch.setattr(engine._t, "c", Spy())
        engine.search(xq, funnel=[(16, 50), (32, 20), (64, 5)])
        assert calls == ["search", "get", "get"]  # every query in each call
        calls.clear()
        engine.rerank = "engine"
        engine.search(xq, funnel=[(16, 50), (64, 5)])
        assert calls == ["query"] + ["search"] * (1 + len(xq))  # count(*), then per query


def test_ivf_prefixes_are_exhaustive_when_asked(tmp_path):
    index, xq = contract.source_index("cosine")
    _, I0 = index.search(xq, 10, dim=16)
    opts = {"index_type": "IVF_FLAT", "index_params": {"nlist": 32}}
    with contract.export(MilvusIndex, _db(tmp_path), index, "ivf", **opts) as engine:
        engine.optimize()
        assert engine._indexes["m16"][0] == "IVF_FLAT"
        _, I1 = engine.search(xq, 10, dim=16, exact=True)
    assert (I1 == I0).mean() >= 0.98  # ties at float32 rounding may swap


def test_index_types_milvus_lite_cannot_build_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Milvus Lite builds the index types"):
        MilvusIndex(_db(tmp_path), d=8, index_type="DISKANN")
    with pytest.raises(ValueError, match="rerank must be one of"):
        MilvusIndex(_db(tmp_path), d=8, rerank="server")


def test_bad_addresses_and_a_server_that_is_down():
    for target in ("ftp://example.org/x", "not a path or uri", "http://"):
        with pytest.raises(EngineError, match="not a Milvus address"):
            MilvusIndex(target, d=8)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match=rf"cannot reach Milvus at http://127.0.0.1:{port}"):
        MilvusIndex(f"http://127.0.0.1:{port}", d=8, timeout=2)


def test_a_file_another_process_holds_is_a_clear_error(tmp_path):
    holder = "from pymilvus import MilvusClient; import sys; c = MilvusClient(sys.argv[1]); " \
             "print('open', flush=True); sys.stdin.read()"  # fmt: skip
    with subprocess.Popen([sys.executable, "-c", holder, _db(tmp_path)], text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as other:  # fmt: skip
        try:
            assert other.stdout.readline().strip() == "open"
            with pytest.raises(EngineError, match="is another process using it"):
                MilvusIndex(_db(tmp_path), d=8)
        finally:
            other.stdin.close()


def test_a_missing_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(ImportError, match=r"pip install 'matryoshka\[milvus\]'"):
        MilvusIndex("x.db", d=8)


def test_a_collection_matryoshka_did_not_write_is_refused(tmp_path):
    from pymilvus import MilvusClient

    with MilvusIndex(_db(tmp_path), d=8, sizes=[4]):  # keeps Milvus Lite open for the client
        client = MilvusClient(_db(tmp_path))
        client.create_collection("other", dimension=8)
        with pytest.raises(EngineError, match="not written by matryoshka"):
            MilvusIndex(_db(tmp_path), collection="other")
        client.close()


def test_two_handles_on_one_file_and_unnamed_rows(tmp_path):
    with open_engine("milvus", _db(tmp_path), d=32, sizes=[8]) as engine:
        engine.add(np.eye(32, dtype=np.float32)[:16], names=[f"n{i}" for i in range(16)])
        engine.add(np.eye(32, dtype=np.float32)[16:])  # no names
        with MilvusIndex(_db(tmp_path)) as second:
            assert second.count() == 32
        assert engine.count() == 32  # closing the second handle left the first working
        assert engine.names_of(np.array([[3, -1], [20, 3]])) == [["n3", None], [None, "n3"]]
        D, I = engine.search(np.eye(32, dtype=np.float32)[20:22], 1)
        np.testing.assert_array_equal(I[:, 0], [20, 21])
        np.testing.assert_allclose(D[:, 0], 1.0, rtol=1e-6)
    with pytest.raises(EngineError, match="is closed"):
        engine.count()


def test_bytes_per_vector():
    b = MilvusIndex.bytes_per_vector(512, [64, 512], name_bytes=10, hnsw_m=16)
    assert b["vectors"] == 4 * (512 + 64)
    assert b["index"] == pytest.approx(4 * 64 + 8.4 * 16)  # HNSW on m64; FLAT on full
    assert b["total"] == b["vectors"] + b["ids"] + b["names"] + b["index"]
    assert MilvusIndex.bytes_per_vector(512, [64], index_type="FLAT")["index"] == 0
    graphs = MilvusIndex.bytes_per_vector(512, [64], full_index_type="HNSW")["index"]
    assert graphs == pytest.approx(4 * (64 + 512) + 2 * 8.4 * 16)
