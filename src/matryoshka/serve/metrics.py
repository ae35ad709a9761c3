"""Prometheus metrics and the guard in front of every route (API key, counting, timing).

:class:`Guard` is plain ASGI middleware, outside the framework's routing: it answers 401 to a
request without the API key (every route but ``/health`` and the web page's files), then counts
each request by route, method and status and times it by route. Routes are named by their
template (an unknown path counts as ``other``), so a client cannot grow the number of series.
prometheus-client (``pip install 'matryoshka[serve]'``) writes the text format at ``/metrics``.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from matryoshka._optional import require
from matryoshka.serve.limits import error_body

__all__ = ["OPEN_PATHS", "ROUTES", "Guard", "Metrics", "route_of"]

ROUTES = ("/v1/embeddings", "/v1/models", "/search", "/api/info", "/health", "/metrics", "/",
          "/static/app.js", "/static/style.css", "/api/map", "/api/map/points")  # fmt: skip
# answered without the API key: the health check, and the page's files (they hold no data; the
# page asks for the key and sends it with its own requests)
OPEN_PATHS = ("/health", "/", "/static/app.js", "/static/style.css")
_METHODS = ("GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def route_of(path: str) -> str:
    """The route template a path counts under (``other`` for paths no route serves)."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return "other"


class Metrics:
    """The server's Prometheus metrics, in a registry of its own.

    ``matryoshka_http_requests_total{route, method, status}``,
    ``matryoshka_http_request_duration_seconds{route}`` (a histogram),
    ``matryoshka_http_requests_in_flight``, and gauges read when scraped:
    ``matryoshka_index_rows``, ``matryoshka_index_generation``,
    ``matryoshka_index_reload_failures``, ``matryoshka_encoder_batches``,
    ``matryoshka_encoder_texts``.
    """

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]] | None = None) -> None:
        prom = require("prometheus_client", "matryoshka serve's /metrics", "serve")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "matryoshka_http_requests", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = prom.Histogram(
            "matryoshka_http_request_duration_seconds", "Time to answer, by route",
            ["route"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = prom.Gauge(
            "matryoshka_http_requests_in_flight", "Requests being answered",
            registry=self.registry,
        )  # fmt: skip
        for name, (doc, read) in (gauges or {}).items():
            prom.Gauge(name, doc, registry=self.registry).set_function(read)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its time."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] = ()) -> None:  # fmt: skip
    data = json.dumps(body).encode("utf-8")
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + list(headers)})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware: the API key on every route but :data:`OPEN_PATHS`, then metrics.

    Parameters
    ----------
    app : the ASGI application behind it
    metrics : where requests are counted
    api_key : the Bearer token every request must carry, or None (no key)
    """

    def __init__(self, app: Any, metrics: Metrics, api_key: str | None = None) -> None:
        self.app, self.metrics = app, metrics
        self._key = f"Bearer {api_key}".encode() if api_key else None

    def _authorized(self, scope: Scope) -> bool:
        given = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        return hmac.compare_digest(given.strip(), self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        status = [500]  # what an exception that escapes every handler becomes

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            if self._key is not None and path not in OPEN_PATHS and not self._authorized(scope):
                body = error_body("a valid API key is required: send the header "
                                  "'Authorization: Bearer <key>'", "authorization",
                                  "authentication_error", "invalid_api_key")  # fmt: skip
                await _send_json(counted, 401, body, [(b"www-authenticate", b"Bearer")])
            else:
                await self.app(scope, receive, counted)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe(route_of(path), method, status[0], time.perf_counter() - t0)
