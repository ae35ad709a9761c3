"""What the server does, apart from HTTP: embeddings at any size, search at any size or funnel.

:class:`Service` holds the text model and/or the index (with its payload), checks each request
(:mod:`matryoshka.serve.requests`), encodes through the model's batching thread, searches and
writes the JSON answer on a worker thread, so the event loop only moves bytes. Answers are
returned as encoded JSON; their shapes are documented on each method and in
:mod:`matryoshka.serve`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from matryoshka import __version__
from matryoshka.dims import nesting_dims, truncate
from matryoshka.index import bytes_per_vector
from matryoshka.serve.encoder import TextModel
from matryoshka.serve.indexes import IndexHolder, Payload, Snapshot
from matryoshka.serve.limits import Limits, RequestError
from matryoshka.serve.requests import SearchRequest, parse_embeddings, parse_search

__all__ = ["Service", "bytes_per_query", "dumps", "run_search"]


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (NaN refused: answers hold only finite numbers)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def bytes_per_query(snap: Snapshot, stages: list[tuple[int, int]]) -> int:
    """Bytes of stored rows one query reads: every row at the first stage's size, then each
    later stage's shortlist at its size (the float rerank copy for the last, when there is one)."""
    index = snap.index
    n = len(index)
    total = n * bytes_per_vector(stages[0][0], index.precision)
    kept = min(stages[0][1], n)
    for i, (m, k) in enumerate(stages[1:], start=2):
        precision = index.rerank if i == len(stages) and index.rerank else index.precision
        total += kept * bytes_per_vector(m, precision)
        kept = min(k, kept)
    return int(math.ceil(total))


def _results(
    snap: Snapshot, payload: Payload | None, D: np.ndarray, I: np.ndarray, with_payload: bool
) -> list[dict[str, Any]]:
    keep = I >= 0
    D, I = D[keep], I[keep]  # noqa: E741
    rows = snap.rows_of(I)
    names = snap.index.names_of(I) if snap.index.names is not None else [None] * len(I)
    out = []
    for score, i, row, name in zip(D.tolist(), I.tolist(), rows.tolist(), names):
        record = payload.get(row, name) if payload is not None and with_payload else None
        score = score if math.isfinite(score) else None
        out.append({"row": row, "id": i, "name": name, "score": score, "payload": record})
    return out


def run_search(
    snap: Snapshot, payload: Payload | None, xq: np.ndarray, req: SearchRequest,
    encode_ms: float | None = None,
) -> bytes:  # fmt: skip
    """Search one query (``xq`` (1, d)) and write the ``/search`` answer (see :class:`Service`)."""
    index, stage_s = snap.index, []
    t0 = time.perf_counter()
    if req.funnel is not None:
        D, I = index.search(xq, funnel=req.funnel, timings=stage_s)  # noqa: E741
        stages = req.funnel
    else:
        D, I = index.search(xq, req.k, dim=req.dim)  # noqa: E741
        stages = [(int(req.dim), req.k)]
    timings: dict[str, Any] = {"encode": encode_ms, "search": _ms(time.perf_counter() - t0)}
    answer: dict[str, Any] = {"results": _results(snap, payload, D[0], I[0], req.payload),
                              "k": req.k}  # fmt: skip
    if req.funnel is not None:
        answer["funnel"] = [[m, k] for m, k in req.funnel]
        timings["stages"] = [_ms(s) for s in stage_s]
    else:
        answer["dim"] = req.dim
    if req.overlap:
        t1 = time.perf_counter()
        _, E = index.search(xq, req.k, dim=index.d)
        exact = {int(i) for i in E[0] if i >= 0}
        found = {int(i) for i in I[0] if i >= 0}
        answer["overlap"] = len(found & exact) / len(exact) if exact else 1.0
        timings["overlap"] = _ms(time.perf_counter() - t1)
    answer["timings_ms"] = timings
    answer["bytes_per_query"] = bytes_per_query(snap, stages)
    answer["index_generation"] = snap.generation
    return dumps(answer)


def _embeddings_answer(
    X: np.ndarray, tokens: list[int], dimensions: int, fmt: str, name: str
) -> bytes:
    """OpenAI's ``/v1/embeddings`` answer: rows of ``X`` cut to ``dimensions``, renormalised."""
    Z = np.ascontiguousarray(truncate(X, dimensions, normalize=True), dtype="<f4")
    if fmt == "base64":
        vectors = [base64.b64encode(z.tobytes()).decode("ascii") for z in Z]
    else:
        vectors = Z.tolist()
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    used = int(sum(tokens))
    return dumps({"object": "list", "data": data, "model": name,
                  "usage": {"prompt_tokens": used, "total_tokens": used}})  # fmt: skip


class Service:
    """The model and/or index a server holds, and the answer to each route.

    Parameters
    ----------
    model : the text model, or None (search by vector only)
    index : the index holder, or None (embeddings only)
    payload : each row's record, or None
    limits : what a request may ask
    workers : threads that search and write answers
    threads : torch's CPU threads (recorded for ``/api/info``; set by the caller)
    auth : whether an API key guards the routes (shown in ``/api/info``)
    """

    def __init__(
        self,
        model: TextModel | None,
        index: IndexHolder | None,
        payload: Payload | None = None,
        limits: Limits | None = None,
        workers: int = 2,
        threads: int | None = None,
        auth: bool = False,
    ) -> None:
        if model is None and index is None:
            raise ValueError("serve a text model, an index, or both")
        self.model, self.index, self.payload = model, index, payload
        self.limits = limits or Limits()
        self.workers, self.threads, self.auth = int(workers), threads, auth
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="matryoshka")
        self.started = time.time()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    def _need_model(self, field: str) -> TextModel:
        if self.model is None:
            raise RequestError("this server holds no text model (start it with --model)", field,
                               404, code="model_not_found")  # fmt: skip
        return self.model

    def check_model_name(self, given: Any) -> None:
        """Refuse a ``model`` field that is not the served model's id (absent is fine)."""
        model = self._need_model("model")
        if given is None or given == model.name:
            return
        if not isinstance(given, str):
            raise RequestError(f"model must be a string, got {type(given).__name__}", "model")
        raise RequestError(f"the model {given[:100]!r} does not exist; this server serves "
                           f"{model.name!r}", "model", 404, code="model_not_found")  # fmt: skip

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """``POST /v1/embeddings``: OpenAI's answer ``{"object": "list", "data": [{"object":
        "embedding", "index": i, "embedding": [floats] or base64}], "model", "usage":
        {"prompt_tokens", "total_tokens"}}``, each vector cut to ``dimensions`` and unit length."""
        model = self._need_model("model")
        self.check_model_name(body.get("model"))
        req = parse_embeddings(body, self.limits, model.d)
        X, tokens = await asyncio.wrap_future(model.encoder.submit(req.texts, count_tokens=True))
        return await self._run(_embeddings_answer, X, tokens, req.dimensions,
                               req.encoding_format, model.name)  # fmt: skip

    async def search(self, body: dict[str, Any]) -> bytes:
        """``POST /search``; the answer's shape is in :mod:`matryoshka.serve`."""
        if self.index is None:
            raise RequestError("this server holds no index (start it with --index)", None, 404)
        snap = self.index.current  # this request's version, to its end
        req = parse_search(body, self.limits, snap.index.d, self.model is not None)
        encode_ms = None
        if req.query is not None:
            model = self._need_model("query")
            t0 = time.perf_counter()
            text = (model.query_prompt or "") + req.query
            xq, _ = await asyncio.wrap_future(model.encoder.submit([text]))
            encode_ms = _ms(time.perf_counter() - t0)
        else:
            xq = req.vector[None, :]
        return await self._run(run_search, snap, self.payload, xq, req, encode_ms)

    def sizes(self) -> list[int]:
        """Every size offered: 8, 16, ... up to d, and the model's trained sizes."""
        d = self.model.d if self.model is not None else self.index.current.index.d
        trained = self.model.dims if self.model is not None else []
        return sorted(set(nesting_dims(d)) | set(trained))

    def model_card(self) -> dict[str, Any]:
        """The served model as ``/v1/models`` lists it (OpenAI's shape, plus its sizes)."""
        model = self._need_model("model")
        return {"id": model.name, "object": "model", "created": model.created,
                "owned_by": "matryoshka", "dimensions": model.d,
                "matryoshka_dimensions": model.dims, "sizes": self.sizes()}  # fmt: skip

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: ``{"object": "list", "data": [model card]}``."""
        return {"object": "list", "data": [self.model_card()] if self.model else []}

    def info(self) -> dict[str, Any]:
        """``GET /api/info``: what is served, every size offered, the limits."""
        model, snap = self.model, self.index.current if self.index is not None else None
        index = snap.index if snap is not None else None
        return {
            "service": "matryoshka", "version": __version__,
            "model_loaded": model is not None, "index_loaded": index is not None,
            "model_name": model.name if model else None,
            "d": model.d if model else index.d,
            "dims": model.dims if model else None,
            "sizes": self.sizes(),
            "count": len(index) if index is not None else None,
            "precision": index.precision if index is not None else None,
            "metric": index.metric if index is not None else None,
            "model": None if model is None else {
                "name": model.name, "d": model.d, "dims": model.dims,
                "max_seq_length": model.model.get_max_seq_length(),
                "query_prompt": model.query_prompt,
            },
            "index": None if snap is None else self._index_info(snap),
            "payload": None if self.payload is None else {"count": len(self.payload)},
            "limits": self.limits.as_dict(),
            "auth": self.auth, "threads": self.threads, "workers": self.workers,
        }  # fmt: skip

    def _index_info(self, snap: Snapshot) -> dict[str, Any]:
        index, holder = snap.index, self.index
        return {"d": index.d, "count": len(index), "precision": index.precision,
                "metric": index.metric, "rerank": index.rerank, "transform": index.transform,
                "names": index.names is not None, "generation": snap.generation,
                "checksum": snap.checksum, "loaded_at": snap.loaded_at,
                "reloads": holder.reloads, "reload_failures": holder.failures,
                "last_reload_error": holder.last_error}  # fmt: skip

    def health(self) -> dict[str, Any]:
        """``GET /health``: ``{"status": "ok", "model_loaded", "index_loaded",
        "index_generation"}``."""
        generation = self.index.current.generation if self.index is not None else None
        return {"status": "ok", "model_loaded": self.model is not None,
                "index_loaded": self.index is not None, "index_generation": generation}  # fmt: skip

    def close(self) -> None:
        """Stop the encoder thread, the index watcher and the workers."""
        if self.model is not None:
            self.model.encoder.close()
        if self.index is not None:
            self.index.stop()
        self.pool.shutdown(wait=False)
