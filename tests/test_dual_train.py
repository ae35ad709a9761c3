"""Training a dual encoder on labelled images with class-prompt captions: a toy task of solid
colours whose zero-shot answer is known, trained for a few dozen seeded steps on the CPU."""

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")

from matryoshka.data import UNSEEN_TEMPLATES, class_prompts  # noqa: E402
from matryoshka.data.images import DecodedImageDataset  # noqa: E402
from matryoshka.eval import zero_shot_per_size  # noqa: E402
from matryoshka.models import DualEncoder, build_backbone, load_sentence_encoder  # noqa: E402
from matryoshka.train import DualTrainConfig, fit_dual  # noqa: E402

CLASSES = ["red", "green", "blue"]


def colours(n: int, seed: int) -> DecodedImageDataset:
    """Noisy 8x8 images, each mostly one of the primary colours: class c lights channel c."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    images = rng.integers(0, 60, size=(n, 3, 8, 8))
    images[np.arange(n), labels] += 180
    return DecodedImageDataset(images.astype(np.uint8), labels, CLASSES)


@pytest.fixture(scope="module")
def minilm():
    return load_sentence_encoder(None, progress=False)


def _model(minilm, d=16, dims=(4, 8, 16)):
    torch.manual_seed(0)
    spec = {"backbone": "small_cnn", "kwargs": {"width": 4}}
    return DualEncoder(build_backbone("small_cnn", 12, width=4), minilm, d, dims=dims,
                       image_spec=spec)  # fmt: skip


def _zero_shot(model, data, dims):
    with torch.no_grad():
        images = torch.stack([data[i][0] for i in range(len(data))])
        x = model.embed_image(images).numpy()
        prompts = class_prompts(CLASSES, UNSEEN_TEMPLATES)
        t = model.embed_text([p for row in prompts for p in row]).numpy()
    t = t.reshape(len(CLASSES), len(UNSEEN_TEMPLATES), -1)
    return zero_shot_per_size(x, t, data.labels.numpy(), dims)["dims"]


def test_fit_dual_learns_colours_at_every_size_with_unseen_templates(minilm):
    model = _model(minilm)
    cfg = DualTrainConfig(epochs=4, batch_size=16, lr=5e-3, warmup_epochs=0.2, seed=0)
    log = fit_dual(model, colours(192, seed=0), CLASSES, cfg, progress=False)
    assert log["steps"] == 48 and log["dims"] == [4, 8, 16]
    first, last = log["history"][0], log["history"][-1]
    assert set(first) >= {"loss", "loss@4", "loss@8", "loss@16", "logit_scale"}
    assert last["loss"] < first["loss"]
    got = _zero_shot(model, colours(90, seed=1), [4, 8, 16])
    assert all(got[m]["top1"] >= 0.9 for m in (4, 8, 16)), got
    assert not any(p.requires_grad for p in model.text_tower.parameters())  # frozen by default


def test_fit_dual_with_the_last_text_block_unfrozen_trains_only_that_block(minilm):
    import copy

    model = _model(copy.deepcopy(minilm), d=8, dims=(8,))
    before = {k: v.clone() for k, v in model.text_tower.state_dict().items()}
    cfg = DualTrainConfig(epochs=1, batch_size=16, text_unfreeze=1, max_steps=2, seed=0)
    log = fit_dual(model, colours(64, seed=2), CLASSES, cfg, progress=False)
    assert log["steps"] == 2
    after = model.text_tower.state_dict()
    changed = {k.split(".")[4] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"5"}  # auto_model.encoder.layer.5: MiniLM's last block, alone


def test_fit_dual_refuses_bad_settings(minilm):
    model = _model(minilm)
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit_dual(model, colours(8, 0), CLASSES, DualTrainConfig(batch_size=16), progress=False)
    with pytest.raises(ValueError, match="lr must be positive"):
        fit_dual(model, colours(32, 0), CLASSES, DualTrainConfig(lr=0), progress=False)
    with pytest.raises(ValueError, match="exactly once"):
        fit_dual(model, colours(32, 0), CLASSES, DualTrainConfig(templates=["a {} {}"]),
                 progress=False)  # fmt: skip
