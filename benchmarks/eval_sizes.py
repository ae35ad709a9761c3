"""Cost of evaluating a sentence encoder at six sizes against evaluating it at one.

Our evaluation encodes corpus and queries once at full size and scores every size from that one
matrix (renormalised prefixes). The baseline a sentence-transformers user writes loads the model
with ``truncate_dim=m`` and evaluates each size on its own, encoding everything again per size.
All three run side by side in one process on the same texts:

* ``one``: encode once + score one size (384);
* ``ours``: encode once + score six sizes (16 ... 384);
* ``per_size``: encode once per size + score that size (the baseline; timed on one size and the
  encoding multiplied by six, since each truncated encoding costs the same).

Prints one JSON line; the project's target is ``ratio_six_to_one <= 1.2``.

    python benchmarks/eval_sizes.py --data ../shared/data/scifact --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from matryoshka.data.text import load_beir
from matryoshka.eval.text import retrieval_per_size
from matryoshka.models.text import encode_texts, load_sentence_encoder

SIZES = (16, 32, 64, 128, 256, 384)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
    parser.add_argument("--data", type=Path, default=default, help="a BEIR folder (SciFact)")
    parser.add_argument("--model", default=None, help="encoder (default: packaged MiniLM)")
    parser.add_argument("--docs", type=int, default=None, help="corpus subset (default: all)")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    test = load_beir(args.data, "test")
    doc_ids, docs = test.doc_ids, test.doc_texts()
    if args.docs is not None:  # the judged documents stay, so every query has its answers
        judged = {d for rel in test.qrels.values() for d in rel}
        rng = np.random.default_rng(0)
        keep = [i for i, d in enumerate(doc_ids) if d in judged]
        rest = [i for i in rng.permutation(len(doc_ids)) if doc_ids[i] not in judged]
        keep = sorted(keep + rest[: max(0, args.docs - len(keep))])
        doc_ids, docs = [doc_ids[i] for i in keep], [docs[i] for i in keep]
    model = load_sentence_encoder(args.model, device="cpu", max_seq_length=args.max_seq_length)

    t0 = time.perf_counter()
    xb = encode_texts(model, docs, progress=False)  # (N, 384)
    xq = encode_texts(model, test.query_texts(), progress=False)  # (nq, 384)
    encode_s = time.perf_counter() - t0

    def score(sizes: tuple[int, ...]) -> tuple[float, dict]:
        start = time.perf_counter()
        res = retrieval_per_size(xq, xb, test.query_ids, doc_ids, test.qrels, sizes)
        return time.perf_counter() - start, res

    score1_s, one = score((SIZES[-1],))
    score6_s, six = score(SIZES)
    assert six["dims"][SIZES[-1]] == one["dims"][SIZES[-1]]  # the same numbers either way

    one_s = encode_s + score1_s
    ours_s = encode_s + score6_s
    per_size_s = len(SIZES) * encode_s + score6_s
    print(
        json.dumps(
            {
                "benchmark": "eval_sizes",
                "docs": len(docs),
                "queries": len(xq),
                "max_seq_length": args.max_seq_length,
                "encode_s": round(encode_s, 2),
                "score_one_size_s": round(score1_s, 3),
                "score_six_sizes_s": round(score6_s, 3),
                "one_size_s": round(one_s, 2),
                "six_sizes_s": round(ours_s, 2),
                "per_size_baseline_s": round(per_size_s, 2),
                "ratio_six_to_one": round(ours_s / one_s, 4),
                "baseline_ratio_six_to_one": round(per_size_s / one_s, 3),
                "ndcg@10": {m: round(v["ndcg@10"], 4) for m, v in six["dims"].items()},
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
