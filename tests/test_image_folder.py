"""A user's own image folder, end to end: grayscale kept in one channel, mean and std measured
and saved, augmentations one by one, the evaluation view, evaluation during training, and
``matryoshka train --data PATH`` followed by ``matryoshka eval``, on tiny generated PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from matryoshka.cli import main  # noqa: E402
from matryoshka.data import (  # noqa: E402
    IMAGENET_MEAN,
    DecodedImageDataset,
    image_folder,
    load_dataset,
    measure_stats,
    random_crop_flip,
    survey_images,
)
from matryoshka.train import (  # noqa: E402
    ModelConfig,
    TrainConfig,
    build_model,
    config_diff,
    load_config,
    load_data,
    load_model,
    read_metrics,
    train,
)

CLASSES = ["bar", "line", "spot"]


def _pattern(c: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size) uint8 image of class ``c``: a vertical bar, a horizontal line or a spot,
    at a random place, over faint noise."""
    img = rng.integers(0, 40, (size, size)).astype(np.uint8)
    at = int(rng.integers(2, size - 6))
    if c == 0:
        img[:, at : at + 3] = 230
    elif c == 1:
        img[at : at + 3, :] = 230
    else:
        img[at : at + 4, at : at + 4] = 250
    return img


def make_gray_folder(root: Path, size: int = 16, n_train: int = 10, n_test: int = 5) -> dict:
    """root/{train,test}/<class>/*.png, 8-bit grayscale; returns the pixels, split -> (N, H, W)."""
    rng = np.random.default_rng(0)
    pixels: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = _pattern(c, rng, size)
                Image.fromarray(img, mode="L").save(root / split / name / f"{i:02d}.png")
                pixels[split].append(img)
    return {k: np.stack(v) for k, v in pixels.items()}


def make_rgb_folder(root: Path, size: int = 8) -> np.ndarray:
    """root/{train,test}/<class>/*.png in colour; returns the train pixels (N, H, W, 3)."""
    rng = np.random.default_rng(1)
    out = []
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
                if split == "train":
                    out.append(img)
    return np.stack(out)


def _printed_recipe(out: str) -> dict:
    """The YAML ``train --data`` prints before training (up to the first blank line)."""
    return yaml.safe_load(out.split("\n\n")[0])


# --------------------------------------------------------------------------- end to end


def test_train_data_then_eval_a_grayscale_folder(tmp_path, capsys):
    root = tmp_path / "shapes"
    pixels = make_gray_folder(root)
    model_dir, cache = tmp_path / "model", tmp_path / "cache"
    args = ["train", "--data", str(root), "--quiet", f"out_dir={model_dir}",
            f"data.cache_dir={cache}", "epochs=6", "batch_size=10", "optim.lr=0.05",
            "model.backbone=small_cnn", "model.backbone_kwargs={width: 8}", "model.d=16",
            "model.dims_start=4", "device=cpu"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    printed = _printed_recipe(out)
    data = printed["data"]
    assert data["name"] == "image_folder" and data["root"] == str(root)
    assert data["channels"] == 1 and data["flip"] is False and data["crop"] is True
    assert data["padding"] == 2  # 16 px / 8
    assert "data.flip=true" in out and "3 classes (bar, line, spot), 30 training images" in out
    train_px = pixels["train"].astype(np.float64) / 255  # (30, 16, 16)
    assert data["mean"] == pytest.approx([train_px.mean()], abs=1e-4)
    assert data["std"] == pytest.approx([train_px.std()], abs=1e-4)
    assert "test top-1 per size" in out

    # the saved recipe holds the same numbers; the cache and the tensors have one channel
    saved = json.loads((model_dir / "config.json").read_text())["config"]["data"]
    assert (saved["channels"], saved["mean"], saved["std"]) == (1, data["mean"], data["std"])
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("train-")]
    assert "gray" in folder.name and np.load(folder / "images.npy").shape == (30, 1, 16, 16)
    model, cfg, classes = load_model(model_dir)
    train_ds, test_ds, _ = load_data(cfg, augment=False)
    x, _ = test_ds[0]
    assert classes == CLASSES and x.shape == (1, 16, 16)
    expected = (pixels["test"][0] / 255 - data["mean"][0]) / data["std"][0]
    assert torch.allclose(x[0], torch.from_numpy(expected).float(), atol=1e-5)
    assert model.embed(x[None]).shape == (1, 16)

    card = (model_dir / "README.md").read_text()
    assert "`small_cnn` backbone with a `mrl` head" in card and "sizes [4, 8, 16]" in card
    assert "3 classes" in card and "1 channel (grayscale)" in card and "load_model(" in card
    assert "| size | top-1 |" in card and "| 16 |" in card

    # eval reads the data settings from the model folder: one channel, the measured numbers
    assert main(["eval", str(model_dir), "--quiet"]) == 0
    assert "| 16 |" in capsys.readouterr().out
    res = json.loads((model_dir / "eval" / "results.json").read_text())["results"][0]["dims"]
    assert {"4", "8", "16"} <= set(res)
    assert res["16"]["knn1"] > 0.8 and res["16"]["top1"] > 0.6  # 15 test images, chance 1/3

    # the saved config repeats the run: same recipe, same weights
    again = tmp_path / "again"
    assert main(["train", "--config", str(model_dir / "config.json"), f"out_dir={again}",
                 "--quiet"]) == 0  # fmt: skip
    assert (again / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors"
    ).read_bytes()


def test_train_data_refuses_mixed_sizes_with_a_proposal(tmp_path, capsys):
    root = tmp_path / "mixed"
    make_gray_folder(root, size=16, n_train=2, n_test=1)
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(root / "train" / "bar" / "big.png")
    assert main(["train", "--data", str(root), f"out_dir={tmp_path / 'm'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "differ in size (16x16: 6, 24x20: 1); pass data.image_size=N" in err
    assert "data.image_size=16" in err


# --------------------------------------------------------------------------- measuring


def test_measure_stats_known_answer():
    black_white = np.zeros((2, 1, 3, 3), np.uint8)
    black_white[1] = 255  # half the pixels 0, half 1: mean 0.5, std 0.5
    ds = DecodedImageDataset(black_white, [0, 1], ["a", "b"])
    assert measure_stats(ds) == ((0.5,), (0.5,))
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (50, 3, 4, 5), dtype=np.uint8)
    ds = DecodedImageDataset(images, [0] * 50, ["a"])
    mean, std = measure_stats(ds)
    x = images.astype(np.float64) / 255
    assert mean == pytest.approx(x.mean(axis=(0, 2, 3)), abs=5e-5)
    assert std == pytest.approx(x.std(axis=(0, 2, 3)), abs=5e-5)
    # a seeded sample: the numbers of exactly the picked images, the same on every call
    picked = np.sort(np.random.default_rng(0).choice(50, 10, replace=False))
    mean, std = measure_stats(ds, limit=10)
    assert mean == pytest.approx(x[picked].mean(axis=(0, 2, 3)), abs=5e-5)
    assert measure_stats(ds, limit=10) == (mean, std) != measure_stats(ds)
    constant = DecodedImageDataset(np.full((2, 1, 2, 2), 7, np.uint8), [0, 0], ["a"])
    assert measure_stats(constant)[1] == (0.0039,)  # one grey level, so it can divide


def test_survey_reads_channels_and_sizes(tmp_path):
    make_gray_folder(tmp_path / "g", n_train=2, n_test=1)
    make_rgb_folder(tmp_path / "c")
    gray, colour = survey_images(tmp_path / "g"), survey_images(tmp_path / "c")
    assert gray.channels == 1 and gray.modes == {"L": 6} and gray.size == (16, 16)
    assert gray.classes == CLASSES and gray.count == gray.sampled == 6
    assert colour.channels == 3 and colour.modes == {"RGB": 9} and colour.size == (8, 8)
    assert survey_images(tmp_path / "g", limit=4).sampled == 4


def test_rgb_folder_stays_three_channels(tmp_path):
    pixels = make_rgb_folder(tmp_path / "c")  # (9, 8, 8, 3)
    train, test, classes = load_dataset("image_folder", root=tmp_path / "c", augment=False)
    assert train.channels == test.channels == 3 and train[0][0].shape == (3, 8, 8)
    x = pixels.astype(np.float64) / 255
    assert train.mean == pytest.approx(x.mean(axis=(0, 1, 2)), abs=1e-4)
    assert test.mean == train.mean and test.std == train.std  # the train split's numbers
    gray, _, _ = load_dataset("image_folder", root=tmp_path / "c", channels=1, augment=False)
    assert gray[0][0].shape == (1, 8, 8)  # asked for: colour decoded as its luma
    luma = np.array(Image.fromarray(pixels[0]).convert("L"))
    assert torch.equal(gray.pixels([0])[0, 0], torch.from_numpy(luma))


# --------------------------------------------------------------------------- augmentation


def _kind(out: torch.Tensor, image: torch.Tensor, padding: int) -> str:
    """What an augmented uint8 (C, H, W) is of ``image``: "same", a shifted "window" of it
    zero-padded by ``padding``, a "mirror" (of a window), or "other"."""
    if torch.equal(out, image):
        return "same"
    h, w = image.shape[-2:]
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    windows = [padded[:, i : i + h, j : j + w] for i in range(2 * padding + 1)
               for j in range(2 * padding + 1)]  # fmt: skip
    if any(torch.equal(out, win) for win in windows):
        return "window"
    return "mirror" if any(torch.equal(out, win.flip(-1)) for win in windows) else "other"


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_and_flip_one_by_one(tmp_path, crop, flip):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 5, 6), dtype=torch.uint8, generator=g)
    out = random_crop_flip(x, padding=0, flip=flip)
    mirrored = sum(_kind(o, i, 0) == "mirror" for o, i in zip(out, x))
    assert (mirrored == 0) if not flip else 10 < mirrored < 54  # flip off: never mirrored

    make_gray_folder(tmp_path / "g", n_train=4, n_test=1)
    train, _, _ = load_dataset("image_folder", root=tmp_path / "g", crop=crop, flip=flip,
                               cache_dir=tmp_path / "cache", progress=False, padding=2)  # fmt: skip
    assert train.augment == ("crop" if crop or flip else "none") and train.flip is flip
    pixels = train.pixels(list(range(len(train))))  # (12, 1, 16, 16) uint8, before augmentation
    torch.manual_seed(0)
    kinds = set()
    for i in list(range(len(train))) * 6:
        back = train[i][0] * train.std[0] * 255 + train.mean[0] * 255  # undo the normalisation
        kinds.add(_kind(back.round().to(torch.uint8), pixels[i], 2 if crop else 0))
    assert "other" not in kinds
    assert ("mirror" in kinds) == flip and ("window" in kinds) == crop
    if not (crop or flip):
        assert kinds == {"same"}
    train, _, _ = load_dataset("image_folder", root=tmp_path / "g", augment=False, crop=crop,
                               flip=flip, progress=False)  # fmt: skip
    assert train.augment == "none"  # the master switch turns both off


@pytest.mark.parametrize("flip", [False, True])
def test_on_the_fly_resized_crop_obeys_flip(tmp_path, flip):
    make_gray_folder(tmp_path / "g", n_train=1, n_test=1)
    train, _, _ = load_dataset("image_folder", root=tmp_path / "g", image_size=16, flip=flip,
                               crop_fraction=1.0, progress=False)  # fmt: skip
    assert train.augment == "resized_crop" and train.flip is flip
    train.scale = train.ratio = (1.0, 1.0)  # a box of the whole image: only the flips differ
    plain = train.with_augment("none")
    torch.manual_seed(0)
    kinds = {_kind(train[i][0], plain[i][0], 0) for i in range(len(train)) for _ in range(4)}
    assert kinds == ({"same", "mirror"} if flip else {"same"})


def test_crop_fraction_one_resizes_the_whole_image(tmp_path):
    folder = tmp_path / "wide" / "test" / "a"
    folder.mkdir(parents=True)
    pixels = np.zeros((4, 16), np.uint8)  # (H, W): black, the right quarter grey
    pixels[:, 12:] = 200
    Image.fromarray(pixels, mode="L").save(folder / "0.png")
    whole = image_folder(tmp_path / "wide", "test", image_size=4, crop_fraction=1.0, channels=1)
    x = whole.decode(0)  # (1, 4, 4): all 16 columns squeezed into 4
    assert x.shape == (1, 4, 4) and (x[..., 0] == 0).all() and (x[..., 3] > 150).all()
    assert (x == x[:, :1]).all() and 45 < x.float().mean() < 55  # rows alike; a quarter grey
    centre = image_folder(tmp_path / "wide", "test", image_size=4, channels=1).decode(0)
    assert (centre == 0).all()  # 0.875: the centre 3.5x3.5 square, all black


# --------------------------------------------------------------------------- model, config


def test_channels_reach_the_model_and_a_mismatch_is_clear(tmp_path):
    small = ModelConfig(backbone="small_cnn", d=8, dims_start=4, backbone_kwargs={"width": 4})
    model = build_model(small, 3, 1)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 2, 3)  # sizes 4, 8
    pytest.importorskip("torchvision")
    for stem in (True, False):
        cfg = ModelConfig(backbone="resnet18", d=16, backbone_kwargs={"cifar_stem": stem})
        assert build_model(cfg, 3, 1).embed(torch.zeros(2, 1, 32, 32)).shape == (2, 16)
    bad = ModelConfig(backbone="small_cnn", d=8, backbone_kwargs={"in_channels": 3})
    with pytest.raises(ValueError, match=r"in_channels=3 but the data's images have 1 channel"):
        build_model(bad, 3, 1)
    make_gray_folder(tmp_path / "g", n_train=2, n_test=1)
    cfg = load_config(None, ["data.name=image_folder", f"data.root={tmp_path / 'g'}",
                             "model.backbone=small_cnn", "model.backbone_kwargs={in_channels: 3}",
                             f"out_dir={tmp_path / 'm'}", "device=cpu"])  # fmt: skip
    with pytest.raises(ValueError, match=r"in_channels=3 but the data's images have 1 channel"):
        train(cfg, progress=False)


def test_config_checks_of_the_image_keys():
    for override, message in [
        ("data.channels=2", "data.channels must be 1, 3 or null"),
        ("data.crop_fraction=0", "data.crop_fraction must be a finite number in"),
        ("data.padding=-1", "data.padding must be at least 0"),
        ("eval_subset=0", "eval_subset must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_config(None, [override])
    with pytest.raises(ValueError, match="data.mean and data.std go together"):
        load_config(None, ["data.mean=[0.5]"])
    with pytest.raises(ValueError, match=r"one value per channel \(1\)"):
        load_config(None, ["data.channels=1", "data.mean=[0.5, 0.5, 0.5]", "data.std=[1, 1, 1]"])
    with pytest.raises(ValueError, match=r"data.channels=1, but cifar10 images have 3 channel"):
        load_config(None, ["data.name=cifar10", "data.channels=1"])
    cfg = load_config(None, ["data.mean=[0.5]", "data.std=[0.25]", "data.channels=1"])
    assert cfg.data.mean == [0.5] and cfg.data.flip and cfg.data.crop_fraction == 0.875
    # measured numbers count only when the request sets them
    request = TrainConfig()
    assert config_diff(cfg, request) == []
    request.data.mean, request.data.std = [0.4], [0.25]
    assert config_diff(cfg, request) == ["data.mean"]


def test_a_folder_saved_before_measured_numbers_loads_as_it_trained(tmp_path):
    make_gray_folder(tmp_path / "g", n_train=2, n_test=1)
    out = tmp_path / "m"
    cfg = load_config(None, ["data.name=image_folder", f"data.root={tmp_path / 'g'}",
                             "data.channels=3", "model.backbone=small_cnn", "epochs=1",
                             "model.backbone_kwargs={width: 4}", "model.d=8", f"out_dir={out}",
                             "device=cpu"])  # fmt: skip
    train(cfg, progress=False)
    info = json.loads((out / "config.json").read_text())
    for key in ("channels", "mean", "std"):  # as an older version wrote it
        del info["config"]["data"][key]
    (out / "config.json").write_text(json.dumps(info))
    _, loaded, _ = load_model(out)
    assert loaded.data.mean == list(IMAGENET_MEAN) and loaded.data.channels == 3


# --------------------------------------------------------------------------- evaluation


def _digits(out_dir, **kw) -> TrainConfig:
    cfg = load_config(None, ["model.d=8", "model.dims_start=4", "data.train_subset=100",
                             "device=cpu", "epochs=3", "batch_size=50",
                             f"out_dir={out_dir}"])  # fmt: skip
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_eval_every_zero_runs_no_evaluation(tmp_path, monkeypatch, capsys):
    from matryoshka.train import loop

    calls = []
    real = loop.head_accuracy
    monkeypatch.setattr(loop, "head_accuracy", lambda *a: calls.append(len(a[1])) or real(*a))
    result = train(_digits(tmp_path / "none", eval_every=0), progress=False)
    assert calls == [] and not any("test_top1" in r for r in result["history"])
    assert read_metrics(tmp_path / "none")["complete"]
    assert "No evaluation has been run" in (tmp_path / "none" / "README.md").read_text()
    result = train(_digits(tmp_path / "two", eval_every=2), progress=False)
    assert [r["epoch"] for r in result["history"] if "test_top1" in r] == [2, 3]  # and the last
    assert calls == [360, 360]
    assert main(["train", "--quiet", "--out", str(tmp_path / "cli"), "eval_every=0", "epochs=1",
                 "model.d=8", "data.train_subset=100"]) == 0  # fmt: skip
    assert "no evaluation ran during training (eval_every=0)" in capsys.readouterr().out


def test_eval_subset_scores_a_stratified_pick(tmp_path):
    result = train(_digits(tmp_path / "m", eval_subset=30, epochs=1), progress=False)
    assert result["history"][-1]["test_count"] == 30  # 3 of each of the 10 digits
    from matryoshka.data import dataset_labels
    from matryoshka.train.data import eval_split

    cfg = _digits(tmp_path / "m", eval_subset=30)
    _, test, _ = load_data(cfg)
    picked = eval_split(test, cfg)
    assert np.bincount(dataset_labels(test)[picked.indices]).tolist() == [3] * 10
    assert eval_split(test, _digits(tmp_path, eval_subset=10_000)) is test
    assert "on 30 test images" in (tmp_path / "m" / "README.md").read_text()
