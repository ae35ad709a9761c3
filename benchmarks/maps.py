"""Which 2-D projection keeps the embedding space's structure, and at what cost, at every size.

Two real samples: SciFact abstracts (title + abstract) encoded with the packaged all-MiniLM-L6-v2
(d = 384; not Matryoshka-trained, so small prefixes are plain truncations), and every digit of
scikit-learn's digits (train + test) encoded with the demo's MRL model (d = 64, trained with
``matryoshka demo``'s recipe into a temporary folder unless ``--digits-model`` names one). Each
size's map comes from :func:`matryoshka.viz.maps.embedding_maps` (aligned from the full size
down) and is scored with :func:`map_quality` (k = 10): ``knn_kept`` (share of each point's 10
nearest neighbours in the prefix space kept on the map), ``trustworthiness``, and on digits the
10-NN label accuracy on the map (``knn_acc_2d``) beside the prefix space's (``knn_acc_prefix``).
``move`` is the RMS distance a point travels between a size's map and the next larger one's, in
units of the full-size map's RMS radius (what the report's size slider shows).

Prints one JSON line: per data set, per method, the seconds and quality at each size.

    python benchmarks/maps.py --scifact ../shared/data/scifact --n 2000 --cache /tmp/maps-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from matryoshka._io import read_json_lines
from matryoshka.viz.maps import embedding_maps, map_quality, sample_rows

SIZES = (16, 32, 64, 128, 384)


def scifact_embeddings(folder: Path, n: int, cache: Path | None, seed: int) -> np.ndarray:
    """``n`` abstracts drawn at random (seeded), encoded once at d = 384: (n, 384) float32."""
    path = cache / f"scifact-{n}-{seed}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    from matryoshka.models.text import encode_texts, load_sentence_encoder

    docs = [o for _, o in read_json_lines(folder / "corpus.jsonl")]
    pick = np.sort(np.random.default_rng(seed).choice(len(docs), size=n, replace=False))
    texts = [f"{docs[i].get('title', '')} {docs[i].get('text', '')}".strip() for i in pick]
    model = load_sentence_encoder(progress=False)
    X = encode_texts(model, texts, progress=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, X)
    return X


def digits_embeddings(model_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Every digit (train + test) through the demo's MRL model: (1797, 64), labels (1797,)."""
    from matryoshka.eval import encode
    from matryoshka.experiments.compare import run_demo
    from matryoshka.train import load_data, load_model

    with tempfile.TemporaryDirectory() as tmp:
        if model_dir is None:
            run_demo(Path(tmp) / "demo", progress=False)
            model_dir = Path(tmp) / "demo" / "models" / "mrl"
        model, cfg, _ = load_model(model_dir)
        train_ds, test_ds, _ = load_data(cfg, augment=False, progress=False)
        parts = [encode(model, ds) for ds in (train_ds, test_ds)]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def measure(X: np.ndarray, labels: np.ndarray | None, sizes: list[int], method: str,
            seed: int) -> dict:  # fmt: skip
    """Seconds, quality and movement of one method's maps at every size."""
    warm = 0.0
    if method != "pca":  # numba / first-call compilation, paid once a process: timed apart
        t0 = time.perf_counter()
        embedding_maps(np.random.default_rng(0).normal(size=(60, 8)), [4, 8], method=method)
        warm = time.perf_counter() - t0
    times: dict[int, float] = {}
    t0 = time.perf_counter()
    maps = embedding_maps(X, sizes, method=method, sample=None, seed=seed, times=times)
    total = time.perf_counter() - t0
    rows = sample_rows(len(X), None)
    out = {"seconds": round(total, 3), "first_call_s": round(warm, 2), "sizes": {}}
    for i, m in enumerate(sizes):
        q = map_quality(X[rows, :m], maps[m], None if labels is None else labels[rows], k=10)
        entry = {"seconds": round(times[m], 3), **{k: round(v, 4) for k, v in q.items()}}
        if i + 1 < len(sizes):
            step = maps[m] - maps[sizes[i + 1]]
            entry["move"] = round(float(np.sqrt((step**2).sum(1).mean())), 4)
        out["sizes"][m] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
    parser.add_argument("--scifact", type=Path, default=default, help="a BEIR SciFact folder")
    parser.add_argument("--n", type=int, default=2000, help="abstracts drawn from the corpus")
    parser.add_argument("--digits-model", type=Path, help="an MRL digits model folder")
    parser.add_argument("--methods", default="pca,tsne,umap", help="comma-separated")
    parser.add_argument("--cache", type=Path, help="keep the encoded abstracts here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    t0 = time.perf_counter()
    Xs = scifact_embeddings(args.scifact, args.n, args.cache, args.seed)
    encode_s = time.perf_counter() - t0
    Xd, yd = digits_embeddings(args.digits_model)
    data = {
        "scifact": (Xs, None, [m for m in SIZES if m <= Xs.shape[1]]),
        "digits": (Xd, yd, [m for m in SIZES if m <= Xd.shape[1]]),
    }
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}, 1 thread",
        "k": 10,
        "scifact_encode_s": round(encode_s, 1),
        "points": {name: len(X) for name, (X, _, _) in data.items()},
    }
    for name, (X, y, sizes) in data.items():
        result[name] = {meth: measure(X, y, sizes, meth, args.seed) for meth in methods}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
