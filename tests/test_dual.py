"""Dual encoders: the nested contrastive loss, the image + text model (save, load, train, freeze),
zero-shot classification and cross-modal recall at every size, and image-caption files."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from matryoshka.data import (
    DEFAULT_TEMPLATES,
    UNSEEN_TEMPLATES,
    class_prompts,
    load_captions,
)
from matryoshka.eval import (
    class_embeddings_at,
    cross_modal_recall_per_size,
    zero_shot_per_size,
)
from matryoshka.nn import MatryoshkaLoss, clip_contrastive_loss

CAPTIONS = ["a red square", "a blue circle", "a green triangle", "a yellow star"]


# ------------------------------------------------------------------ (a) the loss
def _clip_by_hand(image, text, scale):
    """CLIP's loss written out: mean over both directions of -log softmax at the match."""
    I, T = image.double(), text.double()
    B = I.shape[0]
    logits = [[scale * float(I[i] @ T[j]) for j in range(B)] for i in range(B)]
    rows = [math.log(sum(math.exp(v) for v in logits[i])) - logits[i][i] for i in range(B)]
    cols = [
        math.log(sum(math.exp(logits[i][j]) for i in range(B))) - logits[j][j] for j in range(B)
    ]
    return 0.5 * (sum(rows) / B + sum(cols) / B)


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def test_clip_loss_matches_its_formula():
    g = torch.Generator().manual_seed(1)
    image, text = _unit(torch.randn(5, 8, generator=g)), _unit(torch.randn(5, 8, generator=g))
    for scale in (1.0, 14.285714, torch.tensor(30.0)):
        got = clip_contrastive_loss(image, text, scale)
        assert got.shape == ()
        assert abs(float(got) - _clip_by_hand(image, text, float(scale))) < 1e-6


def test_clip_loss_with_labels_spreads_each_target_over_its_matches():
    g = torch.Generator().manual_seed(3)
    image, text = _unit(torch.randn(5, 8, generator=g)), _unit(torch.randn(5, 8, generator=g))
    labels = torch.tensor([0, 1, 0, 2, 0])
    S = 10.0 * (image.double() @ text.double().T)  # (5, 5)
    want = 0.0
    for A in (S, S.T):  # image -> text rows, then text -> image
        for i in range(5):
            matches = [j for j in range(5) if labels[j] == labels[i]]
            logz = math.log(sum(math.exp(float(v)) for v in A[i]))
            want += sum(logz - float(A[i, j]) for j in matches) / len(matches) / 5
    got = clip_contrastive_loss(image, text, 10.0, labels)
    assert abs(float(got) - want / 2) < 1e-6
    distinct = clip_contrastive_loss(image, text, 10.0, torch.arange(5))
    assert abs(float(distinct) - _clip_by_hand(image, text, 10.0)) < 1e-6
    with pytest.raises(ValueError, match="labels must have shape"):
        clip_contrastive_loss(image, text, 10.0, torch.arange(4))


def test_nested_clip_loss_is_the_weighted_mean_of_the_formula_per_size():
    g = torch.Generator().manual_seed(2)
    image, text = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    dims, weights = (2, 4, 8), (1.0, 2.0, 0.5)
    scale = torch.tensor(12.0, requires_grad=True)
    loss = MatryoshkaLoss(clip_contrastive_loss, dims, weights, slice_embeddings=True,
                          normalize=True)  # fmt: skip
    total, per_size = loss((image, text), scale)
    assert total.requires_grad
    by_hand = {m: _clip_by_hand(_unit(image[:, :m]), _unit(text[:, :m]), 12.0) for m in dims}
    for m in dims:
        assert abs(float(per_size[m]) - by_hand[m]) < 1e-6
    expected = sum(w * by_hand[m] for w, m in zip(weights, dims)) / len(dims)
    assert abs(float(total.detach()) - expected) < 1e-6
    total.backward()
    assert scale.grad is not None and scale.grad != 0  # the temperature learns


def test_clip_loss_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one caption per image"):
        clip_contrastive_loss(torch.randn(4, 8), torch.randn(3, 8), 10.0)
    with pytest.raises(ValueError, match="one caption per image"):
        clip_contrastive_loss(torch.randn(4, 8), torch.randn(4, 6), 10.0)
    with pytest.raises(ValueError, match="scalar"):
        clip_contrastive_loss(torch.randn(4, 8), torch.randn(4, 8), torch.ones(2))


# ------------------------------------------------------------------ (b, c, d) the model
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    from matryoshka.models import load_sentence_encoder

    return load_sentence_encoder(None, progress=False)


def _dual(minilm, d=16, dims=(4, 8, 16)):
    from matryoshka.models import DualEncoder, build_backbone

    torch.manual_seed(0)
    image_tower = build_backbone("small_cnn", 12, width=4)
    spec = {"backbone": "small_cnn", "kwargs": {"width": 4}}
    return DualEncoder(image_tower, copy.deepcopy(minilm), d, dims=dims, image_spec=spec)


def _images(n=4, seed=0):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_dual_encoder_saves_reloads_and_encodes_the_same(minilm, tmp_path):
    from matryoshka.models import load_dual_encoder, save_dual_encoder

    model = _dual(minilm)
    with torch.no_grad():  # move BatchNorm's statistics off their initial values
        model.train().embed_image(_images(8, seed=3) * 2 + 1)
    model.eval()
    with torch.no_grad():
        image, text = model(_images(), CAPTIONS)
    assert image.shape == (4, 16) and text.shape == (4, 16)
    save_dual_encoder(model, tmp_path / "dual", data="toy")
    info = json.loads((tmp_path / "dual" / "config.json").read_text())
    assert info["d"] == 16 and info["dims"] == [4, 8, 16] and info["data"] == "toy"
    assert info["image"] == {"backbone": "small_cnn", "kwargs": {"width": 4}, "features": 12}
    assert info["text"]["path"] == "text" and (tmp_path / "dual" / "text").is_dir()
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "dual" / "model.safetensors"))
    assert "log_logit_scale" in keys and not [k for k in keys if k.startswith("text_tower.")]
    loaded, meta = load_dual_encoder(tmp_path / "dual")
    assert meta["data"] == "toy" and loaded.dims == (4, 8, 16)
    with torch.no_grad():
        image2, text2 = loaded(_images(), CAPTIONS)
    torch.testing.assert_close(image2, image, atol=1e-6, rtol=0)
    torch.testing.assert_close(text2, text, atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.logit_scale(), model.logit_scale())
    with pytest.raises(FileExistsError):  # a folder of something else is refused
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "mine.txt").write_text("keep")
        save_dual_encoder(model, tmp_path / "notes")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_dual_encoder(tmp_path / "notes")


def test_temperature_starts_at_clip_value_and_is_clamped(minilm):
    from matryoshka.models import build_dual_encoder

    model = build_dual_encoder("small_cnn", d=8, image_features=12, backbone_kwargs={"width": 4})
    assert model.dims == (8,) and model.image_spec == {"backbone": "small_cnn",
                                                       "kwargs": {"width": 4}}  # fmt: skip
    assert model.embed_image(_images(2)).shape == (2, 8)
    assert abs(model.logit_scale().item() - 1 / 0.07) < 1e-4
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale().item() == 100.0


def test_two_steps_lower_the_nested_loss(minilm):
    from matryoshka.models import nested_clip_loss

    model = _dual(minilm).freeze("text").train()
    images = _images()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with torch.no_grad():
        before, per_size = nested_clip_loss(model, images, CAPTIONS)
    assert sorted(per_size) == [4, 8, 16]
    for _ in range(2):
        opt.zero_grad()
        loss, _ = nested_clip_loss(model, images, CAPTIONS)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, _ = nested_clip_loss(model, images, CAPTIONS)
    assert float(after) < float(before)


def test_freeze_stops_a_towers_gradients_but_not_the_projections(minilm):
    from matryoshka.models import nested_clip_loss, text_blocks

    model = _dual(minilm).freeze("image", unfreeze_last=0).freeze("text", unfreeze_last=1)
    model.train()
    loss, _ = nested_clip_loss(model, _images(), CAPTIONS)
    loss.backward()
    assert all(p.grad is None for p in model.image_tower.parameters())
    for proj in (model.image_proj, model.text_proj):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    assert model.log_logit_scale.grad is not None
    blocks = text_blocks(model.text_tower)
    assert len(blocks) == 7  # MiniLM-L6: token embeddings + six layers
    assert all(p.grad is not None for p in blocks[-1].parameters())
    assert all(p.grad is None for b in blocks[:-1] for p in b.parameters())
    # frozen parts stay in eval mode under train(): no BatchNorm updates, no dropout
    assert not any(m.training for m in model.image_tower.modules())
    assert not any(m.training for m in blocks[0].modules())
    assert all(m.training for m in blocks[-1].modules())
    with pytest.raises(ValueError, match="between 0 and 7"):
        model.freeze("text", unfreeze_last=8)
    with pytest.raises(ValueError, match="tower"):
        model.freeze("audio")
    model.unfreeze("image").train()
    assert all(p.requires_grad for p in model.image_tower.parameters())
    assert all(m.training for m in model.image_tower.modules())


# ------------------------------------------------------------------ (e, f) evaluation
def test_zero_shot_on_three_classes_with_a_known_answer_per_size():
    e = np.eye(3, dtype=np.float32)
    # two templates per class c: e_c +- 0.3 e_{c+1}; their mean at full size points along e_c,
    # but at size 1 classes 1 and 2 vanish and at size 2 class 2 does (its prefix averages to 0)
    prompts = np.stack([np.stack([e[c] + 0.3 * e[(c + 1) % 3], e[c] - 0.3 * e[(c + 1) % 3]])
                        for c in range(3)])  # fmt: skip
    assert prompts.shape == (3, 2, 3)
    images = np.array([[1, 0.1, 0.1], [0.5, 0.9, 0], [0.1, 0.2, 1.0]], dtype=np.float32)
    labels = np.array([0, 1, 2])
    # size 1: every image goes to class 0; size 2: image 2 to class 1; size 3: all right
    res = zero_shot_per_size(images, prompts, labels, dims=(1, 2, 3))
    assert res["method"] == "mrl"
    top1 = {m: v["top1"] for m, v in res["dims"].items()}
    assert top1 == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    one = zero_shot_per_size(images, e, labels, dims=(1, 2, 3))  # (C, d): one prompt a class
    assert {m: v["top1"] for m, v in one["dims"].items()} == pytest.approx(top1)


def test_prompts_are_averaged_at_each_size_not_cut_from_the_full_size_mean():
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.0, 1.0, 9.0]) / math.hypot(1, 9)
    got = class_embeddings_at(np.stack([a, b])[None], 2)  # (1, 2)
    np.testing.assert_allclose(got, [[1 / math.sqrt(2), 1 / math.sqrt(2)]], atol=1e-6)


def test_zero_shot_refuses_bad_labels():
    with pytest.raises(ValueError, match="0..2"):
        zero_shot_per_size(np.ones((2, 4)), np.ones((3, 4)), np.array([0, 3]), dims=(4,))
    with pytest.raises(ValueError, match="share d"):
        zero_shot_per_size(np.ones((2, 4)), np.ones((3, 5)), np.array([0, 1]), dims=(4,))


def test_cross_modal_recall_with_known_answers():
    X = np.array([[1, 0], [0.8, 0.6], [-0.6, 0.8], [-1, 0]], dtype=np.float32)
    res = cross_modal_recall_per_size(X, X.copy(), dims=(1, 2), ks=(1, 2))
    # size 2: every pair is its own unique best match; size 1: prefixes are +1, +1, -1, -1, so
    # every match ties with one other row, and a tie counts against the match
    assert res["dims"][2] == {"i2t_recall@1": 1.0, "i2t_recall@2": 1.0,
                              "t2i_recall@1": 1.0, "t2i_recall@2": 1.0}  # fmt: skip
    assert res["dims"][1] == {"i2t_recall@1": 0.0, "i2t_recall@2": 1.0,
                              "t2i_recall@1": 0.0, "t2i_recall@2": 1.0}  # fmt: skip
    T = X.copy()
    T[3] = X[1]  # caption 3 describes image 1: image 1's match ties, image 3's is far
    res = cross_modal_recall_per_size(X, T, dims=(2,), ks=(1,))
    assert res["dims"][2] == {"i2t_recall@1": 0.5, "t2i_recall@1": 0.75}


def test_cross_modal_recall_in_blocks_matches_one_block(monkeypatch):
    from matryoshka.eval import zeroshot

    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    whole = cross_modal_recall_per_size(X, X + 0.8 * T, dims=(2, 8), ks=(1, 5))
    monkeypatch.setattr(zeroshot, "BLOCK", 7)
    assert cross_modal_recall_per_size(X, X + 0.8 * T, dims=(2, 8), ks=(1, 5)) == whole
    assert whole["dims"][8]["i2t_recall@1"] > whole["dims"][2]["i2t_recall@1"]


# ------------------------------------------------------------------ (g) captions
def _image_files(folder):
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        (folder / name).write_bytes(b"not decoded here")


def test_captions_from_jsonl_and_csv(tmp_path):
    _image_files(tmp_path / "imgs")
    jsonl = tmp_path / "caps.jsonl"
    jsonl.write_text('{"image": "a.png", "caption": "a cat"}\n\n'
                     '{"image": "sub/b.png", "caption": "a dog", "extra": 1}\n')  # fmt: skip
    csv = tmp_path / "caps.csv"
    csv.write_text('file,text\na.png,a cat\nsub/b.png,"a dog, running"\n')
    pairs = load_captions(tmp_path / "imgs", jsonl)
    assert pairs == [(tmp_path / "imgs" / "a.png", "a cat"),
                     (tmp_path / "imgs" / "sub/b.png", "a dog")]  # fmt: skip
    pairs = load_captions(tmp_path / "imgs", csv, image_column="file", caption_column="text")
    assert [c for _, c in pairs] == ["a cat", "a dog, running"]


def test_captions_name_the_bad_line(tmp_path):
    _image_files(tmp_path / "imgs")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "caption": "a cat"}\n{"image": "a.png"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: no value in column 'caption'"):
        load_captions(tmp_path / "imgs", bad)
    bad.write_text('{"image": "a.png", "caption": "a cat"}\n{"image": "c.png", "caption": "x"}\n')
    with pytest.raises(FileNotFoundError, match=r"line 2: image 'c.png' not found"):
        load_captions(tmp_path / "imgs", bad)
    csv = tmp_path / "bad.csv"
    csv.write_text("image,caption\na.png,a cat\n/etc/passwd,a file\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: image path .* relative"):
        load_captions(tmp_path / "imgs", csv)
    bad.write_text('{"image": "a.png", "caption": "a cat"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_captions(tmp_path / "imgs", bad)
    with pytest.raises(FileNotFoundError, match="captions file not found"):
        load_captions(tmp_path / "imgs", tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_captions(tmp_path / "nope", csv)


def test_class_prompts_and_unseen_templates():
    prompts = class_prompts(["cat", "golden_retriever"], ["a photo of a {}.", "art of the {}."])
    assert prompts[0] == ["a photo of a cat.", "art of the cat."]
    assert prompts[1] == ["a photo of a golden retriever.", "art of the golden retriever."]
    assert len(class_prompts(["cat"])[0]) == len(DEFAULT_TEMPLATES)
    assert not set(DEFAULT_TEMPLATES) & set(UNSEEN_TEMPLATES) and len(UNSEEN_TEMPLATES) >= 5
    with pytest.raises(ValueError, match="exactly once"):
        class_prompts(["cat"], ["a photo"])
