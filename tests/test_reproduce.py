"""The CIFAR-10 reproduction pipeline, end to end on a tiny generated image folder."""

import json

import numpy as np
import pytest
import yaml

from matryoshka.reproduce import cifar10_jobs, reproduce_cifar10
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
        "data": {"name": "image_folder", "root": str(tmp_path / "images"),
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
        progress=False,
        command="matryoshka reproduce cifar10 --config tiny.yaml",
    )
    docs = tmp_path / "docs"
    text = (docs / "cifar10.md").read_text()
    for heading in ("## Accuracy at every size", "## Fine-tuning", "## Adaptive classification",
                    "## Where the model looks"):  # fmt: skip
        assert heading in text
    assert "matryoshka reproduce cifar10 --config tiny.yaml" in text
    for png in ("cifar10_accuracy_vs_dim.png", "cifar10_adaptive.png", "cifar10_gradcam.png"):
        assert (docs / png).stat().st_size > 5000
    methods = [r["method"] for r in out["finetune"]]
    assert methods == ["mrl", "ft-head", "ft-last1", "ft-all", "ff"]
    adaptive = json.loads((tmp_path / "out" / "adaptive.json").read_text())
    assert adaptive["dims"] == [4, 8, 16]
    # a second run trains nothing: every model folder is complete and reused
    again = reproduce_cifar10(tiny_config, out_dir=tmp_path / "out", docs_dir=docs,
                              finetune_epochs=1, progress=False, command="x")  # fmt: skip
    assert again["comparison"]["results"] == out["comparison"]["results"]
