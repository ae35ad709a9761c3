"""Where a search's time goes: each stage of faiss HNSW and of our funnels, per 1,000 queries.

Runs every configuration under ``cProfile`` and sorts the time of the calls it sees into the
stages of a search:

- ``graph``: faiss's own search (HNSW graph walk, or a flat scan);
- ``gather``: reading rows (``index_select`` of candidates; copying panels into a block);
- ``products``: the inner products (``mm``, ``baddbmm``, faiss's by-index products);
- ``topk``: choosing the best k (``topk``, ``argpartition``, ``sort``; for exact stages the
  threshold pass, which runs in worker threads and shows as the main thread's wait);
- ``bookkeeping``: everything else (validation, query preparation, allocation, id mapping).

cProfile adds a little to every Python call, so ``total`` is a bit above the plain wall time
printed beside it (``wall_ms_per_1000``, measured without the profiler). Prints one JSON line with
every configuration's row (each row also goes to stderr as it is measured).

    python benchmarks/search_profile.py --n 200000 --cache /tmp/search-profile

``--cache`` keeps the built faiss graphs between runs (building HNSW on 200k x 512 takes minutes).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import setup, synthetic  # noqa: E402

from matryoshka.dims import truncate  # noqa: E402
from matryoshka.index import MatryoshkaIndex, recall_at_k  # noqa: E402
from matryoshka.index.ann import HNSWStage  # noqa: E402

# substrings of a cProfile function label -> stage; the first match wins
_STAGES = [
    ("products", ("products_by_idx", "baddbmm", "torch.mm", "addmm", "matmul", "einsum")),
    ("graph", ("faiss._swigfaiss",)),
    ("gather", ("index_select", "gather", "take", "_read", "_decode_into", "copy_", "rows")),
    ("topk", ("topk", "acquire", "argpartition", "argsort", "sort", "greater", "nonzero")),
]


def _stage_of(label: str) -> str:
    for stage, keys in _STAGES:
        if any(key in label for key in keys):
            return stage
    return "bookkeeping"


def profile(fn, nq: int) -> dict[str, float]:
    """Milliseconds per 1,000 queries of each stage of ``fn()`` (exclusive times, cProfile)."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = {s: 0.0 for s in ("graph", "gather", "products", "topk", "bookkeeping")}
    for (file, _, name), (_, _, tt, _, _) in pstats.Stats(prof).stats.items():  # type: ignore
        label = name if file == "~" else f"{Path(file).name}:{name}"
        out[_stage_of(label)] += tt
    scale = 1000 / nq * 1000
    return {k: round(v * scale, 1) for k, v in out.items()} | {
        "total": round(sum(out.values()) * scale, 1)
    }


def wall(fn, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def _hnsw(faiss, x: np.ndarray, path: Path | None, efc: int, M: int):
    """faiss IndexHNSWFlat (inner product) over unit rows ``x``, read from ``path`` if there."""
    if path is not None and path.exists():
        return faiss.read_index(str(path))
    h = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    h.hnsw.efConstruction = efc
    t0 = time.perf_counter()
    h.add(x)
    print(f"built HNSW {x.shape} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if path is not None:
        faiss.write_index(h, str(path))
    return h


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cache", help="folder to keep built faiss graphs in")
    p.add_argument("--full-ef", default="64,128,256", help="faiss HNSW full-size efSearch values")
    p.add_argument(
        "--funnels",
        default="hnsw64:200:64:200,256:40,FULL:10;hnsw64:128:64:100,FULL:10;"
        "exact:128:100,FULL:10;exact:FULL:10",
        help="';'-separated: 'hnsw<dim>:<ef_search>:stages' or 'exact:stages'",
    )
    args = p.parse_args(argv)
    faiss, cache = setup(args.threads, args.cache)
    x = synthetic(args.n + args.nq, args.d, 1000, 0.5, 0)
    xb, xq = x[: args.n], x[args.n :]
    d, k, nq = args.d, args.k, len(xq)
    common = {"n": args.n, "d": d, "nq": nq, "k": k, "threads": args.threads}
    index = MatryoshkaIndex(d, "cosine").add(xb)
    _, gt = index.search(xq, k)

    rows: list[dict] = []

    def emit(config: str, fn, ids_of=lambda r: r[1]) -> None:
        fn()  # warm
        seconds, res = wall(fn, args.repeat)
        row = {"config": config, "qps": round(nq / seconds, 1)}
        row["wall_ms_per_1000"] = round(seconds * 1e6 / nq, 1)
        row[f"recall@{k}"] = round(recall_at_k(ids_of(res), gt, k), 4)
        row["ms_per_1000_queries"] = profile(fn, nq)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)  # progress

    xq_unit = np.ascontiguousarray(truncate(xq, d))
    full = _hnsw(faiss, truncate(xb, d), cache and cache / f"hnsw{d}-{args.n}.faiss", 64, 32)
    for ef in map(int, args.full_ef.split(",")):
        full.hnsw.efSearch = ef
        emit(f"faiss HNSWFlat full efSearch {ef}", lambda h=full: h.search(xq_unit, k))
    del full
    for spec in filter(None, args.funnels.split(";")):
        head, rest = spec.split(":", 1)
        ann = head.startswith("hnsw")
        if ann:
            ef, rest = rest.split(":", 1)
            m = int(head[4:])
            stage = HNSWStage(m, 32, 64, int(ef))
            path = cache and cache / f"hnsw{m}-{args.n}.faiss"
            stage.faiss_index = _hnsw(faiss, index._rows(0, len(index), m), path, 64, 32)
            index.ann_ = stage
        funnel = [tuple(int(v.replace("FULL", str(d))) for v in s.split(":"))
                  for s in rest.split(",")]  # fmt: skip
        emit(f"ours {head} {funnel}", lambda f=funnel, a=ann: index.search(xq, funnel=f, ann=a))
    print(json.dumps({**common, "rows": rows}))


if __name__ == "__main__":
    main()
