"""The same funnel on existing vector engines: Qdrant, Milvus and PostgreSQL with pgvector.

Each back end is a class with :class:`MatryoshkaIndex`'s search contract (see
:class:`~matryoshka.index.engines.base.EngineIndex`): ``add(xb, ids)``, ``search(xq, k, dim=m)``,
``search(xq, funnel=[(m1, k1), ..., (d, k)])`` returning ``(D, I)`` with ``-1`` padding, and
``from_index(index, ...)`` to export an index with its ids and names. The prefix sizes a funnel
scores at are stored inside the engine as extra copies beside the full vector
(:func:`engine_bytes_per_vector` counts them). Each engine's client loads only when its back end
is opened: ``pip install 'matryoshka[qdrant]'``, ``'matryoshka[milvus]'`` or
``'matryoshka[pgvector]'``.
"""

from __future__ import annotations

from typing import Any

from matryoshka.index.engines.base import EngineError, EngineIndex, Layout

__all__ = ["ENGINES", "EngineError", "EngineIndex", "Layout", "engine_class", "open_engine"]

# name -> (module, class): imported when asked for, so ``import matryoshka`` loads no client
_BACKENDS = {
    "qdrant": ("matryoshka.index.engines.qdrant", "QdrantIndex"),
    "milvus": ("matryoshka.index.engines.milvus", "MilvusIndex"),
    "pgvector": ("matryoshka.index.engines.pgvector", "PgvectorIndex"),
}
ENGINES = tuple(_BACKENDS)


def engine_class(kind: str) -> type[EngineIndex]:
    """The back end class called ``kind`` (one of :data:`ENGINES`)."""
    if kind not in _BACKENDS:
        raise ValueError(f"engine must be one of {ENGINES}, got {kind!r}")
    import importlib

    module, name = _BACKENDS[kind]
    return getattr(importlib.import_module(module), name)


def open_engine(kind: str, target: str, **kwargs: Any) -> EngineIndex:
    """Open (or, given ``d``, create) a collection: ``open_engine("qdrant", "shard/")``.

    ``target`` is a local path for the embedded engines (a Qdrant Edge shard folder, a Milvus
    Lite ``.db`` file) or an address (``http://host:6333``, ``http://host:19530``,
    ``postgresql://user@host/db``); ``kwargs`` go to the back end (``collection``, ``d``,
    ``metric``, ``sizes``).
    """
    return engine_class(kind)(target, **kwargs)
