"""The web page ``matryoshka serve`` shows at ``/``, and the map routes it reads.

``GET /`` is ``static/index.html``, ``GET /static/app.js`` and ``GET /static/style.css`` its
script and style: files inside the package (package data), read once, served with a Content
Security Policy that lets the page reach its own server only (no CDN, no font, no other host).
The page reads ``/api/info``, searches through ``POST /search`` and draws the map from:

``GET /api/map/points``
    ``{"generation", "method", "seed", "count", "sample", "d", "rows": [int], "names": [str |
    null], "titles": [str], "labels": [int], "classes": [str], "label_source": str, "extent":
    float}``: the sampled rows (at most ``--map-sample``), the hover text of each, its colour
    (an index into ``classes``) and half the width of the frame every map fits in.
``GET /api/map?size=M``
    ``{"size": M, "map_size": int, "method", "generation", "sample", "xy": [[x, y], ...],
    "seconds": float, "cached": bool}``: the sample's 2-D map at size ``M`` (an integer, 2..d;
    400 naming ``size`` otherwise), in the full size's frame (:mod:`matryoshka.serve.maps`).

Both answer 404 when the server holds no index. What the page shows and its stable element ids
are listed in ``docs/serve.md``.
"""

# no ``from __future__ import annotations``: FastAPI reads the handlers' annotations at runtime

import asyncio
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from matryoshka._optional import require
from matryoshka.serve.limits import RequestError
from matryoshka.serve.maps import MapCache
from matryoshka.serve.service import Service, dumps

__all__ = ["CSP", "PAGE_FILES", "add_page", "check_size"]

# the page's files: the route's path -> (file in static/, content type); nothing else is served
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return resources.files("matryoshka.serve").joinpath("static", name).read_bytes()


def check_size(raw: str | None, d: int) -> int:
    """The ``size`` query parameter as an integer in 2..d, else a 400 naming ``size``."""
    if raw is None or raw == "":
        raise RequestError(f"size is required: an integer between 2 and d={d}", "size")
    text = raw.strip()
    if not text.isdigit() or len(text) > 9:
        raise RequestError(f"size must be an integer, got {raw[:40]!r}", "size")
    size = int(text)
    if not 2 <= size <= d:
        raise RequestError(f"size must be between 2 and d={d}, got {size}", "size")
    return size


def _need_index(service: Service) -> None:
    if service.index is None:
        raise RequestError("this server holds no index (start it with --index): no map", None,
                           404)  # fmt: skip


def add_page(app: Any, service: Service, maps: MapCache | None = None) -> ThreadPoolExecutor:
    """Add ``/``, its two static files and the map routes to ``app``.

    Returns the one-thread executor the maps are computed on (the caller shuts it down).
    """
    responses = require("fastapi.responses", "matryoshka serve", "serve")
    Response = responses.Response
    maps = maps or MapCache(sizes=service.sizes())
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="matryoshka-map")
    files = {path: (_read(name), kind) for path, (name, kind) in PAGE_FILES.items()}
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}  # fmt: skip

    def static(path: str) -> Any:
        data, kind = files[path]

        async def serve_file() -> Any:
            return Response(content=data, media_type=kind.split(";")[0], headers=headers)

        return serve_file

    for path in PAGE_FILES:
        app.add_api_route(path, static(path), methods=["GET"], include_in_schema=False)

    async def run(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def map_points() -> Any:
        _need_index(service)
        data = await run(maps.data, service.index.current, service.payload)
        return Response(content=dumps(data.points()), media_type="application/json")

    async def map_at(size: str | None = None) -> Any:
        _need_index(service)
        snap = service.index.current
        m = check_size(size, snap.index.d)
        try:
            answer = await run(maps.get, snap, service.payload, m)
        except ValueError as e:  # too few rows to draw
            raise RequestError(str(e), None, 409) from None
        return Response(content=dumps(answer), media_type="application/json")

    app.add_api_route("/api/map/points", map_points, methods=["GET"], include_in_schema=False)
    app.add_api_route("/api/map", map_at, methods=["GET"], include_in_schema=False)
    return pool
