"""The served index, replaced without a failed request when a new version lands on disk.

``matryoshka index build ... --out SAME --overwrite`` writes the next version beside the folder
and renames it into place (:func:`matryoshka._io.atomic_dir`), so the folder's inode changes. A
watcher thread compares that inode (and the manifest's) every ``reload_interval`` seconds, a
``stat`` or two; on a change it loads the new version whole (through one handle of the folder,
checksums checked) while requests go on with the old one, then swaps one reference. A request
takes the current :class:`Snapshot` once when it starts and uses it to the end, so it never
mixes two versions; the old index goes when the last request holding it finishes. A new version
that fails to load, or whose size ``d`` no longer matches the model's, is refused: the old one
stays served and the error is counted and shown in ``/api/info``.

The payload (each row's document: text, title, labels) comes from a file given at start and is
matched to rows by the index's row names (the corpus's ``_id``/``id``); for an index without
names, line ``i`` of the file is row ``i``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka.data import read_records
from matryoshka.index import MatryoshkaIndex

__all__ = ["IndexHolder", "Payload", "Snapshot"]

log = logging.getLogger("matryoshka.serve")


@dataclass(frozen=True)
class Snapshot:
    """One loaded version of the index and what identifies it.

    Attributes
    ----------
    index : the index (memory-mapped)
    generation : 1 for the version loaded at start, one more for each version swapped in
    checksum : the manifest's own sha256 (None for an index written before format 2)
    loaded_at : seconds since the epoch when it was loaded
    """

    index: MatryoshkaIndex
    generation: int
    checksum: str | None
    loaded_at: float
    _order: np.ndarray | None = None  # positions sorting the ids (None: ids are positions)

    @classmethod
    def of(cls, index: MatryoshkaIndex, generation: int, checksum: str | None) -> Snapshot:
        """A snapshot of ``index``, with the lookup from ids to rows made once."""
        order = None if index.info()["ids"] == "positions" else np.argsort(index.ids)
        return cls(index, generation, checksum, time.time(), order)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row positions (0..N-1) of ids as search returns them; -1 stays -1."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._order is None:
            return ids
        sorted_ids = self.index.ids[self._order]
        at = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        return np.where(ids >= 0, self._order[at], -1)


class Payload:
    """Each row's document, from a JSONL, CSV, TSV or Parquet file (every column kept).

    Parameters
    ----------
    path : the file; its id column (``id_column``, else ``_id`` or ``id``) holds the index's
        row names
    id_column : the column of ids, default ``_id`` or ``id``
    """

    def __init__(self, path: str | os.PathLike, id_column: str | None = None) -> None:
        # as JSON answers carry them: what JSON has no type for (bytes, dates) as text, NaN null
        rows = [json.loads(json.dumps(row, default=str), parse_constant=lambda _: None)
                for _, row in read_records(path)]  # fmt: skip
        if not rows:
            raise ValueError(f"payload {path} holds no records")
        self.rows = rows
        self.by_name: dict[str, dict[str, Any]] = {}
        for n, row in enumerate(rows, start=1):
            key = id_column or next((k for k in ("_id", "id") if k in row), None)
            if key is None or row.get(key) in (None, ""):
                continue  # matched by position only
            name = str(row[key])
            if name in self.by_name:
                raise ValueError(f"payload {path}, record {n}: duplicate id {name!r}")
            self.by_name[name] = row

    def __len__(self) -> int:
        return len(self.rows)

    def check(self, index: MatryoshkaIndex) -> str | None:
        """A warning when the payload does not cover the index's rows (None when it does)."""
        if index.names is None:
            if len(self.rows) == len(index):
                return None
            return (
                f"the index has no row names and {len(index):,} rows but the payload holds "
                f"{len(self.rows):,} records: records are matched by position"
            )
        missing = sum(1 for name in index.names if str(name) not in self.by_name)
        if not missing:
            return None
        return f"{missing:,} of the index's {len(index):,} row names have no payload record"

    def get(self, row: int, name: str | None) -> dict[str, Any] | None:
        """The record of a row: by its name when the index has names, else by position."""
        if name is not None:
            return self.by_name.get(name)
        return self.rows[row] if 0 <= row < len(self.rows) else None


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes when a new version is swapped in: the inodes and the manifest's mtime."""
    try:
        folder = os.stat(path)
        manifest = os.stat(path / "manifest.json")
    except OSError:  # between the two renames of a swap: look again later
        return None
    return (folder.st_dev, folder.st_ino, manifest.st_ino, manifest.st_mtime_ns)


def _checksum(path: Path) -> str | None:
    try:
        value = json.loads((path / "manifest.json").read_text()).get("checksum")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class IndexHolder:
    """The current :class:`Snapshot` of the index at ``path``, swapped when the folder changes.

    Parameters
    ----------
    path : the index folder
    verify : check every file's sha256 on each load
    reload_interval : seconds between looks at the folder (0: never reload)
    expect_d : refuse a new version whose ``d`` differs (the model's size)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        verify: bool = True,
        reload_interval: float = 1.0,
        expect_d: int | None = None,
    ) -> None:
        self.path, self.verify = Path(path), verify
        self.reload_interval, self.expect_d = float(reload_interval), expect_d
        self.reloads, self.failures, self.last_error = 0, 0, None
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = _identity(self.path)
        index = MatryoshkaIndex.load(self.path, mmap=True, verify=verify)
        if expect_d is not None and index.d != expect_d:
            raise ValueError(
                f"the index {path} holds vectors of size d={index.d} but the model embeds "
                f"d={expect_d}; serve the index built from this model's embeddings"
            )
        self.current = Snapshot.of(index, 1, _checksum(self.path))

    def check(self) -> bool:
        """Load and swap in the folder's version if it changed since the last look.

        Returns whether a new version was swapped in; a version that fails to load is counted
        (``failures``, ``last_error``) and looked at again after the next change.
        """
        with self._lock:
            seen = _identity(self.path)
            if seen is None or seen == self._seen:
                return False
            checksum = _checksum(self.path)
            try:
                index = MatryoshkaIndex.load(self.path, mmap=True, verify=self.verify)
                if self.expect_d is not None and index.d != self.expect_d:
                    raise ValueError(
                        f"the new version holds d={index.d}; the model embeds d={self.expect_d}"
                    )
            except (OSError, ValueError) as e:
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                # wait for the next version rather than retry this one (unless it changed)
                self._seen = seen if _identity(self.path) == seen else None
                log.error("index %s: new version not loaded, still serving the old: %s",
                          self.path, e)  # fmt: skip
                return False
            # a version swapped in during the load is looked at again on the next check
            self._seen = seen if _identity(self.path) == seen else None
            self.current = Snapshot.of(index, self.current.generation + 1, checksum)
            self.reloads += 1
            log.info("index %s: version %d loaded (%d rows)", self.path,
                     self.current.generation, len(index))  # fmt: skip
            return True

    def start(self) -> None:
        """Look at the folder every ``reload_interval`` seconds on a daemon thread."""
        if self.reload_interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="matryoshka-index-watch",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("index %s: reload check failed", self.path)

    def stop(self) -> None:
        """Stop the watcher thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
