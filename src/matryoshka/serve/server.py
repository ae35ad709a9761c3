"""Start a server: load what it serves, check it fits together, run uvicorn.

:func:`build_service` loads the model, the index and the payload and refuses what cannot work
(nothing to serve, a payload without an index, an index whose size differs from the model's);
:func:`run_server` serves it with uvicorn in the foreground (``matryoshka serve``);
:class:`ServerThread` serves an application on a background thread (tests and benchmarks).

Threads: torch's CPU threads are set once for the process (``threads``, default the cores the
load average leaves free, as :func:`matryoshka._runtime.threads_for` gives large work). Encoding
runs on the model's one thread, which batches the requests waiting together, and each search on
one of ``workers`` threads: concurrency comes from requests running side by side, not from
splitting one small request over many cores.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from matryoshka._optional import require
from matryoshka._runtime import threads_for
from matryoshka.serve.limits import Limits
from matryoshka.serve.service import Service

__all__ = [
    "ServeConfig",
    "ServerThread",
    "api_key_from_env",
    "build_service",
    "require_serve",
    "run_server",
]

log = logging.getLogger("matryoshka.serve")


@dataclass
class ServeConfig:
    """Everything ``matryoshka serve`` takes (its flags, by the same names)."""

    model: str | None = None  # a model folder, or "packaged" (all-MiniLM-L6-v2)
    index: str | None = None
    payload: str | None = None
    payload_id_column: str | None = None
    model_name: str | None = None  # the id clients send as "model" (default: the folder name)
    query_prompt: str | None = None  # put before /search query texts
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    threads: int | None = None  # torch CPU threads (default: the free cores)
    workers: int = 2  # threads that search and write answers
    max_batch: int = 32  # texts encoded together at most
    reload_interval: float = 1.0  # seconds between looks for a new index version (0: never)
    verify: bool = True  # check the index's checksums on every load
    max_concurrency: int = 64  # connections and requests at once; more get 503
    log_level: str = "info"
    access_log: bool = False
    map_method: str = "pca"  # the web page's map (matryoshka.serve.maps)
    map_sample: int = 2000  # rows the map shows at most


def require_serve() -> None:
    """Fail early, before a model loads, when the ``serve`` extra is missing."""
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "matryoshka serve", "serve")


def build_service(config: ServeConfig) -> Service:
    """Load and check what ``config`` serves; ``ValueError`` for what cannot work together."""
    import torch

    from matryoshka.serve.encoder import TextModel
    from matryoshka.serve.indexes import IndexHolder, Payload

    if not config.model and not config.index:
        raise ValueError("nothing to serve: give --model (a text model), --index, or both")
    if config.payload and not config.index:
        raise ValueError("--payload describes the rows of an index: give --index too")
    if config.workers < 1 or config.max_batch < 1 or config.max_concurrency < 1:
        raise ValueError("--workers, --max-batch and --max-concurrency must be positive")
    threads = threads_for(0.0, config.threads)
    torch.set_num_threads(threads)
    model = None
    if config.model:
        model = TextModel.load(config.model, config.model_name, config.query_prompt,
                               config.max_batch)  # fmt: skip
    try:
        holder = None
        if config.index:
            holder = IndexHolder(config.index, config.verify, config.reload_interval,
                                 expect_d=model.d if model is not None else None)  # fmt: skip
        payload = None
        if config.payload:
            payload = Payload(config.payload, config.payload_id_column)
            warning = payload.check(holder.current.index)
            if warning:
                log.warning("payload %s: %s", config.payload, warning)
    except BaseException:
        if model is not None:
            model.encoder.close()
        raise
    return Service(model, holder, payload, config.limits, config.workers, threads,
                   auth=bool(config.api_key))  # fmt: skip


def _uvicorn_config(app: Any, config: ServeConfig, port: int | None = None) -> Any:
    uvicorn = require("uvicorn", "matryoshka serve", "serve")
    return uvicorn.Config(
        app, host=config.host, port=config.port if port is None else port,
        log_level=config.log_level, access_log=config.access_log,
        limit_concurrency=config.max_concurrency, timeout_keep_alive=5, lifespan="on",
    )  # fmt: skip


def run_server(config: ServeConfig, service: Service | None = None) -> None:
    """Serve in the foreground until interrupted (Ctrl-C or SIGTERM)."""
    from matryoshka.serve.app import create_app
    from matryoshka.serve.maps import MapCache

    require_serve()
    uvicorn = require("uvicorn", "matryoshka serve", "serve")
    service = service or build_service(config)
    maps = MapCache(config.map_method, config.map_sample, sizes=service.sizes())
    app = create_app(service, config.api_key, maps=maps)
    uvicorn.Server(_uvicorn_config(app, config)).run()


class ServerThread:
    """Serve an ASGI application on a background thread, on a free loopback port by default.

    >>> with ServerThread(app) as server:          # doctest: +SKIP
    ...     httpx.get(server.url + "/health")
    """

    def __init__(self, app: Any, config: ServeConfig | None = None, port: int = 0) -> None:
        config = config or ServeConfig(log_level="warning")
        uvicorn = require("uvicorn", "matryoshka serve", "serve")
        self.server = uvicorn.Server(_uvicorn_config(app, config, port))
        self.host = config.host
        self.port: int | None = None
        self._thread = threading.Thread(target=self.server.run, name="matryoshka-server",
                                        daemon=True)  # fmt: skip

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerThread:
        """Start and wait until the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Ask the server to finish and wait for its thread."""
        self.server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api_key_from_env(given: str | None) -> str | None:
    """The API key: ``given`` (a flag), else the environment's ``MATRYOSHKA_API_KEY``."""
    return given or os.environ.get("MATRYOSHKA_API_KEY") or None
