"""Every bad input gets a clear error, never a silently wrong result or a raw traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from matryoshka import truncate
from matryoshka.cli import main
from matryoshka.index import MatryoshkaIndex
from matryoshka.nn import FixedFeatureHead, MatryoshkaHead, MatryoshkaLoss
from matryoshka.train import TrainConfig, load_config, train


def vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ---------------------------------------------------------------- the index
def test_float64_beyond_float32_is_refused_not_stored_as_inf():
    x = vectors(3, 4).astype(np.float64)
    x[1, 2] = 1e300
    with pytest.raises(ValueError, match=r"beyond float32's range .*first in row 1"):
        MatryoshkaIndex(4).add(x)
    with pytest.raises(ValueError, match="beyond float32's range"):
        MatryoshkaIndex(4).add(vectors(3, 4)).search(x, 2)


def test_ids_must_be_integers_and_fit():
    index = MatryoshkaIndex(4).add(vectors(3, 4))
    with pytest.raises(ValueError, match="ids must be integers, got float64 values such as 1.7"):
        index.remove([1.7])
    with pytest.raises(ValueError, match="ids must be integers"):
        index.reconstruct([0.0])
    assert len(index) == 3
    with pytest.raises(ValueError, match=r"ids must be below 2\*\*62"):
        index.add(vectors(1, 4), ids=[2**63 - 1])


def test_binary_needs_more_than_one_vector_to_learn_its_thresholds():
    with pytest.raises(ValueError, match="needs at least 2 vectors .got 1."):
        MatryoshkaIndex(8, precision="binary").add(vectors(1, 8))
    MatryoshkaIndex(8, precision="binary").add(vectors(2, 8)).add(vectors(1, 8))  # then any


def test_search_limits():
    index = MatryoshkaIndex(4).add(vectors(5, 4))
    with pytest.raises(ValueError, match="k must be at most 16,777,216"):
        index.search(vectors(1, 4), 10**10)
    with pytest.raises(ValueError, match="block_size must be a positive integer, got 0"):
        index.search(vectors(1, 4), 2, block_size=0)


def test_a_manifest_files_entry_that_is_a_string_is_refused(tmp_path):
    import json

    from matryoshka.index.manifest import _checksum

    MatryoshkaIndex(4).add(vectors(5, 4)).save(tmp_path / "ix")
    man = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    man["files"] = "panel_0.npy"
    man["checksum"] = _checksum(man)
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="'files' must map file names"):
        MatryoshkaIndex.load(tmp_path / "ix")


# ---------------------------------------------------------------- heads, loss, sizes
def test_heads_refuse_integer_inputs_and_fractional_sizes():
    with pytest.raises(ValueError, match="expected floating-point embeddings, got torch.int64"):
        MatryoshkaHead(4, 3)(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 2.7"):
        MatryoshkaHead(16, 2.7)
    with pytest.raises(ValueError, match="d must be a positive integer, got True"):
        FixedFeatureHead(True, 3)


@pytest.mark.parametrize("weights", [{8: 1, 16: 2}, "12", [1, "2"], [True, 1]])
def test_loss_weights_must_be_a_list_of_numbers(weights):
    with pytest.raises(ValueError, match="weights must be"):
        MatryoshkaLoss(nn.CrossEntropyLoss(), [8, 16], weights)


def test_truncate_large_float16_values():
    x = np.full((2, 8), 300.0, dtype=np.float16)  # a sum of squares past float16's 65504
    got = truncate(x, 4)
    assert got.dtype == np.float16 and np.allclose(got.astype(np.float32), 0.5)
    t = truncate(torch.from_numpy(x), 4)
    assert t.dtype == torch.float16 and torch.allclose(t.float(), torch.full((2, 4), 0.5))


# ---------------------------------------------------------------- recipes
@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=-1", "epochs must be at least 1, got -1"),
        ("optim.lr=.nan", r"optim.lr must be a finite number in \(0, inf\), got nan"),
        ("optim.lr=0", r"optim.lr must be a finite number in \(0, inf\), got 0.0"),
        ("data.train_subset=0", "data.train_subset must be at least 1, got 0"),
        ("label_smoothing=2.0", r"label_smoothing must be a finite number in \[0, 1\)"),
        ("model.backbone_kwargs={colour: red}", "backbone mlp takes no argument 'colour'"),
        ("trainable=some", "trainable must be 'all', 'head' or 'last<k>'"),
        ("loss_weights=[1, 2, 3]", "weights must have one value per size"),
        ("seed=-3", r"seed must be in \[0, 2\*\*63\), got -3"),
        ("model.dims=[16, 8]", "strictly ascending"),
    ],
)
def test_bad_recipes_are_refused_before_training(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        cfg = load_config(None, [override, f"out_dir={tmp_path / 'm'}", "model.d=16"])
        train(cfg, progress=False)
    assert not (tmp_path / "m").exists()


def test_more_blocks_than_the_backbone_has(tmp_path):
    cfg = load_config(None, ["trainable=last99", f"out_dir={tmp_path / 'm'}", "model.d=16"])
    with pytest.raises(ValueError, match=r"last99 asks for more blocks than the backbone has"):
        train(cfg, progress=False)


def test_yaml_errors_name_the_line_and_column(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("epochs: 3\nmodel:\n  d: [16\n")
    with pytest.raises(ValueError, match=r"c.yaml, line 4, column 1: not valid YAML"):
        load_config(bad)


def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    cfg = load_config(None, [f"out_dir={tmp_path / 'm'}", "model.d=16", "epochs=3",
                             "data.train_subset=100", "device=cpu"])  # fmt: skip
    train(cfg, progress=False, stop_after_epoch=1)
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    forward = MatryoshkaLoss.forward

    def nan_loss(self, *a):
        total, per = forward(self, *a)
        return total * float("nan"), per

    monkeypatch.setattr(MatryoshkaLoss, "forward", nan_loss)
    with pytest.raises(ValueError, match="the loss became nan at epoch 2/3, step 1: training"):
        train(cfg, progress=False)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert '"epochs_done": 1' in (tmp_path / "m" / "metrics.json").read_text()


def test_labels_outside_the_classes_are_refused():
    from matryoshka.train.epoch import _check_labels

    with pytest.raises(ValueError, match=r"label 12 at epoch 1/2, step 3 is not a class index"):
        _check_labels(torch.tensor([0, 12]), 10, "epoch 1/2", 3)
    with pytest.raises(ValueError, match="labels must be integers"):
        _check_labels(torch.tensor([0.0, 1.0]), 10, "epoch 1/2", 1)


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    from matryoshka.data.images import image_folder

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / "train" / c / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is then a bomb
    ds = image_folder(tmp_path, "train", progress=False)
    with pytest.raises(ValueError, match="is too large to decode .*decompression bomb"):
        ds[0]


# ---------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    np.save(root / "emb.npy", vectors(60, 16))
    np.save(root / "q.npy", vectors(3, 16, 1))
    MatryoshkaIndex(16).add(vectors(60, 16)).save(root / "ix")
    cfg = TrainConfig()
    cfg.model.d, cfg.epochs, cfg.data.train_subset, cfg.device = 8, 1, 50, "cpu"
    cfg.out_dir = str(root / "model")
    train(cfg, progress=False)
    return root


def _commands(r) -> dict[str, list[str]]:
    """Each numeric flag, with a command line that is valid but for that flag's value."""
    q, ix, emb = str(r / "q.npy"), str(r / "ix"), str(r / "emb.npy")
    build = ["index", "build", emb, "--out", str(r / "new"), "--quiet"]
    search = ["index", "search", ix, "--queries", q, "--quiet"]
    plan = ["index", "plan", "--n", "100", "--budget", "1MB", "--quiet"]
    return {
        "demo --epochs": ["demo", "--out", str(r / "demo"), "--quiet", "--epochs"],
        "demo --seed": ["demo", "--out", str(r / "demo"), "--quiet", "--seed"],
        "eval --dims": ["eval", str(r / "model"), "--quiet", "--dims"],
        "embed --batch": ["embed", str(r / "model"), "--out", str(r / "e"), "--quiet", "--batch"],
        "build --dim": [*build, "--dim"],
        "build --batch": [*build, "--batch"],
        "build --ann-dim": [*build, "--ann", "hnsw", "--ann-dim"],
        "search -k": [*search, "-k"],
        "search --dim": [*search, "--dim"],
        "search --batch": [*search, "--batch"],
        "search --ann-dim": [*search, "--ann", "hnsw", "--ann-dim"],
        "plan --n": ["index", "plan", "--budget", "1MB", "--n"],
        "plan -k": [*plan, "--embeddings", emb, "--holdout", "5", "-k"],
        "plan --holdout": [*plan, "--embeddings", emb, "--holdout"],
        "plan --sample": [*plan, "--embeddings", emb, "--holdout", "5", "--sample"],
        "plan --d": [*plan, "--d"],
        "reproduce --seeds": ["reproduce", "cifar10", "--train-only", "--quiet", "--seeds"],
        "reproduce --finetune-epochs": [
            "reproduce",
            "cifar10",
            "--train-only",
            "--finetune-epochs",
        ],  # fmt: skip
        "reproduce --max-steps": ["reproduce", "scifact", "--max-steps"],
        "reproduce --max-seq-length": ["reproduce", "scifact", "--max-seq-length"],
        "reproduce --epochs": ["reproduce", "scifact", "--epochs"],
    }


BAD = ["0", "-1", "nan", "abc", "1e400", ""]


def _run(argv: list[str]) -> int:
    """``matryoshka ARGV``'s exit status (a usage error exits through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize("flag", sorted(_commands(__import__("pathlib").Path("."))))
def test_numeric_flags_fuzz(files, flag, capsys, monkeypatch):
    """0, -1, NaN and non-numbers: status 2 and one line; a huge number: no traceback either."""
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])  # configs/
    argv = _commands(files)[flag]
    for value in BAD:
        if value == "0" and flag == "demo --seed":
            continue  # seed 0 is a seed
        rc = _run([*argv, value])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
        assert rc == 2, (flag, value, err)
        assert len(lines) == 1 and "Traceback" not in err, (flag, value, err)
    if flag == "demo --epochs" or flag.startswith("reproduce"):
        return  # a huge but valid number here would start hours of training
    rc = _run([*argv, str(10**30)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, (flag, err)
    if rc != 0:
        assert rc == 2 and len([ln for ln in err.splitlines() if "%|" not in ln]) == 1


def test_duplicate_ids_in_a_saved_index_are_refused(tmp_path):
    import hashlib
    import json

    from matryoshka.index.manifest import _checksum

    path = tmp_path / "ix"
    MatryoshkaIndex(4).add(vectors(5, 4), ids=[10, 11, 12, 13, 14]).save(path)
    f = path / "ids.npy"
    np.save(f, np.array([10, 11, 12, 12, 14], dtype=np.int64))  # 5 ids, 4 unique
    man = json.loads((path / "manifest.json").read_text())
    man["files"]["ids.npy"].update(bytes=f.stat().st_size,
                                   sha256=hashlib.sha256(f.read_bytes()).hexdigest())  # fmt: skip
    man["checksum"] = _checksum(man)
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match=r"its ids must be unique.*\(4 unique of 5"):
        MatryoshkaIndex.load(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--funnel", ""], "--funnel must look like 32:400"),
        (["--ann", "ivf", "--ann-param", "nlist=abc"], "ivf setting nlist must be a positive"),
        (["--out", "."], "is a folder; give a file name to write"),
        (["-k", "1e11"], "argument -k: invalid int value: '1e11'"),
    ],
)
def test_search_mistakes_are_one_line(files, capsys, extra, message):
    argv = ["index", "search", str(files / "ix"), "--queries", str(files / "q.npy"), "--quiet"]
    assert _run([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
