import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from matryoshka.train import (
    TrainConfig,
    config_diff,
    load_config,
    load_model,
    read_metrics,
    train,
)


def tiny_cfg(out_dir, **kw) -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.backbone_kwargs = {"hidden": [32]}
    cfg.model.d = 16
    cfg.model.dims_start = 4
    cfg.epochs = 3
    cfg.batch_size = 32
    cfg.optim.lr = 0.1
    cfg.optim.warmup_epochs = 0.5
    cfg.data.train_subset = 600
    cfg.device = "cpu"
    cfg.out_dir = str(out_dir)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_config_yaml_overrides_and_unknown_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"epochs": 4, "model": {"d": 32, "head": "mrl-e"}}))
    cfg = load_config(p, ["optim.lr=0.02", "model.dims=[8, 16, 32]", "data.root=null"])
    assert cfg.epochs == 4 and cfg.model.d == 32 and cfg.model.head == "mrl-e"
    assert cfg.optim.lr == 0.02 and cfg.model.dims == [8, 16, 32]
    with pytest.raises(ValueError, match="unknown config key 'model.widht'"):
        load_config(p, ["model.widht=3"])
    p.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="unknown config key 'epoch'.*valid keys here"):
        load_config(p)
    with pytest.raises(ValueError, match="optim.lr must be a number, got 'fast'"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ValueError, match="must look like key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_train_learns_and_writes_a_model_folder(tmp_path):
    result = train(tiny_cfg(tmp_path / "m"), progress=False)
    assert result["complete"] and result["epochs_done"] == 3
    last = result["history"][-1]
    assert set(last["loss_per_size"]) == {4, 8, 16}
    assert last["test_top1"][16] > 0.8  # digits are easy; chance is 0.1
    folder = tmp_path / "m"
    assert {p.name for p in folder.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "train_state.pt",
        "metrics.json",
    }
    info = json.loads((folder / "config.json").read_text())
    assert info["d"] == 16 and info["dims"] == [4, 8, 16] and len(info["classes"]) == 10
    model, cfg, classes = load_model(folder)
    assert model.head.dims == (4, 8, 16) and cfg.epochs == 3
    assert read_metrics(folder)["complete"] is True


@pytest.mark.parametrize("head", ["mrl", "mrl-e"])
def test_resume_gives_the_same_weights(tmp_path, head):
    full = tiny_cfg(tmp_path / "full")
    full.model.head = head
    train(full, progress=False)
    part = tiny_cfg(tmp_path / "part")
    part.model.head = head
    r1 = train(part, progress=False, stop_after_epoch=1)
    assert r1["epochs_done"] == 1 and not r1["complete"]
    r2 = train(part, progress=False)  # picks up at epoch 2
    assert r2["complete"] and [h["epoch"] for h in r2["history"]] == [1, 2, 3]
    a, _, _ = load_model(tmp_path / "full")
    b, _, _ = load_model(tmp_path / "part")
    for (name, ta), (_, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(ta, tb), name


def test_resume_refuses_another_model_config(tmp_path):
    cfg = tiny_cfg(tmp_path / "m")
    train(cfg, progress=False, stop_after_epoch=1)
    cfg.model.d = 8
    with pytest.raises(ValueError, match=r"another recipe \(differs in model.d\)"):
        train(cfg, progress=False)
    cfg.model.d = 16
    cfg.optim.lr = 0.5
    with pytest.raises(ValueError, match=r"differs in optim.lr"):
        train(cfg, progress=False)


def test_a_finished_run_is_reused_only_with_the_same_recipe(tmp_path):
    from matryoshka.train import is_complete

    cfg = tiny_cfg(tmp_path / "m", epochs=1)
    train(cfg, progress=False)
    cfg.device = "auto"  # runtime settings may differ
    assert is_complete(cfg.out_dir, cfg)
    cfg.epochs = 2
    with pytest.raises(ValueError, match=r"differs in epochs"):
        is_complete(cfg.out_dir, cfg)


def test_fine_tune_from_ff_with_frozen_backbone(tmp_path):
    ff = tiny_cfg(tmp_path / "ff")
    ff.model.head = "ff"
    ff.epochs = 1
    train(ff, progress=False)
    ft = tiny_cfg(tmp_path / "ft", init_from=str(tmp_path / "ff"), trainable="head")
    ft.epochs = 1
    train(ft, progress=False)
    src, _, _ = load_model(tmp_path / "ff")
    dst, _, _ = load_model(tmp_path / "ft")
    for (name, a), (_, b) in zip(
        src.backbone.state_dict().items(), dst.backbone.state_dict().items()
    ):
        if "running" not in name and "num_batches" not in name:  # BN statistics still move
            assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="trainable must be 'all', 'head' or 'last<k>'"):
        train(tiny_cfg(tmp_path / "x", trainable="some"), progress=False)


def test_corrupt_model_folder_is_refused(tmp_path):
    train(tiny_cfg(tmp_path / "m", epochs=1), progress=False)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="could not be read.*corrupt"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_model(tmp_path)


def test_ddp_two_cpu_processes(tmp_path):
    """torchrun with two gloo processes trains and writes one model folder."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "matryoshka.cli", "train", "--quiet", "--out", str(out),
        "epochs=2", "batch_size=32", "model.d=16", "model.dims_start=4",
        "model.backbone_kwargs={hidden: [32]}", "data.train_subset=600", "device=cpu",
        "optim.lr=0.1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["epochs_done"] == 2
    assert metrics["history"][-1]["test_top1"]["16"] > 0.5
    assert Path(out / "model.safetensors").is_file()


def test_loss_reduction_sum_is_the_papers_sum_over_sizes(tmp_path):
    from matryoshka.train.loop import _loss_weights

    cfg = tiny_cfg(tmp_path / "m")
    assert _loss_weights(cfg, 3) == [3.0, 3.0, 3.0]  # MatryoshkaLoss averages: x K = sum
    cfg.loss_weights = [1.0, 0.5, 2.0]
    assert _loss_weights(cfg, 3) == [3.0, 1.5, 6.0]
    cfg.loss_reduction = "mean"
    assert _loss_weights(cfg, 3) == [1.0, 0.5, 2.0]
    cfg.loss_reduction = "max"
    with pytest.raises(ValueError, match="loss_reduction must be 'sum' or 'mean', got 'max'"):
        _loss_weights(cfg, 3)


def test_config_diff_ignores_nesting_keys_between_fixed_feature_runs():
    a, b = TrainConfig(), TrainConfig()
    a.model.head = b.model.head = "ff"
    b.model.dims_start, b.loss_reduction = 2, "mean"
    assert config_diff(a, b) == []
    b.model.d = 32
    assert config_diff(a, b) == ["model.d"]
    a.model.head = b.model.head = "mrl"  # for a nested model the sizes do change training
    b.model.d = a.model.d
    assert config_diff(a, b) == ["loss_reduction", "model.dims_start"]


def test_config_diff_follows_links_in_init_from(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    a, b = TrainConfig(), TrainConfig()
    a.init_from, b.init_from = str(tmp_path / "real"), str(tmp_path / "link")
    assert config_diff(a, b) == []
    b.init_from = str(tmp_path / "other")
    assert config_diff(a, b) == ["init_from"]
