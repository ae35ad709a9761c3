"""Data time of an image epoch: decoding JPEGs each time vs reading the decoded uint8 cache.

Both paths run the full training pipeline (pad-4 random crop, horizontal flip, normalisation)
through a ``DataLoader`` over the same seeded subset of a split; the model is left out, so the
time is the data time alone. Prints one JSON line; the project's target is ``speedup >= 3``.

    python benchmarks/image_cache.py --data ../shared/data/cifar10-jpeg --images 10000
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from matryoshka.data.images import CIFAR10_MEAN, CIFAR10_STD, image_folder


def _epoch(dataset, indices: list[int], batch_size: int, workers: int) -> float:
    """Seconds to iterate ``dataset[indices]`` once in shuffled batches."""
    torch.manual_seed(0)
    loader = DataLoader(
        Subset(dataset, indices), batch_size=batch_size, shuffle=True, num_workers=workers
    )
    start = time.perf_counter()
    seen = 0
    for x, _ in loader:  # (B, 3, H, W) float32
        seen += len(x)
    assert seen == len(indices)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
    parser.add_argument("--data", type=Path, default=default, help="folder or tar, ImageNet layout")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=10_000, help="images per timed epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stats = {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}

    files = image_folder(args.data, args.split, augment="crop", **stats)
    n = min(args.images, len(files))
    indices = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))[:n].tolist()
    decode_s = _epoch(files, indices, args.batch_size, args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        start = time.perf_counter()
        cached = image_folder(args.data, args.split, cache_dir=cache_dir, augment="crop", **stats)
        build_s = time.perf_counter() - start  # decodes the whole split once (or loads the cache)
        first_s = _epoch(cached, indices, args.batch_size, args.workers)  # pages come in
        cache_s = _epoch(cached, indices, args.batch_size, args.workers)
        start = time.perf_counter()
        image_folder(args.data, args.split, cache_dir=cache_dir, **stats)
        reopen_s = time.perf_counter() - start
        same = all(
            torch.equal(files.decode(i), torch.from_numpy(np.array(cached.images[i])))
            for i in indices[:256]
        )
        del cached

    print(
        json.dumps(
            {
                "benchmark": "image_cache",
                "data": str(args.data),
                "split": args.split,
                "split_images": len(files),
                "epoch_images": n,
                "batch_size": args.batch_size,
                "workers": args.workers,
                "threads": args.threads,
                "decode_epoch_s": round(decode_s, 3),
                "cache_build_s": round(build_s, 3),
                "cache_first_epoch_s": round(first_s, 3),
                "cache_epoch_s": round(cache_s, 3),
                "cache_reopen_s": round(reopen_s, 4),
                "decode_img_per_s": round(n / decode_s),
                "cache_img_per_s": round(n / cache_s),
                "speedup": round(decode_s / cache_s, 1),
                "same_pixels": same,
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
