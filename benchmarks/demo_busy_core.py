"""The main job (``matryoshka demo``) on a quiet machine and beside one busy CPU core.

Each run trains every model from scratch into a fresh folder, as a first ``make demo`` does, in a
child process (``python -m matryoshka.cli demo --quiet``), timed from start to exit. Configurations:

* ``quiet``: the demo's own thread choice, nothing else started by this script;
* ``busy``: the same beside one busy-loop process (``while True: pass``) on one core;
* ``busy_all_threads``: beside the busy loop with ``--threads`` set to every core, which is what
  torch does by default: the baseline a small model suffers from on a busy machine.

Rounds are interleaved (quiet, busy, busy_all_threads, then again) so a slow moment of the
machine hits every configuration alike. Prints one JSON line: the median seconds of each
configuration, ``busy_over_quiet`` (the target: at most 1.5) and ``all_threads_over_ours`` (how
much slower the default thread count is beside the busy core).
Usage: python benchmarks/demo_busy_core.py [--rounds 2] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def _demo(out: str, epochs: int, threads: int | None) -> float:
    cmd = [sys.executable, "-m", "matryoshka.cli", "demo", "--out", out, "--quiet",
           "--epochs", str(epochs)]  # fmt: skip
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as a user runs it
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    times: dict[str, list[float]] = {"quiet": [], "busy": [], "busy_all_threads": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in times:
                loop = _busy() if name.startswith("busy") else None
                try:
                    threads = cores if name == "busy_all_threads" else None
                    times[name].append(_demo(f"{tmp}/{name}-{r}", args.epochs, threads))
                finally:
                    if loop is not None:
                        loop.kill()
                        loop.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "demo_busy_core",
        "cores": cores,
        "machine": platform.processor() or platform.machine(),
        "epochs": args.epochs,
        "seconds": {k: round(v, 1) for k, v in med.items()},
        "runs": {k: [round(t, 1) for t in v] for k, v in times.items()},
        "busy_over_quiet": round(med["busy"] / med["quiet"], 2),
        "all_threads_over_ours": round(med["busy_all_threads"] / med["busy"], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
