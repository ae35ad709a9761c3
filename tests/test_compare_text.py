"""``compare --text``: which representation of a text model to ship at each size, at toy size."""

import json

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from text_toys import TOPICS, write_beir  # noqa: E402

from matryoshka.cli import main  # noqa: E402
from matryoshka.experiments.text_choice import choose_text_representation  # noqa: E402
from matryoshka.experiments.text_eval import RetrievalData, load_retrieval_data  # noqa: E402
from matryoshka.models.text import encode_texts, load_sentence_encoder  # noqa: E402
from matryoshka.models.text_rotation import pca_rotation  # noqa: E402
from matryoshka.train.text import save_text_model  # noqa: E402

ORDER = ("mrl", "pca-mrl", "pca-original")  # ties go to the earlier


def _beir(root):
    """24 documents (two per topic), 12 queries, each judging its topic's two documents."""
    rows = "".join(f"q{i}\td{i}0\t2\nq{i}\td{i}1\t1\n" for i in range(len(TOPICS)))
    return write_beir(root, TOPICS, {"test": rows})


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice")
    model = root / "m"
    save_text_model(load_sentence_encoder(None, progress=False), model, [16, 64, 384],
                    progress=False, base_model="packaged")  # fmt: skip
    data = load_retrieval_data(str(_beir(root / "beir")))
    got = choose_text_representation(model, data, progress=False, save_rotated=root / "rotated")
    print(f"\n{got['table']}\n{got['choice']}")
    return root, model, data, got


def test_rows_agree_where_they_must_and_the_choice_is_the_best_row(toy):
    root, model, _, got = toy
    rows = {r["method"]: r["dims"] for r in got["results"]}
    assert [r["method"] for r in got["results"]] == ["mrl", "pca-original", "pca-mrl"]
    assert all(sorted(dims) == [16, 64, 384] for dims in rows.values())
    for m in (16, 64, 384):  # the same model as original and MRL: the same PCA
        for k, v in rows["pca-original"][m].items():
            assert rows["pca-mrl"][m][k] == pytest.approx(v, abs=1e-9)
    for k, v in rows["mrl"][384].items():  # uncentred: the full size keeps every similarity
        assert rows["pca-mrl"][384][k] == pytest.approx(v, abs=1e-9)
    for m, c in got["choice"].items():
        scores = {name: rows[name][m]["ndcg@10"] for name in ORDER}
        best = max(scores.values())
        ship = [name for name in ORDER if scores[name] >= best - 1e-9][0]
        runner_up = max(s for name, s in scores.items() if name != ship)
        assert c == {"ship": ship, "ndcg@10": scores[ship],
                     "margin": pytest.approx(max(scores[ship] - runner_up, 0.0))}  # fmt: skip
    assert got["choice"][384]["ship"] == "mrl"  # a tie with pca-mrl: no extra layer
    saved = json.loads((model / "choice" / "results.json").read_text())
    assert saved["choice"]["16"]["ship"] == got["choice"][16]["ship"]
    report = (model / "choice" / "report.md").read_text()
    header = "| size | mrl nDCG@10 | pca-original nDCG@10 | pca-mrl nDCG@10 | ship | margin |"
    assert header in report
    assert "Ship " in report and got["table"] in report


def test_save_rotated_gives_the_pca_prefix_of_the_model(toy):
    from sentence_transformers import SentenceTransformer

    root, model, data, _ = toy
    base = load_sentence_encoder(model, progress=False)
    rotation = pca_rotation(encode_texts(base, data.corpus.texts, progress=False))  # (d, d)
    texts = ["a cat sleeps in the sun", "how do trains brake", "tea from the hills"]
    X = encode_texts(base, texts, progress=False)  # (3, 384), unit length
    want = rotation.apply(X)[:, :16]
    st = SentenceTransformer(str(root / "rotated"), truncate_dim=16, device="cpu")
    np.testing.assert_allclose(st.encode(texts), want, atol=1e-5)
    unit = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(st.encode(texts, normalize_embeddings=True), unit, atol=1e-5)
    meta = json.loads((root / "rotated" / "matryoshka.json").read_text())
    assert meta["dims"] == [16, 64, 384] and meta["base_model"] == "packaged"
    assert meta["rotation"] == "pca of the corpus embeddings"


def test_clear_errors(toy, tmp_path):
    root, model, data, _ = toy
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        choose_text_representation(tmp_path / "no-such-model", data, progress=False)
    empty = RetrievalData(data.corpus.__class__([], []), data.queries, data.qrels, "empty")
    with pytest.raises(ValueError, match="corpus"):
        choose_text_representation(model, empty, progress=False)
    with pytest.raises(ValueError, match="500"):
        choose_text_representation(model, data, dims=[500], progress=False, out=tmp_path / "o")
    with pytest.raises(ValueError, match="new folder"):
        choose_text_representation(model, data, progress=False, save_rotated=model)


def test_cli_runs_end_to_end_and_refuses_a_recipe_with_text(toy, tmp_path, capsys):
    root, model, _, _ = toy
    out = tmp_path / "out"
    argv = ["compare", "--text", str(model), "--beir", str(root / "beir"), "--out", str(out),
            "--dims", "32", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}/report.md" in printed and "| 32 |" in printed
    report = (out / "report.md").read_text()
    assert "Ship the MRL model cut to m at" in report or "Ship PCA" in report
    assert main([*argv, "--config", "configs/text.yaml"]) == 2
    err = capsys.readouterr().err
    assert "--config" in err and "not both" in err
    assert main(["compare", "--save-rotated", str(tmp_path / "r")]) == 2
    assert "--save-rotated only work with --text" in capsys.readouterr().err
