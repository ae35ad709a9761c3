"""Text recipes: the PCA rotation inside a model, mined hard negatives, a teacher's distillation,
two-phase recipes that name each other, and the summary of several seeds."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matryoshka.experiments.scifact_recipes import check_references
from matryoshka.models.text_rotation import pca_rotation
from matryoshka.models.text_soup import interpolate_weights
from matryoshka.train import TextTrainConfig
from matryoshka.train.text_negatives import mine_hard_negatives
from matryoshka.train.text_steps import distill_loss


def test_pca_rotation_orders_directions_by_variance():
    rng = np.random.default_rng(0)
    scales = np.array([1.0, 5.0, 0.1, 3.0])
    X = rng.normal(size=(4000, 4)) * scales  # variance along the axes, in a known order
    rot = pca_rotation(X)
    assert np.allclose(np.abs(rot.matrix), np.eye(4)[[1, 3, 0, 2]], atol=0.05)
    assert np.allclose(rot.matrix @ rot.matrix.T, np.eye(4), atol=1e-12)  # orthogonal
    assert (np.diff(rot.variance) <= 0).all() and rot.variance.sum() == pytest.approx(1.0)
    Y = rot.apply(X)
    assert np.allclose(np.linalg.norm(Y, axis=1), np.linalg.norm(X, axis=1), rtol=1e-5)
    assert np.allclose(pca_rotation(X).matrix, rot.matrix)  # signs fixed: the same fit twice
    shifted = pca_rotation(X + 10.0, center=True)
    assert np.allclose(shifted.mean, X.mean(0) + 10.0)
    assert np.allclose(np.abs(shifted.matrix), np.abs(rot.matrix), atol=0.05)
    with pytest.raises(ValueError, match="row 2 holds NaN"):
        pca_rotation(np.vstack([X[:2], [np.nan] * 4]))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        rot.apply(X[:, :3])


def test_mine_hard_negatives_draws_from_the_band_never_a_positive():
    xb = np.stack([np.cos(np.linspace(0, 1.5, 30)), np.sin(np.linspace(0, 1.5, 30))], axis=1)
    xq = xb[[0, 29]]  # rank r of query 0 is row r; of query 1, row 29 - r
    positives = [[0, 3], [29]]
    rows = [mine_hard_negatives(xq, xb, positives, ranks=(2, 5), seed=s) for s in range(20)]
    got0 = {int(r[0]) for r in rows}
    got1 = {int(r[1]) for r in rows}
    assert got0 <= {4, 5, 6} and len(got0) > 1  # ranks 2-4 once rows 0 and 3 are left out
    assert got1 <= {26, 25, 24} and len(got1) > 1
    assert (mine_hard_negatives(xq, xb, positives, (2, 5), seed=1) == rows[1]).all()
    tiny = mine_hard_negatives(xq, xb[:4], [[0], [3]], ranks=(10, 50))  # band cut to the corpus
    assert tiny[0] == 3 and tiny[1] == 0
    with pytest.raises(ValueError, match="2 anchors but 1 lists"):
        mine_hard_negatives(xq, xb, [[0]])
    with pytest.raises(ValueError, match="must share d"):
        mine_hard_negatives(xq[:, :1], xb, positives)


def test_distill_loss_with_a_teacher_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g)
    ta, tp = torch.randn(5, 6, generator=g), torch.randn(7, 6, generator=g)
    T, dims = 0.1, (4, 8)
    target = F.softmax(F.normalize(ta, dim=1) @ F.normalize(tp, dim=1).T / T, dim=1)
    terms = []
    for m in dims:
        s = F.normalize(a[:, :m], dim=1) @ F.normalize(p[:, :m], dim=1).T / T
        logq = F.log_softmax(s, dim=1)
        terms.append((target * (target.log() - logq)).sum(1).mean())  # KL(target || prefix)
    want = torch.stack(terms).mean()
    got = distill_loss(a, p, dims, T, target=(ta, tp))
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    # the model itself as teacher: its full-size term vanishes, the size-4 term is the one of
    # self-distillation (which has no full-size term), so the mean over two sizes is half of it
    self_only = distill_loss(a, p, dims, T)
    own = distill_loss(a, p, dims, T, target=(a, p))
    assert own.item() == pytest.approx(self_only.item() / 2, abs=1e-6)


def test_teacher_and_init_fields_are_checked():
    with pytest.raises(ValueError, match="a teacher needs distill"):
        TextTrainConfig(teacher="some/model").check()
    with pytest.raises(ValueError, match="init must be one of"):
        TextTrainConfig(init="svd").check()
    with pytest.raises(ValueError, match="init runs in our loop"):
        TextTrainConfig(method="st-peer", trainer="sentence-transformers", init="pca").check()


def test_two_phase_recipes_must_name_recipes_trained_before_them():
    plain = TextTrainConfig(method="plain")
    two = TextTrainConfig(teacher="plain", distill=1.0, extra={"start": "plain"})
    check_references({"plain": plain, "two": two})  # in order: fine
    with pytest.raises(ValueError, match="starts from 'plain', which is not a recipe before it"):
        check_references({"two": two, "plain": plain})
    stray = TextTrainConfig(teacher="nowhere", distill=1.0)
    with pytest.raises(ValueError, match="teacher 'nowhere' is neither a recipe"):
        check_references({"x": stray})
    with pytest.raises(ValueError, match="negatives must be one of"):
        check_references({"x": TextTrainConfig(extra={"negatives": "random"})})


TEXTS = [f"note {i} on {t}" for i, t in enumerate(["cats", "rain", "tea", "chess"] * 6)]


@pytest.mark.parametrize("center", [False, True])
def test_a_rotated_model_saves_and_loads_as_plain_sentence_transformers(tmp_path, center):
    st = pytest.importorskip("sentence_transformers")
    from matryoshka.models.text import load_sentence_encoder
    from matryoshka.models.text_rotation import add_rotation

    model = load_sentence_encoder(progress=False)
    X = model.encode(TEXTS, convert_to_numpy=True)  # (24, 384), unit length
    rot = pca_rotation(X, center=center)
    add_rotation(model, rot)
    model.save(str(tmp_path / "m"))
    ref = rot.apply(X)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    for m in (16, 384):
        got = st.SentenceTransformer(str(tmp_path / "m"), truncate_dim=m).encode(TEXTS[:5])
        assert np.abs(got - ref[:5, :m]).max() < 1e-5
    if not center:  # orthogonal: every full-size cosine similarity is kept
        assert np.abs(ref @ ref.T - X @ X.T).max() < 1e-5


def test_fit_text_starts_at_the_pca_ordering_and_learns_from_a_teacher(tmp_path):
    pytest.importorskip("sentence_transformers")
    from matryoshka.models.text import load_sentence_encoder
    from matryoshka.train import fit_text, save_text_model

    teacher = load_sentence_encoder(progress=False)
    save_text_model(teacher, tmp_path / "teacher", [16, 384], progress=False)
    pairs = [(f"about {t}", t) for t in TEXTS]
    model = load_sentence_encoder(progress=False)
    X = model.encode(TEXTS, convert_to_numpy=True)
    cfg = TextTrainConfig(dims=[16, 384], max_steps=1, batch_size=8, lr=1e-12, max_seq_length=16,
                          init="pca", teacher=str(tmp_path / "teacher"), distill=1.0)  # fmt: skip
    log = fit_text(model, pairs, cfg, progress=False)
    assert [type(m).__name__ for m in model][-2:] == ["Dense", "Normalize"]
    assert "distill" in log["history"][0] and log["history"][0]["distill"] >= 0
    ref = pca_rotation(X).apply(X)  # fitted on the documents of the pairs: the same texts
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = model.encode(TEXTS, convert_to_numpy=True)
    assert np.abs(got - ref).max() < 1e-4  # lr 1e-12: still the rotation it started from


def test_interpolate_weights_lies_on_the_line_from_start_to_end():
    torch.manual_seed(0)
    start, end = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    w0 = {k: v.clone() for k, v in start.state_dict().items()}
    w1 = end.state_dict()
    interpolate_weights(start, end, 0.3)
    for k, v in start.state_dict().items():
        assert torch.allclose(v, 0.7 * w0[k] + 0.3 * w1[k], atol=1e-7)
    interpolate_weights(start, end, 1.0)
    assert all(torch.equal(v, w1[k]) for k, v in start.state_dict().items())
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        interpolate_weights(start, end, 1.5)
    with pytest.raises(ValueError, match="different modules"):
        interpolate_weights(start, torch.nn.Sequential(end), 0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate_weights(start, torch.nn.Linear(5, 3), 0.5)
