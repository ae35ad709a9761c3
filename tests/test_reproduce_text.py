"""``reproduce_scifact`` end to end at toy size: tiny BEIR and STS-B files, one training step."""

import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from text_toys import TOPICS as ALL_TOPICS  # noqa: E402
from text_toys import write_beir  # noqa: E402

from matryoshka.cli import main  # noqa: E402
from matryoshka.eval import read_json  # noqa: E402
from matryoshka.experiments.funnels import funnel_table  # noqa: E402
from matryoshka.experiments.scifact import (  # noqa: E402
    BEST_RECIPE,
    PEER_BEST,
    PLAIN_TITLES,
    TUNED_LR,
    TWO_PHASE,
    ScifactConfig,
    default_recipes,
    parse_recipe,
    reproduce_scifact,
)
from matryoshka.experiments.scifact_report import render_scifact  # noqa: E402
from matryoshka.models.text_rotation import pca_rotation  # noqa: E402
from matryoshka.train import TextTrainConfig  # noqa: E402

TOPICS = ALL_TOPICS[:9]


def toy_data(root):
    beir, sts = root / "beir", root / "stsb"
    test = "".join(f"q{i}\td{i}0\t1\n" for i in range(3))
    train = "".join(f"q{i}\td{i}{j}\t1\n" for i in range(3, 9) for j in range(2))
    write_beir(beir, TOPICS, {"test": test, "train": train})
    sts.mkdir(exist_ok=True)
    rows = [f"g\tf\t2012\t{i}\t{i * 0.8:.1f}\ta {t}\tsome {t}\n" for i, t in enumerate(TOPICS[:6])]
    (sts / "sts-test.csv").write_text("".join(rows))
    return beir, sts


def toy_config(tmp_path, **kw) -> ScifactConfig:
    beir, sts = toy_data(tmp_path)
    base = TextTrainConfig(dims=[16, 64, 384], max_steps=1, batch_size=4, max_seq_length=16)
    return ScifactConfig(
        out_dir=tmp_path / "run", docs_dir=tmp_path / "docs", data_dir=beir, stsb_dir=sts,
        base=base, funnels=[((16, 12), (384, 10))], **kw,
    )  # fmt: skip


def test_reproduce_scifact_toy_runs_and_resumes(tmp_path):
    cfg = toy_config(tmp_path, preset="peer")
    run = {"progress": False, "command": "matryoshka reproduce scifact"}
    out = reproduce_scifact(cfg, **run)
    methods = [r["method"] for r in out["retrieval"]]
    assert methods == [
        "original", "pca", "original+pca", "plain", "mrl", "st-peer", "plain-lr", "mrl-lr",
        PEER_BEST,
    ]  # fmt: skip
    assert out["funnel_method"] == PEER_BEST
    assert out["training"][PEER_BEST]["pairs"] == 12 + 18  # + one (title, text) per document
    assert out["training"]["mrl-lr"]["config"]["lr"] == TUNED_LR
    assert out["done_here"] == {"trained": methods[3:], "encoded": ["original", *methods[3:]]}
    assert [r["method"] for r in out["sts"]] == methods
    assert sorted(out["retrieval"][1]["dims"]) == [16]  # PCA of 18 documents: 18 components
    for r in out["retrieval"][:1] + out["retrieval"][2:]:
        assert sorted(r["dims"]) == [16, 64, 384]
        assert 0.0 <= r["dims"][384]["ndcg@10"] <= 1.0
    assert out["training"]["mrl"]["pairs"] == 12 and out["training"]["mrl"]["steps"] == 1
    assert [f["funnel"] for f in out["funnels"]] == ["full", "16:12,384:10"]
    assert out["funnels"][1]["macs"] == 18 * 16 + 12 * 384
    docs = tmp_path / "docs"
    md = (docs / "scifact.md").read_text()
    assert "matryoshka reproduce scifact" in md and "| 384 |" in md and "st-peer" in md
    assert "## The targets, as measured" in md and "| mrl | yes | " in md
    assert "It trained 6 of 6 models and encoded 7 of 7" in md
    assert "Scoring 3 sizes" in md and "Evaluating three sizes costs" in md  # from dims
    assert "share of the recipe's own 384-dim nDCG@10" in md
    assert out["mrl_vs_peer_max_abs_diff"] < 1e-4  # the same model: see the report
    assert json.loads((docs / "scifact.json").read_text())["counts"]["queries"] == 3

    # the report comes from scifact.json alone, its run-time section included
    assert render_scifact(read_json(docs / "scifact.json"), tmp_path / "again") == md
    assert main(["reproduce", "scifact", "--report-only", "--docs", str(docs)]) == 0
    assert (docs / "scifact.md").read_text() == md

    again = reproduce_scifact(cfg, **run)  # resumes: no training, the same numbers
    assert again["retrieval"] == out["retrieval"] and again["training"] == out["training"]
    assert again["done_here"] == {"trained": [], "encoded": []}
    assert "Read from `out_dir` instead" in (docs / "scifact.md").read_text()
    # a second process may measure new recipes alone, beside the default methods' folders
    only = reproduce_scifact(
        toy_config(tmp_path, extra_recipes=["mrl-lr:method=mrl,lr=1e-4"], default_methods=False),
        **run,
    )
    assert [r["method"] for r in only["retrieval"]] == ["original", "pca", "original+pca", "mrl-lr"]
    assert only["funnel_method"] == "mrl-lr" and list(only["training"]) == ["mrl-lr"]
    recipes = default_recipes(cfg.base, preset="peer")
    recipes["mrl"] = replace(recipes["mrl"], lr=1e-3)
    with pytest.raises(ValueError, match="trained with another recipe"):
        reproduce_scifact(toy_config(tmp_path, recipes=recipes), **run)


def test_reproduce_scifact_default_learned_rotation(tmp_path):
    out = reproduce_scifact(toy_config(tmp_path), progress=False)
    methods = [r["method"] for r in out["retrieval"]]
    assert methods == ["original", "pca", "original+pca", PLAIN_TITLES, f"{PLAIN_TITLES}+pca",
                       BEST_RECIPE]  # fmt: skip
    assert BEST_RECIPE == f"{PLAIN_TITLES}+rot" and out["funnel_method"] == BEST_RECIPE
    assert list(out["training"]) == [PLAIN_TITLES]
    assert out["training"][PLAIN_TITLES]["config"]["method"] == "plain"
    rot = out["rotations"][BEST_RECIPE]
    assert rot["of"] == PLAIN_TITLES and rot["pairs"] == 12 + 18 and rot["fresh"] is True
    by = {r["method"]: r["dims"] for r in out["retrieval"]}
    sts = {r["method"]: r["dims"] for r in out["sts"]}
    assert by[BEST_RECIPE][384] == pytest.approx(by[PLAIN_TITLES][384])  # full size unchanged
    assert sts[BEST_RECIPE][384]["spearman"] == pytest.approx(sts[PLAIN_TITLES][384]["spearman"])
    assert by[BEST_RECIPE][16] != by[PLAIN_TITLES][16]  # the prefixes did move
    # the saved folder gives the rotated embeddings through sentence-transformers itself
    from sentence_transformers import SentenceTransformer

    run = tmp_path / "run"
    R = np.load(run / "emb" / BEST_RECIPE / "rotation.npy")
    assert np.abs(R @ R.T - np.eye(384)).max() < 1e-5
    corpus = np.load(run / "emb" / PLAIN_TITLES / "corpus.npy")
    texts = [f"{t} notes" for t in TOPICS[:3]]
    plain = SentenceTransformer(str(run / "models" / PLAIN_TITLES), device="cpu").encode(texts)
    cut = SentenceTransformer(str(run / "models" / BEST_RECIPE), device="cpu", truncate_dim=16)
    got = cut.encode(texts)
    assert got.shape == (3, 16) and np.abs(got - (plain @ R.T)[:, :16]).max() < 1e-5
    assert corpus.shape[1] == 384
    md = (tmp_path / "docs" / "scifact.md").read_text()
    assert "## Learned rotations" in md and f"| {BEST_RECIPE} | {PLAIN_TITLES} | 30 | 10 |" in md
    assert f"| {BEST_RECIPE} | " in md.split("## The targets, as measured")[1]
    again = reproduce_scifact(toy_config(tmp_path), progress=False)  # nothing fitted again
    assert again["done_here"] == {"trained": [], "encoded": []}
    assert again["rotations"][BEST_RECIPE]["fresh"] is False
    assert again["retrieval"] == out["retrieval"]
    with pytest.raises(ValueError, match="rotate_after: 'nope' is not a recipe of this run"):
        reproduce_scifact(toy_config(tmp_path, rotate_after=["nope"]), progress=False)


def test_reproduce_scifact_two_phase(tmp_path):
    soup = f"{TWO_PHASE}@0.25"
    out = reproduce_scifact(toy_config(tmp_path, soups=[soup], preset="two-phase"), progress=False)
    methods = [r["method"] for r in out["retrieval"]]
    assert methods == ["original", "pca", "original+pca", PLAIN_TITLES, f"{PLAIN_TITLES}+pca",
                       TWO_PHASE, f"{TWO_PHASE}+pca", soup]  # fmt: skip
    assert out["funnel_method"] == TWO_PHASE
    best = out["training"][TWO_PHASE]["config"]
    folder = tmp_path / "run" / "models"
    assert best["teacher"] == str(folder / PLAIN_TITLES) and best["init"] == "pca"
    assert best["extra"] == {"pairs": "train+titles", "negatives": "mined", "start": PLAIN_TITLES}
    model = json.loads((folder / TWO_PHASE / "matryoshka.json").read_text())
    assert model["base_model"] == str(folder / PLAIN_TITLES)  # phase two starts from phase one
    modules = json.loads((folder / TWO_PHASE / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules][-2:] == ["Dense", "Normalize"]
    by = {r["method"]: r["dims"] for r in out["retrieval"]}
    for name in (PLAIN_TITLES, TWO_PHASE):  # an uncentred rotation keeps the full size
        assert by[f"{name}+pca"][384]["ndcg@10"] == pytest.approx(by[name][384]["ndcg@10"])
    md = (tmp_path / "docs" / "scifact.md").read_text()
    assert "worst vs PCA of the original" in md and f"| {TWO_PHASE} | " in md
    assert "negatives mined, start plain-lr-titles" in md
    # the soup: a quarter of the way from phase two's start (plain + its rotation) to its end
    safetensors = pytest.importorskip("safetensors.numpy")
    start, end, mixed = (safetensors.load_file(folder / n / "model.safetensors")
                         for n in (PLAIN_TITLES, TWO_PHASE, soup))  # fmt: skip
    assert mixed.keys() == end.keys()
    for k in end:
        assert np.abs(mixed[k] - (0.75 * start[k] + 0.25 * end[k])).max() < 1e-6, k
    rotation = pca_rotation(np.load(tmp_path / "run" / "emb" / PLAIN_TITLES / "corpus.npy")).matrix
    dense = [safetensors.load_file(folder / n / "3_Dense" / "model.safetensors")["linear.weight"]
             for n in (TWO_PHASE, soup)]  # fmt: skip
    assert np.abs(dense[1] - (0.75 * rotation + 0.25 * dense[0])).max() < 1e-6
    cfg = toy_config(tmp_path, soups=[soup], preset="two-phase")
    again = reproduce_scifact(cfg, progress=False)
    assert again["done_here"] == {"trained": [], "encoded": []}


def test_funnel_table_matches_full_search_when_shortlist_is_everything():
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(40, 32)).astype(np.float32)
    xq = xb[:5] + 0.01
    ids = [str(i) for i in range(40)]
    qrels = {f"q{i}": {str(i): 1} for i in range(5)}
    rows = funnel_table(xq, xb, list(qrels), ids, qrels, [((8, 40), (32, 10))], repeats=1)
    assert rows[0]["funnel"] == "full" and rows[0]["macs"] == 40 * 32
    assert rows[1]["ndcg@10"] == pytest.approx(rows[0]["ndcg@10"])
    assert rows[1]["macs"] == 40 * 8 + 40 * 32 and rows[1]["cost_ratio"] < 1
    assert all(r["ms_one_query"] > 0 and r["speedup_one_query"] > 0 for r in rows)


def test_parse_recipe():
    base = TextTrainConfig(dims=[16, 64, 384])
    name, cfg = parse_recipe("mrl-w:method=mrl,weights=4/2/1,lr=4e-5,pairs=train+titles", base)
    assert name == "mrl-w" and cfg.weights == [4.0, 2.0, 1.0] and cfg.lr == 4e-5
    assert cfg.extra == {"pairs": "train+titles"} and base.extra == {}
    _, cfg = parse_recipe("p:method=plain,symmetric=true,max_steps=none,epochs=3", base)
    assert cfg.symmetric is True and cfg.max_steps is None and cfg.epochs == 3
    with pytest.raises(ValueError, match="recipe 'x': unknown config key 'lrate'; valid keys"):
        parse_recipe("x:lrate=1", base)
    with pytest.raises(ValueError, match="recipe 'x': lr must be a number, got 'fast'"):
        parse_recipe("x:lr=fast", base)
    with pytest.raises(ValueError, match="recipe 'x': weights\\[1\\] must be a number"):
        parse_recipe("x:weights=1/heavy/1", base)
    with pytest.raises(ValueError, match="pairs must be one of"):
        parse_recipe("x:pairs=all", base)
    with pytest.raises(ValueError, match="negatives must be one of"):
        parse_recipe("x:negatives=random", base)
    _, cfg = parse_recipe("two:start=p,teacher=p,distill=1,negatives=mined,init=pca", base)
    assert cfg.extra == {"start": "p", "negatives": "mined"} and cfg.teacher == "p"
    assert cfg.init == "pca"
    with pytest.raises(ValueError, match="NAME:KEY=VALUE"):
        parse_recipe("just-a-name", base)
    with pytest.raises(ValueError, match="method must be one of"):
        parse_recipe("x:method=ours", base)


def test_bad_recipe_fails_before_any_training(tmp_path):
    run = {"progress": False}
    with pytest.raises(ValueError, match="one value per size"):
        reproduce_scifact(toy_config(tmp_path, extra_recipes=["w:method=mrl,weights=1/1"]), **run)
    with pytest.raises(ValueError, match=f"recipe name '{PLAIN_TITLES}' is taken"):
        reproduce_scifact(toy_config(tmp_path, extra_recipes=[f"{PLAIN_TITLES}:lr=1e-4"]), **run)
    with pytest.raises(ValueError, match="ALPHA in \\(0, 1\\)"):
        reproduce_scifact(toy_config(tmp_path, soups=[f"{PLAIN_TITLES}@1.5"]), **run)
    with pytest.raises(ValueError, match="'nope' is not a recipe of this run"):
        reproduce_scifact(toy_config(tmp_path, soups=["nope@0.5"]), **run)
    with pytest.raises(ValueError, match="starts from 'later', which is not a recipe before it"):
        reproduce_scifact(toy_config(tmp_path, extra_recipes=["x:start=later"]), **run)
    assert not (tmp_path / "run" / "models").exists()
    with pytest.raises(ValueError, match="no recipe to train"):
        reproduce_scifact(toy_config(tmp_path, default_methods=False), **run)
    assert not (tmp_path / "run" / "models").exists()
