"""``matryoshka serve``: one process serving a text model and/or an index over HTTP.

Install with ``pip install 'matryoshka[serve]'`` (FastAPI, uvicorn, prometheus-client); none of
them loads at ``import matryoshka``. Only the command line imports this package.

Routes (JSON in and out; with an API key, every route but ``/health`` and the web page's files
needs the header ``Authorization: Bearer KEY``, else 401):

``GET /`` (with ``/static/app.js``, ``/static/style.css``)
    The web page: search at any size (a slider from 8 to d) or through a funnel, with latency,
    bytes read and overlap with the full size, and a map of the embedding space at the chosen
    size (``docs/serve.md``; :mod:`matryoshka.serve.page`).
``GET /api/map/points``, ``GET /api/map?size=M``
    The map's sampled rows (names, hover texts, colours) and their 2-D positions at size M,
    aligned across sizes (:mod:`matryoshka.serve.page`, :mod:`matryoshka.serve.maps`).

``POST /v1/embeddings`` (OpenAI's API)
    ``{"input": str | [str], "model"?: str, "dimensions"?: 1..d, "encoding_format"?: "float" |
    "base64", "user"?: ignored}`` -> ``{"object": "list", "data": [{"object": "embedding",
    "index": i, "embedding": [float] | base64 of little-endian float32}], "model": str,
    "usage": {"prompt_tokens": n, "total_tokens": n}}``. Each vector is the prefix of size
    ``dimensions`` (default d), renormalised to unit length; tokens are counted by the model's
    tokenizer. Token-id inputs are refused.
``GET /v1/models``, ``GET /v1/models/{id}``
    ``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by":
    "matryoshka", "dimensions": d, "matryoshka_dimensions": [trained sizes], "sizes": [offered
    sizes]}]}`` (``/v1/models/{id}``: the one card).
``POST /search``
    ``{"query": str}`` (encoded by the served model) or ``{"vector": [d numbers]}``, with
    ``"k"?: int`` (default 10) and ``"dim"?: 1..d`` (default d) or ``"funnel": [[m, k], ...]``
    (sizes not decreasing, shortlists not growing; ``k`` may be left out, else it must equal the
    last stage's), ``"overlap"?: bool``, ``"payload"?: bool`` (default true) ->
    ``{"results": [{"row": int, "id": int, "name": str | null, "score": float, "payload":
    object | null}], "k": int, "dim": int | "funnel": [[m, k], ...], "timings_ms": {"encode":
    float | null, "search": float, "stages": [float, ...] (funnel only), "overlap": float
    (with overlap)}, "bytes_per_query": int, "overlap": float (with overlap: the share of the
    exact full-size top k found), "index_generation": int}``.
``GET /api/info``
    What is served: ``model_name``, ``d``, ``dims`` (trained sizes), ``sizes`` (8, 16, ... d and
    the trained sizes), ``count``, ``precision``, ``metric``, ``model_loaded``, ``index_loaded``,
    and the objects ``model``, ``index`` (with ``generation``, ``checksum``, reload counts),
    ``payload``, ``limits``, plus ``auth``, ``threads``, ``workers``.
``GET /health``
    ``{"status": "ok", "model_loaded", "index_loaded", "index_generation"}``, without the key.
``GET /metrics``
    Prometheus' text format: requests by route, method and status; latency histograms by route.

Every refusal is a 4xx with ``{"error": {"message", "type", "field", "param", "code"}}`` naming
the field (:mod:`matryoshka.serve.limits`). The index is replaced on disk without a failed
request (:mod:`matryoshka.serve.indexes`).
"""

from matryoshka.serve.app import create_app
from matryoshka.serve.limits import Limits, RequestError
from matryoshka.serve.server import (
    ServeConfig,
    ServerThread,
    api_key_from_env,
    build_service,
    run_server,
)

__all__ = [
    "Limits",
    "RequestError",
    "ServeConfig",
    "ServerThread",
    "api_key_from_env",
    "build_service",
    "create_app",
    "run_server",
]
