"""``reproduce cifar10-text`` end to end at toy size: a folder of coloured JPEGs in CIFAR-10's
layout, a few steps per model, every row of the report, reuse on a second run."""

import json

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
Image = pytest.importorskip("PIL.Image")

from matryoshka.cli import main  # noqa: E402
from matryoshka.eval import read_json  # noqa: E402
from matryoshka.experiments.cifar10_text import (  # noqa: E402
    Cifar10TextConfig,
    reproduce_cifar10_text,
    text_models,
)
from matryoshka.train import DualTrainConfig  # noqa: E402

CLASSES = ["red", "green", "blue"]


def write_colours(root, n_train=48, n_test=15):
    """train/<class>/*.jpg and test/<class>/*.jpg: 16x16 images lit in their class's channel."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n // 3):
                pixels = rng.integers(0, 60, size=(16, 16, 3))
                pixels[..., c] += 180
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.jpg")
    return root


def toy(tmp_path, **kw):
    train = DualTrainConfig(epochs=2, batch_size=12, lr=5e-3, warmup_epochs=0.2)
    return Cifar10TextConfig(
        data_dir=write_colours(tmp_path / "data"), cache_dir=None, out_dir=tmp_path / "run",
        docs_dir=tmp_path / "docs", d=16, dims=(4, 8, 16), width=4, train=train,
        funnels=[[(4, 10), (16, 10)]], **kw,
    )  # fmt: skip


def test_reproduce_cifar10_text_toy_runs_reports_and_reuses(tmp_path):
    cfg = toy(tmp_path)
    assert list(text_models(cfg)) == ["mrl", "mrl-text1", "ff-4", "ff-8", "ff-16"]
    out = reproduce_cifar10_text(cfg, progress=False, command="matryoshka reproduce cifar10-text")
    by = {r["method"]: r["dims"] for r in out["zero_shot"]}
    assert list(by) == ["mrl", "mrl-text1", "pca", "truncation", "ff"]
    assert sorted(by["mrl"]) == [4, 6, 8, 12, 16] and sorted(by["ff"]) == [4, 8, 16]
    assert all(0 <= v["top1"] <= 1 for row in by.values() for v in row.values())
    # truncation at full size is the fixed full-size model itself; PCA keeps its full size
    assert by["truncation"][16]["top1"] == by["ff"][16]["top1"]
    assert by["pca"][16]["top1"] == pytest.approx(by["truncation"][16]["top1"])
    assert out["counts"] == {"train": 48, "test": 15, "classes": 3}
    assert out["funnels"][0]["funnel"] == "full" and len(out["funnels"]) == 2
    assert out["training"]["mrl"]["steps"] == 8 and out["training"]["ff-4"]["dims"] == [4]
    md = (tmp_path / "docs" / "cifar10-text.md").read_text()
    for text in ("matryoshka reproduce cifar10-text", "mrl − ff", "within 1 point of FF",
                 "a pixelated photo of a {}.", "## Text → image search"):  # fmt: skip
        assert text in md, text
    saved = json.loads((tmp_path / "docs" / "cifar10-text.json").read_text())
    assert saved["zero_shot"][0]["method"] == "mrl"
    from matryoshka.experiments.html_report import find_results, render_report, results_kind

    assert results_kind(read_json(tmp_path / "run" / "results.json")) == "cifar10-text"
    assert find_results(tmp_path / "docs") == [("cifar10-text", tmp_path / "docs" /
                                                "cifar10-text.json")]  # fmt: skip
    page = render_report(tmp_path / "docs")
    for sid in ("cifar10text-summary", "cifar10text-zeroshot", "cifar10text-search"):
        assert sid in page, sid
    assert f"{100 * by['mrl'][4]['top1']:.1f}" in page
    again = reproduce_cifar10_text(cfg, progress=False)
    assert again["trained_here"] == []
    assert again["zero_shot"] == out["zero_shot"]  # the reloaded models score the same


def test_a_folder_trained_with_another_recipe_is_refused(tmp_path):
    from dataclasses import replace

    cfg = toy(tmp_path, ff=False)
    reproduce_cifar10_text(cfg, progress=False)
    with pytest.raises(ValueError, match="another recipe"):
        reproduce_cifar10_text(replace(cfg, train=replace(cfg.train, lr=1e-3)), progress=False)


def test_report_only_redraws_from_the_json(tmp_path, capsys):
    cfg = toy(tmp_path, ff=False)
    reproduce_cifar10_text(cfg, progress=False)
    (tmp_path / "docs" / "cifar10-text.md").unlink()
    rc = main(["reproduce", "cifar10-text", "--report-only", "--docs", str(tmp_path / "docs")])
    assert rc == 0 and "redrew" in capsys.readouterr().out
    md = (tmp_path / "docs" / "cifar10-text.md").read_text()
    assert "| mrl-text1 |" in md and "mrl − ff" not in md  # no fixed-size models this time


def test_the_open_clip_path_fine_tunes_both_towers_of_a_tiny_model(tmp_path):
    pytest.importorskip("open_clip")
    tiny = tmp_path / "tiny-clip"
    tiny.mkdir()
    arch = {"embed_dim": 16, "vision_cfg": {"image_size": 24, "layers": 2, "width": 32,
            "patch_size": 8, "head_width": 16}, "text_cfg": {"context_length": 12,
            "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2}}  # fmt: skip
    (tiny / "open_clip_config.json").write_text(json.dumps({"model_cfg": arch}))
    out = reproduce_cifar10_text(toy(tmp_path, open_clip=str(tiny)), progress=False)
    by = {r["method"]: r["dims"] for r in out["zero_shot"]}
    assert list(by) == ["mrl", "mrl-text1", "pca", "truncation", "ff"]  # 16x16 images resized
    md = (tmp_path / "docs" / "cifar10-text.md").read_text()
    assert f"open_clip `{tiny}`" in md
    info = json.loads((tmp_path / "run" / "models" / "ff-8" / "config.json").read_text())
    assert info["d"] == 8 and info["image"]["open_clip"] == arch


def test_a_limit_draws_images_of_every_class_not_the_first_ones():
    from matryoshka.data.images import DecodedImageDataset
    from matryoshka.experiments.cifar10_text import _subset

    labels = np.repeat(np.arange(3), 20)  # a folder copy: sorted by class
    ds = DecodedImageDataset(np.zeros((60, 3, 4, 4), np.uint8), labels, CLASSES)
    part = _subset(ds, 15)
    assert len(part) == 15 and set(part.labels.tolist()) == {0, 1, 2}
    assert _subset(ds, 15).labels.tolist() == part.labels.tolist()  # seeded
    assert _subset(ds, None) is ds
