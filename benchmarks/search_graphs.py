"""Graphs for a funnel's first stage, alone: which prefix, degree, build effort and codes pay.

Builds faiss HNSW graphs on prefixes of synthetic Matryoshka-like vectors (or on the full size)
and measures, for each shortlist length ``k1`` and ``efSearch``, the graph search's own queries/s
and the share of the exact full-size top 10 its shortlist holds: the recall@10 a funnel from it
reaches after an exact rerank at full size, which costs little beside the graph walk (see
``search_profile.py``). Every graph runs beside a full-size ``IndexHNSWFlat`` (M 32) in the same
process. Prints one JSON line with every row; each row also goes to stderr as it is measured.

    python benchmarks/search_graphs.py --graphs full:64,full:200,128:16:64:32,128:16:200:8
    python benchmarks/search_graphs.py --graphs full:64,256:16:200:8,256:12:200:8 --cache /tmp/g

A graph is ``full:EFC`` (faiss ``IndexHNSWFlat`` at full size, M 32, that efConstruction) or
``DIM:M:EFC:BITS`` on the prefix of size DIM (BITS 32: ``IndexHNSWFlat``; 16 or 8:
``IndexHNSWSQ`` with float16 or 8-bit codes), built on renormalised prefixes (cosine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import setup, synthetic  # noqa: E402

from matryoshka.dims import truncate  # noqa: E402
from matryoshka.index import recall_at_k  # noqa: E402
from matryoshka.index.ann import HNSWStage  # noqa: E402


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="database size")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per setting (best)")
    p.add_argument("--graphs", default="full:64,128:16:64:32,128:16:64:8,128:16:200:8")
    p.add_argument("--k1", default="20,30,40,50,64,80,100,128,160,200", help="shortlists")
    p.add_argument("--ef-factors", default="1,1.5", help="efSearch = k1 times each factor")
    p.add_argument("--full-ef", default="48,64,80,96,128,192,256,320", help="full-size efSearch")
    p.add_argument("--cache", help="folder keeping the built graphs between runs")
    return p.parse_args(argv)


def _build(faiss, spec: str, xb: np.ndarray, cache: Path | None):
    """The graph named by ``spec`` over ``xb`` (read from the cache when there); build seconds.

    Built by the index's own :class:`HNSWStage` (the same codes and training sample a
    ``build_ann("hnsw", m, bits=...)`` uses) over the renormalised prefix of size ``m``."""
    parts = spec.split(":")
    path = cache / f"graph-{len(xb)}-{spec.replace(':', '_')}.faiss" if cache else None
    if path is not None and path.exists():
        return faiss.read_index(str(path)), None
    if parts[0] == "full":
        m, M, efc, bits = xb.shape[1], 32, int(parts[1]), 32
    else:
        m, M, efc, bits = map(int, parts)
    x = np.ascontiguousarray(truncate(xb, m))
    stage = HNSWStage(m, M=M, ef_construction=efc, bits=bits)
    t0 = time.perf_counter()
    stage.build(lambda start, stop, size: x[start:stop, :size], len(x), "cosine")
    build = time.perf_counter() - t0
    if path is not None:
        faiss.write_index(stage.faiss_index, str(path))
    return stage.faiss_index, build


def _timed(graph, q: np.ndarray, k: int, repeat: int) -> tuple[float, np.ndarray]:
    graph.search(q[:50], k)  # warm
    best, ids = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, ids = graph.search(q, k)
        best = min(best, time.perf_counter() - t0)
    return len(q) / best, ids


def _settings(spec: str, args) -> list[tuple[int, int]]:
    """(shortlist, efSearch) pairs: full-size graphs return 10 at each efSearch."""
    if spec.startswith("full"):
        return [(10, int(ef)) for ef in args.full_ef.split(",")]
    k1s = [int(v) for v in args.k1.split(",")]
    factors = [float(f) for f in args.ef_factors.split(",")]
    return sorted({(k1, max(k1, round(k1 * f))) for k1 in k1s for f in factors})


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    faiss, cache = setup(args.threads, args.cache)
    x = synthetic(args.n + args.nq, args.d, 1000, 0.5, 0)
    xb, xq = x[: args.n], x[args.n :]
    flat = faiss.IndexFlatIP(args.d)
    flat.add(np.ascontiguousarray(truncate(xb, args.d)))
    _, gt = flat.search(np.ascontiguousarray(truncate(xq, args.d)), 10)
    del flat
    rows = []
    for spec in filter(None, args.graphs.split(",")):
        graph, build = _build(faiss, spec, xb, cache)
        m = graph.d
        q = np.ascontiguousarray(truncate(xq, m))
        nbytes = len(faiss.serialize_index(graph)) / args.n
        for k1, ef in _settings(spec, args):
            graph.hnsw.efSearch = ef
            qps, ids = _timed(graph, q, k1, args.repeat)
            # the share of the full-size top 10 in the shortlist: the funnel's recall@10
            # after an exact rerank of the shortlist at full size
            held = recall_at_k(ids, gt, 10) if k1 == 10 else _held(ids, gt)
            row = {"graph": spec, "k1": k1, "ef": ef, "qps": round(qps),
                   "recall": round(held, 4), "bytes_per_vector": round(nbytes, 1),
                   "build_s": build and round(build, 1)}  # fmt: skip
            build = None
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"n": args.n, "d": args.d, "nq": args.nq, "threads": args.threads,
                      "vs_full": _ratios(rows), "rows": rows}))  # fmt: skip


def _ratios(rows: list[dict], targets=(0.95, 0.97, 0.99)) -> dict[str, dict]:
    """Per target recall: each graph's fastest setting reaching it, and its queries/s over the
    first full-size graph's (the baseline) at its smallest efSearch reaching it."""
    out = {}
    for t in targets:
        best = {}
        for r in rows:
            if r["recall"] >= t and r["qps"] > best.get(r["graph"], {}).get("qps", 0):
                best[r["graph"]] = r
        base = next((r for r in rows if r["graph"].startswith("full") and r["recall"] >= t), None)
        out[str(t)] = {
            g: {"k1": r["k1"], "ef": r["ef"], "qps": r["qps"],
                "ratio": base and round(r["qps"] / base["qps"], 2)}
            for g, r in best.items()
        }  # fmt: skip
    return out


def _held(ids: np.ndarray, gt: np.ndarray) -> float:
    """Share of each query's exact top 10 found anywhere in its shortlist, over all queries."""
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, gt))
    return hits / gt.size


if __name__ == "__main__":
    main()
