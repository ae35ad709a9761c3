"""open_clip models as dual-encoder towers: a tiny, randomly initialised configuration built
offline, its weights loaded from a standard CLIP checkpoint file, saved and reloaded, and
fine-tuned with the nested contrastive loss."""

import json

import pytest
import torch

oc = pytest.importorskip("open_clip")
pytest.importorskip("safetensors")

from matryoshka.models import (  # noqa: E402
    build_open_clip_dual_encoder,
    load_dual_encoder,
    nested_clip_loss,
    save_dual_encoder,
)

CAPTIONS = ["a red square", "a blue circle", "a green triangle", "a yellow star"]
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2},
}


@pytest.fixture()
def tiny(tmp_path):
    """A folder open_clip's ``local-dir:`` reads: the tiny architecture, no weights."""
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    return folder


def _images(n=4, seed=0):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_weights_from_a_clip_checkpoint_embed_as_the_checkpoint_does(tiny, tmp_path):
    torch.manual_seed(0)
    clip = oc.create_model(f"local-dir:{tiny}")  # a standard CLIP layout, as checkpoints are
    assert hasattr(clip, "positional_embedding")
    torch.save(clip.state_dict(), tmp_path / "weights.pt")
    model = build_open_clip_dual_encoder(tiny, tmp_path / "weights.pt", dims=(4, 8, 16)).eval()
    tokens = oc.get_tokenizer(f"local-dir:{tiny}")(CAPTIONS)
    with torch.no_grad():
        image, text = model(_images(), CAPTIONS)
        want_image, want_text = clip.eval().encode_image(_images()), clip.encode_text(tokens)
    assert image.shape == (4, 16) and model.dims == (4, 8, 16)
    torch.testing.assert_close(image, want_image, atol=1e-5, rtol=0)  # identity projections
    torch.testing.assert_close(text, want_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.logit_scale(), clip.logit_scale.exp())


def test_open_clip_dual_encoder_saves_and_reloads_to_the_same_vectors(tiny, tmp_path):
    torch.manual_seed(1)
    model = build_open_clip_dual_encoder(tiny, dims=(4, 16))
    with torch.no_grad():  # move the projections off the identity: they must be saved too
        model.image_proj.weight.mul_(1.5)
        model.text_proj.bias.add_(0.1)
    model.eval()
    with torch.no_grad():
        image, text = model(_images(), CAPTIONS)
    save_dual_encoder(model, tmp_path / "dual", data="toy")
    assert (tmp_path / "dual" / "open_clip" / "open_clip_config.json").is_file()
    loaded, info = load_dual_encoder(tmp_path / "dual")
    assert info["data"] == "toy" and info["image"]["open_clip"] == TINY
    with torch.no_grad():
        image2, text2 = loaded(_images(), CAPTIONS)
    torch.testing.assert_close(image2, image, atol=1e-6, rtol=0)
    torch.testing.assert_close(text2, text, atol=1e-6, rtol=0)


def test_tiny_open_clip_fine_tunes_two_steps_and_its_loss_decreases(tiny):
    torch.manual_seed(2)
    model = build_open_clip_dual_encoder(tiny, dims=(4, 8, 16))
    model.freeze("image", unfreeze_last=1).freeze("text", unfreeze_last=2).train()
    assert len(model.image_tower.blocks()) == 4  # patch embedding, two blocks, head
    images = _images()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with torch.no_grad():
        before, per_size = nested_clip_loss(model, images, CAPTIONS)
    assert sorted(per_size) == [4, 8, 16]
    first = model.image_tower.visual.conv1.weight.clone()
    for _ in range(2):
        opt.zero_grad()
        loss, _ = nested_clip_loss(model, images, CAPTIONS)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, _ = nested_clip_loss(model, images, CAPTIONS)
    assert float(after) < float(before)
    assert torch.equal(model.image_tower.visual.conv1.weight, first)  # a frozen block
    assert model.text_tower.text.transformer.resblocks[-1].attn.in_proj_weight.grad is not None


def test_open_clip_errors_name_what_is_wrong(tiny, tmp_path):
    with pytest.raises(ValueError, match="neither an open_clip architecture nor a folder"):
        build_open_clip_dual_encoder("no-such-arch")
    with pytest.raises(FileNotFoundError, match="weights file"):
        build_open_clip_dual_encoder(tiny, tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        build_open_clip_dual_encoder(tmp_path / "empty")
