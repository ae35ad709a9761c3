"""``matryoshka embed --shard I/N``: one shard of a data split or a corpus, resumable.

The glue between the command's flags and :func:`matryoshka.eval.write_shard`, for image models
(rows of the model's data split, with labels) and text models (rows of a corpus file, with their
ids as names). ``matryoshka.eval`` loads inside the functions: ``matryoshka --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "add_shard_arguments",
    "check_shard_arguments",
    "embed_image_shard",
    "embed_text_shard",
    "shard_arg",
    "text_threads",
]


def shard_arg(text: str) -> Any:
    """``--shard I/N`` -> :class:`matryoshka.eval.Shard` (a bad value is a one-line usage error)."""
    from matryoshka.eval.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_shard_arguments(p: argparse.ArgumentParser) -> None:
    """``--shard I/N`` and ``--restart`` on ``embed``."""
    p.add_argument(
        "--shard",
        type=shard_arg,
        metavar="I/N",
        help="encode only shard I of N (0-based; rows I*N_rows//N up to (I+1)*N_rows//N) into "
        "OUT/shard-IIIII-of-NNNNN/, memory-mapped: shards can run on different machines and be "
        "copied into one OUT; running the same command again resumes a stopped shard; "
        "`matryoshka index build OUT` reads the shards once all are complete",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="with --shard: delete what an earlier run wrote of this shard and start it over",
    )


def check_shard_arguments(args: argparse.Namespace) -> None:
    """Refuse ``--restart`` without ``--shard`` (an unsharded write always starts over)."""
    if args.restart and args.shard is None:
        raise ValueError("--restart starts a shard over; it goes with --shard I/N")


def embed_image_shard(
    args: argparse.Namespace, model: Any, dataset: Any, classes: list[str], device: Any
) -> int:
    """Write shard ``args.shard`` of ``dataset`` (the split's examples, in order) encoded by an
    image ``model``: embeddings (rows, d) and labels (rows,)."""
    from matryoshka.eval import encode_batches, write_shard

    def batches(start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return encode_batches(model, dataset, args.batch, device, args.threads, start, stop)

    settings = {"model": str(args.model), "split": args.split}
    done = write_shard(
        args.out, batches, len(dataset), model.head.d, args.shard, dtype=args.dtype, labels=True,
        settings=settings, meta={**settings, "dims": list(model.head.dims), "classes": classes},
        restart=args.restart, progress=not args.quiet,
    )  # fmt: skip
    return _report(args, done, len(dataset), model.head.d)


def embed_text_shard(args: argparse.Namespace, model: Any, texts: Any) -> int:
    """Write shard ``args.shard`` of a corpus (``texts.texts``, ids ``texts.ids``) encoded by a
    sentence-transformers ``model``: embeddings (rows, d), the rows' ids in ``names.json``."""
    from matryoshka.eval import write_shard
    from matryoshka.models.text import encode_texts

    def encode(rows: list[str]) -> np.ndarray:
        kw = {"batch_size": args.batch, "progress": False, "prompt": args.prompt}
        return encode_texts(model, rows, **kw)  # (B, d)

    def batches(start: int, stop: int) -> Iterator[tuple[np.ndarray, None]]:
        for s in range(start, stop, args.batch):
            yield encode(texts.texts[s : min(stop, s + args.batch)]), None

    d = model.get_embedding_dimension() or encode(texts.texts[:1]).shape[1]
    start, stop = args.shard.rows(len(texts.texts))
    settings = {"model": str(args.model), "source": str(args.texts), "prompt": args.prompt}
    done = write_shard(
        args.out, batches, len(texts.texts), d, args.shard, dtype=args.dtype,
        names=texts.ids[start:stop], settings=settings, meta=settings, restart=args.restart,
        progress=not args.quiet,
    )  # fmt: skip
    return _report(args, done, len(texts.texts), d)


def _report(args: argparse.Namespace, done: Any, total: int, d: int) -> int:
    rows = f"rows {done.start}..{done.stop} of {total}"
    if done.already_complete:
        print(f"{done.folder} is complete already ({rows}); nothing to do (--restart redoes it)")
    else:
        again = f", resumed at row {done.start + done.resumed}" if done.resumed else ""
        print(
            f"wrote {done.folder}/embeddings.npy ({done.stop - done.start}, {d}) {args.dtype}: "
            f"{rows}{again}"
        )
    n = args.shard.count
    complete = sum(
        (Path(args.out) / type(args.shard)(i, n).name / "meta.json").is_file() for i in range(n)
    )
    ready = f"; `matryoshka index build {args.out}` reads them" if complete == n else ""
    print(f"{complete} of {n} shards complete in {args.out}{ready}")
    return 0


@contextlib.contextmanager
def text_threads(threads: int | None) -> Iterator[None]:
    """``--threads`` for a text model: torch's thread count while encoding (default: torch's)."""
    if threads is None:
        yield
        return
    from matryoshka._runtime import threads_for, torch_threads

    with torch_threads(threads_for(0.0, threads)):
        yield
