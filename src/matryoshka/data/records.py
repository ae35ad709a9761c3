"""A user's own text files: rows from JSONL, CSV, TSV, Parquet or plain text, with named columns.

:func:`read_records` turns any of these into a list of dicts (one per row, with the row's line
number for messages); :func:`load_pairs` reads training pairs (anchor, positive, and an optional
hard negative) from named columns; :func:`load_texts` reads a corpus to embed (a text column, an
optional id column, every other column kept as metadata). A mistake names the file, the line and
the columns found.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matryoshka._io import read_json_lines
from matryoshka._optional import require

__all__ = ["TEXT_FORMATS", "Texts", "load_pairs", "load_texts", "read_records"]

TEXT_FORMATS = (".jsonl", ".csv", ".tsv", ".parquet", ".txt")


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    return list(read_json_lines(path))


def _delimited(path: Path, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise ValueError(f"{path} has no header line naming its columns")
        return [(reader.line_num, dict(row)) for row in reader]


def _parquet(path: Path) -> list[tuple[int, dict[str, Any]]]:
    pq = require("pyarrow.parquet", "reading Parquet", "index")
    return [(i + 1, row) for i, row in enumerate(pq.read_table(path).to_pylist())]


def read_records(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for every row of a JSONL, CSV, TSV, Parquet or ``.txt`` file.

    A ``.txt`` file is one text a line, as rows ``{"text": line}``; blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl(path)
    if suffix in (".csv", ".tsv"):
        return _delimited(path, "," if suffix == ".csv" else "\t")
    if suffix == ".parquet":
        return _parquet(path)
    if suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [(n, {"text": t}) for n, t in enumerate(lines, start=1) if t.strip()]
    raise ValueError(f"{path}: unknown format {suffix!r}; read are {', '.join(TEXT_FORMATS)}")


def _text(row: dict[str, Any], column: str, path: Path, n: int) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        found = ", ".join(sorted(map(str, row))) or "none"
        raise ValueError(
            f"{path}, line {n}: no text in column {column!r} (columns: {found}); name the "
            "column in the config or with a --*-column flag"
        )
    return value


def load_pairs(
    path: str | os.PathLike,
    anchor: str = "anchor",
    positive: str = "positive",
    negative: str | None = None,
) -> list[tuple[str, ...]]:
    """Training pairs ``(anchor, positive)``, or triples with a hard ``negative``, from a file.

    Parameters
    ----------
    path : a file of :data:`TEXT_FORMATS` (not ``.txt``)
    anchor, positive : column names of the query and its relevant text
    negative : column name of a hard negative (a text close to the anchor but not relevant)

    Returns
    -------
    list of 2- or 3-tuples of str, in file order
    """
    path = Path(path)
    columns = [c for c in (anchor, positive, negative) if c is not None]
    out = [
        tuple(_text(row, c, path, n) for c in columns) for n, row in read_records(path)
    ]  # fmt: skip
    if not out:
        raise ValueError(f"{path} holds no pairs")
    return out


@dataclass
class Texts:
    """A corpus to embed: its texts, their ids and every other column of each row.

    Attributes
    ----------
    ids : list of str, one per text (the id column, or the line number)
    texts : list of str
    meta : list of dict, each row's other columns (labels, dates, ...), kept as they were
    """

    ids: list[str]
    texts: list[str]
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def load_texts(
    path: str | os.PathLike,
    text: str = "text",
    id_column: str | None = None,
    title: str | None = None,
) -> Texts:
    """A corpus from a file of :data:`TEXT_FORMATS`: the ``text`` column (``title`` put in front
    when given, as BEIR does), ids from ``id_column`` (default: ``_id`` or ``id`` when present,
    else the line number); duplicate ids are an error."""
    path = Path(path)
    ids, texts, meta, seen = [], [], [], set()
    for n, row in read_records(path):
        body = _text(row, text, path, n)
        head = str(row.get(title) or "").strip() if title else ""
        key = id_column or next((k for k in ("_id", "id") if k in row), None)
        doc_id = str(row[key]) if key is not None and row.get(key) not in (None, "") else str(n)
        if key is not None and key not in row:
            raise ValueError(f"{path}, line {n}: no id column {key!r}")
        if doc_id in seen:
            raise ValueError(f"{path}, line {n}: duplicate id {doc_id!r}")
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(f"{head} {body.strip()}" if head else body)
        meta.append({k: v for k, v in row.items() if k not in (text, title, key)})
    if not texts:
        raise ValueError(f"{path} holds no texts")
    return Texts(ids, texts, meta)
