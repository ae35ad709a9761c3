"""Text: loaders, one-pass evaluation at every size, and Matryoshka fine-tuning of the real
packaged all-MiniLM-L6-v2 on a few dozen sentences, offline."""

import copy
import json
import math
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from matryoshka.data.text import (
    BeirDataset,
    beir_train_pairs,
    doc_text,
    load_beir,
    load_corpus,
    load_qrels,
    load_stsb,
    title_text_pairs,
)
from matryoshka.eval.text import (
    pca_baseline,
    prefix_cosine,
    retention,
    retrieval_per_size,
    spearman,
    sts_per_size,
)

st = pytest.importorskip("sentence_transformers")

from matryoshka.models.text import (  # noqa: E402
    encode_texts,
    load_sentence_encoder,
    minilm_path,
    require_sentence_transformers,
)
from matryoshka.train.text import (  # noqa: E402
    TextTrainConfig,
    fit_st_trainer,
    fit_text,
    load_text_model,
    no_duplicate_batches,
    save_text_model,
)

TOPICS = ["cats", "rain", "football", "bread", "planets", "guitars", "rivers", "chess"]
DOCS = {
    f"d{i}": {"title": f"All about {t}", "text": f"This abstract explains {t} in some detail."}
    for i, t in enumerate(TOPICS)
}
QUERIES = {f"q{i}": f"what is known about {t}?" for i, t in enumerate(TOPICS)}


def write_beir(root, docs=DOCS, queries=QUERIES, test=None, train=None):
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, d in docs.items():
            f.write(json.dumps({"_id": i, **d}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for i, t in queries.items():
            f.write(json.dumps({"_id": i, "text": t}) + "\n")
    test = test or [("q0", "d0", 1), ("q1", "d1", 1), ("q2", "d2", 1)]
    train = train or [(f"q{i}", f"d{i}", 1) for i in range(3, 8)]
    for split, rows in (("test", test), ("train", train)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------- loaders


def test_load_beir_split_and_pairs(tmp_path):
    root = write_beir(tmp_path / "beir")
    ds = load_beir(root, "test")
    assert isinstance(ds, BeirDataset)
    assert ds.doc_ids == list(DOCS)  # corpus order
    assert ds.query_ids == ["q0", "q1", "q2"]  # only the judged queries
    assert ds.qrels == {"q0": {"d0": 1}, "q1": {"d1": 1}, "q2": {"d2": 1}}
    assert ds.doc_texts()[0] == "All about cats This abstract explains cats in some detail."
    pairs = beir_train_pairs(root)
    assert len(pairs) == 5
    assert pairs[0] == (QUERIES["q3"], doc_text(DOCS["d3"]))
    assert title_text_pairs(ds.corpus)[1] == ("All about rain", DOCS["d1"]["text"])


def test_load_beir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="BEIR folder not found"):
        load_beir(tmp_path / "nope")
    root = write_beir(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"no qrels for split 'dev'.*\['test', 'train'\]"):
        load_beir(root, "dev")
    root = write_beir(tmp_path / "b", test=[("q0", "d99", 1)])
    with pytest.raises(ValueError, match="judged documents are not in corpus.jsonl.*d99"):
        load_beir(root)
    root = write_beir(tmp_path / "c", test=[("q77", "d0", 1)])
    with pytest.raises(ValueError, match="judged queries are not in queries.jsonl.*q77"):
        load_beir(root)


def test_corpus_jsonl_errors_name_the_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "text": "one"}\n\n{"id": "b", "text": "two"}\n')
    assert load_corpus(f) == {"a": {"title": "", "text": "one"}, "b": {"title": "", "text": "two"}}
    f.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": \n')
    with pytest.raises(ValueError, match=r"c.jsonl, line 2: not valid JSON"):
        load_corpus(f)
    f.write_text('{"_id": "a", "text": "one"}\n{"_id": "a", "text": "two"}\n')
    with pytest.raises(ValueError, match="line 2: duplicate document id 'a'"):
        load_corpus(f)
    f.write_text('{"text": "one"}\n')
    with pytest.raises(ValueError, match="line 1: no '_id'"):
        load_corpus(f)
    f.write_text('{"_id": "a", "body": "one"}\n')
    with pytest.raises(ValueError, match="line 1: document 'a' has no string 'text'"):
        load_corpus(f)
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        load_corpus(tmp_path / "missing.jsonl")


def test_qrels_errors(tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text("query-id\tcorpus-id\tscore\nq\td\t1\nq\te\tx\n")
    with pytest.raises(ValueError, match="line 3: score 'x' is not an integer"):
        load_qrels(f)
    f.write_text("q\td\t1\nq\te\n")  # no header: fine; a short line is not
    with pytest.raises(ValueError, match="line 2: expected 3 tab-separated columns"):
        load_qrels(f)


def test_load_stsb_splits_on_tabs_only(tmp_path):
    rows = [
        'main-news\theadlines\t2016\t0001\t5.000\tHe said "yes, fine".\tHe said yes.\tsrc\tsrc',
        "main-captions\tMSRvid\t2012test\t0002\t0.500\tA cat, a dog.\tA plane flies.",
    ]
    (tmp_path / "sts-test.csv").write_text("\n".join(rows) + "\n")
    sts = load_stsb(tmp_path, "test")
    assert len(sts) == 2
    assert sts.sentences1 == ['He said "yes, fine".', "A cat, a dog."]
    assert sts.sentences2 == ["He said yes.", "A plane flies."]
    np.testing.assert_allclose(sts.scores, [5.0, 0.5])
    assert sts.scores.dtype == np.float32
    assert sts.genres == ["main-news", "main-captions"]
    (tmp_path / "sts-dev.csv").write_text(rows[1] + "\nmain-news\tx\t2012\t3\t4.0\tonly one\n")
    with pytest.raises(ValueError, match="sts-dev.csv, line 2: expected at least 7"):
        load_stsb(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="STS-B train file not found"):
        load_stsb(tmp_path, "train")


# ---------------------------------------------------------------- evaluation


@pytest.mark.parametrize("sizes", [[16], [4, 8, 16]])
def test_perfect_retrieval_scores_one_at_every_size(sizes):
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(50, 16)).astype(np.float32)
    xq = xb[[3, 7, 11]] * 2.0  # each query points at one document, at every prefix
    doc_ids = [f"d{i}" for i in range(50)]
    qrels = {"a": {"d3": 1}, "b": {"d7": 1}, "c": {"d11": 2, "d0": 0}}
    res = retrieval_per_size(xq, xb, ["a", "b", "c"], doc_ids, qrels, sizes, method="toy")
    assert res["method"] == "toy" and res["queries"] == 3
    assert list(res["dims"]) == sizes
    for vals in res["dims"].values():
        assert vals == pytest.approx({"ndcg@10": 1.0, "recall@100": 1.0, "map@100": 1.0})


def test_retrieval_known_rank_two():
    xb = np.array([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0]], np.float32)
    xq = np.array([[1.0, 0.0]], np.float32)
    res = retrieval_per_size(xq, xb, ["q"], ["x", "y", "z"], {"q": {"y": 1}}, [2])
    assert res["dims"][2]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert res["dims"][2]["map@100"] == pytest.approx(0.5)
    assert res["dims"][2]["recall@100"] == pytest.approx(1.0)


def test_retrieval_bad_input():
    xb = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="must share d"):
        retrieval_per_size(np.zeros((1, 3)), xb, ["q"], ["a", "b", "c"], {}, [2])
    with pytest.raises(ValueError, match="one id per row: 3 corpus rows, 2 doc ids"):
        retrieval_per_size(np.zeros((1, 4)), xb, ["q"], ["a", "b"], {}, [2])
    with pytest.raises(ValueError, match="at most d=4"):
        retrieval_per_size(np.zeros((1, 4)), xb, ["q"], ["a", "b", "c"], {}, [8])
    with pytest.raises(ValueError, match="metric names look like 'ndcg@10'"):
        retrieval_per_size(np.zeros((1, 4)), xb, ["q"], ["a", "b", "c"], {}, [2], metrics=["x"])


def test_sts_spearman_known_answers():
    theta = np.linspace(0.1, 1.5, 9)
    e1 = np.zeros((9, 4), np.float32)
    e1[:, 0] = 1
    e2 = np.zeros((9, 4), np.float32)
    e2[:, 0], e2[:, 1] = np.cos(theta), np.sin(theta)
    res = sts_per_size(e1, e2, -theta, [2, 4], method="toy")
    assert res == {"method": "toy", "dims": {2: {"spearman": 1.0}, 4: {"spearman": 1.0}}}
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    np.testing.assert_allclose(prefix_cosine(e1, e2, 2), np.cos(theta), rtol=1e-6)
    with pytest.raises(ValueError, match="scores"):
        sts_per_size(e1, e2, theta[:3], [2])


def test_pca_baseline_prefix_and_retention():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(200, 8)) * np.arange(1, 9)).astype(np.float32)
    (Z,) = pca_baseline(X)
    assert Z.shape == (200, 8) and Z.dtype == np.float32
    assert np.all(np.diff(Z.var(0)) <= 1e-3)  # columns by explained variance
    Zb, Zq = pca_baseline(X, X[:10], X[:3])
    assert Zb.shape == (10, 8) and Zq.shape == (3, 8)
    r = retention({"method": "m", "dims": {8: {"ndcg@10": 0.5}, 16: {"ndcg@10": 0.8}}})
    assert r == {8: pytest.approx(0.625), 16: 1.0}


# ---------------------------------------------------------------- encoder and fine-tuning

PAIRS = [
    (f"what do we know about {t}?", f"A short note about {t} and {u}.")
    for t in TOPICS
    for u in ("history", "today")
]


@pytest.fixture(scope="module")
def encoder():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_sentence_encoder(max_seq_length=32)


def test_packaged_encoder_encodes_once_to_float32(encoder):
    assert (minilm_path() / "config.json").is_file()
    X = encode_texts(encoder, QUERIES.values(), batch_size=3, progress=False)
    assert X.shape == (8, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert encode_texts(encoder, [], progress=False).shape == (0, 384)
    with pytest.raises(TypeError, match="not one string"):
        encode_texts(encoder, "a sentence")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        encode_texts(encoder, ["a", 3])


def test_encoder_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_sentence_encoder(tmp_path / "no-model")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'matryoshka\[text\]'"):
        require_sentence_transformers()


def test_no_duplicate_batches():
    pairs = [("q1", "a"), ("q1", "b"), ("q2", "a"), ("q3", "c"), ("q4", "d"), ("q5", "e")]
    batches = no_duplicate_batches(pairs, 3, seed=42)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        texts = [t for i in b for t in pairs[i]]
        assert len(texts) == len(set(texts)) and len(b) <= 3
    assert batches == no_duplicate_batches(pairs, 3, seed=42)
    assert batches != no_duplicate_batches(pairs, 3, seed=42, epoch=1)


def test_config_and_pairs_errors(encoder):
    with pytest.raises(ValueError, match="method must be one of"):
        TextTrainConfig(method="ours").check()
    with pytest.raises(ValueError, match="warmup_ratio"):
        TextTrainConfig(warmup_ratio=1.5).check()
    with pytest.raises(ValueError, match="distill applies to method 'mrl' only"):
        TextTrainConfig(method="plain", distill=1.0).check()
    with pytest.raises(ValueError, match="trainer 'sentence-transformers' runs method 'st-peer'"):
        TextTrainConfig(method="mrl", trainer="sentence-transformers").check()
    with pytest.raises(ValueError, match="fit_st_trainer trains method 'st-peer' only"):
        fit_st_trainer(encoder, PAIRS, TextTrainConfig(method="mrl"))
    with pytest.raises(
        ValueError, match=r"pairs\[1\] must be 2 non-empty strings \(anchor, positive\)"
    ):
        fit_text(encoder, [("a", "b"), ("c", "")], TextTrainConfig(), progress=False)
    same = [("one query", "doc a"), ("one query", "doc b"), ("one query", "doc c")]
    with pytest.raises(ValueError, match="no batch of at least 2 pairs without repeated texts"):
        fit_text(encoder, same, TextTrainConfig(max_steps=1), progress=False)
    with pytest.raises(ValueError, match="at most d=384"):
        fit_text(encoder, PAIRS, TextTrainConfig(dims=[16, 512]), progress=False)


def test_st_trainer_needs_datasets_and_accelerate(encoder, monkeypatch):
    import sentence_transformers.util

    monkeypatch.setattr(sentence_transformers.util, "is_training_available", lambda: False)
    cfg = TextTrainConfig(method="st-peer", trainer="sentence-transformers", max_steps=1)
    with pytest.raises(ImportError, match="pip install datasets accelerate"):
        fit_text(encoder, PAIRS, cfg, progress=False)


@pytest.mark.parametrize("dims", [[384], [16, 64, 384], [8, 16, 32, 64, 128, 256, 384]])
def test_two_forward_passes_per_step_for_any_number_of_sizes(encoder, dims, monkeypatch):
    """Anchors and positives are each encoded once per step; every size is a slice of them."""
    model = copy.deepcopy(encoder)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda f, **kw: calls.append(1) or forward(f, **kw))
    cfg = TextTrainConfig(method="mrl", dims=dims, batch_size=4, max_steps=3)
    log = fit_text(model, PAIRS, cfg, progress=False)
    assert log["steps"] == 3 and len(calls) == 2 * 3
    assert set(log["history"][0]) >= {f"loss@{m}" for m in dims}


def test_peer_loss_is_our_loss_summed_over_sizes(encoder):
    """sentence-transformers' MatryoshkaLoss(MNRL) sums what our MatryoshkaLoss averages."""
    from sentence_transformers.sentence_transformer import losses

    from matryoshka.nn import MatryoshkaLoss, in_batch_contrastive_loss
    from matryoshka.train.text_steps import embed as _embed
    from matryoshka.train.text_steps import features as _features

    dims = [16, 64, 384]
    a, p = [x for x, _ in PAIRS[:6]], [y for _, y in PAIRS[:6]]
    encoder.eval()
    with torch.no_grad():
        peer = losses.MatryoshkaLoss(
            encoder, losses.MultipleNegativesRankingLoss(encoder, scale=20.0), dims
        )
        theirs = peer([_features(encoder, a), _features(encoder, p)], None)
        ours, per_size = MatryoshkaLoss(
            in_batch_contrastive_loss, dims, slice_embeddings=True, normalize=True
        )((_embed(encoder, a), _embed(encoder, p)))
    assert float(theirs) == pytest.approx(len(dims) * float(ours), rel=1e-5)
    assert per_size[16] > per_size[384]  # the untrained 16-dim prefix ranks worse


@pytest.mark.parametrize("method", ["mrl", "plain", "st-peer"])
def test_fine_tune_saves_reloads_and_encodes_the_same(encoder, tmp_path, method):
    model = copy.deepcopy(encoder)
    dims = [16, 64, 384]
    cfg = TextTrainConfig(
        method=method,
        dims=dims,
        batch_size=8,
        max_steps=2 if method == "mrl" else 1,  # few steps: CPU time
        warmup_ratio=0.1 if method == "mrl" else 0.0,
        lr=1e-4,
        max_seq_length=32,
        distill=0.5 if method == "mrl" else 0.0,
    )
    log = fit_text(model, PAIRS, cfg, progress=False)
    assert log["steps"] == cfg.max_steps == len(log["history"])
    if method == "mrl":
        lrs = [r["lr"] for r in log["history"]]
        assert lrs == [0.0, 1e-4]  # warm-up from zero, then linear decay, as in transformers
        assert {"loss@16", "loss@64", "loss@384", "distill"} <= set(log["history"][0])
    elif method == "plain":
        assert set(k for k in log["history"][0] if k.startswith("loss@")) == {"loss@384"}
    moved = any(not torch.equal(a, b) for a, b in zip(model.parameters(), encoder.parameters()))
    assert moved
    path = save_text_model(model, tmp_path / "m", dims, method=method, history=log["history"])
    texts = [q for q, _ in PAIRS[:5]]
    X = encode_texts(model, texts, progress=False)  # (5, 384)
    again = st.SentenceTransformer(str(path), truncate_dim=64, device="cpu")
    np.testing.assert_allclose(again.encode(texts), X[:, :64], atol=1e-5)
    loaded, meta = load_text_model(path)
    assert meta["dims"] == dims and meta["d"] == 384 and meta["method"] == method
    np.testing.assert_allclose(encode_texts(loaded, texts, progress=False), X, atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim must be between 1 and d=384"):
        load_text_model(path, truncate_dim=500)
    with pytest.raises(FileNotFoundError, match="matryoshka.json"):
        load_text_model(tmp_path)


def test_st_trainer_runs_the_peer_and_logs_its_loss(encoder, tmp_path):
    """The peer through SentenceTransformerTrainer: its first logged loss is MatryoshkaLoss(MNRL)
    of the starting model on the whole batch (dropout off, one batch per epoch)."""
    from sentence_transformers.util import is_training_available

    if not is_training_available():
        pytest.skip("needs datasets and accelerate (pip install 'matryoshka[st]')")
    from matryoshka.nn import MatryoshkaLoss, in_batch_contrastive_loss
    from matryoshka.train.text_steps import embed as _embed

    model = copy.deepcopy(encoder)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    pairs = [(f"what do we know about {t}?", f"A short note about {t}.") for t in TOPICS]
    dims = [16, 64, 384]
    a, p = [x for x, _ in pairs], [y for _, y in pairs]
    model.eval()
    with torch.no_grad():
        ours, _ = MatryoshkaLoss(
            in_batch_contrastive_loss, dims, slice_embeddings=True, normalize=True
        )((_embed(model, a), _embed(model, p)))
    cfg = TextTrainConfig(
        method="st-peer", trainer="sentence-transformers", dims=dims, batch_size=len(pairs),
        max_steps=2, lr=1e-4, warmup_ratio=0.0, max_seq_length=32,
    )  # fmt: skip
    log = fit_text(model, pairs, cfg, progress=False)
    assert log["trainer"] == "sentence-transformers" and log["steps"] == 2
    losses = [r["loss"] for r in log["history"]]
    assert len(losses) == 2
    assert losses[0] == pytest.approx(len(dims) * float(ours), abs=2e-4)  # the peer sums sizes
    assert losses[1] < losses[0]  # one AdamW step on the same batch lowers its loss
    assert any(not torch.equal(x, y) for x, y in zip(model.parameters(), encoder.parameters()))
    path = save_text_model(model, tmp_path / "peer", dims, method="st-peer")
    X = encode_texts(model, a, progress=False)
    loaded, meta = load_text_model(path)
    assert meta["method"] == "st-peer"
    np.testing.assert_allclose(encode_texts(loaded, a, progress=False), X, atol=1e-5)


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


@pytest.mark.parametrize("triples", [False, True])
def test_cached_loss_has_the_gradient_of_the_in_batch_loss(encoder, triples):
    """GradCache splits the batch into mini-batches; the loss and every gradient are the same."""
    from matryoshka.train.text_steps import TextStepper, cached_backward, embed

    data = [(a, p, PAIRS[(i + 3) % len(PAIRS)][1]) if triples else (a, p)
            for i, (a, p) in enumerate(PAIRS)]  # fmt: skip
    cols = [[row[c] for row in data] for c in range(len(data[0]))]
    cfg = TextTrainConfig(method="mrl", dims=[16, 64, 384], batch_size=8, max_steps=1)
    plain, cached = _no_dropout(copy.deepcopy(encoder)), _no_dropout(copy.deepcopy(encoder))
    loss = TextStepper(plain, cfg, 1)._ours([embed(plain, c) for c in cols], {})
    loss.backward()
    stepper = TextStepper(cached, replace(cfg, loss="cached", mini_batch_size=3), 1)
    cached_loss = cached_backward(cached, cols, 3, lambda embs: stepper._ours(embs, {}))
    assert float(cached_loss) == pytest.approx(float(loss.detach()), rel=1e-5)
    compared = 0
    for (name, p1), (_, p2) in zip(plain.named_parameters(), cached.named_parameters()):
        assert (p1.grad is None) == (p2.grad is None), name  # (the unused pooler has none)
        if p1.grad is not None:
            assert torch.allclose(p1.grad, p2.grad, rtol=1e-3, atol=1e-6), name
            compared += 1
    assert compared > 50
    fit_text(
        copy.deepcopy(encoder), data, replace(cfg, loss="cached", mini_batch_size=3), progress=False
    )  # fmt: skip  (and it trains end to end)


def test_prompts_go_in_front_of_the_texts(encoder, monkeypatch):
    from matryoshka.train import text_steps

    seen = []
    embed = text_steps.embed
    monkeypatch.setattr(text_steps, "embed", lambda m, texts: seen.append(texts) or embed(m, texts))
    cfg = TextTrainConfig(method="mrl", dims=[16, 384], batch_size=4, max_steps=1,
                          query_prompt="query: ", document_prompt="passage: ")  # fmt: skip
    fit_text(copy.deepcopy(encoder), PAIRS[:4], cfg, progress=False)
    assert all(t.startswith("query: ") for t in seen[0])
    assert all(t.startswith("passage: ") for t in seen[1])
    got = encode_texts(encoder, ["cats"], prompt="query: ", progress=False)
    np.testing.assert_allclose(got, encode_texts(encoder, ["query: cats"], progress=False))


def test_a_saved_text_model_has_a_card_and_its_sizes_in_config_json(encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    save_text_model(encoder, tmp_path / "m", [16, 64, 384], base_model="all-MiniLM-L6-v2",
                    data="pairs.jsonl", pairs=8, steps=2, progress=False)  # fmt: skip
    card = (tmp_path / "m" / "README.md").read_text()
    assert "base_model: all-MiniLM-L6-v2" in card and "- matryoshka" in card
    assert "trained at sizes 16, 64, 384" in card and "pairs.jsonl (8 pairs, 2 steps)" in card
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["matryoshka_dimensions"] == [16, 64, 384] and config["is_matryoshka"]
    model = SentenceTransformer(str(tmp_path / "m"), truncate_dim=64)  # other tools still load it
    assert model.encode(["a cat"]).shape == (1, 64)


def test_settings_a_method_ignores_are_refused():
    with pytest.raises(ValueError, match="weights apply to the nested sizes; method 'plain'"):
        TextTrainConfig(method="plain", weights=[1, 2]).check()
    with pytest.raises(ValueError, match="loss must be one of"):
        TextTrainConfig(loss="triplet").check()


def test_the_models_own_token_limit_is_kept_unless_set(encoder):
    model = copy.deepcopy(encoder)
    model.max_seq_length = 48
    fit_text(model, PAIRS[:4], TextTrainConfig(dims=[16, 384], batch_size=4, max_steps=1),
             progress=False)  # fmt: skip
    assert model.max_seq_length == 48


def test_loading_and_saving_can_be_quiet(encoder, tmp_path, capfd):
    save_text_model(encoder, tmp_path / "q", [16, 384], progress=False)
    load_text_model(tmp_path / "q", progress=False)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err
