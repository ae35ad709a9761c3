"""The index's command-line functions through a parser like the ``matryoshka`` one."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from matryoshka.index import MatryoshkaIndex
from matryoshka.index.commands import add_index_commands, parse_funnel


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="matryoshka")
    add_index_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def emb(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 32)) * (1.0 + np.arange(32)) ** -0.5).astype(np.float32)
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "q.npy", x[:5])
    return tmp_path


def test_build_then_search(emb, capsys):
    out = emb / "ix"
    assert run(["index", "build", str(emb / "emb.npy"), "--out", str(out), "--batch", "70",
                "--quiet", "--precision", "int8", "--rerank", "float16"]) == 0  # fmt: skip
    index = MatryoshkaIndex.load(out)
    assert len(index) == 300 and index.precision == "int8"
    capsys.readouterr()
    assert run(["search", str(out), "--queries", str(emb / "q.npy"), "--funnel",
                "8:100,32:50,32:3", "--quiet"]) == 0  # fmt: skip
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [r["ids"][0] for r in lines] == [0, 1, 2, 3, 4]
    assert run(["search", str(out), "--queries", str(emb / "q.npy"), "-k", "4", "--dim", "16",
                "--out", str(emb / "r.npz"), "--quiet"]) == 0  # fmt: skip
    r = np.load(emb / "r.npz")
    assert r["I"].shape == (5, 4) and (r["I"][:, 0] == np.arange(5)).all()


def test_search_with_an_approximate_first_stage(emb, capsys):
    pytest.importorskip("faiss")
    out = emb / "ix"
    run(["index", "build", str(emb / "emb.npy"), "--out", str(out), "--quiet"])
    capsys.readouterr()
    assert run(["search", str(out), "--queries", str(emb / "q.npy"), "--funnel", "8:50,32:1",
                "--ann", "ivf", "--ann-param", "nlist=8", "--ann-param", "nprobe=8",
                "--quiet"]) == 0  # fmt: skip
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [r["ids"] for r in lines] == [[0], [1], [2], [3], [4]]
    run(["index", "build", str(emb / "emb.npy"), "--out", str(out), "--quiet", "--ann", "hnsw",
         "--ann-dim", "8", "--ann-param", "M=8"])  # fmt: skip
    capsys.readouterr()
    assert run(["search", str(out), "--queries", str(emb / "q.npy"), "--funnel", "8:50,32:1",
                "--ann", "saved", "--quiet"]) == 0  # fmt: skip
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [r["ids"] for r in lines] == [[0], [1], [2], [3], [4]]


def test_plan_prints_the_table_and_writes_json(emb, capsys):
    assert run(["plan", "--n", "50000000", "--budget", "100GB", "--json",
                str(emb / "plan.json")]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "| 500 | float32 | 2000 | 100.0 GB | yes |" in table
    for p in ("float32", "float16", "int8", "binary"):
        assert f"| {p} |" in table
    assert json.loads((emb / "plan.json").read_text())["largest_fit"]["float32"] == 500
    assert run(["plan", "--n", "1000", "--budget", "64KB", "--embeddings", str(emb / "emb.npy"),
                "--holdout", "20", "--fitting-only"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "recall@10" in table and "| no |" not in table


def test_errors_are_clear(emb):
    with pytest.raises(ValueError, match="--funnel must look like"):
        parse_funnel("32-400")
    with pytest.raises(FileNotFoundError, match="embeddings file not found"):
        run(["index", "build", str(emb / "nope.npy"), "--out", str(emb / "ix")])
    with pytest.raises(ValueError, match="budget must be a number of bytes"):
        run(["plan", "--n", "10", "--budget", "lots"])
    with pytest.raises(SystemExit):
        run(["search", "--help"])
