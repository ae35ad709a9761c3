"""``matryoshka serve``: the real server (uvicorn on a free loopback port) with real clients.

One module-scoped server holds the packaged all-MiniLM-L6-v2 and an index of its embeddings of
48 short texts, with a JSONL payload; a second one, index only, is rebuilt on disk while clients
search it. Every limit and every kind of bad request gets its 4xx and a message naming the field.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("sentence_transformers")

from matryoshka.dims import truncate  # noqa: E402
from matryoshka.index import MatryoshkaIndex  # noqa: E402
from matryoshka.serve import Limits, ServeConfig, ServerThread, create_app  # noqa: E402
from matryoshka.serve.encoder import TextModel  # noqa: E402
from matryoshka.serve.indexes import IndexHolder, Payload  # noqa: E402
from matryoshka.serve.service import Service  # noqa: E402

TOPICS = {
    "space": ["rockets reach orbit by burning fuel", "the moon circles the earth",
              "astronauts live on the space station", "mars is a cold red planet"],
    "cooking": ["bake bread with flour water and yeast", "simmer the tomato sauce slowly",
                "whisk eggs for an omelette", "roast vegetables in a hot oven"],
    "music": ["the violin plays the melody", "drums keep the rhythm of the song",
              "a choir sings in harmony", "the pianist practises scales daily"],
    "sport": ["the striker scored a late goal", "marathon runners pace themselves",
              "the tennis serve was very fast", "swimmers train early in the pool"],
}  # fmt: skip
ROWS = [(f"{t} ({n})", topic) for topic, ts in TOPICS.items() for t in ts for n in "abc"]
TEXTS = [text for text, _ in ROWS]
NAMES = [f"doc{i:02d}" for i in range(len(TEXTS))]
LIMITS = Limits(max_body_bytes=100_000, max_inputs=8, max_text_chars=500, max_k=20,
                max_stages=3, max_shortlist=40)  # fmt: skip
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def model():
    m = TextModel.load("packaged", max_batch=16)
    yield m
    m.encoder.close()


@pytest.fixture(scope="module")
def corpus(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    X = model.encoder.encode(TEXTS)[0]
    MatryoshkaIndex(model.d).add(X, names=NAMES).save(root / "index")
    with open(root / "corpus.jsonl", "w") as f:
        for name, (text, topic) in zip(NAMES, ROWS):
            f.write(json.dumps({"_id": name, "text": text, "topic": topic}) + "\n")
    return root, X


@pytest.fixture(scope="module")
def service(model, corpus):
    root, _ = corpus
    holder = IndexHolder(root / "index", reload_interval=0, expect_d=model.d)
    svc = Service(model, holder, Payload(root / "corpus.jsonl"), LIMITS, workers=2, threads=1)
    yield svc
    svc.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def server(service):
    with ServerThread(create_app(service, close=False)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(service):
    """The same service behind an API key."""
    with ServerThread(create_app(service, api_key=KEY, close=False)) as s:
        yield s


def _err(r, status, field):
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["field"] == field and body["param"] == field, body
    assert field is None or field.split("[")[0] in body["message"] or field == "body", body
    return body["message"]


# ---------------------------------------------------------------------- info routes
def test_health_and_info(client, model):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    info = client.get("/api/info").json()
    assert info["model_name"] == "all-MiniLM-L6-v2" and info["d"] == 384
    assert info["sizes"] == [8, 16, 32, 64, 128, 256, 384] and info["dims"] == [384]
    assert info["count"] == len(TEXTS) and info["precision"] == "float32"
    assert info["metric"] == "cosine" and info["model_loaded"] and info["index_loaded"]
    assert info["limits"]["max_k"] == 20 and info["payload"] == {"count": len(TEXTS)}


def test_models_lists_the_model_and_its_sizes(client):
    data = client.get("/v1/models").json()
    assert data["object"] == "list" and len(data["data"]) == 1
    card = data["data"][0]
    assert card["id"] == "all-MiniLM-L6-v2" and card["object"] == "model"
    assert card["matryoshka_dimensions"] == [384] and card["dimensions"] == 384
    assert client.get("/v1/models/all-MiniLM-L6-v2").json()["id"] == card["id"]
    _err(client.get("/v1/models/gpt-4"), 404, "model")


# ---------------------------------------------------------------------- embeddings
def test_openai_client_gets_prefixes_equal_to_direct_encoding(server, model):
    openai = pytest.importorskip("openai")
    oa = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    texts = ["a rocket on the launch pad", "fresh bread from the oven"]
    direct = model.model.encode(texts, convert_to_numpy=True)
    for m in (64, 384, 100):
        res = oa.embeddings.create(model="all-MiniLM-L6-v2", input=texts, dimensions=m)
        got = np.array([e.embedding for e in res.data], dtype=np.float32)
        assert got.shape == (2, m)
        np.testing.assert_allclose(got, truncate(direct, m), atol=1e-5)
        assert res.usage.prompt_tokens == sum(len(model.model.tokenizer(t)["input_ids"])
                                              for t in texts)  # fmt: skip
    one = oa.embeddings.create(model="all-MiniLM-L6-v2", input="a rocket on the launch pad")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as e:
        oa.embeddings.create(model="all-MiniLM-L6-v2", input=["ok", ""])
    assert e.value.body["param"] == "input[1]"


def test_float_and_base64_encodings_agree(client):
    body = {"input": ["the choir sings"], "dimensions": 32, "model": "all-MiniLM-L6-v2"}
    f = client.post("/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    b = client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(b["data"][0]["embedding"]), dtype="<f4")
    assert f["object"] == "list" and f["data"][0]["object"] == "embedding"
    assert f["data"][0]["index"] == 0 and f["model"] == "all-MiniLM-L6-v2"
    np.testing.assert_allclose(vec, f["data"][0]["embedding"], atol=0)
    assert abs(np.linalg.norm(vec) - 1) < 1e-5 and f["usage"]["total_tokens"] > 2


def test_concurrent_requests_are_batched_and_each_gets_its_rows(client, model):
    texts = [[f"{t} {i}"] * (1 + i % 3) for i, t in enumerate(TEXTS[:12])]
    before = model.encoder.batches
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda ts: client.post("/v1/embeddings", json={"input": ts}),
                                texts))  # fmt: skip
    for ts, r in zip(texts, answers):
        got = np.array([e["embedding"] for e in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, model.model.encode(ts, convert_to_numpy=True), atol=1e-5)
    assert model.encoder.batches - before <= len(texts)


def test_event_loop_answers_while_a_long_encode_runs(client):
    long_texts = [" ".join(TEXTS)[: 490 - i] for i in range(8)]  # ~100 tokens each
    with ThreadPoolExecutor(1) as pool:
        t0 = time.perf_counter()
        job = pool.submit(client.post, "/v1/embeddings", json={"input": long_texts})
        time.sleep(0.05)
        t1 = time.perf_counter()
        with httpx.Client(base_url=str(client.base_url)) as other:
            assert other.get("/health").status_code == 200
        health = time.perf_counter() - t1
        assert job.result().status_code == 200
        total = time.perf_counter() - t0
    assert health < max(0.5, total / 2), (health, total)


BAD_EMBEDDINGS = [
    ({}, 400, "input"),
    ({"input": 5}, 400, "input"),
    ({"input": []}, 400, "input"),
    ({"input": [1, 2, 3]}, 400, "input"),
    ({"input": [[1, 2], [3]]}, 400, "input"),
    ({"input": ["ok", 7]}, 400, "input[1]"),
    ({"input": ["ok", "  "]}, 400, "input[1]"),
    ({"input": ["x"] * 9}, 400, "input"),
    ({"input": "x" * 501}, 400, "input"),
    ({"input": "ok", "dimensions": 0}, 400, "dimensions"),
    ({"input": "ok", "dimensions": 385}, 400, "dimensions"),
    ({"input": "ok", "dimensions": 64.0}, 400, "dimensions"),
    ({"input": "ok", "dimensions": True}, 400, "dimensions"),
    ({"input": "ok", "dimensions": "64"}, 400, "dimensions"),
    ({"input": "ok", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "ok", "model": "text-embedding-3-small"}, 404, "model"),
    ({"input": "ok", "model": 3}, 400, "model"),
]


@pytest.mark.parametrize("body,status,field", BAD_EMBEDDINGS)
def test_bad_embeddings_request_names_the_field(client, body, status, field):
    _err(client.post("/v1/embeddings", json=body), status, field)


def test_unknown_fields_are_ignored(client):
    r = client.post("/v1/embeddings", json={"input": "ok", "user": "u1", "extra": {"a": 1}})
    assert r.status_code == 200
    r = client.post("/search", json={"query": "moon", "k": 2, "colour": "blue"})
    assert r.status_code == 200


# ---------------------------------------------------------------------- search
def test_search_by_text_returns_names_scores_and_payload(client):
    r = client.post("/search", json={"query": "a rocket flying to space", "k": 3, "dim": 64})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dim"] == 64 and out["k"] == 3 and "funnel" not in out and "overlap" not in out
    assert len(out["results"]) == 3
    top = out["results"][0]
    assert top["name"] == NAMES[top["row"]] and top["id"] == top["row"]
    assert top["payload"]["_id"] == top["name"] and top["payload"]["topic"] == "space"
    scores = [x["score"] for x in out["results"]]
    assert scores == sorted(scores, reverse=True)
    assert out["timings_ms"]["encode"] > 0 and out["timings_ms"]["search"] >= 0
    assert out["bytes_per_query"] == len(TEXTS) * 64 * 4
    no_payload = client.post("/search", json={"query": "moon", "k": 1, "payload": False})
    assert no_payload.json()["results"][0]["payload"] is None


def test_search_by_vector_equals_in_process_search(client, corpus, service):
    _, X = corpus
    index = service.index.current.index
    for m in (16, 384):
        out = client.post("/search", json={"vector": X[5].tolist(), "k": 4, "dim": m}).json()
        D, I = index.search(X[5:6], 4, dim=m)
        assert [x["id"] for x in out["results"]] == I[0].tolist()
        np.testing.assert_allclose([x["score"] for x in out["results"]], D[0], atol=1e-6)
    assert out["results"][0]["name"] == NAMES[5] and out["timings_ms"]["encode"] is None


def test_funnel_equals_in_process_search(client, corpus, service):
    _, X = corpus
    funnel = [[16, 30], [64, 10], [384, 5]]
    index = service.index.current.index
    for q in (0, 17, 40):
        out = client.post("/search", json={"vector": X[q].tolist(), "funnel": funnel}).json()
        D, I = index.search(X[q : q + 1], funnel=funnel)
        assert [x["id"] for x in out["results"]] == I[0].tolist()
        np.testing.assert_allclose([x["score"] for x in out["results"]], D[0], atol=1e-6)
    assert out["funnel"] == funnel and out["k"] == 5 and "dim" not in out
    assert len(out["timings_ms"]["stages"]) == 3
    assert out["bytes_per_query"] == len(TEXTS) * 16 * 4 + 30 * 64 * 4 + 10 * 384 * 4
    with_k = client.post("/search", json={"query": "violin", "funnel": funnel, "k": 5})
    assert with_k.status_code == 200


def test_overlap_at_full_size_is_one(client):
    out = client.post("/search", json={"query": "eggs", "k": 5, "dim": 384, "overlap": True})
    assert out.json()["overlap"] == 1.0 and "overlap" in out.json()["timings_ms"]
    small = client.post("/search", json={"query": "eggs", "k": 5, "dim": 8, "overlap": True})
    assert 0.0 <= small.json()["overlap"] <= 1.0


def _vec(**kw):
    return {"vector": [0.1] * 384, **kw}


BAD_SEARCHES = [
    ({}, "query"),
    ({"query": "x", "vector": [0.1] * 384}, "vector"),
    ({"query": 3}, "query"),
    ({"query": ""}, "query"),
    ({"query": "y" * 501}, "query"),
    ({"vector": "0.1,0.2"}, "vector"),
    ({"vector": [0.1] * 383}, "vector"),
    ({"vector": [0.1] * 383 + ["a"]}, "vector[383]"),
    ({"vector": [0.1] * 383 + [True]}, "vector[383]"),
    ({"vector": [0.1] * 383 + [1e39]}, "vector[383]"),
    (_vec(k=0), "k"),
    (_vec(k=21), "k"),
    (_vec(k=2.0), "k"),
    (_vec(k="5"), "k"),
    (_vec(k=10**400), "k"),
    (_vec(dim=0), "dim"),
    (_vec(dim=385), "dim"),
    (_vec(dim=64, funnel=[[64, 5]]), "funnel"),
    (_vec(funnel=[]), "funnel"),
    (_vec(funnel="64:10"), "funnel"),
    (_vec(funnel=[[64, 10]] * 4), "funnel"),
    (_vec(funnel=[[64, 10, 3]]), "funnel[0]"),
    (_vec(funnel=[[64, 10], [32, 5]]), "funnel[1]"),
    (_vec(funnel=[[32, 5], [64, 10]]), "funnel[1]"),
    (_vec(funnel=[[32, 41], [64, 10]]), "funnel[0]"),
    (_vec(funnel=[[32, 30], [64, 21]]), "funnel[1]"),
    (_vec(funnel=[[32, 30], [999, 5]]), "funnel[1]"),
    (_vec(funnel=[[32, 30], [64.5, 5]]), "funnel[1]"),
    (_vec(funnel=[[32, 30], [64, 5]], k=6), "k"),
    (_vec(overlap="yes"), "overlap"),
    (_vec(payload=1), "payload"),
]


@pytest.mark.parametrize("body,field", BAD_SEARCHES)
def test_bad_search_request_names_the_field(client, body, field):
    _err(client.post("/search", json=body), 400, field)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_vectors_are_refused(client, literal):
    raw = '{"vector": [' + ", ".join(["0.1"] * 383 + [literal]) + "]}"
    r = client.post("/search", content=raw, headers={"content-type": "application/json"})
    _err(r, 400, "vector[383]")


def test_lone_surrogates_are_not_text(client):
    raw = b'{"input": ["ok", "\\ud800 lone"]}'
    _err(client.post("/v1/embeddings", content=raw), 400, "input[1]")
    _err(client.post("/search", content=b'{"query": "\\udfff"}'), 400, "query")


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b'"text"', b"\xff\xfe", b"[" * 100_000])
def test_bodies_that_are_not_a_json_object_are_refused(client, raw):
    _err(client.post("/search", content=raw), 400, "body")
    _err(client.post("/v1/embeddings", content=raw), 400, "body")


def test_body_over_the_limit_is_413(client):
    big = json.dumps({"input": ["word " * 90] * 8, "pad": "x" * 100_000})
    _err(client.post("/v1/embeddings", content=big), 413, "body")

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 10_000

    _err(client.post("/search", content=chunks()), 413, "body")


def test_unknown_route_and_method_answer_json(client):
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/search")
    assert r.status_code == 405 and "error" in r.json()


# ---------------------------------------------------------------------- key, metrics
def test_api_key_guards_every_route_but_health(keyed, model):
    with httpx.Client(base_url=keyed.url) as c:
        assert c.get("/health").status_code == 200
        for method, path in [("GET", "/api/info"), ("GET", "/v1/models"), ("GET", "/metrics"),
                             ("POST", "/search"), ("POST", "/v1/embeddings")]:  # fmt: skip
            r = c.request(method, path, json={"input": "x"})
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["field"] == "authorization"
            wrong = c.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        ok = c.get("/api/info", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["d"] == 384
    openai = pytest.importorskip("openai")
    oa = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0)
    assert (
        len(oa.embeddings.create(model=model.name, input="x", dimensions=8).data[0].embedding) == 8
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="bad", max_retries=0).models.list()


def _count(text, route, status, method):
    for line in text.splitlines():
        if line.startswith("matryoshka_http_requests_total{") and f'route="{route}"' in line \
                and f'status="{status}"' in line and f'method="{method}"' in line:  # fmt: skip
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_and_status(client):
    before = client.get("/metrics").text
    for _ in range(3):
        client.get("/health")
    client.post("/search", json={"k": 1})
    client.get("/no/such/path")
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert _count(text, "/health", 200, "GET") - _count(before, "/health", 200, "GET") == 3
    assert _count(text, "/search", 400, "POST") - _count(before, "/search", 400, "POST") == 1
    assert _count(text, "other", 404, "GET") - _count(before, "other", 404, "GET") == 1
    assert 'matryoshka_http_request_duration_seconds_bucket{le="0.005",route="/health"}' in text
    assert "matryoshka_index_rows 48.0" in text and "matryoshka_encoder_batches" in text


# ---------------------------------------------------------------------- index swap
def test_index_swapped_on_disk_under_concurrent_requests(corpus, tmp_path):
    _, X = corpus
    path = tmp_path / "live"
    MatryoshkaIndex(384).add(X, names=NAMES).save(path)
    holder = IndexHolder(path, reload_interval=0.05)
    svc = Service(None, holder, workers=2)
    stop, failures, seen = threading.Event(), [], []

    def hammer(c):
        i = 0
        while not stop.is_set():
            q = i % len(X)
            r = c.post("/search", json={"vector": X[q].tolist(), "funnel": [[32, 10], [384, 3]]})
            if r.status_code != 200:
                failures.append(r.text)
            else:
                seen.append((r.json()["index_generation"], r.json()["results"][0]["name"], q))
            i += 1

    with ServerThread(create_app(svc)) as s:
        clients = [httpx.Client(base_url=s.url, timeout=30) for _ in range(4)]
        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        time.sleep(0.3)
        for version in (1, 2, 3):  # what `index build --out SAME --overwrite` does
            precision = "float16" if version % 2 else "float32"
            names = [f"v{version}-{n}" for n in NAMES]
            MatryoshkaIndex(384, precision=precision).add(X, names=names).save(path, overwrite=True)
            time.sleep(0.2)
        want = json.loads((path / "manifest.json").read_text())["checksum"]
        deadline = time.monotonic() + 20
        while holder.current.checksum != want and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        after = clients[0].post("/search", json={"vector": X[7].tolist(), "k": 1}).json()
        info = clients[0].get("/api/info").json()
        for c in clients:
            c.close()
    assert not failures, failures[:3]
    assert holder.current.checksum == want and holder.failures == 0
    assert after["results"][0]["name"] == "v3-doc07" and info["precision"] == "float16"
    assert info["index"]["generation"] >= 2 and len(seen) > 20
    for generation, name, q in seen:  # every answer came whole from one version
        assert name.endswith(NAMES[q]) and (generation == 1) == (not name.startswith("v"))


def test_index_only_server_with_ids_and_a_payload_by_line(corpus, tmp_path):
    _, X = corpus
    ids = np.arange(100, 100 + len(X)) * 3
    MatryoshkaIndex(384).add(X, ids=ids).save(tmp_path / "ix")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    svc = Service(None, IndexHolder(tmp_path / "ix", reload_interval=0),
                  Payload(tmp_path / "rows.jsonl"))  # fmt: skip
    with ServerThread(create_app(svc)) as s, httpx.Client(base_url=s.url) as c:
        out = c.post("/search", json={"vector": X[9].tolist(), "k": 2}).json()
        top = out["results"][0]
        assert top["row"] == 9 and top["id"] == ids[9] and top["name"] is None
        assert top["payload"] == {"text": TEXTS[9]}
        _err(c.post("/search", json={"query": "moon"}), 400, "query")
        _err(c.post("/v1/embeddings", json={"input": "moon"}), 404, "model")
        info = c.get("/api/info").json()
        assert not info["model_loaded"] and info["sizes"][-1] == 384 and info["dims"] is None
        assert c.get("/v1/models").json()["data"] == []


def test_new_version_of_another_size_is_refused_and_the_old_kept(corpus, tmp_path):
    _, X = corpus
    path = tmp_path / "ix"
    MatryoshkaIndex(384).add(X).save(path)
    holder = IndexHolder(path, reload_interval=0, expect_d=384)
    MatryoshkaIndex(64).add(X[:, :64]).save(path, overwrite=True)
    assert holder.check() is False and holder.failures == 1 and "d=64" in holder.last_error
    assert holder.current.index.d == 384 and holder.current.generation == 1
    with pytest.raises(ValueError, match="size d=64 but the model embeds d=384"):
        IndexHolder(path, expect_d=384)


# ---------------------------------------------------------------------- command line
def test_cli_refuses_nothing_to_serve_and_a_payload_without_index(capsys):
    from matryoshka.cli import main

    assert main(["serve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["serve", "--payload", "x.jsonl", "--model", "packaged"]) == 2
    assert "--payload describes the rows of an index" in capsys.readouterr().err


def test_cli_names_the_extra_when_it_is_missing(monkeypatch, capsys):
    import sys

    from matryoshka.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", "--index", "somewhere"]) == 2
    assert "pip install 'matryoshka[serve]'" in capsys.readouterr().err


def test_cli_help_lists_the_flags(capsys):
    from matryoshka.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--model", "--index", "--payload", "--host", "--port", "--api-key",
                 "--max-body-bytes", "--max-inputs", "--max-text-chars", "--max-k",
                 "--max-stages", "--max-shortlist", "--threads", "--reload-interval"):  # fmt: skip
        assert flag in out, flag


def test_config_defaults_bind_loopback():
    assert ServeConfig().host == "127.0.0.1"


def test_encoder_hands_freed_memory_back_when_idle(model):
    if model.encoder._trim is None:
        pytest.skip("malloc_trim is glibc's; this C library has none")
    before = model.encoder.trims
    model.encoder.encode(["a short text to encode"])
    deadline = time.monotonic() + 10
    while model.encoder.trims == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.encoder.trims > before
