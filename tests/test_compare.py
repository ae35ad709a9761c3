"""``matryoshka compare`` on the built-in digits: the side-by-side on a user's recipe, its report
titled and described from that recipe, redrawn alone from its results file."""

from __future__ import annotations

import json

import pytest

from matryoshka.cli import main
from matryoshka.experiments.common import describe_augment, describe_data, duration


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "run"
    argv = ["compare", "--out", str(out), "--methods", "mrl,pca,truncation", "--dims", "8,32",
            "epochs=2", "model.d=32", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_compare_trains_what_the_methods_need_and_scores_every_size(compared):
    folders = sorted(p.name for p in (compared / "models").iterdir() if p.is_dir())
    assert folders == ["ff-32", "mrl"]  # FF at full size only: the start of PCA and truncation
    data = json.loads((compared / "results.json").read_text())
    assert [r["method"] for r in data["results"]] == ["mrl", "pca", "truncation"]
    assert data["trained"] == [8, 32] and data["sizes"] == [8, 20, 32]
    assert data["n_train"] + data["n_test"] == 1797  # every digit, split once
    # MRL has a classifier at its trained sizes only; the probes score every size
    assert set(data["results"][0]["dims"]["20"]) == {"knn1"}
    assert {"top1", "knn1"} <= set(data["results"][1]["dims"]["20"])


def test_the_report_is_described_from_the_recipe_and_redraws_the_same(compared, capsys):
    report = (compared / "report.md").read_text()
    assert report.startswith("# MRL against its baselines on scikit-learn's 8x8 digits\n")
    assert "no augmentation; backbone `mlp`, d = 32; trained sizes [8, 32]; 2 epochs" in report
    assert "CIFAR" not in report
    (compared / "report.md").unlink()
    assert main(["compare", "--out", str(compared), "--report-only"]) == 0
    assert (compared / "report.md").read_text() == report


def test_compare_keeps_its_models_under_out_and_cifar10_stays_cifar10(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path), "out_dir=elsewhere"]) == 2
    assert "set --out instead of out_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own check of the flag
        main(["compare", "--methods", "mrl,svd"])
    assert "subset of mrl,mrl-e,ff,pca,truncation" in capsys.readouterr().err
    argv = ["reproduce", "cifar10", "data.name=digits", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    assert "use `matryoshka compare`" in capsys.readouterr().err
    argv = ["reproduce", "cifar10", "eval_every=0", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    assert "eval_every must be at least 1 (e.g. eval_every=4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "data, words",
    [
        ({"name": "digits", "augment": True}, "no augmentation"),
        ({"name": "cifar10", "augment": True}, "pad-4 crop + flip"),
        ({"name": "image_folder", "augment": True, "flip": False}, "pad-4 crop"),
        ({"name": "image_folder", "augment": True, "crop": False}, "flip"),
        ({"name": "image_folder", "augment": False}, "no augmentation"),
    ],
)
def test_augmentation_in_words(data, words):
    assert describe_augment(data) == words


def test_data_and_durations_in_words():
    assert describe_data({"name": "image_folder", "root": "pngs"}) == "the image folder `pngs`"
    assert describe_data({"name": "cifar10", "root": None}) == "CIFAR-10 (torchvision's copy)"
    assert (duration(42.4), duration(89), duration(600)) == ("42 s", "89 s", "10 min")
