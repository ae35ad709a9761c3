"""``matryoshka report RUN_DIR``: one self-contained HTML page per results kind (demo / compare,
CIFAR-10, SciFact), every section and plot present, hover data on every point, the page's values
equal to the results file's, and clear errors for what cannot be rendered."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from matryoshka.cli import main
from matryoshka.eval import read_json, save_embeddings
from matryoshka.experiments.html_report import find_results, render_report, write_report
from matryoshka.viz.html import chart, json_script, png_data_uri

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT / "docs" / "results" / "scifact-peer" / "scifact.json"  # a committed run


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of each element by id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.tags.append((tag, a))
        if tag not in ("img", "input", "meta", "br"):
            self._open.append(a.get("id"))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for i in self._open:
            if i:
                self.text[i] = self.text.get(i, "") + data

    def find(self, tag=None, **attrs):
        def match(a):
            return all(
                (k == "class_" and v in a.get("class", "").split()) or a.get(k) == v
                for k, v in attrs.items()
            )  # fmt: skip

        return [a for t, a in self.tags if (tag is None or t == tag) and match(a)]


def page_of(path: Path) -> tuple[str, Elements]:
    text = path.read_text(encoding="utf-8")
    return text, Elements(text)


def assert_self_contained(text: str, page: Elements) -> None:
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for tag, a in page.tags:
        for key in ("src", "href"):
            value = a.get(key, "")
            assert not re.match(r"\s*(https?:)?//", value), (tag, key, value)
            assert value == "" or value.startswith(("#", "data:image/png;base64,")), value
    assert not page.find("link") and not [a for a in page.find("script") if "src" in a]
    ids = [a["id"] for _, a in page.tags if "id" in a]
    assert len(ids) == len(set(ids)), "element ids must be unique"
    assert page.find("div", id="tooltip") and json.loads(page.text["results-data"])


def points(page: Elements, kind: str, metric: str | None = None) -> list[dict]:
    """The circles of the figures of ``kind`` (``data-*`` attributes)."""
    out, inside = [], False
    for tag, a in page.tags:
        if tag == "figure":
            inside = a.get("data-kind") == kind and (
                metric is None or a.get("data-metric") == metric
            )
        elif tag == "circle" and inside and "pt" in a.get("class", "").split():
            out.append(a)
    return out


def check_points(pts: list[dict], results: list[dict], metric: str, trained) -> None:
    """Every point is the results' value at its (method, size), hollow where untrained."""
    by = {r["method"]: {int(m): v for m, v in r["dims"].items()} for r in results}
    expected = {(r, m) for r, d in by.items() for m, v in d.items() if v.get(metric) is not None}
    assert {(p["data-series"], int(p["data-x"])) for p in pts} == expected
    for p in pts:
        value = by[p["data-series"]][int(p["data-x"])][metric]
        assert float(p["data-value"]) == value
        assert float(p["data-y"]) == pytest.approx(100 * value, abs=1e-4)
        assert f"{100 * value:.2f}%" in p["data-tip"]
        done = trained(p["data-series"])
        assert ("untrained" in p["class"]) == (done is not None and int(p["data-x"]) not in done)


# ------------------------------------------------------------------------------ demo / compare
@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    argv = ["compare", "--out", str(out), "--methods", "mrl,ff,pca", "--dims", "4,8,16",
            "epochs=1", "model.d=16", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_a_demo_run_gets_charts_tables_and_a_map_from_its_model(compared, capsys):
    assert main(["report", str(compared), "--map-method", "pca"]) == 0
    assert "report.html" in capsys.readouterr().out
    text, page = page_of(compared / "report.html")
    assert_self_contained(text, page)
    data = read_json(compared / "results.json")
    sections = [a["id"] for a in page.find("section", class_="report-section")]
    assert sections == ["sec-compare-summary", "sec-compare-accuracy", "sec-map"]
    assert [a["href"] for a in page.find("a") if a.get("href", "").startswith("#")] == [
        f"#{s}" for s in sections
    ]
    for metric in ("top1", "knn1"):
        check_points(points(page, "accuracy", metric), data["results"], metric,
                     lambda _: set(data["trained"]))  # fmt: skip
    assert any("untrained" in p["class"] for p in points(page, "accuracy", "top1"))  # 6, 12
    rows = re.findall(r'<tr class="untrained"><td class="text">(\d+)\*</td>', text)
    assert rows == ["6", "12"]
    mrl8 = data["results"][0]["dims"][8]
    assert f"<td>{100 * mrl8['top1']:.1f}</td><td>{100 * mrl8['knn1']:.1f}</td>" in text
    assert json.loads(page.text["results-data"])["compare"]["command"] == data["command"]

    # the map: the MRL model's test split at every trained size, a slider over the sizes
    slider = page.find("input", id="map-size")[0]
    assert slider["type"] == "range" and slider["data-sizes"] == "4,8,16"
    assert slider["value"] == slider["max"] == "2" and page.text["map-size-value"] == "16"
    fig = page.find("figure", id="map-figure")[0]
    assert fig["data-kind"] == "map" and fig["data-size"] == "16" and fig["data-method"] == "pca"
    mapdata = json.loads(page.text["map-data"])
    assert mapdata["sizes"] == [4, 8, 16]
    pts = page.find("circle", class_="map-pt")
    assert len(pts) == data["n_test"] and len(mapdata["xy"]["4"]) == data["n_test"]
    assert {p["data-label"] for p in pts} == {str(c) for c in range(10)}  # digits' classes
    assert [[float(p["cx"]), float(p["cy"])] for p in pts] == mapdata["xy"]["16"]
    assert all(p["data-tip"].startswith("#") for p in pts)
    assert set(mapdata["quality"]) == {"4", "8", "16"}
    assert 0 < mapdata["quality"]["16"]["knn_acc_2d"] <= 1
    assert page.text["map-quality"] == mapdata["quality_text"]["16"]


def test_no_map_without_a_model_or_when_told(compared, tmp_path):
    out = tmp_path / "page.html"
    assert main(["report", str(compared), "--out", str(out), "--no-map"]) == 0
    assert 'id="map-size"' not in out.read_text() and "sec-map" not in out.read_text()
    data = json.loads((compared / "results.json").read_text())
    data["config"]["out_dir"] = str(tmp_path / "models")  # no model folder here or there
    (tmp_path / "results.json").write_text(json.dumps(data))
    html = render_report(tmp_path)
    assert 'id="sec-compare-accuracy"' in html and 'id="map-size"' not in html


def test_the_map_from_an_embeddings_folder_or_file(compared, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 32)).astype(np.float32)
    y = np.repeat([0, 1, 2], 30)
    X[:, :4] += 3 * y[:, None]
    save_embeddings(tmp_path / "emb", X, y, classes=["cat", "dog", "fox"], dims=[8, 16, 32],
                    names=[f"doc{i}" for i in range(90)])  # fmt: skip
    out = tmp_path / "a.html"
    argv = ["report", str(compared), "--out", str(out), "--embeddings", str(tmp_path / "emb"),
            "--map-method", "pca"]  # fmt: skip
    assert main([*argv, "--map-sample", "60", "--seed", "1"]) == 0
    _, page = page_of(out)
    assert json.loads(page.text["map-data"])["sizes"] == [8, 16, 32]  # the folder's sizes
    pts = page.find("circle", class_="map-pt")
    assert len(pts) == 60 and {p["data-label"] for p in pts} == {"cat", "dog", "fox"}
    assert all(re.fullmatch(rf"#{p['data-i']} · \w+ · doc{p['data-i']}", p["data-tip"])
               for p in pts)  # fmt: skip
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "labels.txt").write_text("\n".join(["a"] * 45 + ["b"] * 45))
    assert main(["report", str(compared), "--out", str(out), "--embeddings",
                 str(tmp_path / "x.npy"), "--labels", str(tmp_path / "labels.txt"),
                 "--map-sizes", "4,32", "--map-method", "pca"]) == 0  # fmt: skip
    _, page = page_of(out)
    assert json.loads(page.text["map-data"])["sizes"] == [4, 32]
    assert {p["data-label"] for p in page.find("circle", class_="map-pt")} == {"a", "b"}


# ------------------------------------------------------------------------------ SciFact
def test_the_scifact_report_from_the_real_results(tmp_path):
    shutil.copy(SCIFACT, tmp_path / "scifact.json")
    out = write_report(tmp_path)
    assert out == tmp_path / "report.html"
    text, page = page_of(out)
    assert_self_contained(text, page)
    data = read_json(SCIFACT)
    sections = [a["id"] for a in page.find("section", class_="report-section")]
    assert sections == [f"sec-scifact-{s}" for s in
                        ("summary", "retrieval", "sts", "funnels", "cost", "training")]  # fmt: skip
    trained = {n: t["config"]["dims"] for n, t in data["training"].items()}
    for metric in ("ndcg@10", "recall@100"):
        check_points(
            points(page, "accuracy", metric),
            data["retrieval"],
            metric,
            lambda name: None if trained.get(name) is None else set(trained[name]),
        )
    check_points(
        points(page, "sts", "spearman"),
        data["sts"],
        "spearman",
        lambda name: None if trained.get(name) is None else set(trained[name]),
    )
    funnel = points(page, "funnel")
    assert [p["data-tip"].split(":")[0] for p in funnel] != []  # sorted by cost, one per funnel
    by_name = {p["data-tip"].split(": nDCG")[0]: p for p in funnel}
    assert set(by_name) == {f["funnel"] for f in data["funnels"]}
    for f in data["funnels"]:
        p = by_name[f["funnel"]]
        assert float(p["data-value"]) == f["ndcg@10"] and int(p["data-x"]) == f["macs"]
        assert f'<td class="text">{f["funnel"]}</td><td>{100 * f["ndcg@10"]:.2f}</td>' in text
    assert len(page.find("line", class_="hline")) == 2  # full size, and 0.5 points under it
    assert page.find("table", class_="results", **{"data-kind": "training"})
    assert data["command"] in text and json.loads(page.text["results-data"])["scifact"]


# ------------------------------------------------------------------------------ CIFAR-10
@pytest.fixture(scope="module")
def cifar_docs(tmp_path_factory):
    """The tiny CIFAR-like pipeline of tests/test_reproduce.py, run once."""
    pytest.importorskip("PIL.Image")
    sys.path.insert(0, str(Path(__file__).parent))
    import yaml
    from test_reproduce import make_folder

    from matryoshka.experiments.cifar10 import reproduce_cifar10

    tmp = tmp_path_factory.mktemp("cifar")
    make_folder(tmp / "images")
    cfg = {"data": {"name": "cifar10", "root": str(tmp / "images"),
                    "cache_dir": str(tmp / "cache"), "holdout": 30},
           "model": {"backbone": "small_cnn", "backbone_kwargs": {"width": 4}, "d": 16,
                     "dims_start": 4},
           "optim": {"lr": 0.05, "warmup_epochs": 0}, "epochs": 1, "batch_size": 16,
           "device": "cpu", "out_dir": str(tmp / "models")}  # fmt: skip
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    reproduce_cifar10(tmp / "tiny.yaml", out_dir=tmp / "out", docs_dir=tmp / "docs",
                      finetune_epochs=1, seeds=2, seed_sizes=[4, 16], progress=False,
                      command="matryoshka reproduce cifar10 --config tiny.yaml")  # fmt: skip
    return tmp / "docs"


def test_the_cifar10_report_with_its_adaptive_curve_and_grad_cam_grid(cifar_docs, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    out = tmp_path / "cifar.html"
    assert main(["report", str(cifar_docs), "--out", str(out)]) == 0
    text, page = page_of(out)
    assert_self_contained(text, page)
    data = read_json(cifar_docs / "cifar10.json")
    sections = [a["id"] for a in page.find("section", class_="report-section")]
    assert sections == [f"sec-cifar10-{s}" for s in
                        ("summary", "accuracy", "finetune", "adaptive", "gradcam")]  # fmt: skip
    for metric in ("top1", "knn1"):
        check_points(points(page, "accuracy", metric), data["comparison"], metric,
                     lambda _: set(data["dims"]))  # fmt: skip
    check_points(points(page, "finetune", "top1"), data["finetune"], "top1",
                 lambda _: set(data["dims"]))  # fmt: skip
    adaptive = data["adaptive"]
    pts = points(page, "adaptive")
    front = [p for p in pts if p["data-series"].startswith("adaptive")]
    assert sorted(float(p["data-value"]) for p in front) == sorted(
        q["top1"] for q in adaptive["front"]
    )
    fixed = {int(p["data-x"]): float(p["data-value"]) for p in pts
             if p["data-series"] == "MRL at a fixed size"}  # fmt: skip
    assert fixed == adaptive["fixed"]
    assert len([p for p in pts if "chosen" in p["class"]]) == (adaptive["selected"] is not None)
    assert page.find("ul", class_="claims") and "worst MRL − FF" in text
    assert page.find("table", **{"data-kind": "seeds"}) and page.find(
        "table", **{"data-kind": "gaps"}
    )

    cells = page.find("img", class_="cell")
    n_img = len(data["gradcam"]["labels"])
    assert len(cells) == n_img * (1 + len(data["dims"]))
    for cell in cells:
        png = base64.b64decode(cell["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(png)) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
        assert cell["data-tip"] == cell["alt"]
    assert page.find("figure", **{"data-kind": "gradcam"})


def test_a_docs_folder_with_both_reproductions_is_one_page(cifar_docs, tmp_path):
    for f in cifar_docs.iterdir():
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(SCIFACT, tmp_path / "scifact.json")
    assert [k for k, _ in find_results(tmp_path)] == ["cifar10", "scifact"]
    text, page = page_of(write_report(tmp_path))
    assert_self_contained(text, page)
    kinds = {a["id"].split("-")[1] for a in page.find("section", class_="report-section")}
    assert kinds == {"cifar10", "scifact"}
    assert set(json.loads(page.text["results-data"])) == {"cifar10", "scifact"}


# ------------------------------------------------------------------------------ errors
def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("matryoshka report: error: ") and err.count("\n") == 1
    return err


def test_missing_or_corrupt_results_are_clear_errors(tmp_path, capsys):
    assert "is not a folder" in _error(["report", str(tmp_path / "nowhere")], capsys)
    assert "holds no results: expected cifar10.json" in _error(["report", str(tmp_path)], capsys)
    (tmp_path / "results.json").write_text('{"results": [')
    assert "not valid JSON" in _error(["report", str(tmp_path)], capsys)
    (tmp_path / "results.json").write_text('{"hello": 1}')
    assert "not a results file of matryoshka demo" in _error(["report", str(tmp_path)], capsys)
    (tmp_path / "results.json").write_text('{"results": [], "trained": [8]}')
    assert "lacks config, command" in _error(["report", str(tmp_path)], capsys)
    (tmp_path / "results.json").unlink()
    (tmp_path / "scifact.json").write_text(json.dumps({"retrieval": []}))
    assert "lacks sts, funnels, training, counts" in _error(["report", str(tmp_path)], capsys)
    assert not (tmp_path / "report.html").exists()  # nothing half-written


def test_bad_map_inputs_are_clear_errors(compared, tmp_path, capsys):
    run = str(compared)
    out = ["--out", str(tmp_path / "x.html")]
    assert "embeddings not found" in _error(["report", run, *out, "--embeddings",
                                             str(tmp_path / "none.npy")], capsys)  # fmt: skip
    np.save(tmp_path / "x.npy", np.zeros((10, 8), np.float32))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    err = _error(["report", run, *out, "--embeddings", str(tmp_path / "x.npy"), "--labels",
                  str(tmp_path / "labels.txt")], capsys)  # fmt: skip
    assert "holds (2,) labels; the embeddings have 10 rows" in err
    assert "give the embeddings too" in _error(["report", run, *out, "--labels", "l.txt"], capsys)
    err = _error(["report", run, *out, "--embeddings", str(tmp_path / "x.npy"), "--map-sizes",
                  "16"], capsys)  # fmt: skip
    assert "no map size between 2 and d = 8" in err


# ------------------------------------------------------------------------------ pieces
def test_json_in_the_page_cannot_end_its_script():
    s = json_script({"t": "</script><script>alert(1)</script>", "x": float("nan")}, "d")
    assert s.count("</script>") == 1
    body = s[s.index(">") + 1 : s.rindex("<")]
    assert json.loads(body) == {"t": "</script><script>alert(1)</script>", "x": None}


def test_png_data_uris_hold_the_pixels():
    Image = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    uri = png_data_uri(rgb)
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert (np.asarray(im) == rgb).all()
    grey = png_data_uri(np.full((2, 3), 0.5))
    with Image.open(io.BytesIO(base64.b64decode(grey.split(",", 1)[1]))) as im:
        assert (np.asarray(im) == 128).all()
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        png_data_uri(np.zeros((2, 2, 4)))


def test_a_chart_without_points_is_empty():
    assert chart([{"name": "a", "points": []}], "accuracy", "t", "x", "y") == ""
