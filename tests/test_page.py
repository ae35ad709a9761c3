"""The web page of ``matryoshka serve`` and the HTML report, in a real browser (Debian's chromium
driven by Playwright), with every request to a host other than the loopback refused and recorded.

The server holds the packaged all-MiniLM-L6-v2 and an index of its embeddings of 288 short
sentences (8 topics, made here deterministically) with a JSONL payload. The map routes are also
checked without a browser. Chromium is ``MATRYOSHKA_CHROMIUM``, else the ``chromium`` on the
PATH (``make test`` installs Debian's package when there is none). A missing
browser or Playwright fails these tests with what to install; ``MATRYOSHKA_SKIP_BROWSER=1`` skips
them instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("sentence_transformers")

from matryoshka.index import MatryoshkaIndex  # noqa: E402
from matryoshka.serve import ServerThread, create_app  # noqa: E402
from matryoshka.serve.encoder import TextModel  # noqa: E402
from matryoshka.serve.indexes import IndexHolder, Payload  # noqa: E402
from matryoshka.serve.maps import MapCache  # noqa: E402
from matryoshka.serve.service import Service  # noqa: E402
from matryoshka.viz.maps import embedding_maps, procrustes_align, project_2d  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
CHROMIUM = (os.environ.get("MATRYOSHKA_CHROMIUM") or shutil.which("chromium")
            or "/usr/bin/chromium")  # fmt: skip
SKIP = os.environ.get("MATRYOSHKA_SKIP_BROWSER") == "1"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

TOPICS = {
    "space": (["the rocket", "an astronaut", "the telescope", "a satellite", "the lunar lander",
               "the space probe"],
              ["reaches orbit around the earth", "photographs a distant galaxy",
               "docks with the space station", "lands near a crater on the moon",
               "measures radiation from the sun", "travels towards mars"]),
    "cooking": (["the baker", "a chef", "my grandmother", "the cook", "a student", "the caterer"],
                ["kneads dough for fresh bread", "simmers a tomato sauce for hours",
                 "whisks eggs into an omelette", "roasts vegetables in a hot oven",
                 "seasons the soup with pepper", "bakes a chocolate cake"]),
    "music": (["the violinist", "a drummer", "the choir", "the pianist", "a guitarist",
               "the orchestra"],
              ["plays a slow melody", "keeps the rhythm of the song", "sings in harmony",
               "practises scales every morning", "tunes the instrument before the concert",
               "records a new album"]),
    "sport": (["the striker", "a marathon runner", "the tennis player", "a swimmer",
               "the goalkeeper", "the cyclist"],
              ["scores a late goal", "trains for the championship", "wins the final match",
               "breaks the national record", "warms up before the race",
               "celebrates with the team"]),
    "weather": (["the storm", "a cold front", "the hurricane", "heavy rain", "the fog",
                 "a heat wave"],
                ["floods the streets of the city", "brings snow to the mountains",
                 "knocks down power lines", "delays flights at the airport",
                 "moves slowly along the coast", "breaks temperature records"]),
    "finance": (["the central bank", "an investor", "the stock market", "a startup",
                 "the treasury", "the pension fund"],
                ["raises interest rates", "buys government bonds", "falls after the report",
                 "borrows money to expand", "reports quarterly earnings",
                 "sells shares at a profit"]),
    "medicine": (["the doctor", "a nurse", "the surgeon", "the vaccine", "a new drug",
                  "the hospital"],
                 ["treats patients with fever", "reduces the risk of infection",
                  "operates on a broken hip", "passes a clinical trial",
                  "lowers blood pressure", "opens a new cancer ward"]),
    "animals": (["the fox", "a hawk", "the elephant", "a family of otters", "the wolf pack",
                 "the honeybee"],
                ["hunts in the forest at night", "migrates across the savanna",
                 "builds a nest by the river", "feeds on insects and berries",
                 "sleeps through the winter", "pollinates the spring flowers"]),
}  # fmt: skip
ROWS = [(f"{s} {p}", topic, s) for topic, (subs, preds) in TOPICS.items()
        for s in subs for p in preds]  # fmt: skip
NAMES = [f"s{i:03d}" for i in range(len(ROWS))]


# ---------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def model():
    m = TextModel.load("packaged", max_batch=32)
    yield m
    m.encoder.close()


@pytest.fixture(scope="module")
def corpus(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    X = model.encoder.encode([text for text, _, _ in ROWS])[0]
    MatryoshkaIndex(model.d).add(X, names=NAMES).save(root / "index")
    with open(root / "corpus.jsonl", "w") as f:
        for name, (text, topic, subject) in zip(NAMES, ROWS):
            rec = {"_id": name, "title": f"{topic}: {subject}", "text": text, "topic": topic}
            f.write(json.dumps(rec) + "\n")
    return root, X


def _service(model, root, with_model=True, with_index=True, labels=True):
    holder = IndexHolder(root / "index", reload_interval=0) if with_index else None
    payload = None
    if with_index:
        path = root / "corpus.jsonl"
        if not labels:  # the same records without their topic: colours from k-means
            path = root / "unlabelled.jsonl"
            rows = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
            path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "topic"})
                                    + "\n" for r in rows))  # fmt: skip
        payload = Payload(path)
    return Service(model if with_model else None, holder, payload, workers=2, threads=1)


@pytest.fixture(scope="module")
def server(model, corpus):
    svc = _service(model, corpus[0])
    with ServerThread(create_app(svc, close=False)) as s:
        yield s
    svc.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


# ---------------------------------------------------------------------- map routes, no browser
def _err(r, status, field):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["param"] == field, err
    return err["message"]


def test_the_page_and_its_files_are_served_with_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    for ref in ('id="query"', 'id="size"', 'id="funnel"', 'id="results"', 'id="map-svg"',
                'src="/static/app.js"', 'href="/static/style.css"'):  # fmt: skip
        assert ref in r.text, ref
    assert "http" not in r.text and "//" not in r.text  # nothing from another host
    js, css = client.get("/static/app.js"), client.get("/static/style.css")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text and "url(" not in css.text
    assert "fetch(path" in js.text and "https://" not in js.text
    assert client.get("/static/../pyproject.toml").status_code == 404
    assert client.get("/static/other.js").status_code == 404


def test_map_points_and_maps_are_aligned_and_cached(client, corpus):
    _, X = corpus
    pts = client.get("/api/map/points").json()
    n = len(ROWS)
    assert pts["count"] == pts["sample"] == n and pts["rows"] == list(range(n))
    assert pts["names"] == NAMES and pts["method"] == "pca" and pts["d"] == 384
    assert pts["label_source"] == "payload field 'topic'"
    assert sorted(pts["classes"]) == sorted(TOPICS)
    assert [pts["classes"][c] for c in pts["labels"]] == [t for _, t, _ in ROWS]
    assert pts["titles"][0] == "space: the rocket" and pts["extent"] > 1.0
    full = client.get("/api/map", params={"size": 384}).json()
    assert full["map_size"] == 384 and len(full["xy"]) == n
    expect = embedding_maps(X, [384], "pca", sample=None)[384]
    np.testing.assert_allclose(np.array(full["xy"]), expect, atol=2e-4)
    first = client.get("/api/map", params={"size": 16}).json()
    again = client.get("/api/map", params={"size": 16}).json()
    assert not first["cached"] and again["cached"] and first["xy"] == again["xy"]
    aligned = procrustes_align(project_2d(X[:, :16], "pca"), expect).astype(np.float64)
    aligned -= aligned.mean(0)  # rotated onto the full size's map, drawn at its RMS radius
    aligned /= np.sqrt((aligned**2).sum(1).mean())
    np.testing.assert_allclose(np.array(first["xy"]), aligned, atol=2e-4)
    odd = client.get("/api/map", params={"size": 100}).json()  # any size: PCA maps it exactly
    assert odd["size"] == odd["map_size"] == 100


@pytest.mark.parametrize("size", [None, "", "abc", "1", "385", "16.0", "-8", "9" * 40])
def test_a_bad_map_size_is_a_400_naming_size(client, size):
    params = {} if size is None else {"size": size}
    message = _err(client.get("/api/map", params=params), 400, "size")
    assert "size" in message


def test_maps_without_labels_colour_by_k_means_and_without_index_say_so(model, corpus):
    svc = _service(model, corpus[0], with_model=False, labels=False)
    with ServerThread(create_app(svc)) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        pts = c.get("/api/map/points").json()
        assert pts["label_source"] == "k-means (k=8) at size 384" and len(pts["classes"]) == 8
        assert pts["classes"][0] == "cluster 1" and len(set(pts["labels"])) == 8
        assert pts["titles"][5] == "space: the rocket"
    svc = _service(model, corpus[0], with_index=False)
    with ServerThread(create_app(svc, close=False)) as s, httpx.Client(base_url=s.url) as c:
        assert "no index" in _err(c.get("/api/map/points"), 404, None)
        assert "no index" in _err(c.get("/api/map", params={"size": 8}), 404, None)


def test_a_new_index_version_gets_a_new_sample(corpus, tmp_path):
    _, X = corpus
    MatryoshkaIndex(384).add(X, names=NAMES).save(tmp_path / "live")
    holder = IndexHolder(tmp_path / "live", reload_interval=0)
    cache = MapCache(sample=100)
    first = cache.data(holder.current, None).points()
    assert first["generation"] == 1 and first["sample"] == 100 and first["count"] == len(ROWS)
    assert cache.get(holder.current, None, 32)["generation"] == 1
    MatryoshkaIndex(384).add(X[:50], names=NAMES[:50]).save(tmp_path / "live", overwrite=True)
    assert holder.check()
    again = cache.get(holder.current, None, 32)
    assert again["generation"] == 2 and len(again["xy"]) == 50 and not again["cached"]
    assert cache.data(holder.current, None).points()["names"] == NAMES[:50]


def test_a_slow_method_maps_the_nearest_offered_size(corpus, model):
    pytest.importorskip("openTSNE")
    holder = IndexHolder(corpus[0] / "index", reload_interval=0)
    cache = MapCache("tsne", sample=40, seed=1, sizes=[8, 16, 32, 64, 128, 256, 384])
    assert cache.map_size(100, 384) == 128 and cache.map_size(20, 384) == 16
    got = cache.get(holder.current, None, 20)
    assert got["size"] == 20 and got["map_size"] == 16 and len(got["xy"]) == 40
    assert cache.get(holder.current, None, 17)["cached"]
    assert MapCache("pca").map_size(100, 384) == 100


# ---------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser():
    if SKIP:
        pytest.skip("MATRYOSHKA_SKIP_BROWSER=1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install 'playwright>=1.40' (in the "
                    "dev extra), or set MATRYOSHKA_SKIP_BROWSER=1 to skip them")  # fmt: skip
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"no chromium at {CHROMIUM}: apt-get install chromium (make test does), "
            "or point MATRYOSHKA_CHROMIUM at one, or set MATRYOSHKA_SKIP_BROWSER=1"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Watched:
    """A page whose console errors, page errors and refused requests are recorded."""

    def __init__(self, browser, allow) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.refused: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r):
            self.requests.append(r.request.url)
            if allow(r.request.url):
                r.continue_()
            else:
                self.refused.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)

    def close(self) -> None:
        self.context.close()


def _loopback(url: str) -> bool:
    return urlparse(url).scheme in ("http", "https") and urlparse(url).hostname in LOOPBACK


def _positions(page):
    """(n, 3): each point's row, cx and cy, by row (results are drawn last, on top)."""
    P = np.array(page.eval_on_selector_all(
        "#map-svg circle.map-pt",
        "cs => cs.map(c => [+c.getAttribute('data-row'), +c.getAttribute('cx'), "
        "+c.getAttribute('cy')])",
    ))  # fmt: skip
    return P[np.argsort(P[:, 0], kind="stable")]


def _answer(page):
    return page.evaluate("""() => ({
        ids: [...document.querySelectorAll('#results li.result')].map(li => li.dataset.name),
        scores: [...document.querySelectorAll('#results li.result')].map(li => +li.dataset.score),
        overlap: +document.querySelector('#overlap').dataset.overlap,
        bytes: +document.querySelector('#bytes').dataset.bytes,
        ms: +document.querySelector('#latency').dataset.ms})""")


def _drag_slider_to(page, value: int) -> None:
    """Drag the size slider's thumb towards ``value`` with the mouse, then arrow keys to it."""
    box = page.locator("#size").bounding_box()
    lo, hi = (int(page.get_attribute("#size", a)) for a in ("min", "max"))
    y = box["y"] + box["height"] / 2
    x_of = lambda v: box["x"] + 8 + (box["width"] - 16) * (v - lo) / (hi - lo)  # noqa: E731
    page.mouse.move(x_of(int(page.input_value("#size"))), y)
    page.mouse.down()
    page.mouse.move(x_of(value), y, steps=12)  # every step an input event: stale answers
    page.mouse.up()
    for _ in range(40):
        now = int(page.input_value("#size"))
        if now == value:
            return
        page.keyboard.press("ArrowLeft" if now > value else "ArrowRight")
    assert int(page.input_value("#size")) == value


def test_search_and_map_follow_the_size_slider(browser, server, tmp_path):
    w = Watched(browser, _loopback)
    page = w.page
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert page.get_attribute("#size", "max") == "384" and page.input_value("#size") == "384"
    marks = page.eval_on_selector_all("#size-marks button", "bs => bs.map(b => +b.dataset.size)")
    assert marks == [8, 16, 32, 64, 128, 256, 384]
    assert page.locator("#size-marks button.trained").all_inner_texts() == ["384"]
    page.wait_for_selector("#map-svg[data-size='384'][data-state='idle']")
    assert page.locator("#map-svg circle.map-pt").count() == len(ROWS)
    before = _positions(page)

    page.fill("#query", "rockets and astronauts exploring outer space")
    page.wait_for_selector("#results[data-state='done'][data-size='384']")
    full = _answer(page)
    assert len(full["ids"]) == 10 and full["overlap"] == 1.0
    first = page.locator("#results li.result .text").first.inner_text()
    assert first.split()[1] in ("rocket", "astronaut", "telescope", "satellite", "lunar", "space")
    assert page.locator("#map-svg circle.map-pt.hit").count() == 10

    _drag_slider_to(page, 16)
    page.wait_for_selector("#results[data-state='done'][data-size='16']")
    page.wait_for_selector("#map-svg[data-size='16'][data-state='idle']")
    small = _answer(page)
    assert page.inner_text("#size-value") == "16" and "prefix" in page.inner_text("#size-note")
    assert small["scores"] != full["scores"] and small["overlap"] != full["overlap"]
    assert small["overlap"] < 1.0 and small["bytes"] * 24 == full["bytes"]
    assert page.get_attribute("#overlap", "data-overlap") == str(small["overlap"])
    after = _positions(page)
    assert (after[:, 0] == before[:, 0]).all()  # the same points
    moved = np.hypot(*(after[:, 1:] - before[:, 1:]).T)
    assert np.median(moved) > 3.0, moved  # pixels: the map redrew at 16

    page.check("#funnel")
    page.wait_for_selector("#results[data-state='done'][data-funnel='1'][data-size='16']")
    funnel = _answer(page)
    assert funnel["overlap"] >= small["overlap"] and funnel["bytes"] > small["bytes"]
    assert json.loads(page.get_attribute("#funnel-desc", "data-funnel")) == [[16, 200], [384, 10]]

    page.hover("#map-svg circle.map-pt.hit >> nth=0")
    page.wait_for_selector("#tooltip:not([hidden])")
    assert page.inner_text("#tooltip").split(":")[0] in TOPICS
    page.screenshot(path=str(tmp_path / "serve-page.png"))
    assert (tmp_path / "serve-page.png").stat().st_size > 10_000
    w.close()
    assert not w.errors, w.errors
    assert not w.refused, w.refused
    assert w.requests and all(_loopback(u) for u in w.requests)


def test_the_page_without_a_model_or_without_an_index(browser, model, corpus):
    for with_model, with_index, says in [(False, True, "no text model"), (True, False, "no index")]:
        svc = _service(model, corpus[0], with_model=with_model, with_index=with_index)
        with ServerThread(create_app(svc, close=False)) as s:
            w = Watched(browser, _loopback)
            w.page.goto(s.url + "/")
            w.page.wait_for_selector("body[data-ready='1']")
            assert says in w.page.inner_text("#notice") and w.page.is_disabled("#query")
            if with_index:  # the map works without a model
                w.page.wait_for_selector("#map-svg[data-state='idle']")
                assert w.page.locator("#map-svg circle.map-pt").count() == len(ROWS)
            else:
                assert "no index" in w.page.inner_text("#map-status")
            w.close()
            assert not w.errors and not w.refused, (w.errors, w.refused)
        svc.pool.shutdown(wait=True)


def test_with_an_api_key_the_page_asks_for_it(browser, model, corpus):
    svc = _service(model, corpus[0])
    with ServerThread(create_app(svc, api_key="k3y", close=False)) as s:
        w = Watched(browser, _loopback)
        w.page.goto(s.url + "/")  # the page loads without the key; its data needs it
        w.page.wait_for_selector("#auth:not([hidden])")
        assert "API key" in w.page.inner_text("#notice")
        w.page.fill("#api-key", "k3y")
        w.page.click("#auth button")
        w.page.wait_for_selector("#map-svg[data-state='idle']")
        w.page.fill("#query", "a storm floods the city")
        w.page.wait_for_selector("#results[data-state='done']")
        assert w.page.locator("#results li.result").count() == 10
        assert w.page.is_hidden("#auth") and not w.refused
        w.close()
    svc.pool.shutdown(wait=True)


# ---------------------------------------------------------------------- the HTML report
def test_the_report_renders_every_plot_offline(browser, tmp_path):
    from matryoshka.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("cifar10.json", "cifar10_gradcam.npz"):  # the committed results
        shutil.copy(RESULTS / name, docs / name)
    shutil.copy(RESULTS / "scifact-peer" / "scifact.json", docs / "scifact.json")
    rng = np.random.default_rng(0)  # a labelled embedding for the map: 6 seeded clusters
    labels = np.repeat(np.arange(6), 50)
    X = (rng.normal(size=(6, 64))[labels] + 0.6 * rng.normal(size=(300, 64))).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "report.html"
    assert main(["report", str(docs), "--out", str(out), "--embeddings", str(tmp_path / "X.npy"),
                 "--labels", str(tmp_path / "labels.npy"), "--map-method", "pca",
                 "--map-sizes", "8,16,32,64"]) == 0  # fmt: skip

    w = Watched(browser, lambda url: url.startswith(("file:", "data:")))
    page = w.page
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    figures = page.locator("figure.plot")
    kinds = [figures.nth(i).get_attribute("data-kind") for i in range(figures.count())]
    for kind in ("accuracy", "finetune", "adaptive", "gradcam", "sts", "funnel", "map"):
        assert kind in kinds, (kind, kinds)
    for i in range(figures.count()):
        fig = figures.nth(i)
        box = fig.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, kinds[i]
        if kinds[i] == "gradcam":
            loaded = fig.locator("img.cell").evaluate_all(
                "is => is.map(i => i.complete && i.naturalWidth)"
            )
            assert loaded and all(v == 32 for v in loaded), loaded
        else:
            marks = fig.locator("svg circle.pt, svg circle.map-pt")
            assert marks.count() > 0, kinds[i]
            assert marks.first.bounding_box()["width"] > 0, kinds[i]

    slider = page.locator("#map-size")
    assert page.get_attribute("#map-figure", "data-size") == "64"
    before = _positions_report(page)
    slider.focus()
    page.keyboard.press("Home")
    page.wait_for_selector("#map-figure[data-size='8']")
    page.wait_for_timeout(500)  # the points move in about 350 ms
    moved = np.hypot(*(_positions_report(page) - before).T)
    assert page.inner_text("#map-size-value") == "8" and np.median(moved) > 1.0
    w.close()
    assert not w.errors, w.errors
    assert not w.refused, w.refused


def _positions_report(page):
    return np.array(page.eval_on_selector_all(
        "#map-svg circle.map-pt",
        "cs => cs.map(c => [+c.getAttribute('cx'), +c.getAttribute('cy')])",
    ))  # fmt: skip
