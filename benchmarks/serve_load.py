"""Load test of ``matryoshka serve`` on SciFact: throughput, latency, errors, memory, a live swap.

Builds (once, cached under ``--cache``, default ``runs/serve-load``) the SciFact corpus (5,183
abstracts) embedded with the packaged all-MiniLM-L6-v2 (``matryoshka embed``) and a float32
index of it, starts ``matryoshka serve`` in a subprocess on a free loopback port, and sends a
fixed number of requests at each concurrency (1, 8 and 32 clients, each with its own
keep-alive connection):

- ``POST /search`` with a text query from ``queries.jsonl`` and a funnel (default
  ``64:200,384:10``), the payload included;
- ``POST /v1/embeddings`` with one query text at ``dimensions`` 256.

It also measures the same searches run in this process one query at a time (encode, then
search: the work a server replaces), before and after the server's load, with the server's
torch threads, each timed after one untimed pass over the same queries; and, during a further
``/search`` load at 8 clients, rebuilds the index into the same folder with ``matryoshka index
build ... --precision float16 --overwrite`` and checks that no request failed and that the
answers come from the new index afterwards.

Prints ONE JSON line: per configuration requests/s, p50/p95/p99 latency (ms), errors, the
server's memory after it and the texts its model encoded per call (how much concurrent requests
were batched); the server's resident memory (``VmRSS`` of ``/proc/PID/status``) at start, after
a warm-up at 8 clients with the same queries (``rss_before_mb``) and after all the load
(``rss_after_mb``); ``search_8_vs_inprocess``, the server's ``/search`` throughput at 8 clients
over the in-process one-query-at-a-time throughput; and the swap's outcome (answers from the old
and the new index, old answers to requests sent after the first new answer came back: 0 when
the swap is clean). Loopback only; bounded by ``--requests`` per configuration and
``--max-seconds`` per configuration.

    python benchmarks/serve_load.py                      # SciFact from ../shared/data/scifact
    python benchmarks/serve_load.py --data PATH --requests 300 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _cli(*args: str, log: Path) -> float:
    """Run ``matryoshka ARGS`` in a subprocess (output appended to ``log``); its seconds."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        subprocess.run([PY, "-m", "matryoshka.cli", *args], check=True, stdout=f, stderr=f,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return time.perf_counter() - t0


def prepare(data: Path, cache: Path) -> tuple[Path, Path]:
    """The embeddings folder (made once) and a float32 index of it (rebuilt every run)."""
    from matryoshka.models.text import minilm_path

    cache.mkdir(parents=True, exist_ok=True)
    emb, index, log = cache / "emb", cache / "index", cache / "build.log"
    if not (emb / "embeddings.npy").is_file():
        print("embedding the corpus once (minutes on a CPU) ...", file=sys.stderr, flush=True)
        _cli("embed", str(minilm_path()), "--texts", str(data / "corpus.jsonl"),
             "--title-column", "title", "--out", str(emb), "--quiet", log=log)  # fmt: skip
    _cli("index", "build", str(emb), "--out", str(index), "--overwrite", "--quiet", log=log)
    return emb, index


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.machine())  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB, from ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


def start_server(index: Path, payload: Path, port: int, extra: list[str], log: Path):
    cmd = [PY, "-m", "matryoshka.cli", "serve", "--model", "packaged", "--index", str(index),
           "--payload", str(payload), "--port", str(port), "--log-level", "warning",
           "--reload-interval", "0.25", *extra]  # fmt: skip
    with open(log, "w") as f:  # the child keeps its own handle
        proc = subprocess.Popen(cmd, stdout=f, stderr=f,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start in 300 s")


def encoder_counts(url: str) -> tuple[float, float]:
    """The server's encode calls and texts encoded so far (from ``/metrics``)."""
    found = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("matryoshka_encoder_"):
            name, value = line.split()[:2]
            found[name] = float(value)
    return found.get("matryoshka_encoder_batches", 0.0), found.get("matryoshka_encoder_texts", 0.0)


def load(url: str, path: str, bodies: list[dict], clients: int, n: int, max_s: float,
         on_answer: Any = None, done: Any = None) -> dict[str, Any]:  # fmt: skip
    """``n`` requests (or, with ``done``, requests until ``done()``) from ``clients`` threads,
    each with its own connection; throughput, latency percentiles and errors."""
    lock, next_i, lat, errors, gens = threading.Lock(), [0], [], [], []

    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while True:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                over = done() if done is not None else i >= n
                if over or time.perf_counter() - t0 > max_s:
                    return
                t = time.perf_counter()
                try:
                    r = c.post(path, json=bodies[i % len(bodies)])
                    ok = r.status_code == 200
                    if ok and on_answer is not None:
                        gens.append((on_answer(r.json()), t, time.perf_counter()))
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat or [np.nan]) * 1000
    return {"clients": clients, "requests": len(lat), "seconds": round(wall, 2),
            "rps": round(len(lat) / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "errors": len(errors),
            "error_samples": errors[:3], "_answers": gens}  # fmt: skip


def in_process(model: Any, index_path: Path, queries: list[str], funnel: list, n: int) -> float:
    """Queries per second encoding and searching one query at a time in this process."""
    from matryoshka.index import MatryoshkaIndex
    from matryoshka.models.text import encode_texts

    index = MatryoshkaIndex.load(index_path, mmap=True)

    def one_pass() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            index.search(encode_texts(model, [queries[i % len(queries)]], progress=False),
                         funnel=funnel)  # fmt: skip
        return time.perf_counter() - t0

    # warm-up: the same queries once (each new text length costs the first time it is seen),
    # so the baseline is the faster, warm loop
    one_pass()
    return n / one_pass()


def swap_under_load(url: str, emb: Path, index: Path, bodies: list[dict], max_s: float,
                    log: Path) -> dict[str, Any]:  # fmt: skip
    """A /search load at 8 clients from 1 s before ``index build --precision float16
    --overwrite`` starts until 3 s after it ends."""
    built: dict[str, float] = {}

    def rebuild() -> None:
        time.sleep(1.0)
        built["start"] = time.perf_counter()
        built["seconds"] = _cli("index", "build", str(emb), "--out", str(index), "--precision",
                                "float16", "--overwrite", "--quiet", log=log)  # fmt: skip
        built["end"] = time.perf_counter()

    t = threading.Thread(target=rebuild)
    t.start()

    def done() -> bool:
        return "end" in built and time.perf_counter() > built["end"] + 3.0

    stats = load(url, "/search", bodies, 8, 0, max_s, lambda a: a["index_generation"], done)
    t.join()
    info = httpx.get(url + "/api/info").json()
    after = httpx.post(url + "/search", json=bodies[0]).json()
    gens = stats.pop("_answers")
    first_new = min((end for g, _, end in gens if g > 1), default=None)
    # once one answer came from the new index, a request sent later must not get the old one
    late_old = sum(g == 1 and first_new is not None and sent > first_new for g, sent, _ in gens)
    return {**stats, "build_s": round(built["seconds"], 2),
            "answers_old": sum(g == 1 for g, _, _ in gens),
            "answers_new": sum(g > 1 for g, _, _ in gens),
            "old_answers_sent_after_first_new": late_old,
            # the build's rename comes before its process exits: "after end" can be negative
            "first_new_answer_after_build_start_s": None if first_new is None
            else round(first_new - built["start"], 2),
            "first_new_answer_after_build_end_s": None if first_new is None
            else round(first_new - built["end"], 2),
            "precision_after": info["precision"], "generation_after": info["index"]["generation"],
            "answer_generation_after": after["index_generation"],
            "reload_failures": info["index"]["reload_failures"]}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "scifact"),
                   help="a BEIR-layout folder with corpus.jsonl and queries.jsonl")  # fmt: skip
    p.add_argument("--cache", default=str(REPO / "runs" / "serve-load"))
    p.add_argument("--requests", type=int, default=200, help="requests per configuration")
    p.add_argument("--max-seconds", type=float, default=120.0, help="cap per configuration")
    p.add_argument("--clients", default="1,8,32", help="concurrencies")
    p.add_argument("--funnel", default="64:200,384:10")
    p.add_argument("--dimensions", type=int, default=256, help="/v1/embeddings size")
    p.add_argument("--inprocess", type=int, default=100, help="in-process queries (each run)")
    p.add_argument("--threads", type=int, help="the server's --threads (default: its own)")
    p.add_argument("--server-arg", action="append", default=[], help="more serve flags")
    args = p.parse_args(argv)
    run(args)


def run(args: argparse.Namespace) -> None:  # noqa: C901 - one straight script
    import torch

    from matryoshka.index import parse_funnel
    from matryoshka.models.text import load_sentence_encoder

    t_start, load_start = time.perf_counter(), [round(v, 2) for v in os.getloadavg()]
    data, cache = Path(args.data), Path(args.cache)
    funnel = [list(s) for s in parse_funnel(args.funnel)]
    emb, index = prepare(data, cache)
    queries = [json.loads(line)["text"] for line in open(data / "queries.jsonl") if line.strip()]
    search = [{"query": q, "funnel": funnel} for q in queries]
    embed = [{"input": q, "model": "all-MiniLM-L6-v2", "dimensions": args.dimensions}
             for q in queries]  # fmt: skip
    extra = [*args.server_arg] + (["--threads", str(args.threads)] if args.threads else [])
    model = load_sentence_encoder(None, progress=False)  # for the in-process baseline
    proc, url = start_server(index, data / "corpus.jsonl", free_port(), extra,
                             cache / "server.log")  # fmt: skip
    out: dict[str, Any] = {"benchmark": "serve_load", "data": str(data), "funnel": funnel}
    try:
        info = httpx.get(url + "/api/info").json()
        threads = int(info["threads"])
        torch.set_num_threads(threads)
        out.update(server_threads=threads, server_workers=info["workers"],
                   count=info["count"], rss_start_mb=rss_mb(proc.pid))  # fmt: skip
        # warm-up: the queries the load sends, once each, as the in-process loop is warmed
        load(url, "/search", search, 8, args.requests, args.max_seconds)
        load(url, "/v1/embeddings", embed, 8, args.requests, args.max_seconds)
        out["rss_before_mb"] = rss_mb(proc.pid)
        ip_before = in_process(model, index, queries, funnel, args.inprocess)
        clients = [int(c) for c in args.clients.split(",")]
        for name, path, bodies in (("search", "/search", search),
                                   ("embeddings", "/v1/embeddings", embed)):  # fmt: skip
            for c in clients:
                calls0, texts0 = encoder_counts(url)
                stats = load(url, path, bodies, c, args.requests, args.max_seconds)
                stats.pop("_answers")
                calls, texts = (b - a for a, b in zip((calls0, texts0), encoder_counts(url)))
                stats.update(rss_mb_after=rss_mb(proc.pid),
                             texts_per_encode=round(texts / max(calls, 1), 2))  # fmt: skip
                out[f"{name}_{c}"] = stats
        ip_after = in_process(model, index, queries, funnel, args.inprocess)
        out["swap"] = swap_under_load(url, emb, index, search, args.max_seconds,
                                      cache / "build.log")  # fmt: skip
        out["rss_after_mb"] = rss_mb(proc.pid)
        metrics = httpx.get(url + "/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ip = (ip_before + ip_after) / 2
    out.update(inprocess_qps_before=round(ip_before, 2), inprocess_qps_after=round(ip_after, 2))
    if "search_8" in out:
        out["search_8_vs_inprocess"] = round(out["search_8"]["rps"] / ip, 3)
    out["rss_growth"] = round(out["rss_after_mb"] / out["rss_before_mb"] - 1, 4)
    out["errors_total"] = sum(v["errors"] for v in out.values() if isinstance(v, dict))
    batches = [ln for ln in metrics.splitlines() if ln.startswith("matryoshka_encoder_")]
    out["encoder"] = {ln.split()[0]: float(ln.split()[1]) for ln in batches}
    out["machine"] = {"cores": os.cpu_count(), "cpu": cpu_name(),
                      "loadavg_start": load_start,
                      "loadavg_end": [round(v, 2) for v in os.getloadavg()],
                      "python": platform.python_version(), "torch": torch.__version__}  # fmt: skip
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
