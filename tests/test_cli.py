import json

import pytest

import matryoshka
from matryoshka.cli import build_parser, main


def test_every_command_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"demo", "train", "eval", "embed", "reproduce", "index", "search",
                                "plan"}  # fmt: skip
    commands = [[name] for name in sub.choices]
    commands += [["index", name] for name in ("build", "search", "plan", "info")]
    for words in commands:
        with pytest.raises(SystemExit) as e:
            main([*words, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: matryoshka " + " ".join(words) in out
        assert "--debug" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"matryoshka {matryoshka.__version__}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "nothing-here"], "matryoshka eval: error: nothing-here is not a model folder"),
        (["train", "model.colour=red"], "matryoshka train: error: unknown config key 'model.col"),
        (["index", "info", "nothing-here"], "matryoshka index info: error: nothing-here is not"),
        (["search", "nothing-here", "--queries", "q.npy"], "matryoshka search: error:"),
        (["reproduce", "scifact", "--report-only"], "matryoshka reproduce: error: results file"),
    ],
)
def test_a_mistake_is_one_line_and_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert main(["--debug", *argv]) == 2  # --debug adds the traceback above the same line
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and message in err.splitlines()[-1]


def test_a_bad_size_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "m", "--dims", "8,x"])
    assert e.value.code == 2
    assert "expected comma-separated sizes such as 8,16,32, got '8,x'" in capsys.readouterr().err


def test_demo_writes_report_results_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert (out / "report.md").is_file()
    assert (out / "accuracy_vs_dim.png").stat().st_size > 10_000
    data = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in data["results"]]
    assert methods == ["mrl", "mrl-e", "ff", "pca", "truncation"]
    assert data["trained"] == [2, 4, 8, 16, 32, 64]
    assert data["sizes"] == [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    by = {r["method"]: r["dims"] for r in data["results"]}
    assert "top1" not in by["mrl"]["12"] and "knn1" in by["mrl"]["12"]  # MRL: no head at 12
    assert set(by["mrl-e"]["12"]) == {"top1", "knn1"}
    assert set(by["ff"]) == {"2", "4", "8", "16", "32", "64"}
    table = capsys.readouterr().out
    assert "| 12* |" in table and "mrl-e top-1" in table
    # a second run reuses every finished model instead of training again
    assert main(["demo", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["results"] == data["results"]
    # the report is rendered from results.json alone
    report = (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert main(["demo", "--out", str(out), "--report-only"]) == 0
    assert (out / "report.md").read_text() == report


def test_train_and_eval_commands(tmp_path, capsys):
    model = tmp_path / "m"
    args = ["train", "--quiet", "--out", str(model), "epochs=1", "model.d=16",
            "model.head=mrl-e", "model.dims_start=4", "data.train_subset=300"]  # fmt: skip
    assert main(args) == 0
    assert "test top-1 per size" in capsys.readouterr().out
    assert main(["eval", str(model), "--quiet", "--dims", "5"]) == 0
    res = json.loads((model / "eval" / "results.json").read_text())
    assert set(res["results"][0]["dims"]) == {"4", "5", "6", "8", "12", "16"}


def test_bad_input_gives_a_clear_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "model.colour=red"]) == 2
    assert "unknown config key 'model.colour'" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "model.dims=[16, 8]"]) == 2
    assert "strictly ascending, got 8 after 16" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_embed_writes_embeddings_once_at_full_size(tmp_path):
    import numpy as np

    from matryoshka.eval import load_embeddings

    model = tmp_path / "m"
    assert main(["train", "--quiet", "--out", str(model), "epochs=1", "model.d=16",
                 "model.dims_start=4", "data.train_subset=300"]) == 0  # fmt: skip
    out = tmp_path / "emb"
    assert main(["embed", str(model), "--out", str(out), "--split", "test", "--quiet"]) == 0
    X, y, meta = load_embeddings(out)
    assert isinstance(X, np.memmap) and X.shape == (360, 16) and y.shape == (360,)
    assert meta["dims"] == [4, 8, 16] and meta["split"] == "test" and meta["count"] == 360


def test_embeddings_files_refuse_bad_input(tmp_path):
    import numpy as np

    from matryoshka.eval import load_embeddings, save_embeddings

    X = np.ones((4, 8), np.float32)
    X[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values \\(first in row 2\\)"):
        save_embeddings(tmp_path / "e", X)
    save_embeddings(tmp_path / "e", np.ones((4, 8)), dtype="float16")
    assert load_embeddings(tmp_path / "e")[0].dtype == np.float16
    (tmp_path / "e" / "embeddings.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt embeddings file"):
        load_embeddings(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="matryoshka embed"):
        load_embeddings(tmp_path / "none")
