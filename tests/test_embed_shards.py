"""``matryoshka embed --shard I/N``: shards written memory-mapped, resumed after a stop, and read
back as one matrix by ``open_embeddings`` and ``matryoshka index build``.

The image model is a tiny MLP trained for one epoch on the built-in digits (test split: 360
rows); the text model is the packaged all-MiniLM-L6-v2. Shards cut at multiples of ``--batch``
encode the same batches as the unsharded run, so their rows are equal bit for bit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import matryoshka.eval
from matryoshka.cli import main
from matryoshka.eval import (
    EmbeddingRows,
    Shard,
    load_embeddings,
    open_embeddings,
    parse_shard,
    write_shard,
)

EMBED = ["--split", "test", "--batch", "40", "--quiet"]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A tiny trained image model and its unsharded test-split embeddings (360, 16)."""
    root = tmp_path_factory.mktemp("shards")
    model = root / "m"
    assert main(["train", "--quiet", "--out", str(model), "epochs=1", "model.d=16",
                 "model.dims_start=4", "data.train_subset=300"]) == 0  # fmt: skip
    assert main(["embed", str(model), "--out", str(root / "full"), *EMBED]) == 0
    return root, model


def _embed_shards(model, out, n, *extra):
    for i in range(n):
        assert main(["embed", str(model), "--out", str(out), "--shard", f"{i}/{n}", *EMBED,
                     *extra]) == 0  # fmt: skip


def test_shards_concatenate_to_the_unsharded_embedding(image, tmp_path):
    root, model = image
    X, y, meta = load_embeddings(root / "full")
    _embed_shards(model, tmp_path / "sh", 3)
    rows = open_embeddings(tmp_path / "sh")
    assert rows.shape == (360, 16) and len(rows.parts) == 3 and rows.dtype == np.float32
    assert all(isinstance(p, np.memmap) for p in rows.parts)
    np.testing.assert_array_equal(np.asarray(rows), X)  # cut at batch boundaries: bit for bit
    np.testing.assert_array_equal(rows.labels(), y)
    assert rows.meta["count"] == 360 and rows.meta["shards"] == 3
    assert rows.meta["dims"] == meta["dims"] and rows.meta["classes"] == meta["classes"]
    # every shard folder is an embeddings folder of its own, its rows a slice of the whole
    Xs, ys, ms = load_embeddings(tmp_path / "sh" / "shard-00001-of-00003")
    np.testing.assert_array_equal(Xs, X[120:240])
    np.testing.assert_array_equal(ys, y[120:240])
    assert ms["shard"] == {"index": 1, "count": 3, "start": 120, "stop": 240, "total": 360}
    # uneven shards (51 or 52 rows, not batch-aligned): the same rows, to float32 rounding
    _embed_shards(model, tmp_path / "sh7", 7, "--dtype", "float16")
    rows7 = open_embeddings(tmp_path / "sh7")
    assert [len(p) for p in rows7.parts] == [51, 51, 52, 51, 52, 51, 52]
    assert rows7.dtype == np.float16
    np.testing.assert_allclose(np.asarray(rows7, np.float32), X.astype(np.float16), rtol=2e-3)


def test_an_interrupted_shard_resumes_where_it_stopped(image, tmp_path, monkeypatch):
    root, model = image
    X = load_embeddings(root / "full")[0]
    real, starts = matryoshka.eval.encode_batches, []

    def stops_after_two_batches(*args, **kw):
        for k, batch in enumerate(real(*args, **kw)):
            if k == 2:
                raise RuntimeError("power cut")
            yield batch

    monkeypatch.setattr(matryoshka.eval, "encode_batches", stops_after_two_batches)
    argv = ["embed", str(model), "--out", str(tmp_path / "sh"), "--shard", "1/3", *EMBED]
    with pytest.raises(RuntimeError, match="power cut"):
        main(argv)
    folder = tmp_path / "sh" / "shard-00001-of-00003"
    assert json.loads((folder / "progress.json").read_text())["done"] == 80
    assert not (folder / "meta.json").exists()  # not complete: nothing reads it as such
    assert np.load(folder / "embeddings.npy", mmap_mode="r").shape == (120, 16)  # preallocated
    with pytest.raises(ValueError, match="incomplete .80 of its 120 rows written.*--shard 1/3"):
        open_embeddings(folder)

    def recording(*args, **kw):
        starts.append(args[5])
        return real(*args, **kw)

    monkeypatch.setattr(matryoshka.eval, "encode_batches", recording)
    assert main(argv) == 0
    assert starts == [200]  # rows 120..200 were not encoded again
    Xs, ys, _ = load_embeddings(folder)
    np.testing.assert_array_equal(Xs, X[120:240])
    assert main(argv) == 0 and starts == [200]  # complete: a third run encodes nothing


def test_a_hard_crash_mid_shard_resumes_from_the_last_checkpoint(tmp_path):
    """A process killed mid-shard (``os._exit``: no handler runs) resumes from its last record."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from matryoshka.eval import Shard, write_shard
        X = np.load({str(tmp_path / "x.npy")!r})
        def batches(start, stop):
            for s in range(start, stop, 10):
                if s == 30:
                    os._exit(3)
                yield X[s:min(stop, s + 10)], None
        write_shard({str(tmp_path / "out")!r}, batches, 100, 8, Shard(0, 1), checkpoint_seconds=0)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 3
    progress = tmp_path / "out" / "shard-00000-of-00001" / "progress.json"
    assert json.loads(progress.read_text())["done"] == 30
    starts = []

    def batches(start, stop):
        starts.append(start)
        yield X[start:stop], None

    done = write_shard(tmp_path / "out", batches, 100, 8, Shard(0, 1))
    assert starts == [30] and done.resumed == 30
    np.testing.assert_array_equal(np.asarray(open_embeddings(tmp_path / "out")), X)


def test_resuming_with_other_settings_is_refused(image, tmp_path, capsys):
    root, model = image
    out = str(tmp_path / "sh")
    assert main(["embed", str(model), "--out", out, "--shard", "0/2", *EMBED]) == 0
    capsys.readouterr()
    argv = ["embed", str(model), "--out", out, "--shard", "0/2", "--quiet", "--batch", "40"]
    assert main([*argv, "--split", "train", "--dtype", "float16"]) == 2
    err = capsys.readouterr().err
    assert "shard-00000-of-00002 was started with other settings" in err
    assert "dtype: 'float16' now, 'float32' then" in err
    assert "split: 'train' now, 'test' then" in err
    assert "--restart" in err
    assert main([*argv, "--split", "test", "--dtype", "float16", "--restart"]) == 0
    Xs, _, meta = load_embeddings(tmp_path / "sh" / "shard-00000-of-00002")
    assert Xs.dtype == np.float16 and meta["dtype"] == "float16" and len(Xs) == 180
    assert main(["embed", str(model), "--out", out, "--restart", *EMBED]) == 2
    assert "--restart starts a shard over; it goes with --shard I/N" in capsys.readouterr().err
    # unsharded embeddings and shards do not share a folder
    argv = ["embed", str(model), "--out", str(root / "full"), "--shard", "0/2", *EMBED]
    assert main(argv) == 2
    assert "holds embeddings written without --shard" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        ("3/3", "shard 3 does not exist: shards are numbered from 0"),
        ("a/b", "a shard is I/N with whole numbers 0 <= I < N, such as 3/10"),
        ("0/0", "the number of shards must be at least 1, got 0"),
        ("-1/3", "a shard is I/N with whole numbers"),
        ("1/2/3", "a shard is I/N with whole numbers"),
    ],
)
def test_bad_shard_values_give_a_clear_error(text, message, tmp_path, capsys):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_shard(text)
    with pytest.raises(SystemExit) as e:
        main(["embed", str(tmp_path / "m"), "--out", str(tmp_path / "o"), f"--shard={text}"])
    assert e.value.code == 2
    assert f"argument --shard: {message}" in capsys.readouterr().err


def test_shard_rows_cover_the_data_once():
    for total in (0, 1, 5, 360, 1001):
        for n in (1, 2, 3, 7, 10):
            bounds = [Shard(i, n).rows(total) for i in range(n)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert Shard(3, 10).name == "shard-00003-of-00010" and parse_shard(" 3 / 10 ") == Shard(3, 10)


def test_rows_read_across_shards_like_one_matrix(tmp_path):
    """Slices, row lists and batches across shard boundaries, empty shards included."""
    X = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    names = [f"doc{i}" for i in range(5)]
    for i in range(7):  # 5 rows in 7 shards: two of them empty
        start, stop = Shard(i, 7).rows(5)
        write_shard(tmp_path, lambda s, e: iter([(X[s:e], None)]), 5, 4, Shard(i, 7),
                    names=names[start:stop])  # fmt: skip
    rows = open_embeddings(tmp_path)
    assert isinstance(rows, EmbeddingRows) and [len(p) for p in rows.parts] == [0, 1, 1, 0, 1, 1, 1]
    assert rows.shape == (5, 4) and len(rows) == 5 and rows.names == names
    np.testing.assert_array_equal(rows[1:4, :2], X[1:4, :2])
    np.testing.assert_array_equal(rows[[4, 0, -2]], X[[4, 0, -2]])
    np.testing.assert_array_equal(rows[::2], X[::2])
    np.testing.assert_array_equal(rows[np.arange(5) % 2 == 1], X[1::2])
    np.testing.assert_array_equal(rows[-1], X[-1])
    assert rows[3:3].shape == (0, 4) and rows.labels() is None
    got = list(rows.batches(2, dim=3))
    assert [s for s, _ in got] == [0, 2, 4]
    np.testing.assert_array_equal(np.concatenate([b for _, b in got]), X[:, :3])
    with pytest.raises(IndexError, match="row 5 is out of range"):
        rows[5]


def test_index_build_from_shards_searches_like_the_single_file(image, tmp_path):
    root, model = image
    _embed_shards(model, tmp_path / "sh", 3)
    queries = str(root / "full" / "embeddings.npy")
    for src, idx in ((str(tmp_path / "sh"), "i-sh"), (queries, "i-one")):
        # batches of 50 rows cross the shards' edges (120, 240)
        argv = ["index", "build", src, "--out", str(tmp_path / idx), "--batch", "50", "--quiet"]
        assert main(argv) == 0
        assert main(["search", str(tmp_path / idx), "--queries", queries, "-k", "5",
                     "--funnel", "4:40,16:5", "--out", str(tmp_path / f"{idx}.npz"),
                     "--quiet"]) == 0  # fmt: skip
    a, b = np.load(tmp_path / "i-sh.npz"), np.load(tmp_path / "i-one.npz")
    np.testing.assert_array_equal(a["I"], b["I"])
    np.testing.assert_array_equal(a["D"], b["D"])
    assert (a["I"][:, 0] == np.arange(360)).mean() > 0.9  # each row finds itself first


def test_index_build_names_a_missing_or_incomplete_shard(image, tmp_path, capsys):
    _, model = image
    _embed_shards(model, tmp_path / "sh", 3)
    shutil.rmtree(tmp_path / "sh" / "shard-00001-of-00003")
    argv = ["index", "build", str(tmp_path / "sh"), "--out", str(tmp_path / "idx"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is missing 1 of 3 shards (shard-00001-of-00003)" in err and "--shard 1/3" in err
    _embed_shards(model, tmp_path / "sh", 3)  # writes the missing one; the others are complete
    (tmp_path / "sh" / "shard-00002-of-00003" / "meta.json").unlink()  # stopped before its end
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 shard(s) are incomplete (shard-00002-of-00003" in err and "--shard 2/3" in err
    assert not (tmp_path / "idx").exists()


def test_text_shards_concatenate_to_the_unsharded_embedding(tmp_path):
    words = ["moon", "bread", "football", "orbit", "soup", "tennis", "rocket", "butter"]
    docs = [f"a {w} story number {i} " + "and more words " * (i % 4) for i, w in
            enumerate(words * 3)]  # fmt: skip
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                              for i, t in enumerate(docs)))  # fmt: skip
    base = ["embed", "packaged", "--texts", str(corpus), "--batch", "4", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    for i in range(3):
        assert main([*base, "--out", str(tmp_path / "sh"), "--shard", f"{i}/3"]) == 0
    X, _, meta = load_embeddings(tmp_path / "full")
    rows = open_embeddings(tmp_path / "sh")
    assert rows.shape == (24, 384) and rows.names == meta["names"] == [f"d{i}" for i in range(24)]
    # sentence-transformers orders each call's texts by length, so batches differ: float32 noise
    np.testing.assert_allclose(np.asarray(rows), X, atol=2e-6)
    assert rows.meta["source"] == str(corpus) and rows.meta["count"] == 24
