"""The CIFAR-10 reproduction pipeline, end to end on a tiny generated folder in CIFAR-10's local
layout (train/ and test/ class folders)."""

import json
import re

import numpy as np
import pytest
import yaml

from matryoshka.cli import main
from matryoshka.eval import read_json
from matryoshka.experiments.cifar10 import cifar10_jobs, reproduce_cifar10, seed_jobs
from matryoshka.experiments.cifar10_report import render_cifar10
from matryoshka.train import load_config

Image = pytest.importorskip("PIL.Image")

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]


def make_folder(root, per_class_train=40, per_class_test=10):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        for c, colour in enumerate(COLOURS):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
                y0, x0 = rng.integers(0, 16, 2)
                img[y0 : y0 + 16, x0 : x0 + 16] = colour
                Image.fromarray(img).save(folder / f"{i:03d}.png")


@pytest.fixture
def tiny_config(tmp_path):
    make_folder(tmp_path / "images")
    cfg = {
        "data": {"name": "cifar10", "root": str(tmp_path / "images"),
                 "cache_dir": str(tmp_path / "cache"), "holdout": 30},
        "model": {"backbone": "small_cnn", "backbone_kwargs": {"width": 4}, "d": 16,
                  "dims_start": 4},
        "optim": {"lr": 0.05, "warmup_epochs": 0},
        "epochs": 1, "batch_size": 16, "device": "cpu",
        "out_dir": str(tmp_path / "models"),
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_jobs_train_full_size_ff_first_and_fine_tune_from_it(tiny_config):
    base = load_config(tiny_config)
    jobs = cifar10_jobs(base, finetune_epochs=1)
    names = list(jobs)
    assert names[0] == "ff-16"
    assert names[1:3] == ["mrl", "mrl-e"]
    assert names[-3:] == ["finetune-head", "finetune-last1", "finetune-all"]
    assert jobs["finetune-all"].init_from == jobs["ff-16"].out_dir
    assert jobs["ff-4"].model.d == 4 and jobs["ff-4"].model.head == "ff"


def test_reproduce_writes_the_report(tiny_config, tmp_path):
    out = reproduce_cifar10(
        tiny_config,
        out_dir=tmp_path / "out",
        docs_dir=tmp_path / "docs",
        finetune_epochs=1,
        seeds=2,
        seed_sizes=[4, 16],
        progress=False,
        command="matryoshka reproduce cifar10 --config tiny.yaml",
    )
    docs = tmp_path / "docs"
    text = (docs / "cifar10.md").read_text()
    for heading in ("## Accuracy at every size", "## Fine-tuning", "## Adaptive classification",
                    "## Where the model looks", "## Spread over seeds (2 seeds: 0…1)"):  # fmt: skip
        assert heading in text
    assert "matryoshka reproduce cifar10 --config tiny.yaml" in text
    for png in ("cifar10_accuracy_vs_dim.png", "cifar10_adaptive.png", "cifar10_gradcam.png"):
        assert (docs / png).stat().st_size > 5000
    methods = [r["method"] for r in out["finetune"]]
    assert methods == ["mrl", "ft-head", "ft-last1", "ft-all", "ff"]

    # every size and count in the text comes from this config (d = 16), none from another one
    assert "d = 16, sizes [4, 8, 16]" in text and "from the FF-16 checkpoint" in text
    assert "from 4 to 16 dimensions" in text and "all 11 models" in text
    assert re.search(r"\b(256|128|64)\b", text) is None  # (32 is a claim's bound, not a size)
    by = {r["method"]: r["dims"] for r in out["comparison"]}
    mrl, ff = by["mrl"][8]["top1"], by["ff"][8]["top1"]
    assert f"| 8 | {100 * (mrl - ff):+.1f} |" in text  # the gap table, from the results
    assert f"| 8 | {100 * mrl:.1f} |" in text  # the accuracy table's first column

    adaptive = json.loads((tmp_path / "out" / "results.json").read_text())["adaptive"]
    assert adaptive["dims"] == [4, 8, 16]
    # chosen on held-out data with no slack: the smallest held-out expected size that reaches
    # both full-size FF and the largest MRL head there, or none when no point does
    assert adaptive["holdout_target"] == max(
        adaptive["ff_full_holdout_top1"], adaptive["holdout_fixed"]["16"]
    )
    reach = [p for p in adaptive["points"] if p["holdout_top1"] >= adaptive["holdout_target"]]
    assert adaptive["selected"] == min(reach, key=lambda p: p["holdout_expected_size"],
                                       default=None)  # fmt: skip
    expected = (
        f"start at {adaptive['selected']['start']}, target precision"
        if adaptive["selected"]
        else "No operating point reached full-size top-1 on the held-out images."
    )
    assert expected in text
    seeds = out["seeds"]
    assert sorted(seeds) == [4, 8, 16]
    assert all(len(v["mrl"]) == 2 for v in seeds.values())
    assert len(seeds[4]["ff"]) == 2 and "ff" not in seeds[8]
    # seed 0's numbers are the main run's, the other seed's differ
    assert seeds[16]["mrl"][0] == by["mrl"][16]["top1"]

    # the report is rendered from cifar10.json alone: the same text without the models
    saved = read_json(docs / "cifar10.json")
    (docs / "cifar10.md").unlink()
    assert render_cifar10(saved, docs) == text  # Grad-CAM maps come from cifar10_gradcam.npz
    assert main(["reproduce", "cifar10", "--report-only", "--docs", str(docs)]) == 0
    assert (docs / "cifar10.md").read_text() == text

    # a second run trains nothing: every model folder is complete and reused
    again = reproduce_cifar10(tiny_config, out_dir=tmp_path / "out", docs_dir=docs,
                              finetune_epochs=1, seeds=2, seed_sizes=[4, 16], progress=False,
                              command="x")  # fmt: skip
    assert again["comparison"] == out["comparison"]


def test_seed_jobs_shift_the_seed_only(tiny_config):
    base = load_config(tiny_config)
    jobs = seed_jobs(base, [4, 8, 16], seeds=3, ff_sizes=[16])
    assert list(jobs) == ["mrl-seed1", "ff-16-seed1", "mrl-seed2", "ff-16-seed2"]
    assert [c.seed for c in jobs.values()] == [1, 1, 2, 2]
    assert jobs["ff-16-seed2"].model.head == "ff" and jobs["ff-16-seed2"].model.d == 16
    assert seed_jobs(base, [4, 8, 16], seeds=1, ff_sizes=[16]) == {}
    with pytest.raises(ValueError, match="not trained sizes"):
        seed_jobs(base, [4, 8, 16], seeds=2, ff_sizes=[12])
    with pytest.raises(ValueError, match="seeds must be between 1 and 100, got 0"):
        seed_jobs(base, [4, 8, 16], seeds=0, ff_sizes=[16])
