"""Search speed and recall: faiss HNSW and IndexFlatIP at full size beside MatryoshkaIndex funnels.

Everything runs side by side in one process with the same threads: faiss ``IndexFlatIP`` on unit
vectors (exact: the reference for recall@k), faiss ``IndexHNSWFlat`` at full size (M 32, efSearch
swept), our exact full-size search, hand-picked funnels (exact and from approximate first stages)
and, for each recall target, the funnel :meth:`MatryoshkaIndex.tune` picks on separate tuning
queries, then measured on the benchmark's queries. Each structure's memory per vector and build
time are reported, and the single-query latency (p50) of numpy brute force, faiss HNSW, our full
size search and the tuned funnel at each ``--latency-sizes``. A progress line per configuration
goes to stderr; the result is one JSON line on stdout.

    python benchmarks/search.py --n 200000 --cache /tmp/search-cache      # synthetic 200k x 512
    python benchmarks/search.py --embeddings emb/embeddings.npy --holdout 10000 --nq 1000
    python benchmarks/search.py --n 1000000 --latency-sizes 3000,100000,1000000

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
from pathlib import Path

import numpy as np
import torch

from matryoshka.dims import truncate
from matryoshka.index import MatryoshkaIndex, parse_funnel, recall_at_k
from matryoshka.index.ann import import_faiss, make_ann


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


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--embeddings", help=".npy of shape (N, d); default synthetic")
    p.add_argument("--queries", help=".npy of shape (nq, d); default: from the held-out rows")
    p.add_argument(
        "--holdout",
        type=int,
        help="with --embeddings: keep the last HOLDOUT rows out of the index and draw the "
        "queries from them at random (default: drawn at random from the file)",
    )
    p.add_argument("--n", type=int, default=200_000, help="synthetic database size")
    p.add_argument("--d", type=int, default=512, help="synthetic vector size")
    p.add_argument("--clusters", type=int, default=1000, help="synthetic clusters")
    p.add_argument("--decay", type=float, default=0.5, help="synthetic scale (j+1)^-decay")
    p.add_argument("--nq", type=int, default=1000, help="benchmark queries")
    p.add_argument("--tune-nq", type=int, default=300, help="separate queries the tuner sees")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeat", type=int, default=3, help="timed runs per configuration (best)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", default="0.95,0.97,0.99", help="recall@k targets")
    p.add_argument("--hnsw-m", type=int, default=32, help="faiss HNSW full size: M")
    p.add_argument(
        "--hnsw-efc",
        default="64",
        help="faiss HNSW full size: efConstruction, or several comma-separated (each built and "
        "swept; the first is the baseline the speed-ups are read against)",
    )
    p.add_argument(
        "--hnsw-ef",
        default="16,24,32,48,64,96,128,192,256,384,512",
        help="faiss HNSW full size: efSearch values swept",
    )
    p.add_argument(
        "--funnels",
        default="128:100,FULL:10;64:400,256:50,FULL:10",
        help="hand-picked exact funnels, ';'-separated, stages 'dim:k' (FULL = the full size)",
    )
    p.add_argument(
        "--structures",
        default="hnsw:64:32;hnsw:128:16",
        help="approximate first stages, ';'-separated 'kind:dim:M' (hnsw) or 'ivf:dim:nlist'",
    )
    p.add_argument(
        "--approx",
        default="hnsw:64:128:100,FULL:10;hnsw:128:48:48,FULL:10;hnsw:128:64:64,FULL:10",
        help="hand-picked funnels from those structures: 'kind:dim:knob:k1,stages...' (knob: "
        "ef_search or nprobe)",
    )
    p.add_argument("--latency-sizes", default="3000,100000", help="corpus sizes for one query")
    p.add_argument("--latency-queries", type=int, default=1000)
    p.add_argument("--cache", help="folder keeping built faiss structures between runs")
    p.add_argument("--skip-ours-full", action="store_true")
    return p.parse_args(argv)


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Database (N, d), benchmark queries (nq, d), tuning queries (tune_nq, d), a description."""
    nq = args.nq + args.tune_nq
    if args.embeddings:
        x = np.load(args.embeddings, mmap_mode="r")
        if args.queries:
            xb, xq = np.asarray(x, dtype=np.float32), np.load(args.queries).astype(np.float32)
        else:
            xb, xq = _split(x, args.holdout, nq, args.seed)
        xq = np.random.default_rng(args.seed + 1).permutation(xq)
        data = args.embeddings
    else:
        x = synthetic(args.n + nq, args.d, args.clusters, args.decay, args.seed)
        xb, xq = x[: args.n], x[args.n :]
        data = f"synthetic(clusters={args.clusters}, decay={args.decay}, seed={args.seed})"
    if len(xq) < nq:
        raise SystemExit(f"need {nq} queries (--nq + --tune-nq), got {len(xq)}")
    return xb, xq[: args.nq], xq[args.nq : nq], data


def _hnsw_full(faiss, xb_unit: np.ndarray, args, cache: Path | None, efc: int = 64):
    """faiss IndexHNSWFlat at full size on unit rows; its build seconds (None if cached)."""
    n, d = xb_unit.shape
    tag = "" if efc == 64 else f"-efc{efc}"
    path = cache / f"hnsw-full-{n}x{d}-M{args.hnsw_m}{tag}.faiss" if cache else None
    if path is not None and path.exists():
        return faiss.read_index(str(path)), None
    h = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    h.hnsw.efConstruction = efc
    t0 = time.perf_counter()
    h.add(xb_unit)
    build = time.perf_counter() - t0
    if path is not None:
        faiss.write_index(h, str(path))
    return h, build


def _bytes(faiss, index) -> int:
    return int(len(faiss.serialize_index(index)))


def _structure(faiss, index: MatryoshkaIndex, spec: str, cache: Path | None):
    """Build (or read from the cache) an approximate first stage 'kind:dim:M|nlist', for HNSW
    optionally followed by ':efConstruction' (default 64) and ':bits' (32, 16 or 8)."""
    kind, dim, p, *more = spec.split(":")
    dim, p = int(dim), int(p)
    if kind == "hnsw":
        efc, bits = (list(map(int, more)) + [64, 32][len(more) :])[:2]
        params = {"M": p, "ef_construction": efc, "bits": bits}
        tag = ("" if efc == 64 else f"-efc{efc}") + ("" if bits == 32 else f"-b{bits}")
    else:
        params, tag = {"nlist": p}, ""
    path = cache / f"{kind}{dim}-{len(index)}-{p}{tag}.faiss" if cache else None
    t0 = time.perf_counter()
    if path is not None and path.exists():
        stage = make_ann(kind, dim, index.d, **params)
        stage.faiss_index = faiss.read_index(str(path))
        index.ann_, build = stage, None
    else:
        index.build_ann(kind, dim, **params)
        build = time.perf_counter() - t0
        if path is not None:
            faiss.write_index(index.ann_.faiss_index, str(path))
    return index.ann_, build


def _ours_bytes(faiss, index: MatryoshkaIndex) -> int:
    """Stored codes + cached per-size norms + the approximate stage, in bytes."""
    norms = sum(v.nbytes for v in index._norms.values())
    ann = 0 if index.ann_ is None else _bytes(faiss, index.ann_.faiss_index)
    return index.nbytes + norms + ann


def _set_knob(stage, value: int) -> None:
    setattr(stage, "ef_search" if stage.kind == "hnsw" else "nprobe", value)


def _p50(fn: Callable[[np.ndarray], object], xq: np.ndarray) -> float:
    """Median milliseconds of one query at a time over the rows of ``xq`` (after 20 warm-ups)."""
    for q in xq[:20]:
        fn(q[None])
    times = []
    for q in xq:
        t0 = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 4)


def _latency(faiss, xb, xq, sizes, best, ann_spec, shared, args) -> dict[str, dict]:
    """p50 ms of one query: numpy brute force, faiss HNSW, ours full and the best funnel."""
    out = {}
    k, d = args.k, xb.shape[1]
    xq = xq[: args.latency_queries]
    for size in sizes:
        sub = xb[:size]
        unit = truncate(sub, d)

        def brute(q, unit=unit):  # the plain numpy product a user would write
            s = unit @ (q[0] / np.linalg.norm(q[0]))
            top = np.argpartition(-s, k)[:k]
            return top[np.argsort(-s[top])]

        try:  # one BLAS thread: the fastest numpy setting for one query on a shared machine
            from threadpoolctl import threadpool_limits
        except ImportError:
            row = {"numpy brute force": _p50(brute, xq)}
        else:
            with threadpool_limits(1):
                row = {"numpy brute force (1 BLAS thread)": _p50(brute, xq)}
        if size == len(xb):
            hnsw, index = shared
        else:
            hnsw, _ = _hnsw_full(faiss, unit, args, None, int(args.hnsw_efc.split(",")[0]))
            index = MatryoshkaIndex(d, "cosine").add(sub)
        hnsw.hnsw.efSearch = best.get("hnsw_ef", 64)
        row[f"faiss HNSW full (efSearch {hnsw.hnsw.efSearch})"] = _p50(
            lambda q, h=hnsw: h.search(truncate(q, d), k), xq
        )
        row["ours full"] = _p50(lambda q, ix=index: ix.search(q, k), xq)
        funnel, use_ann = best["funnel"], best["ann"]
        if use_ann and index.ann_ is None:
            _structure(faiss, index, ann_spec, None)
        if use_ann:
            _set_knob(index.ann_, best["ann_params"])
        row[f"ours funnel {funnel}{' (approximate first)' if use_ann else ''}"] = _p50(
            lambda q, ix=index, f=funnel, a=use_ann: ix.search(q, funnel=f, ann=a), xq
        )
        out[str(size)] = row
        print(json.dumps({"latency_p50_ms": row, "n": size}), file=sys.stderr, flush=True)
    return out


def setup(threads: int, cache_dir: str | None):
    """faiss with ``threads`` threads for it and torch, and the cache folder (made) or None."""
    faiss = import_faiss()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    cache = Path(cache_dir) if cache_dir else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    return faiss, cache


class _Runs:
    """Every measured configuration: a progress line on stderr each, recall against ``gt``."""

    def __init__(self, nq: int, k: int, repeat: int) -> None:
        self.nq, self.k, self.repeat = nq, k, repeat
        self.rows: list[dict] = []
        self.gt: np.ndarray | None = None

    def log(self, row: dict) -> dict:
        self.rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    def measure(self, config: str, fn, **extra) -> dict:
        fn()
        s, (_, ids) = timed(fn, self.repeat)
        recall = round(recall_at_k(ids, self.gt, self.k), 4)
        return self.log({"config": config, "qps": round(self.nq / s, 1), "recall": recall, **extra})


def _reference(faiss, xb_unit: np.ndarray, xq_unit: np.ndarray, runs: _Runs) -> np.ndarray:
    """faiss IndexFlatIP on unit vectors at full size (exact cosine): the ids recall is read on."""
    n, d = xb_unit.shape
    flat = faiss.IndexFlatIP(d)
    flat.add(xb_unit)
    flat_s, (_, gt) = timed(lambda: flat.search(xq_unit, runs.k), runs.repeat)
    runs.log({"config": "faiss IndexFlatIP full", "qps": round(runs.nq / flat_s, 1),
              "recall": 1.0, "bytes_per_vector": round(_bytes(faiss, flat) / n, 1),
              "build_s": 0.0})  # fmt: skip
    flat.reset()
    return gt


def _hnsw_sweep(faiss, xb_unit, xq_unit, args, cache, runs: _Runs) -> tuple[object, list[dict]]:
    """faiss HNSW at full size, built once per ``--hnsw-efc``, at every efSearch of
    ``--hnsw-ef``; returns the first build (kept for the latency runs) and every row."""
    sweep, first = [], None
    for efc in map(int, args.hnsw_efc.split(",")):
        hnsw, build = _hnsw_full(faiss, xb_unit, args, cache, efc)
        mem = round(_bytes(faiss, hnsw) / len(xb_unit), 1)
        for ef in map(int, args.hnsw_ef.split(",")):
            hnsw.hnsw.efSearch = ef
            sweep.append(runs.measure(
                f"faiss HNSWFlat full M{args.hnsw_m} efC {efc} efSearch {ef}",
                lambda h=hnsw: h.search(xq_unit, runs.k), ef=ef, efc=efc,
                bytes_per_vector=mem, build_s=build and round(build, 1)))  # fmt: skip
            build = None
        if first is None:
            first = hnsw
    return first, sweep


def _exact(faiss, index: MatryoshkaIndex, xq, xt, args, runs: _Runs, targets) -> list[dict]:
    """Our exact search: full size, the hand-picked funnels, the tuner's pick for each target."""
    d, k = index.d, runs.k
    mem = {"ann": False, "bytes_per_vector": round(_ours_bytes(faiss, index) / len(index), 1)}
    ours = []
    if not args.skip_ours_full:
        ours.append(runs.measure("ours exact full", lambda: index.search(xq, k),
                                 funnel=[[d, k]], **mem))  # fmt: skip
    for f in filter(None, args.funnels.split(";")):
        funnel = parse_funnel(f.replace("FULL", str(d)))
        ours.append(runs.measure(f"ours exact funnel {funnel}",
                                 lambda f=funnel: index.search(xq, funnel=f),
                                 funnel=funnel, hand_picked=True, **mem))  # fmt: skip
    for target in targets:
        t = index.tune(xt, target, k, ann=False, repeat=2)
        ours.append(runs.measure(f"ours tuned exact {t['funnel']} for {target}",
                                 lambda t=t: index.search(xq, funnel=t["funnel"]),
                                 funnel=t["funnel"], tuned_for=target, tune_recall=t["recall"],
                                 confirm_recall=t["confirm_recall"], **mem))  # fmt: skip
    return ours


def _best_latency(faiss, xb, xq, summary, hnsw, index, args, cache) -> dict:
    """Single-query latency of the baselines and of the best funnel over every target."""
    best = next((s for s in summary.values() if s.get("best")), None)
    if best is None:
        return {}
    b = best["best"]
    b["hnsw_ef"] = best.get("hnsw_ef") or 64
    spec = b.get("structure")
    if b["ann"]:  # leave the structure the best funnel used in place for the latency runs
        _structure(faiss, index, spec, cache)
    sizes = [int(s) for s in args.latency_sizes.split(",") if s and int(s) <= len(xb)]
    return _latency(faiss, xb, xq, sizes, b, spec, (hnsw, index), args)


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    faiss, cache = setup(args.threads, args.cache)
    xb, xq, xt, data = _data(args)
    n, d = xb.shape
    targets = [float(t) for t in args.targets.split(",")]
    runs = _Runs(len(xq), args.k, args.repeat)
    xb_unit, xq_unit = truncate(xb, d), truncate(xq, d)
    runs.gt = _reference(faiss, xb_unit, xq_unit, runs)
    hnsw, sweep = _hnsw_sweep(faiss, xb_unit, xq_unit, args, cache, runs)
    del xb_unit
    index = MatryoshkaIndex(d, "cosine").add(xb)
    index.search(xq[:2], args.k)
    ours = _exact(faiss, index, xq, xt, args, runs, targets)
    ours += _approximate(faiss, index, args, xq, xt, runs.measure, cache, targets)
    summary = _summary(targets, sweep, ours)
    latency = _best_latency(faiss, xb, xq, summary, hnsw, index, args, cache)
    machine = platform.processor() or platform.machine()
    print(json.dumps({"data": data, "n": n, "d": d, "nq": len(xq), "k": args.k,
                      "threads": args.threads, "machine": machine, "targets": summary,
                      "latency_p50_ms": latency, "rows": runs.rows}))  # fmt: skip


def _approximate(faiss, index, args, xq, xt, measure, cache, targets) -> list[dict]:
    """Every structure: hand-picked funnels from it, then the tuner's pick for each target."""
    out, n, k, full = [], len(index), args.k, str(index.d)
    for spec in filter(None, args.structures.split(";")):
        stage, build = _structure(faiss, index, spec, cache)
        extra = {
            "structure": spec,
            "build_s": build and round(build, 1),
            "ann": True,
            "bytes_per_vector": round(_ours_bytes(faiss, index) / n, 1),
        }
        kind, dim, *_ = spec.split(":")
        for a in filter(None, args.approx.split(";")):
            head, *rest = a.split(",")
            akind, adim, knob, k1 = head.split(":")
            if (akind, adim) != (kind, dim):
                continue
            _set_knob(stage, int(knob))
            funnel = parse_funnel(",".join([f"{dim}:{k1}", *rest]).replace("FULL", full))
            out.append(
                measure(
                    f"ours {spec} first {funnel} knob {knob}",
                    lambda f=funnel: index.search(xq, funnel=f, ann=True),
                    funnel=funnel,
                    ann_params=int(knob),
                    hand_picked=True,
                    **extra,
                )
            )
        for target in targets:
            t = index.tune(xt, target, k, ann=True, repeat=2, exact_first=False)
            if t["ann"]:
                _set_knob(stage, t["ann_params"])
            row = measure(
                f"ours tuned {spec if t['ann'] else 'exact'} {t['funnel']} for {target}",
                lambda t=t: index.search(xq, funnel=t["funnel"], ann=t["ann"]),
                funnel=t["funnel"],
                ann_params=t["ann_params"],
                tuned_for=target,
                tune_recall=t["recall"],
                confirm_recall=t["confirm_recall"],
                **{**extra, "ann": t["ann"]},
            )
            out.append(row)
    return out


def _summary(targets, sweep, ours) -> dict[str, dict]:
    """Per target: faiss HNSW's smallest efSearch reaching it, the fastest of ours reaching it."""
    out = {}
    efcs = list(dict.fromkeys(r["efc"] for r in sweep))
    for target in targets:
        by_efc = {e: next((r for r in sweep if r["efc"] == e and r["recall"] >= target), None)
                  for e in efcs}  # fmt: skip
        h = by_efc[efcs[0]]
        meet = [r for r in ours if r["recall"] >= target]
        best = max(meet, key=lambda r: r["qps"], default=None)
        hand = max((r for r in meet if r.get("hand_picked")), key=lambda r: r["qps"], default=None)
        tuned = [r for r in ours if r.get("tuned_for") == target]
        row = {
            "hnsw_ef": h and h["ef"],
            "hnsw_qps": h and h["qps"],
            "hnsw_bytes_per_vector": h and h["bytes_per_vector"],
            "best": best,
            "best_hand_picked_qps": hand and hand["qps"],
            "tuned": [
                {"config": r["config"], "qps": r["qps"], "recall": r["recall"]} for r in tuned
            ],
        }
        if h and best:
            row["speedup_vs_hnsw"] = round(best["qps"] / h["qps"], 2)
            row["memory_vs_hnsw"] = round(best["bytes_per_vector"] / h["bytes_per_vector"], 2)
        row["hnsw_by_efc"] = {
            str(e): r and {"ef": r["ef"], "qps": r["qps"], "recall": r["recall"],
                           "speedup": best and round(best["qps"] / r["qps"], 2)}
            for e, r in by_efc.items()
        }  # fmt: skip
        out[str(target)] = row
    return out


if __name__ == "__main__":
    main()
