"""Reading request bodies: strict about types and ranges, lenient about fields it does not know.

Each parser takes the decoded JSON object and returns a typed request, or raises
:class:`~matryoshka.serve.limits.RequestError` naming the field. Nothing here touches a file: no
path ever comes from a client. ``true`` is not an integer, ``10.0`` is not an integer, ``NaN`` and
infinities are refused, and so is every value past a :class:`~matryoshka.serve.limits.Limits`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from matryoshka.index import FunnelError, check_funnel
from matryoshka.serve.limits import Limits, RequestError

__all__ = [
    "EmbeddingsRequest",
    "SearchRequest",
    "parse_body",
    "parse_embeddings",
    "parse_search",
]

ENCODINGS = ("float", "base64")
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A checked ``POST /v1/embeddings``: the texts, the size and how to write the vectors."""

    texts: list[str]
    dimensions: int
    encoding_format: str


@dataclass(frozen=True)
class SearchRequest:
    """A checked ``POST /search``: a text or a vector, and the size or funnel to search at."""

    query: str | None
    vector: np.ndarray | None  # (d,) float32
    k: int
    dim: int | None  # None with a funnel
    funnel: list[tuple[int, int]] | None
    overlap: bool
    payload: bool


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body (400 ``body`` when it is not one)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"the body is not valid JSON ({str(e)[:200]})", "body") from None
    if not isinstance(obj, dict):
        raise RequestError(f"the body must be a JSON object, got {_kind(obj)}", "body")
    return obj


def _kind(v: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}  # fmt: skip
    return names.get(type(v), type(v).__name__)


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int, why: str = "") -> int:
    """``body[key]`` as an integer in ``low..high`` (``default`` when absent or null)."""
    v = body.get(key)
    return default if v is None else _check_int(v, key, low, high, why)


def _check_int(v: Any, field: str, low: int, high: int, why: str = "", name: str = "") -> int:
    """``v`` when it is an integer in ``low..high``; the message calls it ``name`` (or field)."""
    name = name or field
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"{name} must be an integer, got {_kind(v)}", field)
    if not low <= v <= high:
        shown = str(v) if abs(v) < 10**30 else f"a {len(str(abs(v)))}-digit number"
        raise RequestError(f"{name} must be between {low} and {high}{why}, got {shown}", field)
    return v


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise RequestError(f"{key} must be true or false, got {_kind(v)}", key)
    return v


def _text(v: Any, field: str, limits: Limits) -> str:
    """A non-empty string of at most ``max_text_chars`` characters that UTF-8 can carry."""
    if not isinstance(v, str):
        raise RequestError(f"{field} must be a string, got {_kind(v)}", field)
    if not v.strip():
        raise RequestError(f"{field} is empty", field)
    if len(v) > limits.max_text_chars:
        raise RequestError(
            f"{field} has {len(v):,} characters; the limit is {limits.max_text_chars:,}", field
        )
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{field} holds a lone surrogate, which is not text", field) from None
    return v


def _inputs(v: Any, limits: Limits) -> list[str]:
    if v is None:
        raise RequestError("input is required: a string or an array of strings", "input")
    if isinstance(v, str):
        return [_text(v, "input", limits)]
    if not isinstance(v, list):
        raise RequestError(f"input must be a string or an array of strings, got {_kind(v)}",
                           "input")  # fmt: skip
    if not v:
        raise RequestError("input is an empty array; give at least one string", "input")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in v) or all(
        isinstance(t, list) for t in v
    ):
        raise RequestError(
            "input holds token ids; this server takes text only (a string or an array of strings)",
            "input",
        )
    if len(v) > limits.max_inputs:
        raise RequestError(
            f"input has {len(v):,} strings; the limit is {limits.max_inputs:,} a request",
            "input",
        )
    return [_text(t, f"input[{i}]", limits) for i, t in enumerate(v)]


def parse_embeddings(body: dict[str, Any], limits: Limits, d: int) -> EmbeddingsRequest:
    """Check an OpenAI embeddings request: ``input``, ``dimensions``, ``encoding_format``.

    ``model`` is checked by the caller (it knows the served names); ``user`` and any other
    field are ignored.
    """
    texts = _inputs(body.get("input"), limits)
    dims = _int(body, "dimensions", d, 1, d, why=" (the model's size d)")
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if not isinstance(fmt, str) or fmt not in ENCODINGS:
        raise RequestError(
            f"encoding_format must be 'float' or 'base64', got {fmt!r}", "encoding_format"
        )
    return EmbeddingsRequest(texts, int(dims), fmt)


def _vector(v: Any, d: int) -> np.ndarray:
    if not isinstance(v, list):
        raise RequestError(f"vector must be an array of {d} numbers, got {_kind(v)}", "vector")
    if len(v) != d:
        raise RequestError(f"vector has {len(v)} numbers; the index holds d={d}", "vector")
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise RequestError(f"vector[{i}] must be a number, got {_kind(x)}", f"vector[{i}]")
        if not math.isfinite(x) or abs(x) > _F32_MAX:
            raise RequestError(
                f"vector[{i}] is {x!r}; values must be finite float32 numbers", f"vector[{i}]"
            )
    return np.asarray(v, dtype=np.float32)


def _funnel(v: Any, d: int, limits: Limits) -> list[tuple[int, int]]:
    if not isinstance(v, list) or not v:
        raise RequestError(
            f"funnel must be a non-empty array of [dim, k] stages, got {_kind(v)}", "funnel"
        )
    if len(v) > limits.max_stages:
        raise RequestError(f"funnel has {len(v)} stages; the limit is {limits.max_stages}",
                           "funnel")  # fmt: skip
    stages: list[tuple[int, int]] = []
    for i, st in enumerate(v):
        field = f"funnel[{i}]"
        if not isinstance(st, list) or len(st) != 2:
            raise RequestError(f"{field} must be a [dim, k] pair, got {json.dumps(st)[:80]}",
                               field)  # fmt: skip
        m = _check_int(st[0], field, 1, d, " (the index's size d)", f"{field} dim")
        k = _check_int(st[1], field, 1, limits.max_shortlist, " (max_shortlist)", f"{field} k")
        stages.append((m, k))
    try:  # the index's own rules: sizes never decrease, shortlists never grow
        stages = check_funnel(stages, d)
    except FunnelError as e:
        raise RequestError(str(e), "funnel" if e.stage is None else f"funnel[{e.stage}]") from e
    if stages[-1][1] > limits.max_k:
        raise RequestError(
            f"the funnel's last stage returns {stages[-1][1]} results; the limit is {limits.max_k}",
            f"funnel[{len(stages) - 1}]",
        )
    return stages


def parse_search(body: dict[str, Any], limits: Limits, d: int, has_model: bool) -> SearchRequest:
    """Check a search request: ``query`` or ``vector``, ``k``, ``dim`` or ``funnel``, ``overlap``
    and ``payload``. ``d`` is the index's size; ``has_model`` whether a text query can be encoded.
    """
    query, vector = body.get("query"), body.get("vector")
    if (query is None) == (vector is None):
        raise RequestError("give either query (a text) or vector (an array of numbers)",
                           "query" if query is None else "vector")  # fmt: skip
    vec = None
    if query is not None:
        query = _text(query, "query", limits)
        if not has_model:
            raise RequestError(
                "query needs a text model; this server holds none: send a vector", "query"
            )
    else:
        vec = _vector(vector, d)
    funnel, dim = body.get("funnel"), body.get("dim")
    if funnel is not None and dim is not None:
        raise RequestError("give either dim or funnel, not both", "funnel")
    if funnel is not None:
        stages = _funnel(funnel, d, limits)
        k = _int(body, "k", stages[-1][1], 1, limits.max_k)
        if k != stages[-1][1]:
            raise RequestError(
                f"k={k} differs from the funnel's last shortlist {stages[-1][1]}; the last "
                "stage's k is what is returned (leave k out)",
                "k",
            )
        m = None
    else:
        stages = None
        k = _int(body, "k", 10, 1, limits.max_k)
        m = _int(body, "dim", d, 1, d, why=" (the index's size d)")
    return SearchRequest(
        query, vec, int(k), m, stages, _bool(body, "overlap", False), _bool(body, "payload", True)
    )
