"""Embeddings written in shards (``matryoshka embed --shard I/N``): memory-mapped and resumable.

A data set of ``total`` rows is cut into ``count`` shards of contiguous rows; shard ``index``
holds rows ``[index * total // count, (index + 1) * total // count)``. Each shard is a folder of
its own under the output folder, ``OUT/shard-00003-of-00010/``, so shards can run on different
machines and be copied together; :func:`~matryoshka.eval.rows.open_embeddings` reads a folder of
shards as one (total, d) matrix. A shard folder, in the order it is written:

- ``progress.json``: the shard's settings (model, total, shard, d, dtype, ...) and ``done``, the
  rows written so far; replaced atomically (``matryoshka._io.write_json``);
- ``embeddings.npy`` (rows, d), preallocated with ``np.lib.format.open_memmap``: each batch is
  written into the map, and the map is flushed (msync) before ``done`` counts the batch, so the
  rows ``done`` counts are on disk whatever happens next; ``labels.npy`` (rows,) int64 beside it
  for labelled data, ``names.json`` for named rows (a corpus's ids);
- ``meta.json`` last, as :func:`~matryoshka.eval.save_embeddings` writes it plus ``shard``: its
  presence marks the shard complete (and :func:`~matryoshka.eval.load_embeddings` reads the
  folder like any other embeddings folder).

``done`` is recorded every :data:`CHECKPOINT_SECONDS` and when the writer stops on an error or
Ctrl-C; after a hard crash at most that much work is done again. Running the same command again
continues from ``done``; a shard started with other settings is refused with a message naming
them (``restart=True``, ``--restart`` on the command line, starts it over). One writer per shard
at a time: a second one waits for the lock beside the folder (``matryoshka._io.writer_lock``).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import write_json, writer_lock
from matryoshka._runtime import progress_bar
from matryoshka.eval.embeddings import DTYPES, FORMAT

__all__ = [
    "CHECKPOINT_SECONDS",
    "PROGRESS",
    "Shard",
    "ShardWrite",
    "parse_shard",
    "write_shard",
]

PROGRESS = "progress.json"  # settings and rows done of a shard being written
PROGRESS_FORMAT = "matryoshka-embeddings-progress"
CHECKPOINT_SECONDS = 1.0  # record the rows done at most this often (and when the writer stops)
SHARD_NAME = re.compile(r"shard-(\d{5,})-of-(\d{5,})")
_OURS = ("meta.json", PROGRESS, "embeddings.npy", "labels.npy", "names.json")  # meta.json first

Batches = Callable[[int, int], Iterable[tuple[np.ndarray, np.ndarray | None]]]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count`` shards of a data set."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"the number of shards must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index} does not exist: shards are numbered from 0, so the index "
                f"must be below {self.count} (the last of {self.count} is {self.count - 1}/"
                f"{self.count})"
            )

    @property
    def name(self) -> str:
        """The shard's folder name, e.g. ``shard-00003-of-00010``."""
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    def rows(self, total: int) -> tuple[int, int]:
        """``(start, stop)``: the rows of ``total`` this shard holds."""
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"3/10"`` -> ``Shard(3, 10)``; anything else is a ``ValueError`` saying what is wanted."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise ValueError(
            f"a shard is I/N with whole numbers 0 <= I < N, such as 3/10 (the fourth of ten "
            f"shards), got {text!r}"
        )
    return Shard(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class ShardWrite:
    """What :func:`write_shard` did.

    Attributes
    ----------
    folder : the shard's folder
    start, stop : the rows of the data set it holds, ``[start, stop)``
    resumed : rows found written already (0 for a fresh start)
    already_complete : the shard was complete before; nothing was encoded
    """

    folder: Path
    start: int
    stop: int
    resumed: int
    already_complete: bool


def write_shard(
    out: str | Path,
    batches: Batches,
    total: int,
    d: int,
    shard: Shard = Shard(0, 1),
    *,
    dtype: str = "float32",
    labels: bool = False,
    names: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    restart: bool = False,
    progress: bool = False,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> ShardWrite:
    """Encode one shard of a data set into ``out/<shard.name>/``, resuming where it stopped.

    Parameters
    ----------
    out : the output folder; the shard writes ``out/shard-IIIII-of-NNNNN/``
    batches : ``batches(start, stop)`` yields ``(X (B, d), labels (B,) or None)`` for the data
        set's rows ``start, start + 1, ...`` in order, up to ``stop`` (exclusive); called once,
        from the first row not yet written
    total : rows in the whole data set
    d : full size of an embedding
    shard : which shard to write
    dtype : ``"float32"`` or ``"float16"``, as stored
    labels : whether ``batches`` yields labels (written to ``labels.npy``)
    names : one name per row of this shard (``stop - start``), written to ``names.json``
    settings : what else must match to continue a shard (e.g. ``model``, ``split``); with
        ``total``, ``shard``, ``d``, ``dtype`` and ``labels`` it is recorded in ``progress.json``
    meta : stored in ``meta.json`` beside ``count``, ``d``, ``dtype`` and ``shard``
    restart : delete what an earlier run wrote of this shard and start over
    progress : show a progress bar over rows
    checkpoint_seconds : record the rows done at most this often (0: after every batch)

    Raises
    ------
    ValueError
        The shard was started with other settings (the message names them), ``batches`` yields
        rows of the wrong shape, or NaN or infinite values.
    FileExistsError
        ``out`` is a file, holds unsharded embeddings, or the shard's folder holds files this
        writer did not write.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    start, stop = shard.rows(total)
    if names is not None and len(names) != stop - start:
        raise ValueError(f"names must hold one name per row of the shard ({stop - start})")
    want = {**(settings or {}), "total": int(total), "shard": str(shard), "rows": [start, stop],
            "d": int(d), "dtype": dtype, "labels": bool(labels)}  # fmt: skip
    folder = _shard_folder(Path(out), shard)
    with writer_lock(folder):
        done = _resume(folder, want, restart)
        if done is None:
            return ShardWrite(folder, start, stop, stop - start, already_complete=True)
        X, Y = _maps(folder, stop - start, d, dtype, labels, fresh=done == 0)
        written = _fill(folder, want, X, Y, batches, done, progress, checkpoint_seconds, shard)
        if written != stop - start:
            raise ValueError(
                f"the encoder gave {written - done} rows for shard {shard}, expected "
                f"{stop - start - done} (rows {start + done}..{stop} of {total})"
            )
        if names is not None:
            write_json(folder / "names.json", [str(n) for n in names])
        info = {"format": FORMAT, "count": stop - start, "d": int(d), "dtype": dtype,
                "labels": bool(labels), **(meta or {}),
                "shard": {"index": shard.index, "count": shard.count, "start": start,
                          "stop": stop, "total": int(total)}}  # fmt: skip
        write_json(folder / "meta.json", info)  # last: the shard is complete
    return ShardWrite(folder, start, stop, done, already_complete=False)


def _shard_folder(out: Path, shard: Shard) -> Path:
    """``out/<shard.name>``, refusing an ``out`` that is a file or holds unsharded embeddings."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder; choose another output folder")
    if (out / "embeddings.npy").exists():
        raise FileExistsError(
            f"{out} holds embeddings written without --shard (embeddings.npy); write the shards "
            "to another folder"
        )
    folder = out / shard.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _resume(folder: Path, want: dict[str, Any], restart: bool) -> int | None:
    """Rows already written in ``folder`` (0 for a fresh start), or None if it is complete."""
    if restart:
        for name in _OURS:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
    path = folder / PROGRESS
    if not path.is_file():
        if any(folder.iterdir()):
            found = ", ".join(sorted(p.name for p in folder.iterdir())[:5])
            raise FileExistsError(
                f"{folder} holds files this writer did not record ({found}); add --restart to "
                "start the shard over (it deletes embeddings.npy, labels.npy, names.json and "
                "meta.json there), or choose another output folder"
            )
        write_json(path, {"format": PROGRESS_FORMAT, "settings": want, "done": 0})
        return 0
    try:
        got = json.loads(path.read_text())
        had, done = got["settings"], int(got["done"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} cannot be read ({e}); add --restart to start over") from None
    if had != want:
        diff = "; ".join(
            f"{k}: {want.get(k)!r} now, {had.get(k)!r} then"
            for k in sorted(set(had) | set(want), key=str) if had.get(k) != want.get(k)
        )  # fmt: skip
        raise ValueError(
            f"{folder} was started with other settings ({diff}); run the command with the "
            "settings it was started with to continue it, or add --restart to start this shard "
            "over"
        )
    return None if (folder / "meta.json").is_file() else done


def _maps(
    folder: Path, rows: int, d: int, dtype: str, labels: bool, fresh: bool
) -> tuple[np.memmap, np.memmap | None]:
    """The shard's ``embeddings.npy`` (rows, d) and ``labels.npy`` (rows,), opened for writing:
    preallocated when ``fresh``, else the ones an earlier run left (checked)."""
    want = [("embeddings.npy", np.dtype(dtype), (rows, d))]
    if labels:
        want.append(("labels.npy", np.dtype(np.int64), (rows,)))
    maps = []
    for name, kind, shape in want:
        path = folder / name
        if fresh or not path.is_file():
            if not fresh:
                raise ValueError(
                    f"{path} is missing but {PROGRESS} counts rows written; add --restart to "
                    "start the shard over"
                )
            maps.append(np.lib.format.open_memmap(path, mode="w+", dtype=kind, shape=shape))
            continue
        try:
            m = np.lib.format.open_memmap(path, mode="r+")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} cannot be read ({e}); add --restart to start over") from None
        if m.shape != shape or m.dtype != kind:
            raise ValueError(
                f"{path} holds {m.shape} {m.dtype}, not {shape} {kind}; add --restart to start over"
            )
        maps.append(m)
    return maps[0], (maps[1] if labels else None)


def _checkpoint(folder: Path, want: dict[str, Any], X: np.memmap, Y: np.memmap | None,
                done: int) -> None:  # fmt: skip
    """Flush the maps to disk, then record ``done`` (so it never counts a row not on disk)."""
    X.flush()
    if Y is not None:
        Y.flush()
    write_json(folder / PROGRESS, {"format": PROGRESS_FORMAT, "settings": want, "done": done})


def _fill(
    folder: Path, want: dict[str, Any], X: np.memmap, Y: np.memmap | None, batches: Batches,
    done: int, progress: bool, every: float, shard: Shard,
) -> int:  # fmt: skip
    """Write the batches into the maps from row ``done`` on; return the rows written in all."""
    start, stop = want["rows"]
    rows, d = X.shape
    pos, recorded, last = done, done, time.monotonic()
    bar = progress_bar(total=rows, desc=f"embed shard {shard}", unit="vec", disable=not progress)
    try:
        with bar:
            bar.update(done)
            for xb, yb in batches(start + done, stop):
                xb = np.asarray(xb)
                if xb.ndim != 2 or xb.shape[1] != d or pos + len(xb) > rows:
                    raise ValueError(
                        f"the encoder gave a batch of shape {xb.shape} at row {start + pos}; "
                        f"expected (B, {d}) and at most {rows - pos} more rows"
                    )
                bad = ~np.isfinite(xb).all(axis=1)
                if bad.any():
                    row = start + pos + int(np.flatnonzero(bad)[0])
                    raise ValueError(f"embeddings hold NaN or infinite values (first in row {row})")
                X[pos : pos + len(xb)] = xb
                if Y is not None:
                    Y[pos : pos + len(xb)] = np.asarray(yb)
                pos += len(xb)
                bar.update(len(xb))
                if time.monotonic() - last >= every:
                    _checkpoint(folder, want, X, Y, pos)
                    recorded, last = pos, time.monotonic()
        _checkpoint(folder, want, X, Y, pos)
    except BaseException:  # an error or Ctrl-C: keep what is written for the next run
        if pos > recorded:
            with contextlib.suppress(Exception):
                _checkpoint(folder, want, X, Y, pos)
        raise
    return pos
