"""Text data from a local path: BEIR-layout retrieval sets, STS Benchmark, a corpus as JSONL.

BEIR layout (https://github.com/beir-cellar/beir), e.g. SciFact::

    corpus.jsonl        {"_id": "4983", "title": "...", "text": "..."} one document a line
    queries.jsonl       {"_id": "0", "text": "..."} one query a line
    qrels/test.tsv      query-id <TAB> corpus-id <TAB> score, after a header line

STS Benchmark (``sts-{train,dev,test}.csv``): tab-separated genre, file, year, id, score (0 to 5),
sentence1, sentence2, sometimes followed by source columns that are ignored. Sentences hold bare
quotes, so lines are split on tabs, never parsed as quoted CSV.

Relevance judgements are ``{query_id: {doc_id: relevance}}``, the shape ``eval.retrieval`` reads.
Imports nothing else of the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import read_json_lines

__all__ = [
    "BeirDataset",
    "StsPairs",
    "beir_train_pairs",
    "doc_text",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "load_stsb",
    "title_text_pairs",
]


@dataclass
class BeirDataset:
    """One split of a BEIR-layout retrieval set.

    Attributes
    ----------
    corpus : dict of doc id -> {"title": str, "text": str}, in file order
    queries : dict of query id -> str
        Only the queries judged in this split, in ``queries.jsonl`` order.
    qrels : dict of query id -> dict of doc id -> int relevance
    split : str
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus order: row ``i`` of the corpus embeddings is ``doc_ids[i]``."""
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def doc_texts(self) -> list[str]:
        """Each document as ``"title text"`` (:func:`doc_text`), in corpus order."""
        return [doc_text(d) for d in self.corpus.values()]

    def query_texts(self) -> list[str]:
        return list(self.queries.values())


@dataclass
class StsPairs:
    """Sentence pairs with gold similarity scores.

    Attributes
    ----------
    sentences1, sentences2 : list of str, length n
    scores : ndarray of shape (n,), float32, 0 (unrelated) to 5 (same meaning)
    genres : list of str, length n
    """

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    genres: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)


def doc_text(doc: Mapping[str, str]) -> str:
    """A document as one string, ``"title text"`` (just the text when the title is empty)."""
    title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
    return f"{title} {text}" if title else text


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a bad line raises with its number."""
    return read_json_lines(path)


def _get_id(obj: dict[str, Any], path: Path, n: int) -> str:
    for key in ("_id", "id"):
        if key in obj and obj[key] is not None and str(obj[key]) != "":
            return str(obj[key])
    raise ValueError(f"{path}, line {n}: no '_id' (or 'id') field; keys are {sorted(obj)}")


def load_corpus(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """A corpus in JSONL: one ``{"_id", "title"?, "text"}`` object a line (``id`` also accepted).

    Works for a BEIR ``corpus.jsonl`` and for a user's own documents; any other field of a line
    (a label, a date) is kept in the document's dict beside ``title`` and ``text``.

    Returns
    -------
    dict of doc id -> {"title": str, "text": str, other fields...}, in file order
    """
    path = _need_file(Path(path), "corpus file")
    corpus: dict[str, dict[str, str]] = {}
    for n, obj in _jsonl(path):
        doc_id = _get_id(obj, path, n)
        if doc_id in corpus:
            raise ValueError(f"{path}, line {n}: duplicate document id {doc_id!r}")
        if not isinstance(obj.get("text"), str):
            raise ValueError(f"{path}, line {n}: document {doc_id!r} has no string 'text' field")
        title = obj.get("title") or ""
        extra = {k: v for k, v in obj.items() if k not in ("_id", "id", "title", "text")}
        corpus[doc_id] = {"title": str(title), "text": obj["text"], **extra}  # extras kept
    if not corpus:
        raise ValueError(f"{path} holds no documents")
    return corpus


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    """Queries in JSONL, one ``{"_id", "text"}`` object a line: dict of query id -> text."""
    path = _need_file(Path(path), "queries file")
    queries: dict[str, str] = {}
    for n, obj in _jsonl(path):
        qid = _get_id(obj, path, n)
        if not isinstance(obj.get("text"), str):
            raise ValueError(f"{path}, line {n}: query {qid!r} has no string 'text' field")
        queries[qid] = obj["text"]
    return queries


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Relevance judgements from a BEIR ``qrels/*.tsv`` (query-id, corpus-id, score).

    A first line whose score column is not an integer is taken as the header.

    Returns
    -------
    dict of query id -> dict of doc id -> int relevance
    """
    path = _need_file(Path(path), "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                raise ValueError(
                    f"{path}, line {n}: expected 3 tab-separated columns "
                    f"(query-id, corpus-id, score), got {len(parts)}"
                )
            try:
                score = int(parts[2])
            except ValueError:
                if n == 1:  # the header line
                    continue
                raise ValueError(
                    f"{path}, line {n}: score {parts[2]!r} is not an integer"
                ) from None
            qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels


def load_beir(path: str | os.PathLike, split: str = "test") -> BeirDataset:
    """Load one split of a BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/``).

    Queries are restricted to those judged in ``split`` (as BEIR's loader does). Judgements that
    name a query or a document missing from the files raise ``ValueError``.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR folder not found: {root}")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"no qrels for split {split!r} at {qrels_path}; splits: {have}")
    corpus = load_corpus(root / "corpus.jsonl")
    all_queries = load_queries(root / "queries.jsonl")
    qrels = load_qrels(qrels_path)
    missing_q = [q for q in qrels if q not in all_queries]
    if missing_q:
        raise ValueError(
            f"{qrels_path}: {len(missing_q)} judged queries are not in queries.jsonl, "
            f"e.g. {missing_q[:3]}"
        )
    missing_d = sorted({d for docs in qrels.values() for d in docs if d not in corpus})
    if missing_d:
        raise ValueError(
            f"{qrels_path}: {len(missing_d)} judged documents are not in corpus.jsonl, "
            f"e.g. {missing_d[:3]}"
        )
    queries = {q: t for q, t in all_queries.items() if q in qrels}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, split=split)


def beir_train_pairs(
    data: BeirDataset | str | os.PathLike, split: str = "train"
) -> list[tuple[str, str]]:
    """(query text, relevant document as ``"title text"``) for every positive judgement.

    Parameters
    ----------
    data : BeirDataset or path of a BEIR folder (then ``split`` is loaded)

    Returns
    -------
    list of (anchor, positive) str pairs, in qrels order (SciFact train: 919 pairs)
    """
    ds = data if isinstance(data, BeirDataset) else load_beir(data, split)
    return [
        (ds.queries[q], doc_text(ds.corpus[doc]))
        for q, docs in ds.qrels.items()
        for doc, rel in docs.items()
        if rel > 0
    ]


def title_text_pairs(corpus: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str]]:
    """Free training pairs from a corpus itself: (title, text) of every document with both."""
    return [
        (d["title"].strip(), d["text"].strip())
        for d in corpus.values()
        if d.get("title", "").strip() and d.get("text", "").strip()
    ]


def load_stsb(path: str | os.PathLike, split: str = "test") -> StsPairs:
    """STS Benchmark pairs from ``path/sts-{split}.csv`` (or ``path`` itself when it is a file).

    Returns
    -------
    StsPairs with n pairs (test: 1,379)
    """
    path = Path(path)
    file = path if path.is_file() else path / f"sts-{split}.csv"
    _need_file(file, f"STS-B {split} file")
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    genres: list[str] = []
    with open(file, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")  # no quote handling: sentences hold bare "
            if len(parts) < 7:
                raise ValueError(
                    f"{file}, line {n}: expected at least 7 tab-separated columns (genre, file, "
                    f"year, id, score, sentence1, sentence2), got {len(parts)}"
                )
            try:
                score = float(parts[4])
            except ValueError:
                raise ValueError(f"{file}, line {n}: score {parts[4]!r} is not a number") from None
            genres.append(parts[0])
            scores.append(score)
            s1.append(parts[5])
            s2.append(parts[6])
    if not scores:
        raise ValueError(f"{file} holds no sentence pairs")
    return StsPairs(s1, s2, np.asarray(scores, dtype=np.float32), genres)
