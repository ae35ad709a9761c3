"""A folder of one's own images, made from scikit-learn's digits: grayscale PNGs in the ImageNet
layout (``OUT/train/<digit>/<n>.png``, ``OUT/test/<digit>/<n>.png``), as users keep MNIST.

    python examples/digits_to_pngs.py OUT [--size 16]

The 8x8 digits are scaled to ``--size`` pixels; 20% of each digit goes to ``test`` (seeded).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=16, help="side in pixels (default 16)")
    args = p.parse_args(argv)
    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)  # (N, 8, 8), 0..255
    idx = np.arange(len(pixels))
    train, test = train_test_split(idx, test_size=0.2, random_state=0, stratify=digits.target)
    for split, rows in (("train", train), ("test", test)):
        for n, i in enumerate(sorted(rows)):
            folder = args.out / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(pixels[i], mode="L").resize((args.size, args.size))
            image.save(folder / f"{n:04d}.png")
    print(f"wrote {args.out}: {len(train)} training and {len(test)} test images, "
          f"{args.size}x{args.size} grayscale")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
