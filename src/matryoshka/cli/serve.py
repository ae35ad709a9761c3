"""``matryoshka serve``: an HTTP service for a text model and/or an index (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from matryoshka.cli._common import add_common
from matryoshka.serve.limits import Limits

__all__ = ["add_serve_command"]

_LIMITS = (  # flag, Limits field, what it bounds
    ("--max-body-bytes", "max_body_bytes", "bytes of a request body"),
    ("--max-inputs", "max_inputs", "texts in one /v1/embeddings request"),
    ("--max-text-chars", "max_text_chars", "characters of one text"),
    ("--max-k", "max_k", "results of one search"),
    ("--max-stages", "max_stages", "stages of a funnel"),
    ("--max-shortlist", "max_shortlist", "candidates one funnel stage keeps"),
)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from matryoshka.serve import ServeConfig, api_key_from_env, build_service, run_server
    from matryoshka.serve.server import require_serve

    require_serve()  # before a model loads: a missing extra is one line at once
    limits = Limits(**{field: getattr(args, field) for _, field, _ in _LIMITS})
    config = ServeConfig(
        model=args.model, index=args.index, payload=args.payload,
        payload_id_column=args.payload_id_column, model_name=args.model_name,
        query_prompt=args.query_prompt, host=args.host, port=args.port,
        api_key=api_key_from_env(args.api_key), limits=limits, threads=args.threads,
        workers=args.workers, max_batch=args.max_batch, reload_interval=args.reload_interval,
        verify=not args.no_verify, max_concurrency=args.max_concurrency,
        log_level=args.log_level, access_log=args.access_log,
        map_method=args.map_method, map_sample=args.map_sample,
    )  # fmt: skip
    if args.map_sample < 5:
        raise ValueError(f"--map-sample must be at least 5, got {args.map_sample}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    service = build_service(config)
    if not _loopback(args.host) and not config.api_key:
        print(f"matryoshka serve: warning: listening on {args.host} without an API key; anyone "
              "who can reach it can use it (set MATRYOSHKA_API_KEY)", file=sys.stderr)  # fmt: skip
    what = [f"model {service.model.name} (d={service.model.d})"] if service.model else []
    if service.index is not None:
        index = service.index.current.index
        what.append(f"index {args.index} ({len(index):,} rows, {index.precision}, "
                    f"{index.metric})")  # fmt: skip
    print(f"matryoshka serve: {', '.join(what)} on http://{args.host}:{args.port} "
          f"({service.threads} torch threads, {service.workers} workers)", file=sys.stderr,
          flush=True)  # fmt: skip
    run_server(config, service)
    return 0


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``matryoshka`` subcommands."""
    p = add_common(
        sub.add_parser(
            "serve",
            help="serve a text model and/or an index over HTTP (embeddings, search)",
            description="One process serving a text model (POST /v1/embeddings, OpenAI's API, "
            "with dimensions: any size 1..d, renormalised) and/or an index (POST /search by "
            "text or vector at any size or through a funnel), with GET /api/info, /v1/models, "
            "/health and /metrics (Prometheus). Binds 127.0.0.1 unless --host. An index "
            "rebuilt into the same folder while it runs is picked up without a failed "
            "request. Needs pip install 'matryoshka[serve]'.",
        ),
        quiet=False,
    )
    p.add_argument("--model", metavar="PATH",
                   help="a sentence-transformers model folder (one `matryoshka train` wrote, or "
                   "any), or 'packaged' for the packaged all-MiniLM-L6-v2")  # fmt: skip
    p.add_argument("--model-name", help="the model id clients send (default: the folder name)")
    p.add_argument("--query-prompt", help="put before /search query texts (default: the "
                   "model's own query prompt from matryoshka.json, if any)")  # fmt: skip
    p.add_argument("--index", metavar="PATH", help="an index folder (`matryoshka index build`)")
    p.add_argument("--payload", metavar="FILE",
                   help="each row's record (JSONL, CSV, TSV, Parquet), matched to the index's "
                   "row names by its _id or id column (by line order for an index without "
                   "names); returned with search results")  # fmt: skip
    p.add_argument("--payload-id-column", help="the payload's id column (default _id or id)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but "
                   "/health (default: the environment's MATRYOSHKA_API_KEY; prefer it: a flag "
                   "shows in the process list)")  # fmt: skip
    for flag, field, what in _LIMITS:
        default = getattr(Limits, field)
        p.add_argument(flag, dest=field, type=int, default=default, metavar="N",
                       help=f"most {what} (default {default:,})")  # fmt: skip
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: the cores the load average leaves free)",
    )
    p.add_argument("--workers", type=int, default=2,
                   help="threads that search and write answers (default 2)")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=32,
                   help="texts encoded together at most (concurrent requests are batched; "
                   "default 32)")  # fmt: skip
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=64,
        help="connections and requests at once; more are answered 503 (default 64)",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="look for a new index version this often (default 1; 0: never)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the index's checksums on load (faster for a large index)",
    )
    p.add_argument("--map-method", default="pca", choices=["pca", "tsne", "umap", "auto"],
                   help="the web page's map of the embedding space: pca (default: any size in "
                   "well under a second), or tsne/umap (the 'maps' extra; seconds a size, so "
                   "each slider position is mapped at the nearest offered size)")  # fmt: skip
    p.add_argument("--map-sample", type=int, default=2000, metavar="N",
                   help="rows the map shows at most (a seeded sample; default 2,000)")  # fmt: skip
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])  # fmt: skip
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_serve)
