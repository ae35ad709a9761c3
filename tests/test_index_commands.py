"""``matryoshka index build|search|plan|info`` through the real command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matryoshka.cli import main
from matryoshka.index import MatryoshkaIndex


def run(argv: list[str]) -> int:
    return main(argv)


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


def test_index_info(emb, capsys):
    out = emb / "ix"
    run(["index", "build", str(emb / "emb.npy"), "--out", str(out), "--quiet", "--precision",
         "float16"])  # fmt: skip
    capsys.readouterr()
    assert run(["index", "info", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "d: 32\n" in text and "count: 300\n" in text and "precision: float16\n" in text
    assert "panels: [[0, 32]]" in text and "checksums: every file matches" in text
    assert run(["index", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == MatryoshkaIndex.load(out).info() and info["bytes"] == 300 * 32 * 2


@pytest.mark.parametrize("words", [["index", "search"], ["search"]])
def test_k_must_match_the_funnels_last_stage(emb, capsys, words):
    run(["index", "build", str(emb / "emb.npy"), "--out", str(emb / "ix"), "--quiet"])
    capsys.readouterr()
    argv = [*words, str(emb / "ix"), "--queries", str(emb / "q.npy"), "--funnel", "8:50,32:3"]
    assert run([*argv, "-k", "5"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"matryoshka {' '.join(words)}: error: k=5 differs from the funnel's last shortlist 3; "
        "the last stage's k is what is returned\n"
    )  # one line, and no progress bar was started
    assert run([*argv, "-k", "3", "--quiet"]) == 0  # the same k is fine
    assert [len(json.loads(r)["ids"]) for r in capsys.readouterr().out.splitlines()] == [3] * 5


def test_inputs_are_checked_before_the_progress_bar(emb, capsys):
    ids = np.arange(300)
    ids[250] = 7  # a clash in the last batch: nothing may be added before it is found
    np.save(emb / "ids.npy", ids)
    argv = ["index", "build", str(emb / "emb.npy"), "--out", str(emb / "ix"), "--batch", "100"]
    assert run([*argv, "--ids", str(emb / "ids.npy")]) == 2
    err = capsys.readouterr().err
    assert err == "matryoshka index build: error: --ids must be unique, got 7 more than once\n"
    assert run([*argv, "--ann", "hnsw"]) == 2
    assert capsys.readouterr().err.startswith(
        "matryoshka index build: error: --ann needs --ann-dim"
    )
    assert not (emb / "ix").exists()
    run([*argv, "--quiet"])
    capsys.readouterr()
    q = np.zeros((2, 40), np.float32)  # wider than the index
    np.save(emb / "wide.npy", q)
    assert run(["index", "search", str(emb / "ix"), "--queries", str(emb / "wide.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("matryoshka index search: error: queries have 40 columns")
    assert err.count("\n") == 1


def test_errors_are_clear(emb, capsys):
    run(["index", "build", str(emb / "emb.npy"), "--out", str(emb / "ix"), "--quiet"])
    capsys.readouterr()
    cases = [
        (["search", str(emb / "ix"), "--queries", str(emb / "q.npy"), "--funnel", "32-400"],
         "--funnel must look like 32:400,128:50,512:10"),
        (["index", "build", str(emb / "nope.npy"), "--out", str(emb / "ix")],
         "embeddings file not found"),
        (["plan", "--n", "10", "--budget", "lots"], "budget must be a number of bytes"),
        (["index", "plan", "--n", "10", "--budget", "1GB", "--dims", "64,32"],
         "strictly ascending, got 32 after 64"),
    ]  # fmt: skip
    for argv, message in cases:
        assert run(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):
        run(["index", "search", "--help"])
