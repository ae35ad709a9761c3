"""A user's own text, on the command line only: pairs.jsonl -> train -> embed -> index -> search.

The packaged all-MiniLM-L6-v2 is the base model; three training steps keep it fast. Search results
are checked against sentence-transformers loading the saved folder with ``truncate_dim`` (exact
cosine by hand), so the model folder, the embeddings, the index and the search agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from matryoshka.cli import main

TOPICS = {
    "space": ["a rocket launch into orbit", "the moon landing", "a satellite circles the earth",
              "astronauts aboard the station"],
    "cooking": ["bake bread with yeast", "a recipe for tomato soup", "fry onions in butter",
                "roast the chicken slowly"],
    "sport": ["the football match ended in a draw", "a tennis final at wimbledon",
              "the marathon runner finished", "basketball playoffs tonight"],
}  # fmt: skip


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    with open(root / "pairs.jsonl", "w") as f:
        for texts in TOPICS.values():
            for a in texts:
                for b in texts:
                    if a != b:
                        f.write(json.dumps({"anchor": a, "positive": b}) + "\n")
    docs = [(topic, t) for topic, texts in TOPICS.items() for t in texts]
    with open(root / "corpus.jsonl", "w") as f:
        for i, (topic, t) in enumerate(docs):
            f.write(json.dumps({"_id": f"doc{i}", "text": t, "topic": topic}) + "\n")
    (root / "text.yaml").write_text(
        f"kind: text\ndata:\n  pairs: {root / 'pairs.jsonl'}\n"
        "train:\n  dims: [16, 32, 64, 384]\n  batch_size: 6\n  max_steps: 3\n"
        f"out_dir: {root / 'model'}\n"
    )
    assert main(["train", "--config", str(root / "text.yaml"), "--quiet"]) == 0
    return root, docs


def test_train_writes_a_model_with_its_card_and_sizes(flow, capsys):
    root, _ = flow
    meta = json.loads((root / "model" / "matryoshka.json").read_text())
    assert meta["dims"] == [16, 32, 64, 384] and meta["steps"] == 3 and meta["pairs"] == 36
    assert json.loads((root / "model" / "config.json").read_text())["matryoshka_dimensions"] == [
        16, 32, 64, 384,
    ]  # fmt: skip
    card = (root / "model" / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert "trained at sizes 16, 32, 64, 384" in card and "pairs.jsonl (36 pairs, 3 steps)" in card
    # the same recipe again reuses the folder; another recipe is refused, the model kept
    assert main(["train", "--config", str(root / "text.yaml"), "--quiet"]) == 0
    assert "already trained (reused)" in capsys.readouterr().out
    assert main(["train", "--config", str(root / "text.yaml"), "train.lr=0.1", "--quiet"]) == 2
    assert "trained with another recipe" in capsys.readouterr().err
    assert (root / "model" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def indexed(flow):
    root, docs = flow
    model, emb, idx = (str(root / n) for n in ("model", "emb", "idx"))
    assert (
        main(["embed", model, "--texts", str(root / "corpus.jsonl"), "--out", emb, "--quiet"]) == 0
    )
    assert main(["index", "build", emb, "--out", idx, "--quiet"]) == 0
    return root, docs


def test_embed_index_and_search_agree_with_sentence_transformers(indexed, capsys):
    from sentence_transformers import SentenceTransformer

    root, docs = indexed
    model, emb, idx = (str(root / n) for n in ("model", "emb", "idx"))
    assert np.load(f"{emb}/embeddings.npy").shape == (len(docs), 384)
    assert json.loads((root / "emb" / "names.json").read_text())[:2] == ["doc0", "doc1"]
    capsys.readouterr()
    queries = ["a rocket flew to the moon", "a bowl of soup for dinner"]
    argv = ["index", "search", idx, "--model", model, "--dim", "16", "-k", "3", "--quiet"]
    assert main([*argv, "--text", queries[0], "--text", queries[1]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # the same search by hand: the saved folder cut to 16 by sentence-transformers, exact cosine
    st = SentenceTransformer(model, truncate_dim=16)
    xb, xq = st.encode([t for _, t in docs]), st.encode(queries)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    want = np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :3]
    assert [r["ids"] for r in rows] == want.tolist()
    assert [r["names"] for r in rows] == [[f"doc{i}" for i in w] for w in want]
    np.testing.assert_allclose([r["scores"] for r in rows], np.sort(-(xq @ xb.T))[:, :3] * -1,
                               atol=1e-4)  # fmt: skip
    assert docs[rows[0]["ids"][0]][0] == "space" and docs[rows[1]["ids"][0]][0] == "cooking"


def test_search_with_a_file_of_query_texts_names_each_query(indexed, capsys):
    root, _ = indexed
    with open(root / "queries.jsonl", "w") as f:
        f.write(json.dumps({"_id": "q-space", "text": "orbit of the moon"}) + "\n")
    idx = root / "idx"
    argv = ["search", str(idx), "--model", str(root / "model"), "-k", "1", "--quiet"]
    assert main([*argv, "--texts", str(root / "queries.jsonl")]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["query_name"] == "q-space"
    assert main(["search", str(idx), "--text", "no model given", "--quiet"]) == 2
    assert "--text needs --model" in capsys.readouterr().err


def test_eval_scores_the_model_with_the_corpus_as_its_own_queries(flow, capsys):
    root, docs = flow
    with open(root / "qrels.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i, (a, _) in enumerate(docs):
            for j, (b, _) in enumerate(docs):
                if a == b and i != j:
                    f.write(f"doc{i}\tdoc{j}\t1\n")
    corpus = str(root / "corpus.jsonl")
    argv = ["eval", str(root / "model"), "--corpus", corpus, "--queries", corpus]
    assert main([*argv, "--qrels", str(root / "qrels.tsv"), "--exclude-self", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| 16 |" in out and "| 384 |" in out
    results = json.loads((root / "model" / "eval" / "results.json").read_text())
    full = results["results"][0]["dims"]["384"]
    assert 0.5 < full["ndcg@10"] <= 1.0  # three topics, three relevant documents each
    assert "## Results" in (root / "model" / "README.md").read_text()


def test_eval_reads_a_beir_folder(flow, tmp_path, capsys):
    root, docs = flow
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text((root / "corpus.jsonl").read_text())
    with open(beir / "queries.jsonl", "w") as f:
        f.write(json.dumps({"_id": "q1", "text": "rockets, moons and orbits"}) + "\n")
        f.write(json.dumps({"_id": "q2", "text": "cooking dinner in the kitchen"}) + "\n")
    with open(beir / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i, (topic, _) in enumerate(docs):
            if topic in ("space", "cooking"):
                f.write(f"{'q1' if topic == 'space' else 'q2'}\tdoc{i}\t1\n")
    out = tmp_path / "scores"
    argv = ["eval", str(root / "model"), "--beir", str(beir), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == f"{beir} (test)"  # the folder and the qrels split scored
    full = results["results"][0]["dims"]["384"]
    assert full["recall@100"] == 1.0  # 12 documents: every relevant one is in the first 100
    assert full["ndcg@10"] > 0.5


def test_the_packaged_model_by_name_embeds_searches_and_evaluates(flow, tmp_path, monkeypatch,
                                                                   capsys):  # fmt: skip
    from sentence_transformers import SentenceTransformer

    from matryoshka.models.text import minilm_path

    root, docs = flow
    monkeypatch.chdir(tmp_path)
    corpus = str(root / "corpus.jsonl")
    assert main(["embed", "packaged", "--texts", corpus, "--out", "emb", "--quiet"]) == 0
    assert main(["index", "build", "emb", "--out", "idx", "--quiet"]) == 0
    capsys.readouterr()
    argv = ["search", "idx", "--model", "packaged", "--text", "the moon", "-k", "2", "--quiet"]
    assert main(argv) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    st = SentenceTransformer(str(minilm_path()))
    xb, xq = st.encode([t for _, t in docs], normalize_embeddings=True), st.encode(["the moon"])
    assert row["ids"] == np.argsort(-(xb @ xq[0]), kind="stable")[:2].tolist()
    with open("qrels.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\ndoc0\tdoc1\t1\n")
    argv = ["eval", "packaged", "--corpus", corpus, "--queries", corpus, "--exclude-self"]
    assert main([*argv, "--qrels", "qrels.tsv", "--quiet"]) == 0
    assert "model card" not in capsys.readouterr().out  # the packaged model has no card of ours
    assert (tmp_path / "runs" / "packaged-eval" / "results.json").is_file()
