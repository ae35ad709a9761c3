"""The fastest funnel that meets a recall target, measured on a sample of queries.

:func:`tune_funnel` searches funnel shapes and first-stage settings on the given queries against
exact full-size results and returns the fastest that meets ``target_recall`` (recall@k), with its
measured recall and queries per second. The shapes tried:

- the exact full-size search ``[(d, k)]`` (recall 1.0, the fallback);
- two stages ``[(m1, k1), (d, k)]`` for every first size ``m1`` in 16, 32, 64, ... below ``d``;
- three stages ``[(m1, k1), (m2, k2), (d, k)]`` with ``m2`` two or four times ``m1`` and
  ``k2`` four times ``k``;
- with an approximate first stage built (:meth:`MatryoshkaIndex.build_ann`): the same shapes
  from its search size, for each of a few settings of its search-time knob (HNSW ``ef_search``,
  IVF and AdANNS ``nprobe``).

For each shape the shortlist ``k1`` is found by bisection over a grid (recall grows with
``k1``); the smallest ``k1`` that meets the target and the next two grid values are timed.
Recall on a sample is an estimate: a shape must meet ``target_recall + margin``, the margin
defaulting to one standard error of that shape's mean per-query recall (at least the binomial
``sqrt(r (1 - r) / (nq k))``). The search runs on every other sample query; the candidates,
fastest first, are then checked on the other half, and the first whose recall there is at least
the target is chosen (the exact full-size search when none is). Without that check the fastest
of many candidates that pass on one sample is often one that passed by luck: on 200k and 1M
vectors such picks scored up to 0.01 below their sample recall on other queries. Recall near
0.99 needs a sample of about 1,000 queries; with a few hundred the halves differ by more than
the margin and the exact search is often all that passes.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from matryoshka.index.metrics import recall_at_k, recall_per_query

MatryoshkaIndex = Any  # matryoshka.index.core.MatryoshkaIndex (which imports this module)

__all__ = ["tune_funnel"]

_KNOBS = {"hnsw": "ef_search", "ivf": "nprobe", "ivfpq": "nprobe", "adanns": "nprobe"}
_EF = (16, 24, 32, 48, 64, 96, 128, 192, 256)  # HNSW ef_search values tried by default
_NPROBE = (4, 8, 12, 16, 24, 32, 48, 64)  # IVF and AdANNS nprobe values tried by default


def _grid(k: int, n: int) -> list[int]:
    """Shortlist lengths to try, ascending: k, 1.5 k, 2 k, 2.5 k, ... up to 100 k (at most n),
    about 12% apart from 4 k up so that the chosen one overshoots the target little."""
    steps = (1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.6, 6.4, 7.2, 8, 9, 10, 11, 12.5, 14, 16, 18,
             20, 22.5, 25, 28, 32, 36, 40, 45, 50, 56, 64, 72, 80, 90, 100)  # fmt: skip
    return sorted({min(n, max(k, round(k * s))) for s in steps})


def _sizes(d: int) -> list[int]:
    sizes, m = [], 16
    while m < d:
        sizes.append(m)
        m *= 2
    return sizes


class _Trial:
    """Runs funnels on the sample, measures recall against exact results and times them.

    A funnel meets the target when its recall on the sample is at least ``target + margin``;
    with no margin given, the margin is the standard error of the mean per-query recall of that
    funnel (at least the binomial one, ``sqrt(t (1 - t) / (nq k))``): an approximate stage
    misses in bursts (a query lands in a poor region of the graph and loses most of its top k),
    which the binomial error alone understates.
    """

    def __init__(self, index: MatryoshkaIndex, xq: np.ndarray, k: int, repeat: int,
                 target: float, margin: float | None) -> None:  # fmt: skip
        self.index, self.xq, self.k, self.repeat = index, xq, k, repeat
        self.target, self.margin = target, margin
        self.floor = math.sqrt(target * (1 - target) / (len(xq) * k))
        _, self.gt = index.search(xq, k)  # exact full size: the reference
        self.stats: dict[tuple, tuple[float, float]] = {}
        self.timed: dict[tuple, dict[str, Any]] = {}  # every candidate timed, by its key

    def _stats(self, funnel: list[tuple[int, int]], ann: bool) -> tuple[float, float]:
        """Recall@k on the sample and the standard error of its per-query mean."""
        key = (tuple(funnel), ann, self._knob())
        if key not in self.stats:
            _, ids = self.index.search(self.xq, funnel=funnel, ann=ann)
            per = recall_per_query(ids, self.gt, self.k)
            se = float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else 0.0
            self.stats[key] = (recall_at_k(ids, self.gt, self.k), se)
        return self.stats[key]

    def recall(self, funnel: list[tuple[int, int]], ann: bool) -> float:
        return self._stats(funnel, ann)[0]

    def margin_of(self, funnel: list[tuple[int, int]], ann: bool) -> float:
        if self.margin is not None:
            return self.margin
        return max(self.floor, self._stats(funnel, ann)[1])

    def meets(self, funnel: list[tuple[int, int]], ann: bool) -> bool:
        need = min(1.0, self.target + self.margin_of(funnel, ann))
        return self.recall(funnel, ann) >= need

    def qps(self, funnel: list[tuple[int, int]], ann: bool) -> float:
        self.index.search(self.xq[: min(8, len(self.xq))], funnel=funnel, ann=ann)  # warm
        best = math.inf
        for _ in range(self.repeat):
            t0 = time.perf_counter()
            self.index.search(self.xq, funnel=funnel, ann=ann)
            best = min(best, time.perf_counter() - t0)
        return len(self.xq) / best

    def _knob(self) -> Any:
        ann = self.index.ann_
        return None if ann is None else getattr(ann, _KNOBS[ann.kind])


_SAFER = 2  # grid steps above the smallest passing shortlist also timed (confirmation may need)


def _passing_k1(trial: _Trial, shape, grid: list[int], ann: bool) -> list[int]:
    """The smallest grid value k1 for which ``shape(k1)`` meets the target (by bisection) and
    the next ``_SAFER`` values above it: the smallest passes the searching half, perhaps by
    luck, and a slightly longer shortlist may be the fastest that the confirming half accepts.
    Empty when none meets it."""
    lo, hi = 0, len(grid) - 1
    if not trial.meets(shape(grid[hi]), ann):
        return []
    while lo < hi:
        mid = (lo + hi) // 2
        if trial.meets(shape(grid[mid]), ann):
            hi = mid
        else:
            lo = mid + 1
    return grid[lo : lo + 1 + _SAFER]


def _shapes(d: int, k: int, first: list[int]):
    """Funnel shapes as functions of k1: two stages from each first size, and three stages."""
    out = []
    for m1 in first:
        out.append(lambda k1, m1=m1: [(m1, k1), (d, k)])
        for m2 in (2 * m1, 4 * m1):
            if m2 < d:
                out.append(lambda k1, m1=m1, m2=m2: _three(m1, k1, m2, 4 * k, d, k))
    return out


def _three(m1: int, k1: int, m2: int, k2: int, d: int, k: int) -> list[tuple[int, int]]:
    """``[(m1, k1), (m2, k2), (d, k)]``, or two stages when the middle one would keep all."""
    return [(m1, k1), (m2, k2), (d, k)] if k2 < k1 else [(m1, k1), (d, k)]


def tune_funnel(
    index: MatryoshkaIndex,
    xq: np.ndarray,
    target_recall: float = 0.95,
    k: int = 10,
    ann: bool | None = None,
    knob_values: list[int] | None = None,
    margin: float | None = None,
    repeat: int = 2,
    exact_first: bool = True,
) -> dict[str, Any]:
    """The fastest funnel meeting ``target_recall`` on the sample queries ``xq`` (nq, d).

    Parameters
    ----------
    index : MatryoshkaIndex
        A filled index; with an approximate first stage built, funnels from it are tried too.
    xq : ndarray of shape (nq, d)
        Sample queries (a few hundred is enough); recall is against exact full-size search.
    target_recall : float, default 0.95
        recall@k to meet.
    k : int, default 10
    ann : bool, optional
        Try funnels from the approximate first stage (default: when one is built).
    knob_values : list of int, optional
        Settings of the approximate stage's search knob to try (HNSW ``ef_search``: the
        shortlist or more; IVF ``nprobe``); default 16 to 256 for ``ef_search``, 4 to 64
        for ``nprobe``.
    margin : float, optional
        Recall the sample must show above the target (default: one standard error of each
        candidate's mean per-query recall).
    repeat : int, default 2
        Timed runs per candidate (the best counts).
    exact_first : bool, default True
        Also try funnels whose first stage is exact (the full-size search is always tried).

    Returns
    -------
    dict
        ``funnel`` (list of [m, k]), ``ann`` (bool), ``ann_params`` (the knob's value or None),
        ``recall`` and ``margin`` (on the searching half), ``confirm_recall`` (on the other
        half), ``qps``, ``target_recall``, ``k``, ``queries`` and ``tried``: every timed
        candidate as ``{funnel, ann, ann_params, recall, margin, qps}``, fastest first
        (``confirm_recall`` on those checked).
        The index's approximate stage is left at the chosen knob value.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    xq = np.asarray(xq, dtype=np.float32)
    if xq.ndim != 2 or len(xq) == 0:
        raise ValueError(f"xq must be a non-empty (nq, d) sample of queries, got {xq.shape}")
    # search on every other query, confirm on the rest: the fastest of many candidates that pass
    # on one sample is likely one that passed by luck (on it, not on other queries)
    xs, xc = (xq[0::2], xq[1::2]) if len(xq) >= 2 else (xq, xq)
    trial = _Trial(index, xs, k, repeat, target_recall, margin)
    d, grid = index.d, _grid(k, len(index))
    _timed(trial, [(d, k)], False, None)
    for shape in _shapes(d, k, _sizes(d) if exact_first else []):
        for k1 in _passing_k1(trial, shape, grid, False):
            _timed(trial, shape(k1), False, None)
    use_ann = index.ann_ is not None if ann is None else ann
    if use_ann:
        _tune_ann(trial, index, k, grid, knob_values)
    tried = sorted(trial.timed.values(), key=lambda r: -r["qps"])
    best = _confirmed(index, tried, _Trial(index, xc, k, repeat, target_recall, margin))
    if best["ann"]:
        setattr(index.ann_, _KNOBS[index.ann_.kind], best["ann_params"])
    return {**best, "target_recall": target_recall, "k": k, "queries": len(xq),
            "tried": tried}  # fmt: skip


def _confirmed(index: MatryoshkaIndex, tried: list[dict[str, Any]], check: _Trial) -> dict:
    """The fastest candidate whose recall on the confirming queries is at least the target
    (no margin: those queries played no part in choosing it); each one checked gets
    ``confirm_recall``. The exact full-size search always passes."""
    stage = index.ann_
    before = None if stage is None else getattr(stage, _KNOBS[stage.kind])
    try:
        for row in tried:
            if row["ann"]:
                setattr(stage, _KNOBS[stage.kind], row["ann_params"])
            funnel = [tuple(st) for st in row["funnel"]]
            row["confirm_recall"] = round(check.recall(funnel, row["ann"]), 4)
            if check.recall(funnel, row["ann"]) >= check.target:  # unbiased here: no margin
                return row
    finally:
        if stage is not None:
            setattr(stage, _KNOBS[stage.kind], before)
    return next(r for r in tried if not r["ann"] and len(r["funnel"]) == 1)  # exact, full size


def _tune_ann(trial, index, k, grid, knob_values) -> None:
    """Time candidates from the approximate first stage, for each value of its search knob."""
    if index.ann_ is None:
        raise ValueError("ann=True but no approximate first stage: call build_ann first")
    stage = index.ann_
    knob = _KNOBS[stage.kind]
    values = knob_values or (_EF if knob == "ef_search" else _NPROBE)
    shapes = _shapes(index.d, k, [stage.search_dim])
    before = getattr(stage, knob)
    try:
        for v in values:
            setattr(stage, knob, v)
            for shape in shapes:
                for k1 in _passing_k1(trial, shape, grid, True):
                    # faiss's HNSW walks with max(ef_search, shortlist): name the value that ran
                    ran = max(v, k1) if knob == "ef_search" else v
                    setattr(stage, knob, ran)
                    _timed(trial, shape(k1), True, ran)
                    setattr(stage, knob, v)
    finally:
        setattr(stage, knob, before)


def _timed(trial: _Trial, funnel, ann: bool, knob: int | None) -> None:
    """Time a candidate into ``trial.timed`` once (a three-stage shape may come back as a
    two-stage one, and two knob values may run the same search)."""
    key = (str([list(s) for s in funnel]), ann, knob)
    if key not in trial.timed:
        trial.timed[key] = {
            "funnel": [list(s) for s in funnel],
            "ann": ann,
            "ann_params": knob,
            "recall": round(trial.recall(funnel, ann), 4),
            "margin": round(trial.margin_of(funnel, ann), 4),
            "qps": round(trial.qps(funnel, ann), 1),
        }
