"""A text model scored at every size on a user's retrieval data: ``matryoshka eval TEXT_MODEL``.

The corpus and the queries are encoded once at full size; every size (the model's trained sizes
and the ones in between) is scored from those two matrices with nDCG@10, recall@100 and MAP@100.
The data is a BEIR-layout folder or three files (corpus, queries, relevance judgements); with the
corpus as its own queries, ``exclude_self`` keeps a document from retrieving itself. The results
are written beside the model (``eval/results.json``, ``eval/report.md``) and into its card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matryoshka._io import write_text
from matryoshka.data import load_beir, load_qrels, load_texts
from matryoshka.data.records import Texts
from matryoshka.dims import interpolated_dims, nesting_dims, validate_dims
from matryoshka.eval import retrieval_per_size, save_results
from matryoshka.models.text import encode_texts, load_sentence_encoder
from matryoshka.train.cards import text_card
from matryoshka.viz import results_table

__all__ = ["RetrievalData", "evaluate_text_model", "load_retrieval_data"]


@dataclass
class RetrievalData:
    """What a retrieval evaluation needs: a corpus, queries and their relevance judgements."""

    corpus: Texts
    queries: Texts
    qrels: dict[str, dict[str, int]]
    source: str  # for the report: where it came from


def load_retrieval_data(
    beir: str | None = None,
    split: str = "test",
    corpus: str | None = None,
    queries: str | None = None,
    qrels: str | None = None,
) -> RetrievalData:
    """A BEIR-layout folder (``beir``, ``split``) or a user's three files; not both."""
    if beir is not None:
        if corpus or queries or qrels:
            raise ValueError("give a BEIR folder or --corpus/--queries/--qrels, not both")
        ds = load_beir(beir, split)
        docs = Texts(ds.doc_ids, ds.doc_texts(), [{} for _ in ds.doc_ids])
        return RetrievalData(docs, Texts(ds.query_ids, ds.query_texts()), ds.qrels,
                             f"{beir} ({split})")  # fmt: skip
    if not (corpus and queries and qrels):
        raise ValueError("give --beir PATH, or all three of --corpus, --queries and --qrels")
    docs = load_texts(corpus, title="title")
    return RetrievalData(docs, load_texts(queries), load_qrels(qrels), str(corpus))


def evaluate_text_model(
    model_path: str | Path,
    data: RetrievalData,
    dims: list[int] | None = None,
    exclude_self: bool = False,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    progress: bool = True,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Score a text model at every size; write ``results.json`` and ``report.md`` to ``out``
    (default ``MODEL/eval``) and put the scores in the model's card.

    Returns the result dict ``{"method": name, "dims": {m: {"ndcg@10": ...}}, "queries": n}``.
    """
    model_path = Path(model_path)
    meta_path = model_path / "matryoshka.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    model = load_sentence_encoder(model_path, progress=progress)
    d = model.get_embedding_dimension()
    trained = list(validate_dims(meta.get("dims") or nesting_dims(d, 16), d))
    sizes = sorted(set(trained) | set(interpolated_dims(trained)) | set(dims or []))
    sizes = list(validate_dims(sizes, d, "--dims"))
    enc = {"progress": progress}
    xb = encode_texts(model, data.corpus.texts, prompt=document_prompt, **enc)  # (N, d), once
    xq = encode_texts(model, data.queries.texts, prompt=query_prompt, **enc)  # (nq, d), once
    result = retrieval_per_size(xq, xb, data.queries.ids, data.corpus.ids, data.qrels, sizes,
                                model_path.name, exclude_self=exclude_self)  # fmt: skip
    table = results_table([result], metrics=("ndcg@10", "recall@100", "map@100"),
                          trained=trained)  # fmt: skip
    out = Path(out) if out is not None else model_path / "eval"
    save_results(out / "results.json", [result], trained=trained, sizes=sizes,
                 data=data.source, exclude_self=exclude_self)  # fmt: skip
    write_text(out / "report.md", f"# {model_path.name} on {data.source}\n\n{table}")
    if meta:  # a model of ours: its card shows the scores
        card = text_card(model_path.name, d, trained, meta, result["dims"], data.source)
        write_text(model_path / "README.md", card)
    return {**result, "table": table}
