"""Storage planner: which size and precision to store for ``n`` vectors in a memory budget.

Bytes count the stored codes only, in decimal units (``100GB`` is ``100e9`` bytes): ``m * 4`` per
vector at float32, ``m * 2`` at float16, ``m`` at int8, ``m / 8`` at binary. Ids add nothing while
they are ``0..N-1`` (the index keeps them implicit) and 8 bytes per vector otherwise. So 50 million
vectors in 100 GB leave 2,000 bytes each: float32 up to size 500, float16 1,000, int8 2,000.

Given embeddings and queries, each row also gets its recall@k against exact full-size float32
search, measured on a sample, and the recommendation is the fitting row with the best recall.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from matryoshka._runtime import progress_bar
from matryoshka.dims import nesting_dims, validate_dims
from matryoshka.index.core import MatryoshkaIndex
from matryoshka.index.exact import exact_search
from matryoshka.index.metrics import recall_at_k
from matryoshka.index.storage import PRECISIONS, bytes_per_vector

__all__ = ["parse_bytes", "plan_storage"]

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_BITS = {"float32": 32, "float16": 16, "int8": 8, "binary": 1}


def parse_bytes(text: str | float | int) -> int:
    """``"100GB"`` -> ``100_000_000_000`` (decimal KB/MB/GB/TB; binary KiB/MiB/GiB/TiB)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        mt = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if mt is None or mt.group(2).upper() not in _UNITS:
            raise ValueError(
                f"budget must be a number of bytes with an optional unit such as 100GB, 512MiB; "
                f"got {text!r}"
            )
        value = float(mt.group(1)) * _UNITS[mt.group(2).upper()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget must be positive, got {text!r}")
    return int(value)


def _recalls(
    embeddings: np.ndarray,
    queries: np.ndarray,
    sizes: Sequence[int],
    precisions: Sequence[str],
    metric: str,
    k: int,
    sample: int,
    seed: int,
    progress: bool = False,
) -> dict[tuple[int, str], float]:
    """recall@k of every (size, precision) against exact full-size float32 search on a sample."""
    rng = np.random.default_rng(seed)
    xb = embeddings
    if len(xb) > sample:
        xb = xb[np.sort(rng.choice(len(xb), sample, replace=False))]
    xb = np.asarray(xb, dtype=np.float32)
    xq = np.asarray(queries[: min(len(queries), 1000)], dtype=np.float32)
    _, gt = exact_search(xq, xb, k, metric)  # (nq, k) the reference
    out = {}
    with progress_bar(total=len(precisions) * len(sizes), desc="recall",
                      disable=not progress) as bar:  # fmt: skip
        for prec in precisions:
            index = MatryoshkaIndex(xb.shape[1], metric, prec).add(xb)
            for m in sizes:
                _, ids = index.search(xq, k, dim=m)
                out[(m, prec)] = recall_at_k(ids, gt, k)
                bar.update(1)
    return out


def _check_sample(
    d: int | None, embeddings: np.ndarray | None, queries: np.ndarray | None
) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """``d``, the embeddings (N, d) and the queries (nq, d) as arrays, checked against each other.

    ``d`` defaults to the embeddings' width, else 2048.
    """
    if (embeddings is None) != (queries is None):
        raise ValueError("give both embeddings and queries to measure recall, or neither")
    if embeddings is not None:
        embeddings, queries = np.asarray(embeddings), np.asarray(queries)
        if embeddings.ndim != 2 or queries.ndim != 2 or embeddings.shape[1] != queries.shape[1]:
            raise ValueError(
                f"embeddings and queries must be (N, d) and (nq, d), got {embeddings.shape} "
                f"and {queries.shape}"
            )
        if d is not None and d != embeddings.shape[1]:
            raise ValueError(f"d={d} but the embeddings have {embeddings.shape[1]} columns")
        if not len(embeddings) or not len(queries):
            raise ValueError("give at least one embedding and one query to measure recall")
        d = embeddings.shape[1]
    return (2048 if d is None else int(d)), embeddings, queries


def _engine_bytes(engine: str, prefix_sizes: Sequence[int], d: int) -> Any:
    """``(m, precision) -> bytes`` a vector takes in ``engine`` when cut to size ``m``: its
    float32 vector, a float32 copy of each prefix size below ``m``, id, graph links."""
    from matryoshka.index.engines import engine_class

    if len(prefix_sizes):
        validate_dims(prefix_sizes, d, "prefix_sizes")

    cls = engine_class(engine)
    return lambda m, p: cls.bytes_per_vector(m, [s for s in prefix_sizes if s < m])["total"]


def _rows(
    n: int,
    budget_bytes: int,
    precisions: Sequence[str],
    sizes: Sequence[int],
    recalls: dict[tuple[int, str], float],
    size_of: Any = bytes_per_vector,
) -> list[dict[str, Any]]:
    """One row per (precision, size): bytes per vector, total bytes, fits, measured recall."""
    rows = []
    for p in precisions:
        for m in sizes:
            bpv = size_of(m, p)
            total = math.ceil(n * bpv)
            rows.append(
                {
                    "dim": m,
                    "precision": p,
                    "bytes_per_vector": bpv,
                    "bytes": total,
                    "fits": total <= budget_bytes,
                    "recall": recalls.get((m, p)),
                }
            )
    return rows


def _recommend(
    rows: list[dict[str, Any]], measured: bool, k: int
) -> tuple[dict[str, Any] | None, str]:
    """The recommended row among those that fit (None if none does) and the rule that chose it."""
    fitting = [r for r in rows if r["fits"]]
    if measured:
        rule = f"highest measured recall@{k} that fits, then fewest bytes"
        return max(fitting, key=lambda r: (r["recall"], -r["bytes"]), default=None), rule
    rule = (
        "without measurements: the most dimensions at int8 or better, then the higher "
        "precision; pass embeddings and queries to choose by measured recall"
    )
    cands = [r for r in fitting if r["precision"] != "binary"] or fitting
    return max(cands, key=lambda r: (r["dim"], _BITS[r["precision"]]), default=None), rule


def _largest_fit(
    n: int, d: int, budget_bytes: int, precisions: Sequence[str], size_of: Any
) -> dict[str, int | None]:
    """precision -> the largest size whose ``n`` vectors fit, None if not even size 1 does."""
    largest = {}
    for p in precisions:
        m = min(d, int(budget_bytes * 8 // (n * _BITS[p])))
        while m >= 1 and n * size_of(m, p) > budget_bytes:  # an engine's extra bytes
            m -= 1
        largest[p] = m if m >= 1 else None
    return largest


def plan_storage(
    n: int,
    budget: str | float | int,
    d: int | None = None,
    dims: Sequence[int] | None = None,
    precisions: Sequence[str] = PRECISIONS,
    embeddings: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    metric: str = "cosine",
    k: int = 10,
    sample: int = 100_000,
    seed: int = 0,
    progress: bool = False,
    engine: str | None = None,
    prefix_sizes: Sequence[int] = (),
) -> dict[str, Any]:
    """Sizes x precisions with their bytes for ``n`` vectors, and the best row that fits.

    Parameters
    ----------
    n : int
        Number of vectors to store.
    budget : str or number
        Memory budget, e.g. ``"100GB"`` (decimal) or ``"64GiB"`` or a number of bytes.
    d : int, optional
        Full embedding size; default the embeddings' width, else 2048.
    dims : list of int, optional
        Sizes to list; default ``nesting_dims(d)``. The largest size that fits at each
        precision is always added.
    precisions : list of str
        Among ``float32``, ``float16``, ``int8``, ``binary``.
    embeddings : ndarray of shape (N, d), optional
        A sample of the corpus; with ``queries``, every row gets its measured recall@k.
    queries : ndarray of shape (nq, d), optional
        Held-out queries (at most 1,000 are used).
    metric : {"cosine", "ip", "l2"}
    k : int, default 10
    sample : int, default 100000
        At most this many embeddings are searched for the recall measurement.
    progress : bool, default False
        Show a progress bar while measuring.
    engine : {"qdrant", "milvus", "pgvector"}, optional
        Count what that vector engine stores instead of :class:`MatryoshkaIndex`: float32
        vectors cut to each row's size, plus a float32 copy of every ``prefix_sizes`` entry
        below it (the funnel's first stages), ids and the engine's graph (each back end's
        ``bytes_per_vector`` says how). Rows are then float32 only.
    prefix_sizes : list of int
        With ``engine``: the prefix sizes stored beside the full vector.

    Returns
    -------
    dict
        ``{"n", "budget_bytes", "d", "rows": [{"dim", "precision", "bytes_per_vector", "bytes",
        "fits", "recall"}], "largest_fit": {precision: dim}, "recommended": row or None,
        "rule": str, "engine", "prefix_sizes"}``; ``recall`` is None without measurements.
    """
    for name, v in (("n", n), ("k", k), ("sample", sample), ("d", 1 if d is None else d)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")
    budget_bytes = parse_bytes(budget)
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precisions must be among {PRECISIONS}, got {p!r}")
    d, embeddings, queries = _check_sample(d, embeddings, queries)
    sizes = list(nesting_dims(d) if dims is None else validate_dims(dims, d))
    size_of = bytes_per_vector
    if engine is not None:  # what the engine stores: float32 rows and the prefix copies
        precisions, size_of = ("float32",), _engine_bytes(engine, prefix_sizes, d)
    largest = _largest_fit(n, d, budget_bytes, precisions, size_of)
    all_sizes = sorted(set(sizes) | {m for m in largest.values() if m})
    recalls = {}
    if embeddings is not None:
        recalls = _recalls(
            embeddings, queries, all_sizes, precisions, metric, k, sample, seed, progress
        )
    rows = _rows(n, budget_bytes, precisions, all_sizes, recalls, size_of)
    best, rule = _recommend(rows, bool(recalls), k)
    return {"n": int(n), "budget_bytes": budget_bytes, "d": d, "metric": metric, "k": k,
            "rows": rows, "largest_fit": largest, "recommended": best, "rule": rule,
            "engine": engine, "prefix_sizes": sorted(prefix_sizes) if engine else []}  # fmt: skip
