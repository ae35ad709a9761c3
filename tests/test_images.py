"""Image folders and tars, the decoded cache, augmentation and CIFAR-10, on tiny made-up images."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from matryoshka.data.images import (  # noqa: E402
    CIFAR10_MEAN,
    CIFAR10_STD,
    DecodedImageDataset,
    ImageFileDataset,
    cifar10,
    image_folder,
    normalize,
    random_crop_flip,
)
from matryoshka.data.images import cache as image_cache  # noqa: E402
from matryoshka.data.images import sources as image_sources  # noqa: E402

CLASSES = ["cat", "dog", "frog"]
PER_CLASS = 3
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def _write_split(root: Path, split: str, size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Lossless PNGs in root/split/class/, so pixels are known; returns name -> (H, W, 3)."""
    rng = np.random.default_rng(seed)
    written = {}
    for cls in CLASSES:
        (root / split / cls).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / cls / f"{i:02d}.png")
            written[f"{cls}/{i:02d}.png"] = pixels
    return written


def _tar(folder: Path, tar_path: Path, arcname: str) -> Path:
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname=arcname)
    return tar_path


@pytest.fixture
def data(tmp_path: Path) -> dict:
    """A folder layout root/{train,test}/class/*.png and the same as a tar of both splits."""
    root = tmp_path / "folder"
    pixels = {
        "train": _write_split(root, "train", seed=0),
        "test": _write_split(root, "test", seed=1),
    }
    with tarfile.open(tmp_path / "both.tar", "w") as tar:
        for split in ("train", "test"):
            tar.add(root / split, arcname=split)
    return {"root": root, "tar": tmp_path / "both.tar", "pixels": pixels, "tmp": tmp_path}


def _all(ds) -> tuple[torch.Tensor, list[int]]:
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), [y for _, y in items]


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("split", ["train", "test"])
def test_folder_and_tar_read_the_same_pixels_and_labels(data: dict, split: str) -> None:
    folder = image_folder(data["root"], split, augment="none")
    tar = image_folder(data["tar"], split, augment="none")
    assert isinstance(folder, ImageFileDataset) and isinstance(tar, ImageFileDataset)
    assert folder.classes == tar.classes == CLASSES
    assert len(folder) == len(tar) == len(CLASSES) * PER_CLASS
    assert folder.labels.tolist() == [c for c in range(3) for _ in range(PER_CLASS)]
    for i, (name, label) in enumerate(folder.samples):
        expected = torch.from_numpy(data["pixels"][split][name]).permute(2, 0, 1)  # (3, H, W)
        assert torch.equal(folder.decode(i), expected)
        assert torch.equal(tar.decode(i), expected)
        assert CLASSES[label] == name.split("/")[0]
    xf, yf = _all(folder)
    xt, yt = _all(tar)
    assert xf.shape == (9, 3, 8, 8) and xf.dtype == torch.float32
    assert torch.equal(xf, xt) and yf == yt and all(type(y) is int for y in yf)


def test_roots_a_split_tar_beside_and_class_level(data: dict) -> None:
    beside = data["tmp"] / "tars"
    beside.mkdir()
    _tar(data["root"] / "train", beside / "train.tar", "train")
    top_level = _tar(data["root"] / "train", data["tmp"] / "classes.tar", ".")
    reference, _ = _all(image_folder(data["root"], "train", augment="none"))
    for root, split in [(beside, "train"), (data["root"] / "train", None), (top_level, None)]:
        ds = image_folder(root, split, augment="none")
        assert ds.classes == CLASSES
        assert torch.equal(_all(ds)[0], reference)


def test_normalize_known_values() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1).expand(3, 2, 1)  # (3, 2, 1)
    out = normalize(x, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, :, 0], torch.tensor([[-1.0, 1.0], [-2.0, 2.0], [-0.5, 0.5]]))


def test_image_size_resizes_and_center_crops(tmp_path: Path) -> None:
    folder = tmp_path / "big" / "val" / "a"
    folder.mkdir(parents=True)
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)  # (H, W, 3): wide, centre block white
    pixels[:, 20:60] = 255
    Image.fromarray(pixels).save(folder / "0.jpg", quality=95)
    ds = image_folder(tmp_path / "big", "val", image_size=16, crop_fraction=0.9)
    x = ds.decode(0)  # centre 36x36 square, all white
    assert x.shape == (3, 16, 16) and x.float().mean() > 250
    whole = image_folder(tmp_path / "big", "val", image_size=16, crop_fraction=1.0).decode(0)
    assert whole.shape == (3, 16, 16)  # 1.0: the whole 80x40 image squeezed, white in the middle
    assert (
        whole[:, :, 5:11].min() > 245 and whole[:, :, :3].max() < 10 and whole[:, :, 13:].max() < 10
    )
    train = ds.with_augment("resized_crop")
    torch.manual_seed(0)
    first = train[0][0]
    torch.manual_seed(0)
    assert first.shape == (3, 16, 16) and torch.equal(train[0][0], first)
    assert ds.augment == "none" and torch.equal(ds[0][0], normalize(x))


# --------------------------------------------------------------------------- cache


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    decode = image_cache._decode

    def counting(*args, **kwargs):
        calls[0] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(image_cache, "_decode", counting)
    return calls


@pytest.mark.parametrize("kind", ["root", "tar"])
def test_cache_matches_decoding_and_is_reused(
    data: dict, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    calls = _count_decodes(monkeypatch)
    ds = image_folder(data[kind], "train", cache_dir=cache, augment="none", progress=False)
    assert isinstance(ds, DecodedImageDataset) and calls[0] == 9
    assert isinstance(ds.images, np.memmap) and ds.images.shape == (9, 3, 8, 8)
    reference = image_folder(data[kind], "train", augment="none")
    assert ds.classes == reference.classes and torch.equal(ds.labels, reference.labels)
    assert torch.equal(_all(ds)[0], _all(reference)[0])
    calls[0] = 0
    again = image_folder(data[kind], "train", cache_dir=cache, augment="none", progress=False)
    assert calls[0] == 0 and torch.equal(_all(again)[0], _all(ds)[0])
    entries = [e for e in os.listdir(cache) if not e.endswith(".lock")]  # (writer locks stay)
    assert len(entries) == 1 and not entries[0].startswith(".")  # no temporary folder left


def test_stale_cache_is_rebuilt(
    data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    calls = _count_decodes(monkeypatch)
    image_folder(data["tar"], "train", cache_dir=cache, progress=False)
    st = data["tar"].stat()
    os.utime(data["tar"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the tar "changed"
    calls[0] = 0
    image_folder(data["tar"], "train", cache_dir=cache, progress=False)
    assert calls[0] == 9

    # A folder that gains an image, and a different image size, each give a fresh decode.
    image_folder(data["root"], "train", cache_dir=cache, progress=False)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data["root"] / "train" / "dog" / "new.png")
    calls[0] = 0
    ds = image_folder(data["root"], "train", cache_dir=cache, progress=False)
    assert calls[0] == 10 and len(ds) == 10
    calls[0] = 0
    ds = image_folder(data["root"], "train", cache_dir=cache, image_size=4, progress=False)
    assert calls[0] == 10 and ds.images.shape == (10, 3, 4, 4)

    # A damaged cache is rebuilt rather than trusted.
    folder = image_cache._cache_folder(
        cache, image_sources._FolderSource(data["root"] / "train"), "train", 4
    )
    (folder / "images.npy").write_bytes(b"garbage")
    calls[0] = 0
    image_folder(data["root"], "train", cache_dir=cache, image_size=4, progress=False)
    assert calls[0] == 10


def test_cached_dataset_pickles_without_its_pixels(data: dict, tmp_path: Path) -> None:
    ds = image_folder(data["tar"], "train", cache_dir=tmp_path / "cache", progress=False)
    blob = pickle.dumps(ds)
    assert len(blob) < ds.images.nbytes  # the map is reopened, not copied
    back = pickle.loads(blob)
    assert np.array_equal(back.images, ds.images) and back.classes == ds.classes


# --------------------------------------------------------------------------- augmentation


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 6, 5), dtype=torch.uint8, generator=g)  # (B, C, H, W)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for b in range(len(x)):
        windows = [
            (padded[b, :, i : i + 6, j : j + 5], flip)
            for i in range(5)
            for j in range(5)
            for flip in (False, True)
        ]
        matches = [f for w, f in windows if torch.equal(out[b], w.flip(-1) if f else w)]
        assert matches, f"image {b} is not a window of its padded self"
        flips += all(matches)
    assert 10 < flips < 54  # about half flipped

    same = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, same)
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)
    assert random_crop_flip(x[0], padding=2).shape == (3, 6, 5)
    with pytest.raises(ValueError, match="padding must be >= 0, got -1"):
        random_crop_flip(x, padding=-1)


def test_dataloader_batches_are_seeded_and_augmented(data: dict, tmp_path: Path) -> None:
    ds = image_folder(data["tar"], "train", cache_dir=tmp_path / "cache", progress=False)
    assert ds.augment == "crop"  # "auto" on the train split

    def epoch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        xs, ys = zip(*DataLoader(ds, batch_size=4, shuffle=True), strict=True)
        return torch.cat(xs), torch.cat(ys)

    x0, y0 = epoch(0)
    x1, y1 = epoch(0)
    x2, _ = epoch(1)
    assert x0.shape == (9, 3, 8, 8) and x0.dtype == torch.float32 and y0.dtype == torch.int64
    assert torch.equal(x0, x1) and torch.equal(y0, y1) and not torch.equal(x0, x2)
    plain = image_folder(data["tar"], "train", cache_dir=tmp_path / "cache", augment="none")
    assert not torch.equal(_all(plain)[0], _all(ds)[0])
    view = ds.with_augment("none")  # shares the pixels
    assert view.images is ds.images and ds.augment == "crop"
    assert torch.equal(_all(view)[0], _all(plain)[0])
    with pytest.raises(ValueError, match="needs the original images"):
        ds.with_augment("resized_crop")


def test_tar_reads_in_worker_processes(data: dict) -> None:
    ds = image_folder(data["tar"], "test", augment="none")
    ds[0]  # open the tar in this process first: workers must not share its handle
    loaded = torch.cat([x for x, _ in DataLoader(ds, batch_size=2, num_workers=2)])
    assert torch.equal(loaded, _all(ds)[0])


# --------------------------------------------------------------------------- errors


def test_missing_paths_and_splits(data: dict, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image data not found: .*nowhere"):
        image_folder(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"no folder 'val' and no val.tar in .*test, train"):
        image_folder(data["root"], "val")
    with pytest.raises(ValueError, match=r"has no members under 'val/' \(top level: test, train\)"):
        image_folder(data["tar"], "val")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a tar file"):
        image_folder(text, "train")


def test_compressed_tar_is_refused_with_a_hint(data: dict, tmp_path: Path) -> None:
    gz = tmp_path / "train.tar.gz"
    gz.write_bytes(gzip.compress(data["tar"].read_bytes()))
    with pytest.raises(ValueError, match="not an uncompressed tar.*decompress it"):
        image_folder(gz, "train")


@pytest.mark.parametrize("kind", ["root", "tar"])
def test_corrupt_image_is_named(data: dict, tmp_path: Path, kind: str) -> None:
    (data["root"] / "train" / "dog" / "01.png").write_bytes(b"not a png at all")
    source = data["root"] if kind == "root" else _tar(data["root"], tmp_path / "bad.tar", ".")
    ds = image_folder(source, "train")
    with pytest.raises(ValueError, match=r"cannot decode image .*train/dog/01\.png"):
        ds[4]
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"cannot decode image .*train/dog/01\.png"):
        image_folder(source, "train", cache_dir=cache, progress=False)
    left = [e for e in os.listdir(cache) if not e.endswith(".lock")] if cache.exists() else []
    assert not left  # no half-written cache (only the writer's lock file)


@pytest.mark.parametrize("kind", ["root", "tar"])
def test_empty_class_folder(data: dict, tmp_path: Path, kind: str) -> None:
    (data["root"] / "train" / "emu").mkdir()
    (data["root"] / "train" / "emu" / "readme.txt").write_text("no images here")
    source = data["root"] if kind == "root" else _tar(data["root"], tmp_path / "e.tar", "")
    with pytest.raises(ValueError, match="class folder.* with no images in .*: emu"):
        image_folder(source, "train")
    shutil.rmtree(data["root"] / "train")
    (data["root"] / "train").mkdir()
    if kind == "root":
        with pytest.raises(ValueError, match="no class folders in"):
            image_folder(source, "train")


def test_mismatched_sizes_and_bad_options(data: dict, tmp_path: Path) -> None:
    big = np.zeros((12, 12, 3), np.uint8)
    Image.fromarray(big).save(data["root"] / "train" / "cat" / "big.png")
    with pytest.raises(ValueError, match=r"images differ in size: .*big\.png.*pass image_size="):
        image_folder(data["root"], "train", cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="augment must be one of"):
        image_folder(data["root"], "train", augment="jitter")
    with pytest.raises(ValueError, match="resized_crop' needs the original images"):
        image_folder(data["tar"], "test", cache_dir=tmp_path / "c", augment="resized_crop")
    with pytest.raises(ValueError, match="needs an image_size"):
        image_folder(data["tar"], "test", augment="resized_crop")
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        image_folder(data["tar"], "test", image_size=0)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        image_folder(data["tar"], "test", mean=(0.5,))
    with pytest.raises(ValueError, match="images must be uint8 of shape"):
        DecodedImageDataset(np.zeros((2, 8, 8, 3), np.uint8), [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        DecodedImageDataset(np.zeros((2, 3, 8, 8), np.uint8), [0, 2], ["a", "b"])


# --------------------------------------------------------------------------- CIFAR-10


def _fake_cifar_batches(root: Path, n: int = 6) -> np.ndarray:
    """torchvision's on-disk CIFAR-10 format: pickled dicts of (n, 3072) rows and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows are (3, 32, 32) flattened
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": list(range(n))}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [*names, "truck"]}, f)
    return data.reshape(n, 3, 32, 32)


def test_cifar10_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    expected = _fake_cifar_batches(tmp_path)
    # The files are fakes, so their checksums must not be checked.
    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(
        sys.modules["torchvision.datasets.cifar"], "check_integrity", lambda *a: True
    )
    ds = cifar10(tmp_path, "test")
    assert isinstance(ds, DecodedImageDataset) and ds.augment == "none"
    assert ds.classes[0] == "airplane" and ds.labels.tolist() == list(range(6))
    x, y = ds[2]
    assert y == 2 and x.shape == (3, 32, 32)
    torch.testing.assert_close(
        x, normalize(torch.from_numpy(expected[2]), CIFAR10_MEAN, CIFAR10_STD)
    )


def test_cifar10_missing_and_without_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torchvision")
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found in .*download=True"):
        cifar10(tmp_path, "test")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        cifar10(tmp_path, "val")
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'matryoshka\[vision\]'"):
        cifar10(tmp_path, "test")


@pytest.mark.parametrize("cached", [False, True])
def test_cifar10_from_a_local_imagenet_layout(data: dict, tmp_path: Path, cached: bool) -> None:
    beside = tmp_path / "jpeg"
    beside.mkdir()
    _tar(data["root"] / "test", beside / "test.tar", "test")
    cache = tmp_path / "cache" if cached else None
    ds = cifar10(beside, "test", cache_dir=cache, progress=False)
    assert isinstance(ds, DecodedImageDataset) and ds.classes == CLASSES
    assert (ds.mean, ds.std, ds.augment) == (CIFAR10_MEAN, CIFAR10_STD, "none")
    reference = image_folder(beside, "test", augment="none", mean=CIFAR10_MEAN, std=CIFAR10_STD)
    assert torch.equal(_all(ds)[0], _all(reference)[0])
    assert cifar10(beside, "test", cache_dir=cache, augment="crop").augment == "crop"


def test_shared_cifar10_copy_when_present() -> None:
    if not (SHARED / "test.tar").exists():
        pytest.skip(f"{SHARED} is absent (only on the project's development machines)")
    ds = image_folder(SHARED, "test", augment="none", mean=CIFAR10_MEAN, std=CIFAR10_STD)
    assert len(ds) == 10_000 and len(ds.classes) == 10 and ds.classes[0] == "airplane"
    assert ds.decode(0).shape == (3, 32, 32)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10


def test_import_loads_neither_pillow_nor_torchvision() -> None:
    code = (
        "import sys, matryoshka.data.images; print(sorted({'PIL', 'torchvision'} & {*sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
