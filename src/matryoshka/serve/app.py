"""The HTTP routes: a FastAPI application around a :class:`~matryoshka.serve.service.Service`.

Bodies are read here with a size limit (413 past ``max_body_bytes``, before the rest is read)
and decoded as JSON whatever the content type says; every refusal, an unknown route or method
included, is the JSON error shape of :mod:`matryoshka.serve.limits`, and an unexpected failure is
a 500 with the same shape and no traceback. FastAPI and its interactive docs pages are not
exposed (no ``/docs``, no ``/openapi.json``): the routes are listed in :mod:`matryoshka.serve`.
"""

# no ``from __future__ import annotations``: FastAPI reads the handlers' annotations at runtime,
# and ``fastapi.Request`` is imported inside create_app

import logging
from contextlib import asynccontextmanager
from typing import Any

from matryoshka._optional import require
from matryoshka.serve.limits import RequestError, error_body
from matryoshka.serve.maps import MapCache
from matryoshka.serve.metrics import Guard, Metrics
from matryoshka.serve.page import add_page
from matryoshka.serve.requests import parse_body
from matryoshka.serve.service import Service

__all__ = ["create_app"]

log = logging.getLogger("matryoshka.serve")


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 (field ``body``) past ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError(f"Content-Length {length[:40]!r} is not a number", "body")
        if int(length) > limit:
            raise RequestError(f"the body has {int(length):,} bytes; the limit is {limit:,}",
                               "body", 413)  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is over the limit of {limit:,} bytes", "body", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _gauges(service: Service) -> dict[str, tuple[str, Any]]:
    out: dict[str, tuple[str, Any]] = {}
    holder = service.index
    if holder is not None:
        out["matryoshka_index_rows"] = ("Rows of the served index",
                                        lambda: len(holder.current.index))  # fmt: skip
        out["matryoshka_index_generation"] = ("Versions of the index loaded since start",
                                              lambda: holder.current.generation)  # fmt: skip
        out["matryoshka_index_reload_failures"] = ("New index versions that failed to load",
                                                   lambda: holder.failures)  # fmt: skip
    if service.model is not None:
        enc = service.model.encoder
        out["matryoshka_encoder_batches"] = ("Encode calls (each batches waiting requests)",
                                             lambda: enc.batches)  # fmt: skip
        out["matryoshka_encoder_texts"] = ("Texts encoded", lambda: enc.texts)
    return out


def _add_error_handlers(app: Any) -> None:
    """Every refusal and failure as the JSON error shape (a 500 without its traceback)."""
    fastapi = require("fastapi", "matryoshka serve", "serve")
    JSONResponse = fastapi.responses.JSONResponse
    exceptions = require("starlette.exceptions", "matryoshka serve", "serve")

    @app.exception_handler(RequestError)
    async def refused(request: Any, e: RequestError) -> Any:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(exceptions.HTTPException)
    async def http_error(request: Any, e: Any) -> Any:
        return JSONResponse(error_body(str(e.detail)), status_code=e.status_code,
                            headers=getattr(e, "headers", None))  # fmt: skip

    @app.exception_handler(fastapi.exceptions.RequestValidationError)
    async def invalid(request: Any, e: Any) -> Any:
        first = (e.errors() or [{}])[0]
        field = ".".join(str(v) for v in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(str(first.get("msg", "invalid request")), field), 400)

    @app.exception_handler(Exception)
    async def failed(request: Any, e: Exception) -> Any:
        log.error("%s %s failed", request.method, request.url.path, exc_info=e)
        return JSONResponse(error_body("internal error", None, "server_error"), status_code=500)


def create_app(
    service: Service, api_key: str | None = None, close: bool = True, maps: MapCache | None = None
) -> Any:
    """The FastAPI application serving ``service``, with the web page at ``/``.

    Parameters
    ----------
    service : what is served
    api_key : the Bearer token every route but ``/health`` and the page's files requires (None:
        no key)
    close : stop the service's threads when the server shuts down
    maps : how the page's map is drawn (default: PCA of 2,000 rows, seed 0;
        :mod:`matryoshka.serve.maps`)
    """
    fastapi = require("fastapi", "matryoshka serve", "serve")
    responses = require("fastapi.responses", "matryoshka serve", "serve")
    JSONResponse, Response = responses.JSONResponse, responses.Response

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        if service.index is not None:
            service.index.start()
        yield
        map_pool.shutdown(wait=False, cancel_futures=True)
        if close:
            service.close()

    app = fastapi.FastAPI(title="matryoshka", docs_url=None, redoc_url=None, openapi_url=None,
                          lifespan=lifespan)  # fmt: skip
    metrics = Metrics(_gauges(service))
    app.state.service, app.state.metrics = service, metrics

    _add_error_handlers(app)
    map_pool = add_page(app, service, maps)

    async def body_of(request: Any) -> dict[str, Any]:
        return parse_body(await read_body(request, service.limits.max_body_bytes))

    def json_bytes(data: bytes) -> Any:
        return Response(content=data, media_type="application/json")

    @app.post("/v1/embeddings")
    async def embeddings(request: fastapi.Request) -> Any:
        return json_bytes(await service.embeddings(await body_of(request)))

    @app.post("/search")
    async def search(request: fastapi.Request) -> Any:
        return json_bytes(await service.search(await body_of(request)))

    @app.get("/v1/models")
    async def models() -> Any:
        return JSONResponse(service.models())

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Any:
        service.check_model_name(model_id)
        return JSONResponse(service.model_card())

    @app.get("/api/info")
    async def info() -> Any:
        return JSONResponse(service.info())

    @app.get("/health")
    async def health() -> Any:
        return JSONResponse(service.health())

    @app.get("/metrics")
    async def prometheus() -> Any:
        data, content_type = metrics.render()
        return Response(content=data, media_type=content_type)

    app.add_middleware(Guard, metrics=metrics, api_key=api_key)
    return app
