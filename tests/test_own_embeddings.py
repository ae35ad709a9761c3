"""Embeddings from other tools: .npy (float16 too), .npz, Parquet and JSONL through the command
line, ids from a column, and a model's step before slicing (layer norm) kept with the index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matryoshka.cli import main
from matryoshka.index import MatryoshkaIndex, apply_transform, exact_search, read_vectors

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture()
def vecs():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 32)) * (1 + np.arange(32)) ** -0.5).astype(np.float32)
    return x, np.arange(200, dtype=np.int64) * 7 + 5  # ids that are not positions


def write_all(root, x, ids):
    np.save(root / "e.npy", x)
    np.save(root / "e16.npy", x.astype(np.float16))
    np.savez(root / "e.npz", embeddings=x, doc_id=ids)
    pq.write_table(pa.table({"doc_id": ids, "vec": pa.array(list(x), pa.list_(pa.float32()))}),
                   root / "e.parquet")  # fmt: skip
    with open(root / "e.jsonl", "w") as f:
        for i, v in zip(ids, x, strict=True):
            f.write(json.dumps({"doc_id": int(i), "embedding": v.tolist()}) + "\n")


@pytest.mark.parametrize("name", ["e.npy", "e16.npy", "e.npz", "e.parquet", "e.jsonl"])
def test_every_format_builds_the_same_index(tmp_path, vecs, capsys, name):
    x, ids = vecs
    write_all(tmp_path, x, ids)
    with_ids = [] if name.endswith(".npy") else ["--ids-column", "doc_id"]
    assert main(["index", "build", str(tmp_path / name), "--out", str(tmp_path / "ix"),
                 "--quiet", *with_ids]) == 0  # fmt: skip
    index = MatryoshkaIndex.load(tmp_path / "ix")
    expected_ids = np.arange(200) if name.endswith(".npy") else ids
    np.testing.assert_array_equal(index.ids, expected_ids)
    tol = 1e-3 if "16" in name else 0
    np.testing.assert_allclose(index.reconstruct(expected_ids), x, atol=tol)
    # queries in the same format; results are ids
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "ix"), "--queries", str(tmp_path / name),
                 "-k", "1", "--quiet"]) == 0  # fmt: skip
    rows = [json.loads(r) for r in capsys.readouterr().out.splitlines()]
    assert [r["ids"][0] for r in rows] == expected_ids.tolist()


def test_clear_errors_name_the_file_the_column_and_what_was_found(tmp_path, vecs):
    x, ids = vecs
    write_all(tmp_path, x, ids)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "bad.csv").write_text("1,2\n")
    cases = [
        (tmp_path / "e.parquet", "emb", "no list column 'emb' of vectors (list columns: ['vec']"),
        (tmp_path / "e.npz", "vectors", "no array 'vectors' (it holds embeddings, doc_id)"),
        (tmp_path / "e.jsonl", "vec", "line 1: no list 'vec' of numbers (keys: ['doc_id',"),
        (tmp_path / "obj.npy", None, "is not a plain .npy array"),
        (tmp_path / "bad.csv", None, "unknown format '.csv'; read are .npy, .npz, .parquet"),
    ]
    for path, column, message in cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                           .replace(")", r"\)")):  # fmt: skip
            read_vectors(path, column)
    with pytest.raises(
        ValueError, match=r"'doc' must hold one integer id or one string name|no ids column 'doc'"
    ):
        read_vectors(tmp_path / "e.parquet", ids_column="doc")


def test_a_layer_norm_before_slicing_is_kept_with_the_index(tmp_path, vecs, capsys):
    x, _ = vecs
    x = x + 3.0  # a model whose raw outputs need centring, like nomic-embed-text-v1.5's
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "q.npy", x[:5])
    assert main(["index", "build", str(tmp_path / "e.npy"), "--out", str(tmp_path / "ix"),
                 "--prefix-transform", "layer-norm", "--quiet"]) == 0  # fmt: skip
    index = MatryoshkaIndex.load(tmp_path / "ix")
    assert index.transform == "layer-norm" and index.info()["transform"] == "layer-norm"
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["transform"] == "layer-norm"
    # the same search as: layer norm on full vectors, then cut to 8, then cosine
    ln = apply_transform(x, "layer-norm")
    _, expected = exact_search(ln[:5], ln, 4, dim=8)
    _, got = index.search(x[:5], 4, dim=8)  # raw queries: the index applies the step
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="works on full vectors: give queries of d=32 columns"):
        index.search(x[:5, :8], 4, dim=8)
    # without the step the ranking is another one: the stored transform matters
    _, plain = exact_search(x[:5], x, 4, dim=8)
    assert not np.array_equal(plain, expected)


def test_plan_draws_its_queries_at_random(tmp_path, capsys):
    # rows written class by class: the last rows are all one cluster
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, 16)) * 5
    x = np.concatenate([c + rng.standard_normal((100, 16)) for c in centres]).astype(np.float32)
    np.save(tmp_path / "e.npy", x)
    assert main(["index", "plan", "--n", "1000", "--budget", "64KB", "--embeddings",
                 str(tmp_path / "e.npy"), "--holdout", "40", "--json", str(tmp_path / "p.json"),
                 "--quiet"]) == 0  # fmt: skip
    order = np.random.default_rng(0).permutation(400)
    held = np.sort(order[:40])
    assert len(set(held // 100)) == 4  # the seeded draw spans every cluster
    assert json.loads((tmp_path / "p.json").read_text())["n"] == 1000


@pytest.mark.parametrize("name", ["v.parquet", "v.jsonl"])
def test_string_ids_become_the_rows_names(tmp_path, vecs, capsys, name):
    x, _ = vecs
    names = [f"doc-{i}" for i in range(len(x))]
    pq.write_table(pa.table({"id": names, "embedding": list(x)}), tmp_path / "v.parquet")
    with open(tmp_path / "v.jsonl", "w") as f:
        for n, v in zip(names, x, strict=True):
            f.write(json.dumps({"id": n, "embedding": v.tolist()}) + "\n")
    assert main(["index", "build", str(tmp_path / name), "--column", "embedding",
                 "--ids-column", "id", "--out", str(tmp_path / "ix"), "--quiet"]) == 0  # fmt: skip
    index = MatryoshkaIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(index.ids, np.arange(len(x)))  # rows numbered in file order
    np.save(tmp_path / "q.npy", x[[3, 150]])
    capsys.readouterr()
    assert main(["search", str(tmp_path / "ix"), "--queries", str(tmp_path / "q.npy"), "-k", "1",
                 "--quiet"]) == 0  # fmt: skip
    rows = [json.loads(r) for r in capsys.readouterr().out.splitlines()]
    assert [r["names"] for r in rows] == [["doc-3"], ["doc-150"]]


def test_plan_measures_recall_after_the_prefix_transform(tmp_path, capsys):
    rng = np.random.default_rng(2)
    # raw vectors dominated by a shared offset: cut without the layer norm, recall is poor
    x = (rng.standard_normal((600, 32)) * (1 + np.arange(32)) ** -0.5 + 4).astype(np.float32)
    np.save(tmp_path / "e.npy", x)
    recalls = {}
    for transform in ("none", "layer-norm"):
        out = tmp_path / f"{transform}.json"
        assert main(["plan", "--n", "1000", "--budget", "1MB", "--embeddings",
                     str(tmp_path / "e.npy"), "--holdout", "50", "--dims", "8,32",
                     "--precisions", "float32", "--prefix-transform", transform, "--json",
                     str(out), "--quiet"]) == 0  # fmt: skip
        plan = json.loads(out.read_text())
        recalls[transform] = {r["dim"]: r["recall"] for r in plan["rows"]}
    # the layer-norm plan measures what a layer-norm index returns: exact at full size
    ln = apply_transform(x, "layer-norm")
    order = np.random.default_rng(0).permutation(600)
    q, b = ln[np.sort(order[:50])], ln[np.sort(order[50:])]
    _, want = exact_search(q, b, 10)
    _, got8 = exact_search(q, b, 10, dim=8)
    expected8 = np.mean([len(set(a) & set(w)) / 10 for a, w in zip(got8, want, strict=True)])
    assert recalls["layer-norm"][32] == 1.0
    assert recalls["layer-norm"][8] == pytest.approx(expected8)
    assert recalls["none"][8] != pytest.approx(expected8)  # the step changes what is measured
