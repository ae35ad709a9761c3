"""Embeddings made by another tool, as a user's pipeline writes them: a Parquet file with an ``id``
column and an ``embedding`` list column, from sentence-transformers' own ``encode``.

    python examples/embed_with_sentence_transformers.py TEXTS.jsonl OUT.parquet [MODEL]

TEXTS.jsonl holds ``{"_id": ..., "text": ...}`` per line. MODEL is a sentence-transformers folder
or Hub name (default: the packaged all-MiniLM-L6-v2, offline).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in open(argv[0], encoding="utf-8") if line.strip()]
    if len(argv) == 3:
        name = argv[2]
    else:
        from matryoshka.models.text import minilm_path

        name = str(minilm_path())
    model = SentenceTransformer(name, device="cpu")
    vectors = model.encode([r["text"] for r in rows], batch_size=64)  # (n, d) float32
    table = pa.table({"id": [str(r["_id"]) for r in rows], "embedding": list(vectors)})
    Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, argv[1])
    print(f"wrote {argv[1]}: {len(rows)} rows, {vectors.shape[1]} dims")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
