"""Checks every engine back end passes, against its real engine (called by test_engines_*.py).

Each check takes the back end's class, the ``target`` it connects to (a folder, a file, an
address) and the keyword options its constructor needs, builds a small seeded
:class:`MatryoshkaIndex` with a decaying per-dimension scale, explicit non-contiguous ids and
names, exports it, and compares the engine's answers with the index's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from matryoshka.index import MatryoshkaIndex, recall_at_k
from matryoshka.index.engines import EngineError, EngineIndex

N, D, NQ = 1500, 64, 25
SIZES = [16, 32]


def data(seed: int = 0, n: int = N, nq: int = NQ) -> tuple[np.ndarray, np.ndarray]:
    """Corpus (n, D) and queries (nq, D) whose dimensions carry less and less variance."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(2.0, 0.1, D).astype(np.float32)
    xb = rng.standard_normal((n, D)).astype(np.float32) * scale
    xq = xb[rng.choice(n, nq, replace=False)] + 0.3 * rng.standard_normal((nq, D)) * scale
    return xb, xq.astype(np.float32)


def source_index(metric: str, seed: int = 0) -> tuple[MatryoshkaIndex, np.ndarray]:
    """An index with ids 7, 10, 13, ... and names ``doc-<id>``, and its queries."""
    xb, xq = data(seed)
    ids = 7 + 3 * np.arange(len(xb))
    index = MatryoshkaIndex(D, metric).add(xb, ids=ids, names=[f"doc-{i}" for i in ids])
    return index, xq


def export(cls: type[EngineIndex], target: Any, index: MatryoshkaIndex, name: str, **opt: Any):
    return cls.from_index(index, target, sizes=SIZES, collection=name, batch_size=400, **opt)


def check_full_shortlist_is_exact(
    cls: type[EngineIndex], target: Any, metrics: tuple = ("cosine", "ip", "l2"), **opt: Any
) -> None:
    """A funnel whose first shortlist holds every vector returns exact full-size search."""
    for metric in metrics:
        index, xq = source_index(metric)
        D0, I0 = index.search(xq, 10)
        with export(cls, target, index, f"exact_{metric}", **opt) as engine:
            for funnel in ([(16, N), (D, 10)], [(16, N), (32, N), (D, 10)], [(D, 10)]):
                D1, I1 = engine.search(xq, funnel=funnel, exact=True)
                np.testing.assert_array_equal(I1, I0, err_msg=f"{metric} {funnel}")
                np.testing.assert_allclose(D1, D0, rtol=1e-4, atol=1e-3 * np.abs(D0).max())
            # one size: the prefix scores of the index at that size
            D2, I2 = engine.search(xq, 5, dim=16, exact=True)
            D3, I3 = index.search(xq, 5, dim=16)
            assert (I2 == I3).mean() >= 0.98  # ties at float32 rounding may swap
            np.testing.assert_allclose(D2, D3, rtol=1e-4, atol=1e-3 * np.abs(D3).max())


def check_recall_against_index(
    cls: type[EngineIndex], target: Any, prepare: Any = None, **opt: Any
) -> float:
    """recall@10 of the engine's own (approximate) funnel against the index's funnel."""
    index, xq = source_index("cosine", seed=1)
    funnel = [(16, 100), (D, 10)]
    _, I0 = index.search(xq, funnel=funnel)
    with export(cls, target, index, "recall", **opt) as engine:
        if prepare is not None:
            prepare(engine)  # e.g. build the engine's graphs now
        _, I1 = engine.search(xq, funnel=funnel)
    recall = recall_at_k(I1, I0, 10)
    assert recall >= 0.99, recall
    return recall


def check_export_keeps_ids_and_names(cls: type[EngineIndex], target: Any, **opt: Any) -> None:
    """Ids and names survive; a second export adds nothing; a broken one resumes."""
    index, xq = source_index("cosine")
    D0, I0 = index.search(xq, funnel=[(16, 200), (D, 10)])
    with export(cls, target, index, "keep", **opt) as engine:
        assert engine.count() == N
        D1, I1 = engine.search(xq, funnel=[(16, 200), (D, 10)], exact=True)
        assert engine.names_of(I1) == index.names_of(I1)
        assert engine.names_of(np.array([-1])) == [None]
    with export(cls, target, index, "keep", **opt) as again:  # the same index, again
        assert again.count() == N
        D2, I2 = again.search(xq, funnel=[(16, 200), (D, 10)], exact=True)
    np.testing.assert_array_equal(I2, I1)
    np.testing.assert_array_equal(I1, I0)


def check_interrupted_export_resumes(
    cls: type[EngineIndex], target: Any, monkeypatch: pytest.MonkeyPatch, **opt: Any
) -> None:
    """An export that fails on its third batch sends only the rest when run again."""
    index, xq = source_index("l2")
    calls, real = [], cls._upsert

    def flaky(self: EngineIndex, ids: np.ndarray, xb: np.ndarray, names: Any) -> None:
        calls.append(len(ids))
        if len(calls) == 3:
            raise ConnectionError("network dropped")
        real(self, ids, xb, names)

    monkeypatch.setattr(cls, "_upsert", flaky)
    with pytest.raises(ConnectionError):
        export(cls, target, index, "resume", **opt)
    assert calls == [400, 400, 400]
    calls.clear()
    with export(cls, target, index, "resume", **opt) as engine:
        assert engine.count() == N
        _, I1 = engine.search(xq, 10, exact=True)
    assert sum(calls) == N - 800  # the two batches that landed were not sent again
    np.testing.assert_array_equal(I1, index.search(xq, 10)[1])


def check_layout_errors(cls: type[EngineIndex], target: Any, **opt: Any) -> None:
    """Dimension mismatch, a size not stored, a missing collection; padding past the count."""
    xb, xq = data(n=5, nq=3)
    with cls(target, d=D, metric="cosine", sizes=[16], collection="layout", **opt) as engine:
        engine.add(xb)
        D1, I1 = engine.search(xq, 8, exact=True)
        assert (I1[:, 5:] == -1).all() and np.isneginf(D1[:, 5:]).all()
        assert (I1[:, :5] >= 0).all()
        with pytest.raises(ValueError, match="stores sizes"):
            engine.search(xq, funnel=[(32, 5), (D, 2)])
        with pytest.raises(ValueError, match="columns"):
            engine.add(xb[:, :32])
    with pytest.raises(EngineError, match="dimension mismatch"):
        cls(target, d=2 * D, collection="layout", **opt)
    with pytest.raises(EngineError, match="no collection"):
        cls(target, collection="absent", **opt)
    with cls(target, collection="layout", **opt) as reopened:  # the layout is read back
        assert (reopened.d, reopened.metric, reopened.sizes) == (D, "cosine", (16, D))
        assert reopened.count() == 5
