import pytest
import torch
from torch import nn

from matryoshka.nn import (
    FixedFeatureHead,
    MatryoshkaHead,
    MatryoshkaLoss,
    MatryoshkaModel,
    in_batch_contrastive_loss,
)

DIMS = (2, 4, 8, 16)


@pytest.mark.parametrize("efficient", [False, True])
def test_head_matches_per_size_linear_layers(efficient):
    head = MatryoshkaHead(16, 5, DIMS, efficient=efficient)
    z = torch.randn(7, 16)
    out = head(z)  # (B, K, C)
    assert out.shape == (7, len(DIMS), 5)
    for k, m in enumerate(DIMS):
        if efficient:
            w, b = head.weight[:, :m], head.bias
        else:
            w, b = head.weight[k, :, :m], head.bias[k]
        expected = z[:, :m] @ w.T + b
        torch.testing.assert_close(out[:, k], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(head.logits_at(z, m), expected, atol=1e-5, rtol=1e-5)


def test_mrl_head_ignores_features_past_its_size():
    head = MatryoshkaHead(16, 3, DIMS)
    z = torch.randn(4, 16)
    z2 = z.clone()
    z2[:, 8:] = torch.randn(4, 8) * 100
    torch.testing.assert_close(head(z)[:, :3], head(z2)[:, :3])  # sizes 2, 4, 8 unchanged


def test_mrl_e_classifies_untrained_sizes_and_mrl_says_it_cannot():
    z = torch.randn(3, 16)
    mrle = MatryoshkaHead(16, 4, DIMS, efficient=True)
    assert mrle.logits_at(z, 12).shape == (3, 4)
    assert mrle.can_classify(12)
    mrl = MatryoshkaHead(16, 4, DIMS)
    assert not mrl.can_classify(12)
    with pytest.raises(
        ValueError, match=r"one classifier per trained size \[2, 4, 8, 16\] and none for m=12"
    ):
        mrl.logits_at(z, 12)
    with pytest.raises(ValueError, match="between 1 and d=16, got m=17"):
        mrle.logits_at(z, 17)


def test_head_rejects_wrong_width_and_bad_dims():
    head = MatryoshkaHead(16, 4, DIMS)
    with pytest.raises(ValueError, match=r"shape \(B, d=16\), got shape \(3, 12\)"):
        head(torch.randn(3, 12))
    with pytest.raises(ValueError, match="strictly ascending, got 4 after 8"):
        MatryoshkaHead(16, 4, (2, 8, 4))
    with pytest.raises(ValueError, match="at most d=16, got 32"):
        MatryoshkaHead(16, 4, (8, 32))
    with pytest.raises(ValueError, match="must be positive, got 0"):
        MatryoshkaHead(16, 4, (0, 8))


def test_fixed_feature_head():
    head = FixedFeatureHead(8, 3)
    z = torch.randn(5, 8)
    assert head(z).shape == (5, 1, 3)
    torch.testing.assert_close(head.logits_at(z, 8), head.linear(z))
    assert head.logits_at(z, 4).shape == (5, 3)


@pytest.mark.parametrize("weights", [None, [1.0, 0.5, 2.0, 0.25]])
def test_matryoshka_loss_equals_formula(weights):
    torch.manual_seed(1)
    B, C = 11, 6
    logits = torch.randn(B, len(DIMS), C, dtype=torch.float64)
    y = torch.randint(0, C, (B,))
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    loss = MatryoshkaLoss(ce, DIMS, weights)
    total, per_size = loss(logits, y)
    w = weights or [1.0] * len(DIMS)
    direct = sum(w[k] * ce(logits[:, k], y) for k in range(len(DIMS))) / len(DIMS)
    assert abs(total.item() - direct.item()) < 1e-6
    assert list(per_size) == list(DIMS)
    for k, m in enumerate(DIMS):
        assert abs(per_size[m].item() - ce(logits[:, k], y).item()) < 1e-6
    # a list of per-size outputs is the same as the stacked tensor
    total_list, _ = loss([logits[:, k] for k in range(len(DIMS))], y)
    assert abs(total_list.item() - total.item()) < 1e-12


def test_matryoshka_loss_on_embeddings_equals_formula():
    torch.manual_seed(2)
    a, p = torch.randn(8, 16), torch.randn(8, 16)
    loss = MatryoshkaLoss(in_batch_contrastive_loss, DIMS, slice_embeddings=True, normalize=True)
    total, _ = loss((a, p))
    norm = nn.functional.normalize
    direct = sum(
        in_batch_contrastive_loss(norm(a[:, :m], dim=1), norm(p[:, :m], dim=1)) for m in DIMS
    ) / len(DIMS)
    assert abs(total.item() - direct.item()) < 1e-6


def test_matryoshka_loss_errors():
    ce = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"got 2 weights \[1.0, 2.0\] for 4 sizes"):
        MatryoshkaLoss(ce, DIMS, [1, 2])
    with pytest.raises(ValueError, match="strictly ascending"):
        MatryoshkaLoss(ce, (8, 4))
    loss = MatryoshkaLoss(ce, DIMS)
    with pytest.raises(ValueError, match=r"shape \(B, K=4, ...\).*got shape \(3, 2, 5\)"):
        loss(torch.randn(3, 2, 5), torch.zeros(3, dtype=torch.long))
    emb = MatryoshkaLoss(in_batch_contrastive_loss, DIMS, slice_embeddings=True)
    with pytest.raises(ValueError, match=r"d >= 16 \(the largest size\), got shape \(4, 8\)"):
        emb((torch.randn(4, 8), torch.randn(4, 8)))


@pytest.mark.parametrize("efficient", [False, True])
def test_every_parameter_gets_a_gradient(efficient):
    from matryoshka.models import MLP

    model = MatryoshkaModel(MLP(64, 16, hidden=(32,)), MatryoshkaHead(16, 10, DIMS, efficient))
    loss = MatryoshkaLoss(nn.CrossEntropyLoss(), DIMS)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    total, _ = loss(model(x), y)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_masked_weights_get_no_gradient_and_stay_zero():
    head = MatryoshkaHead(16, 3, DIMS)
    z = torch.randn(5, 16)
    head(z).sum().backward()
    for k, m in enumerate(DIMS):
        assert torch.all(head.weight.grad[k, :, m:] == 0)
        assert torch.all(head.weight.data[k, :, m:] == 0)


def test_model_embed_and_shapes():
    from matryoshka.models import MLP

    model = MatryoshkaModel(MLP(64, 16, hidden=(32,)), MatryoshkaHead(16, 10, DIMS))
    x = torch.randn(4, 1, 8, 8)
    assert model.embed(x).shape == (4, 16)
    assert model(x).shape == (4, 4, 10)
    bad = MatryoshkaModel(MLP(64, 12, hidden=(32,)), MatryoshkaHead(16, 10, DIMS))
    with pytest.raises(ValueError, match=r"\(B, d=16\) embeddings, got \(4, 12\)"):
        bad.embed(x)


def test_contrastive_loss_prefers_matching_pairs():
    torch.manual_seed(0)
    a = nn.functional.normalize(torch.randn(6, 8), dim=1)
    good = in_batch_contrastive_loss(a, a)
    bad = in_batch_contrastive_loss(a, a.roll(1, dims=0))
    assert good < bad
