"""``matryoshka index export`` and ``matryoshka search --engine`` on the embedded Qdrant engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matryoshka.cli import main
from matryoshka.index import MatryoshkaIndex

pytest.importorskip("qdrant_edge", reason="the Qdrant back end needs matryoshka[qdrant]")


@pytest.fixture()
def built(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((600, 32)) * np.geomspace(2, 0.1, 32)).astype(np.float32)
    ids = 100 + 2 * np.arange(600)
    MatryoshkaIndex(32).add(x, ids=ids, names=[f"doc{i}" for i in ids]).save(tmp_path / "ix")
    np.save(tmp_path / "q.npy", x[:4] + 0.01)
    return tmp_path


def _results(capsys) -> list[dict]:
    return [json.loads(s) for s in capsys.readouterr().out.splitlines()]


def test_export_then_search_in_the_engine_equals_the_index(built, capsys):
    qd = str(built / "qd")
    export = ["index", "export", str(built / "ix"), "--to", "qdrant", "--url", qd,
              "--funnel", "8:600,32:5", "--batch-size", "128", "--quiet"]  # fmt: skip
    assert main(export) == 0
    assert "it holds 600, sizes [8, 32]" in capsys.readouterr().out
    assert main(export) == 0  # the second export sends nothing new
    assert "it holds 600" in capsys.readouterr().out
    query = ["--queries", str(built / "q.npy"), "--funnel", "8:600,32:5", "--quiet"]
    assert main(["search", "--engine", "qdrant", "--url", qd, *query]) == 0
    engine = _results(capsys)
    assert main(["search", str(built / "ix"), *query]) == 0
    index = _results(capsys)
    assert [r["ids"] for r in engine] == [r["ids"] for r in index]
    assert [r["names"] for r in engine] == [r["names"] for r in index]
    assert engine[0]["ids"][0] == 100 and engine[0]["names"][0] == "doc100"


def test_engine_mistakes_are_one_line_errors(built, capsys):
    q = ["--queries", str(built / "q.npy"), "-k", "3", "--quiet"]
    assert main(["index", "export", str(built / "ix"), "--to", "qdrant", "--quiet"]) == 2
    assert "needs --url" in capsys.readouterr().err
    assert main(["index", "export", str(built / "ix"), "--to", "qdrant", "--url",
                 "ftp://host/x"]) == 2  # fmt: skip
    assert "not a Qdrant address" in capsys.readouterr().err
    assert main(["search", "--engine", "qdrant", "--url", str(built / "none"), *q]) == 2
    assert "has no collection 'matryoshka'" in capsys.readouterr().err
    assert main(["search", "--engine", "qdrant", str(built / "ix"), *q]) == 2
    assert "give --url and no INDEX" in capsys.readouterr().err
    assert main(["search", *q]) == 2
    assert "give INDEX" in capsys.readouterr().err
    assert main(["index", "export", str(built / "ix"), "--to", "qdrant", "--out", "x.sql"]) == 2
    assert "--out writes SQL for --to pgvector" in capsys.readouterr().err


def test_export_to_milvus_lite_and_search_it(built, capsys):
    pytest.importorskip("milvus_lite", reason="the Milvus back end needs matryoshka[milvus]")
    db = str(built / "milvus.db")
    assert main(["index", "export", str(built / "ix"), "--to", "milvus", "--url", db,
                 "--funnel", "8:600,32:5", "--quiet"]) == 0  # fmt: skip
    assert "it holds 600, sizes [8, 32]" in capsys.readouterr().out
    query = ["--queries", str(built / "q.npy"), "--funnel", "8:600,32:5", "--quiet"]
    assert main(["search", "--engine", "milvus", "--url", db, "--exact", *query]) == 0
    engine = _results(capsys)
    assert main(["search", str(built / "ix"), *query]) == 0
    assert [r["ids"] for r in engine] == [r["ids"] for r in _results(capsys)]
    assert engine[1]["names"][0] == "doc102"
