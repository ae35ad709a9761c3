"""The project's central promise, counted: one backbone pass per training batch and one encoding
per split, however many sizes are trained or scored."""

from __future__ import annotations

import math

import pytest

from matryoshka.experiments.compare import compare_methods, method_configs, train_jobs
from matryoshka.models import MLP
from matryoshka.train import TrainConfig, load_data, train


@pytest.fixture
def count_calls(monkeypatch):
    """Count every forward pass of the MLP backbone: the counting backbone."""
    calls = []
    forward = MLP.forward

    def counting(self, x):
        calls.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(MLP, "forward", counting)
    return calls


def digits_cfg(out_dir, dims) -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.backbone_kwargs = {"hidden": [32]}
    cfg.model.d = 16
    cfg.model.dims = dims
    cfg.data.train_subset = 300
    cfg.epochs, cfg.batch_size, cfg.eval_every, cfg.device = 2, 32, 0, "cpu"
    cfg.out_dir = str(out_dir)
    return cfg


@pytest.mark.parametrize("dims", [[16], [4, 8, 16], [1, 2, 3, 4, 6, 8, 12, 16]])
def test_one_backbone_pass_per_training_batch(tmp_path, count_calls, dims):
    cfg = digits_cfg(tmp_path / "m", dims)
    train(cfg, progress=False)
    train_ds, _, _ = load_data(cfg)
    batches = len(train_ds) // cfg.batch_size  # drop_last: 300 // 32 = 9 per epoch
    # one example through the model to count a step's FLOPs (it picks the thread count), then
    # every epoch's batches; eval_every=0 scores no test split
    assert count_calls[0] == 1
    assert len(count_calls) == 1 + cfg.epochs * batches
    assert count_calls[1 : 1 + cfg.epochs * batches] == [cfg.batch_size] * (cfg.epochs * batches)


@pytest.mark.parametrize("dims", [[16], [2, 4, 8, 16]])
def test_one_encoding_per_split_for_every_size(tmp_path, count_calls, dims):
    base = digits_cfg(tmp_path / "models", dims)
    base.epochs = 1
    train_jobs(method_configs(base, dims, ["mrl"]), progress=False)
    count_calls.clear()
    out = compare_methods(base, tmp_path / "out", methods=["mrl"], dims=dims, progress=False)
    train_ds, test_ds, _ = load_data(base, augment=False)
    encodes = math.ceil(len(train_ds) / 512) + math.ceil(len(test_ds) / 512)
    passes = [n for n in count_calls if n > 1]  # (each encode first counts FLOPs on 1 example)
    assert count_calls.count(1) == 2 and len(passes) == encodes  # one encoding per split
    assert sum(passes) == len(train_ds) + len(test_ds)  # each example once, whatever the sizes
    assert len(out["sizes"]) == {1: 1, 4: 7}[len(dims)]  # 2, 3, 4, 6, 8, 12, 16
