"""The same funnels on our index and on vector engines: Qdrant, Milvus, PostgreSQL + pgvector.

One process, the same data, queries and threads for every system. For each system: load time
(upload plus the engine's index build), bytes per vector (the back end's own account, and what
its files take on disk), and queries/s and recall@10 against exact full-size search, at full size
and through funnels. The engines run embedded: Qdrant Edge in this process, Milvus Lite (a local
file), PostgreSQL from ``pgserver`` (a local server with the vector extension). A progress line
per measurement goes to stderr; the result is one JSON line on stdout with each engine's funnel
q/s divided by its own full-size q/s (the ratio the funnel buys in that engine) and by ours.

    python benchmarks/engines.py --embeddings runs/cifar10/emb/mrl/embeddings.npy --nq 1000
    python benchmarks/engines.py --n 1000000 --d 512 --engines ours,qdrant

Synthetic data (without ``--embeddings``) is clustered with a per-dimension scale decaying as
``(j + 1) ** -decay`` (see ``benchmarks/search.py``). Metric: cosine.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import _split, synthetic  # noqa: E402

from matryoshka.index import MatryoshkaIndex, parse_funnel, recall_at_k  # noqa: E402
from matryoshka.index.engines import engine_class  # noqa: E402


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--embeddings", help="an embeddings .npy (default: synthetic vectors)")
    p.add_argument("--n", type=int, default=100_000, help="synthetic: vectors")
    p.add_argument("--d", type=int, default=512, help="synthetic: size")
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--decay", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nq", type=int, default=1000, help="queries (held out, drawn at random)")
    p.add_argument("--batch", type=int, default=100, help="queries per request")
    p.add_argument("--engines", default="ours,qdrant,milvus,pgvector")
    p.add_argument("--funnels", help="funnels separated by ';' (default: d/4 and d/8 first)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--upload-batch", type=int, default=2000)
    p.add_argument("--workdir", help="where the engines keep their files (default: a temp dir)")
    p.add_argument("--repeat", type=int, default=2, help="best of this many timed passes")
    p.add_argument(
        "--ef",
        type=lambda t: [int(v) for v in t.split(",")],
        default=[32, 64, 256],
        help="graph beams tried for each engine's full-size search",
    )
    return p.parse_args(argv)


def _folder_bytes(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks: sparse files count less)."""
    if not path.exists():
        return 0
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_blocks * 512 for f in files)


class _Timer:
    """Queries/s of a search function over all queries in batches, best of ``repeat``."""

    def __init__(self, xq: np.ndarray, gt: np.ndarray, batch: int, repeat: int) -> None:
        self.xq, self.gt, self.batch, self.repeat = xq, gt, batch, repeat

    def run(self, search: Any) -> dict:
        search(self.xq[: self.batch])  # warm
        best, ids = float("inf"), None
        for _ in range(self.repeat):
            t0 = time.perf_counter()
            ids = np.concatenate([search(self.xq[s : s + self.batch])[1]
                                  for s in range(0, len(self.xq), self.batch)])  # fmt: skip
            best = min(best, time.perf_counter() - t0)
        return {"qps": round(len(self.xq) / best, 1),
                "recall": round(recall_at_k(ids, self.gt, 10), 4)}  # fmt: skip


def _log(row: dict) -> dict:
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def _ours(index: MatryoshkaIndex, load_s: float, funnels: list, timer: _Timer) -> list[dict]:
    rows = [_log({"system": "ours", "search": f"full {index.d}", "load_s": round(load_s, 1),
                  "bytes_per_vector": index.nbytes / len(index),
                  **timer.run(lambda q: index.search(q, 10))})]  # fmt: skip
    for f in funnels:
        rows.append(_log({"system": "ours", "search": _fmt(f),
                          **timer.run(lambda q, f=f: index.search(q, funnel=f))}))  # fmt: skip
    for f in funnels:  # the first stage from an HNSW graph on the prefix (8-bit codes), as
        t0 = time.perf_counter()  # the engines' first stages come from their graphs
        index.build_ann("hnsw", f[0][0], M=16, ef_construction=100, bits=8)
        build = round(time.perf_counter() - t0, 1)
        result = timer.run(lambda q, f=f: index.search(q, funnel=f, ann=True))
        rows.append(_log({"system": "ours", "search": f"{_fmt(f)} hnsw", "load_s": build,
                          **result}))  # fmt: skip
    index.ann_ = None
    return rows


def _fmt(funnel: list) -> str:
    return ",".join(f"{m}:{k}" for m, k in funnel)


def _target(kind: str, work: Path, servers: list) -> str:
    """Where each embedded engine keeps the collection (starting PostgreSQL for pgvector)."""
    if kind == "qdrant":
        return str(work / "qdrant")
    if kind == "milvus":
        return str(work / "milvus.db")
    import pgserver

    server = pgserver.get_server(str(work / "pg"), cleanup_mode="stop")
    servers.append(server)
    return server.get_uri()


def _disk(kind: str, work: Path, target: str) -> int:
    if kind == "qdrant":
        return _folder_bytes(work / "qdrant")
    if kind == "milvus":
        return _folder_bytes(work) - _folder_bytes(work / "qdrant") - _folder_bytes(work / "pg")
    import psycopg  # PostgreSQL: the table, its TOAST and its indexes, as the server counts them

    with psycopg.connect(target) as conn:
        return int(conn.execute("SELECT pg_total_relation_size('matryoshka')").fetchone()[0])


def _options(kind: str, funnels: list, d: int) -> dict:
    """Each engine as people deploy it: an HNSW graph at full size (the baseline) and on every
    funnel's first-stage prefix; sizes only reranked get no graph where the engine allows."""
    firsts = sorted({f[0][0] for f in funnels if f[0][0] < d})
    if kind == "qdrant":  # Qdrant leaves vectors under ~10 MB without a graph (16 dims x 55k:
        # 3.5 MB): build every graph, and let Qdrant choose between graph and scan as it does
        return {"graphs": [*firsts, d], "indexing_threshold": 1}
    if kind == "milvus":
        return {"full_index_type": "HNSW"}
    return {"full_index": True}  # pgvector: an HNSW index on the full column too


def _bytes_options(kind: str, funnels: list, d: int) -> dict:
    """The same choices as :func:`_options`, as each back end's ``bytes_per_vector`` takes them."""
    opts = _options(kind, funnels, d)
    if kind == "qdrant":
        return {"graphs": len(opts["graphs"])}  # the threshold changes no byte
    return opts


def _set_ef(engine: Any, kind: str, ef: int | None) -> None:
    """The engine's search beam for graph searches (None: its default)."""
    if kind == "qdrant":
        engine.hnsw_ef = ef
    elif kind == "milvus":
        engine.search_params = {} if ef is None else {"ef": ef}
    else:
        engine.ef_search = ef


def _engine(kind: str, index: MatryoshkaIndex, funnels: list, timer: _Timer, work: Path,
            args: argparse.Namespace, servers: list) -> list[dict]:  # fmt: skip
    """Load the index into one engine, build its graphs, time full size and every funnel."""
    sizes = sorted({m for f in funnels for m, _ in f if m < index.d})
    cls = engine_class(kind)
    t0 = time.perf_counter()
    target = _target(kind, work, servers)
    engine = cls.from_index(index, target, sizes=sizes,
                            batch_size=args.upload_batch, progress=True,
                            **_options(kind, funnels, index.d))  # fmt: skip
    upload = time.perf_counter() - t0
    if hasattr(engine, "optimize"):
        engine.optimize()  # build the engine's graphs now, inside the load time
    load = time.perf_counter() - t0
    stated = cls.bytes_per_vector(index.d, sizes, **_bytes_options(kind, funnels, index.d))
    rows = [_log({"system": kind, "search": f"full {index.d}", "load_s": round(load, 1),
                  "upload_s": round(upload, 1), "bytes_per_vector": stated["total"],
                  "bytes": stated,
                  "disk_bytes_per_vector": round(_disk(kind, work, target) / len(index), 1),
                  **timer.run(lambda q: engine.search(q, 10))})]  # fmt: skip
    for ef in args.ef:  # the full-size graph at other beams: its recall/speed curve
        _set_ef(engine, kind, ef)
        rows.append(_log({"system": kind, "search": f"full {index.d} ef {ef}",
                          **timer.run(lambda q: engine.search(q, 10))}))  # fmt: skip
    _set_ef(engine, kind, None)
    for f in funnels:
        rows.append(_log({"system": kind, "search": _fmt(f),
                          **timer.run(lambda q, f=f: engine.search(q, funnel=f))}))  # fmt: skip
    engine.close()
    return rows


def _ratios(rows: list[dict]) -> dict:
    """Per system and funnel: q/s over that system's full size, and over ours at that funnel."""
    qps = {(r["system"], r["search"]): r["qps"] for r in rows}
    out = {}
    for (system, search), value in qps.items():
        full = qps[next(key for key in qps if key[0] == system)]  # its first row: full size
        entry = {"vs_own_full": round(value / full, 2)}
        if ("ours", search) in qps and system != "ours":
            entry["vs_ours"] = round(value / qps[("ours", search)], 3)
        if ("ours", f"{search} hnsw") in qps and system != "ours":  # ours from a prefix graph
            entry["vs_ours_hnsw"] = round(value / qps[("ours", f"{search} hnsw")], 3)
        out[f"{system} {search}"] = entry
    return out


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    torch.set_num_threads(args.threads)
    if args.embeddings:
        xb, xq = _split(np.load(args.embeddings, mmap_mode="r"), None, args.nq, args.seed)
        data = args.embeddings
    else:
        x = synthetic(args.n + args.nq, args.d, args.clusters, args.decay, args.seed)
        xb, xq, data = x[: args.n], x[args.n :], f"synthetic(decay={args.decay})"
    d = xb.shape[1]
    funnels = ([parse_funnel(f) for f in args.funnels.split(";")] if args.funnels else
               [[(d // 4, 200), (d, 10)], [(d // 8, 400), (d // 2, 50), (d, 10)]])  # fmt: skip
    t0 = time.perf_counter()
    index = MatryoshkaIndex(d, "cosine").add(xb)
    load = time.perf_counter() - t0
    _, gt = index.search(xq, 10)  # exact full-size search: the reference
    timer = _Timer(xq, gt, args.batch, args.repeat)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="engines-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, servers = [], []
    try:
        for kind in args.engines.split(","):
            if kind == "ours":
                rows += _ours(index, load, funnels, timer)
            else:
                rows += _engine(kind, index, funnels, timer, work, args, servers)
    finally:
        for server in servers:
            server.cleanup()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "engines", "data": data, "n": len(xb), "d": d,
                      "nq": len(xq), "threads": args.threads, "machine": platform.machine(),
                      "rows": rows, "ratios": _ratios(rows)}))  # fmt: skip


if __name__ == "__main__":
    main()
