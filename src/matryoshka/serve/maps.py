"""The map of the embedding space the web page draws: a seeded sample of the index's rows, each
size's 2-D projection aligned to the full size's, computed on first request and kept in memory.

The sample: ``sample`` rows (default 2,000) drawn at random with ``seed`` from the served index,
decoded at full size once (:meth:`~matryoshka.index.MatryoshkaIndex.reconstruct`). Colours: a
payload field that labels the rows (the first of :data:`LABEL_FIELDS` holding a short text or
number for nearly every sampled row, with 2 to 20 values), else k-means clusters (k = 8) of the
sample at full size (cosine), so a server without labels still shows its groups.

Projections: the full size's map comes first (:func:`~matryoshka.viz.maps.embedding_maps`:
centred, RMS radius 1); every other size ``m`` is projected from its renormalised prefix and
rotated (or reflected) onto the full size's map by orthogonal Procrustes
(:func:`~matryoshka.viz.maps.procrustes_align`) and drawn at the same RMS radius (Procrustes'
scale shrinks a map that fits poorly, which would only make it small), so each size's map lies
in one frame whatever the order sizes are asked in, and moving between sizes moves points, not
the frame.

The method is PCA unless the server is told otherwise (``matryoshka serve --map-method``).
Measured on 2,000 SciFact abstracts (d = 384) on a busy 2-core machine: the full-size PCA map
takes 0.4 s, a smaller size 0.002 s (16) to 0.3 s (383), k-means 0.26 s; t-SNE takes about 6 s
a size and 22 s for the full size (``docs/results/maps.md``), too slow to answer a slider move.
With PCA every size 2..d is computed exactly as asked; with t-SNE or UMAP a size is mapped at
the nearest offered size (8, 16, ..., d and the trained sizes, ``map_size`` in the answer), so a
slider sweep costs at most a handful of projections. One projection runs at a time, on a thread
of its own, never on the threads that answer searches.

Each map is cached by size (the last 64 sizes asked, and the full size) for the index version it
was drawn from; a new version of the index
(:mod:`matryoshka.serve.indexes`) starts a new sample. Nothing is written to disk and no client
value names a file: the only inputs are the size (checked: an integer, 2..d) and what the
server was started with.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from matryoshka._optional import require
from matryoshka.dims import truncate
from matryoshka.serve.indexes import Payload, Snapshot
from matryoshka.viz.maps import (
    embedding_maps,
    procrustes_align,
    project_2d,
    resolve_method,
    sample_rows,
    unit_rms,
)

__all__ = ["LABEL_FIELDS", "MapCache", "MapData"]

LABEL_FIELDS = ("label", "topic", "category", "class", "cluster", "group", "genre", "type")
TITLE_FIELDS = ("title", "name", "text", "sentence", "body")
_TIP_CHARS = 100
_CLUSTERS = 8
_PACKAGES = {"tsne": ("openTSNE", "t-SNE maps"), "umap": ("umap", "UMAP maps")}
_KEEP = 64  # maps kept per index version besides the full size's (each 16 bytes a point)


def _short(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _TIP_CHARS else text[: _TIP_CHARS - 1] + "…"


def _labels_from_payload(records: list[dict[str, Any] | None]) -> tuple[str, list[str]] | None:
    """The first payload field that labels the sample: (field, one label per row), or None."""
    for key in LABEL_FIELDS:
        values = [r.get(key) if r else None for r in records]
        scalar = [v for v in values if isinstance(v, (str, int, bool)) and str(v).strip()]
        if len(scalar) < 0.9 * len(records):
            continue
        if 2 <= len(set(map(str, scalar))) <= 20:
            return key, ["" if v is None else str(v) for v in values]
    return None


def _kmeans(Xn: np.ndarray, seed: int) -> np.ndarray:
    """k-means cluster of each unit row (n,), clusters numbered by size, largest first."""
    from sklearn.cluster import KMeans

    k = min(_CLUSTERS, max(1, len(Xn) // 5))
    if k < 2:
        return np.zeros(len(Xn), np.int64)
    found = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(Xn)
    order = [c for c, _ in Counter(found.tolist()).most_common()]
    rank = {c: i for i, c in enumerate(order)}
    return np.array([rank[c] for c in found], np.int64)


class MapData:
    """One index version's sample: its rows, names, hover texts, labels and maps by size."""

    def __init__(
        self, snap: Snapshot, payload: Payload | None, method: str, sample: int, seed: int
    ) -> None:
        index = snap.index
        n = len(index)
        rows = sample_rows(n, sample, seed)
        self.generation, self.method, self.seed = snap.generation, method, seed
        self.rows, self.count, self.d = rows.astype(np.int64), n, index.d
        ids = index.ids[self.rows]
        self.X = np.asarray(index.reconstruct(ids), np.float32)  # (n, d)
        names = index.names_of(ids) if index.names is not None else [None] * len(rows)
        self.names = [None if v is None else str(v) for v in names]
        records = [
            payload.get(int(r), nm) if payload is not None else None
            for r, nm in zip(self.rows.tolist(), self.names)
        ]
        self.titles = [self._title(rec, nm, int(r))
                       for rec, nm, r in zip(records, self.names, self.rows)]  # fmt: skip
        self.label_source, self.labels, self.classes = self._labels(records)
        self.maps: dict[int, np.ndarray] = {}
        self.seconds: dict[int, float] = {}
        self.extent = 1.0

    @staticmethod
    def _title(record: dict[str, Any] | None, name: str | None, row: int) -> str:
        for key in TITLE_FIELDS:
            value = record.get(key) if record else None
            if isinstance(value, (str, int, float)) and str(value).strip():
                return _short(value)
        return name or f"row {row}"

    def _labels(self, records: list[dict[str, Any] | None]) -> tuple[str, list[int], list[str]]:
        found = _labels_from_payload(records)
        if found is not None:
            key, values = found
            classes = [c for c, _ in Counter(values).most_common()]
            at = {c: i for i, c in enumerate(classes)}
            return f"payload field {key!r}", [at[v] for v in values], classes
        if len(self.X) == 0:
            return "none", [], []
        clusters = _kmeans(truncate(self.X, self.d), self.seed)
        classes = [f"cluster {c + 1}" for c in range(int(clusters.max()) + 1)]
        return f"k-means (k={len(classes)}) at size {self.d}", clusters.tolist(), classes

    def points(self) -> dict[str, Any]:
        """``GET /api/map/points``: what every point is (the same for every size)."""
        return {"generation": self.generation, "method": self.method, "seed": self.seed,
                "count": self.count, "sample": len(self.rows), "d": self.d,
                "rows": self.rows.tolist(), "names": self.names, "titles": self.titles,
                "labels": self.labels, "classes": self.classes,
                "label_source": self.label_source, "extent": self.extent}  # fmt: skip


class MapCache:
    """Maps of the served index per size, computed once each (see the module's docstring).

    Parameters
    ----------
    method : ``"pca"`` (default), ``"tsne"``, ``"umap"`` or ``"auto"``
        (:func:`~matryoshka.viz.maps.resolve_method`)
    sample : the most rows a map shows
    seed : the sample's, the clusters' and the projections' seed
    sizes : the sizes a slow method snaps to (the server's offered sizes)
    """

    def __init__(
        self, method: str = "pca", sample: int = 2000, seed: int = 0, sizes: Sequence[int] = ()
    ) -> None:
        if sample < 5:
            raise ValueError(f"the map's sample must be at least 5 points, got {sample}")
        self.method = resolve_method(method)
        if self.method in _PACKAGES:  # fail at start, not at the first map
            require(*_PACKAGES[self.method], extra="maps")
        self.sample, self.seed, self.sizes = int(sample), int(seed), sorted(set(sizes))
        self._data: MapData | None = None
        self._lock = threading.Lock()  # one computation at a time

    def data(self, snap: Snapshot, payload: Payload | None) -> MapData:
        """The sample of ``snap``'s version with its full-size map (made on first call)."""
        with self._lock:
            return self._data_locked(snap, payload)

    def _data_locked(self, snap: Snapshot, payload: Payload | None) -> MapData:
        data = self._data
        if data is None or data.generation != snap.generation:
            data = MapData(snap, payload, self.method, self.sample, self.seed)
            if len(data.rows) >= 5:
                t0 = time.perf_counter()
                full = embedding_maps(data.X, [data.d], self.method, sample=None, seed=self.seed)
                data.maps[data.d] = full[data.d]
                data.seconds[data.d] = time.perf_counter() - t0
                data.extent = round(float(np.abs(full[data.d]).max()) * 1.05, 4)
            self._data = data
        return data

    def map_size(self, size: int, d: int) -> int:
        """The size whose map answers ``size``: itself for PCA, else the nearest offered."""
        if self.method == "pca" or not self.sizes:
            return size
        offered = [m for m in self.sizes if 2 <= m <= d] or [d]
        return min(offered, key=lambda m: (abs(m - size), -m))

    def get(self, snap: Snapshot, payload: Payload | None, size: int) -> dict[str, Any]:
        """``GET /api/map?size=M``: the map at ``size`` (2..d, checked by the caller)."""
        with self._lock:
            data = self._data_locked(snap, payload)
            if len(data.rows) < 5:
                raise ValueError(f"the index holds {len(data.rows)} rows; a map needs 5")
            m = self.map_size(size, data.d)
            cached = m in data.maps
            if not cached:
                t0 = time.perf_counter()
                full = data.maps[data.d]
                Y = project_2d(data.X[:, :m], self.method, init=full, seed=self.seed)
                # drawn at the full map's RMS radius: a size whose map fits the full one
                # poorly is not drawn shrunk
                data.maps[m] = unit_rms(procrustes_align(Y, full))
                data.seconds[m] = time.perf_counter() - t0
                if len(data.maps) > _KEEP + 1:  # drop the oldest size but the full one
                    del data.maps[next(k for k in data.maps if k != data.d)]
        xy = np.round(data.maps[m].astype(np.float64), 4).tolist()
        return {"size": size, "map_size": m, "method": self.method,
                "generation": data.generation, "sample": len(data.rows), "xy": xy,
                "seconds": round(data.seconds[m], 4), "cached": cached}  # fmt: skip
