"""The served text model: one thread owns it and encodes concurrent requests together.

A tokenizer is not safe to call from several threads at once, and on a CPU one forward pass over
eight short texts costs far less than eight passes over one. So every encode goes through one
queue: the model's thread takes what is waiting (up to ``max_batch`` texts), encodes it in one
call, counts each text's tokens when asked (the ``usage`` of an embeddings answer) and hands
each request its rows. A request waits at most one batch behind those before it.

Memory: batches of every size and length leave glibc's heap fragmented (its threshold for giving
a large buffer its own mapping rises with the largest buffer freed, so activation buffers end up
carved from the heap), and a server answering SciFact queries at 1, 8 and 32 clients grew by
20-30 MB every 900 requests, round after round. So the thread hands the freed pages back
(``malloc_trim``, a few ms, off any request's path) when it goes idle, and at least once a second
while it stays busy; the same rounds then hold steady. Fixing the threshold instead
(``MALLOC_MMAP_THRESHOLD_``) also held memory but made encoding about 30% slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import resolve_dir
from matryoshka.models.text import encode_texts, load_sentence_encoder

__all__ = ["PACKAGED", "Encoder", "TextModel"]

PACKAGED = "packaged"  # --model packaged: the packaged all-MiniLM-L6-v2
_PACKAGED_NAME = "all-MiniLM-L6-v2"


TRIM_EVERY = 1.0  # seconds: hand freed memory back at least this often while busy


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``: free pages of every arena back to the system (None off
    glibc)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


@dataclass
class _Job:
    texts: list[str]
    count_tokens: bool
    future: Future = field(default_factory=Future)


class Encoder:
    """Encode texts on one thread, batching the requests that wait together.

    Parameters
    ----------
    model : a ``SentenceTransformer``
    max_batch : texts encoded in one call at most (a larger request is encoded alone)
    """

    def __init__(self, model: Any, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self.model, self.max_batch = model, int(max_batch)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.batches = 0  # encode calls made
        self.texts = 0  # texts encoded
        self.trims = 0  # times freed memory was handed back
        self._trim = _malloc_trim()
        self._trimmed = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="matryoshka-encoder", daemon=True)
        self._thread.start()

    def submit(self, texts: list[str], count_tokens: bool = False) -> Future:
        """A future of ``(X, tokens)``: X (n, d) float32 at full size, tokens a list of n ints
        (None unless ``count_tokens``)."""
        job = _Job(list(texts), count_tokens)
        self._queue.put(job)
        return job.future

    def encode(self, texts: list[str], count_tokens: bool = False) -> tuple[np.ndarray, Any]:
        """:meth:`submit` and wait."""
        return self.submit(texts, count_tokens).result()

    def close(self) -> None:
        """Stop the thread after the jobs already queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _take(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, n = [first], len(first.texts)
        while n < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job.texts)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._take(first)
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                self._encode(jobs)
            except Exception as e:  # noqa: BLE001 - each waiting request gets the error
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
            self._release()

    def _release(self) -> None:
        """Hand freed memory back when idle, or when the last time is ``TRIM_EVERY`` ago."""
        now = time.monotonic()
        if self._trim is None or (self._queue.qsize() and now - self._trimmed < TRIM_EVERY):
            return
        self._trim()
        self._trimmed = time.monotonic()
        self.trims += 1

    def _encode(self, jobs: list[_Job]) -> None:
        texts = [t for j in jobs for t in j.texts]
        X = encode_texts(self.model, texts, batch_size=32, progress=False)
        tokens = None
        if any(j.count_tokens for j in jobs):
            tokens = self.count_tokens(texts)
        self.batches += 1
        self.texts += len(texts)
        s = 0
        for j in jobs:
            e = s + len(j.texts)
            j.future.set_result((X[s:e], tokens[s:e] if j.count_tokens else None))
            s = e

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model reads of each text (special tokens in, cut at its length limit)."""
        limit = self.model.get_max_seq_length()
        enc = self.model.tokenizer(list(texts), truncation=limit is not None, max_length=limit)
        return [len(ids) for ids in enc["input_ids"]]


@dataclass
class TextModel:
    """A loaded text model and what the server says about it.

    Attributes
    ----------
    name : the model id clients send (``model``) and ``/v1/models`` lists
    d : full embedding size
    dims : the sizes it was trained to be cut to (``[d]`` when it was not trained nested)
    query_prompt : put in front of ``/search`` query texts (from ``matryoshka.json`` or a flag)
    created : seconds since the epoch of the model folder (OpenAI's ``created``)
    """

    model: Any
    name: str
    d: int
    dims: list[int]
    query_prompt: str | None
    created: int
    encoder: Encoder

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None,
        name: str | None = None,
        query_prompt: str | None = None,
        max_batch: int = 64,
    ) -> TextModel:
        """Load a sentence-transformers folder (``None`` or ``"packaged"``: all-MiniLM-L6-v2).

        The trained sizes come from ``matryoshka.json`` (a model our ``train`` wrote), else
        ``matryoshka_dimensions`` of its ``config.json``, else ``[d]``.
        """
        if path is None or str(path) == PACKAGED:
            model = load_sentence_encoder(None, progress=False)
            folder, default_name = None, _PACKAGED_NAME
        else:
            folder = resolve_dir(Path(path).expanduser())
            if not folder.is_dir():
                raise FileNotFoundError(f"no model folder at {path}")
            model = load_sentence_encoder(folder, progress=False)
            default_name = folder.name
        d = int(model.get_embedding_dimension())
        dims, prompt = _trained(folder, d)
        created = int(folder.stat().st_mtime) if folder is not None else 0
        return cls(
            model, name or default_name, d, dims, query_prompt or prompt, created,
            Encoder(model, max_batch),
        )  # fmt: skip


def _trained(folder: Path | None, d: int) -> tuple[list[int], str | None]:
    """The trained sizes and the query prompt a model folder records (``[d]``, None if none)."""
    if folder is None:
        return [d], None
    for name, key in (("matryoshka.json", "dims"), ("config.json", "matryoshka_dimensions")):
        try:
            meta = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        dims = meta.get(key) if isinstance(meta, dict) else None
        if isinstance(dims, list) and dims and all(isinstance(m, int) and 1 <= m <= d
                                                   for m in dims):  # fmt: skip
            config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
            prompt = config.get("query_prompt")
            return sorted(set(dims)), prompt if isinstance(prompt, str) else None
    return [d], None
