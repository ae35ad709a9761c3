"""Search speed and recall: faiss IndexFlatIP at full size against MatryoshkaIndex searches.

Prints one JSON line per configuration: queries per second, recall@k against exact full-size
search (faiss ``IndexFlatIP`` on unit vectors, which is exact), and the ratio of queries per second
to ``IndexFlatIP``'s, all measured in the same run with the same number of threads.

    python benchmarks/search.py                                 # synthetic, 60k x 512
    python benchmarks/search.py --embeddings emb/embeddings.npy --holdout 10000 --nq 1000
    python benchmarks/search.py --n 1000000                     # speed at 1M vectors

Real Matryoshka embeddings, e.g. CIFAR-10 (50k train + 10k test, d = 256, train split first):

    matryoshka train --config configs/cifar10.yaml --out runs/c10 data.holdout=0
    matryoshka embed runs/c10 --out runs/c10/emb --split all
    python benchmarks/search.py --embeddings runs/c10/emb/embeddings.npy --holdout 10000

Without ``--embeddings`` the vectors are synthetic: Gaussian clusters whose per-dimension scale
decays as ``(j + 1) ** -decay``, so early dimensions carry most of the variance, as they do in
Matryoshka embeddings. With ``--embeddings``, the queries are ``--nq`` rows drawn at random (seeded,
held out of the index) unless ``--queries`` is given; ``--holdout`` holds out the last rows instead
(a whole test split written after the train split, say) and draws the queries from them.
Metric: cosine (inner product of unit vectors).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from matryoshka.dims import truncate
from matryoshka.index import MatryoshkaIndex, parse_funnel, recall_at_k
from matryoshka.index.ann import import_faiss


def synthetic(n: int, d: int, clusters: int, decay: float, seed: int) -> np.ndarray:
    """Clustered float32 vectors of shape (n, d) with per-dimension scale ``(j + 1) ** -decay``."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d), dtype=np.float32)
    scale = ((1.0 + np.arange(d)) ** -decay).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):  # in chunks: 1M x 512 float32 is 2 GB
        e = min(n, s + 100_000)
        x = centers[rng.integers(0, clusters, e - s)]
        x += rng.standard_normal((e - s, d), dtype=np.float32)
        out[s:e] = x * scale
    return out


def timed(fn: Callable[[], tuple[np.ndarray, np.ndarray]], repeat: int):
    """Best wall time of ``repeat`` runs and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _split(x: np.ndarray, holdout: int | None, nq: int, seed: int) -> tuple[np.ndarray, ...]:
    """Database and queries from one file: ``holdout`` set, the last rows are held out (a test
    split written after the train split) and ``nq`` of them drawn at random; unset, ``nq`` rows
    drawn at random from the whole file (files are often written class by class)."""
    rng = np.random.default_rng(seed)
    if holdout is None:
        if not 1 <= nq < len(x):
            raise SystemExit(f"--nq must be between 1 and {len(x) - 1}, got {nq}")
        order = rng.permutation(len(x))
        held, kept = np.sort(order[:nq]), np.sort(order[nq:])
        return np.asarray(x[kept], dtype=np.float32), np.asarray(x[held], dtype=np.float32)
    if not nq <= holdout < len(x):
        raise SystemExit(f"--holdout must be between --nq and {len(x) - 1}, got {holdout}")
    pick = np.sort(rng.choice(holdout, nq, replace=False))
    return np.asarray(x[:-holdout], dtype=np.float32), np.asarray(x[-holdout:][pick], np.float32)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--embeddings", help=".npy of shape (N, d); default synthetic")
    p.add_argument("--queries", help=".npy of shape (nq, d); default: from the held-out rows")
    p.add_argument(
        "--holdout",
        type=int,
        help="with --embeddings: keep the last HOLDOUT rows out of the index and draw the "
        "--nq queries from them at random (default: --nq rows drawn at random from the file)",
    )
    p.add_argument("--n", type=int, default=60_000, help="synthetic database size")
    p.add_argument("--d", type=int, default=512, help="synthetic vector size")
    p.add_argument("--clusters", type=int, default=1000, help="synthetic clusters")
    p.add_argument("--decay", type=float, default=0.5, help="synthetic scale (j+1)^-decay")
    p.add_argument("--nq", type=int, default=1000, help="queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeat", type=int, default=3, help="timed runs per configuration (best)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--funnels",
        default="32:200,FULL:10;64:100,FULL:10;32:400,128:50,FULL:10;128:200,FULL:10",
        help="exact funnels, ';'-separated, stages 'dim:k' (FULL = the full size)",
    )
    p.add_argument(
        "--approx",
        default="hnsw:64:128:100,FULL:10;hnsw:128:128:100,FULL:10;ivf:128:32:100,FULL:10;"
        "adanns32:64:32:100,FULL:10",
        help="approximate-first funnels, ';'-separated: 'kind:dim:param:k1,stages...' with "
        "kind hnsw (param: ef_search), ivf (nprobe) or adanns<cluster_dim> (nprobe), dim the "
        "size the structure searches at, k1 its shortlist",
    )
    p.add_argument("--skip-exact-funnels", action="store_true")
    p.add_argument("--skip-ours-full", action="store_true")
    args = p.parse_args(argv)

    faiss = import_faiss()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.embeddings:
        x = np.load(args.embeddings, mmap_mode="r")
        if args.queries:
            xb, xq = np.asarray(x, dtype=np.float32), np.load(args.queries).astype(np.float32)
        else:
            xb, xq = _split(x, args.holdout, args.nq, args.seed)
        data = args.embeddings
    else:
        x = synthetic(args.n + args.nq, args.d, args.clusters, args.decay, args.seed)
        xb, xq = x[: args.n], x[args.n :]
        data = f"synthetic(clusters={args.clusters}, decay={args.decay}, seed={args.seed})"
    xq = xq[: args.nq]
    n, d = xb.shape
    k = args.k
    common = {
        "data": data,
        "n": n,
        "d": d,
        "nq": len(xq),
        "k": k,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps({"setup_s": round(time.perf_counter() - t0, 2), **common}), file=sys.stderr)

    # baseline: faiss IndexFlatIP on unit vectors at full size (exact cosine)
    xb_unit = truncate(xb, d)  # (N, d) unit rows
    flat = faiss.IndexFlatIP(d)
    flat.add(xb_unit)
    xq_unit = truncate(xq, d)
    base_s, (_, gt) = timed(lambda: flat.search(xq_unit, k), args.repeat)
    flat.reset()  # free its copy of the vectors
    del xb_unit
    base_qps = len(xq) / base_s

    def report(config: str, seconds: float, ids: np.ndarray, **extra) -> None:
        qps = len(xq) / seconds
        row = {
            "config": config,
            "qps": round(qps, 1),
            "seconds": round(seconds, 4),
            f"recall@{k}": round(recall_at_k(ids, gt, k), 4),
            "speedup_vs_flat": round(qps / base_qps, 2),
            **extra,
            **common,
        }
        print(json.dumps(row), flush=True)

    report("faiss IndexFlatIP full", base_s, gt)
    index = MatryoshkaIndex(d, "cosine").add(xb)
    index.search(xq[:2], k)  # warm the cached prefix norms outside the timing
    if not args.skip_ours_full:
        s, (_, ids) = timed(lambda: index.search(xq, k), args.repeat)
        report("ours exact full", s, ids)

    def stages(text: str) -> list[tuple[int, int]]:
        """A funnel written as ``dim:k,...``, with ``FULL`` standing for the full size ``d``."""
        return parse_funnel(text.replace("FULL", str(d)))

    if not args.skip_exact_funnels:
        for f in filter(None, args.funnels.split(";")):
            funnel = stages(f)
            index.search(xq[:2], funnel=funnel)
            s, (_, ids) = timed(lambda funnel=funnel: index.search(xq, funnel=funnel), args.repeat)
            report(f"ours exact funnel {funnel}", s, ids, funnel=funnel)

    for a in filter(None, args.approx.split(";")):
        head, *rest = a.split(",")
        kind, dim, param, k1 = head.split(":")
        dim, param, k1 = int(dim), int(param), int(k1)
        if kind == "hnsw":
            params = {"M": 32, "ef_construction": 64, "ef_search": param}
        elif kind == "ivf":
            params = {"nlist": int(4 * np.sqrt(n)), "nprobe": param}
        elif kind.startswith("adanns"):
            params = {"nlist": int(4 * np.sqrt(n)), "nprobe": param, "cluster_dim": int(kind[6:])}
            kind = "adanns"
        else:
            raise SystemExit(f"unknown approximate kind {kind!r}")
        t0 = time.perf_counter()
        index.build_ann(kind, dim, **params)
        build_s = time.perf_counter() - t0
        funnel = stages(",".join([f"{dim}:{k1}", *rest]))
        index.search(xq[:2], funnel=funnel, ann=True)
        s, (_, ids) = timed(
            lambda funnel=funnel: index.search(xq, funnel=funnel, ann=True), args.repeat
        )
        report(
            f"ours {kind} first {funnel}",
            s,
            ids,
            funnel=funnel,
            ann={"kind": kind, **params},
            build_s=round(build_s, 1),
        )


if __name__ == "__main__":
    main()
