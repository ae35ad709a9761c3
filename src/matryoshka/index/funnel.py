"""Funnels: the stages ``[(m1, k1), (m2, k2), ...]`` of a search, as lists and as text.

A funnel keeps the best ``k1`` candidates scored at size ``m1``, rescores those at ``m2`` and keeps
``k2``, and so on; the last stage's ``k`` is what a search returns (Kusupati et al., 2022,
"Matryoshka Representation Learning", https://arxiv.org/abs/2205.13147, section 4.3). Users write
one as text, ``"32:400,128:50,512:10"``: :func:`parse_funnel` reads that, :func:`format_funnel`
writes it, and :func:`check_funnel` checks a funnel against the full size ``d``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matryoshka.dims import validate_dim

__all__ = ["FunnelError", "check_funnel", "format_funnel", "parse_funnel", "search_stages", "MAX_K"]

MAX_K = 1 << 24  # results per query: D and I of one query at this k take 200 MB


def parse_funnel(text: str, name: str = "funnel") -> list[tuple[int, int]]:
    """Read a funnel written as ``dim:k`` stages separated by commas.

    Parameters
    ----------
    text : str
        Such as ``"32:400,128:50,512:10"``.
    name : str, default "funnel"
        What the text is called in the error message (a command line passes ``"--funnel"``).

    Returns
    -------
    list of (int, int)
        The stages in order; sizes and shortlists are checked by :func:`check_funnel`.

    Examples
    --------
    >>> parse_funnel("32:400,128:50,512:10")
    [(32, 400), (128, 50), (512, 10)]
    """
    try:
        stages = [tuple(int(v) for v in st.split(":")) for st in text.split(",")]
    except ValueError:
        stages = []
    if not stages or any(len(st) != 2 for st in stages):
        raise ValueError(f"{name} must look like 32:400,128:50,512:10 (dim:k,...), got {text!r}")
    return stages  # type: ignore[return-value]


def format_funnel(stages: Sequence[Sequence[int]]) -> str:
    """Write a funnel ``[(m1, k1), (m2, k2), ...]`` as the text :func:`parse_funnel` reads.

    Examples
    --------
    >>> format_funnel([(32, 400), (128, 50), (512, 10)])
    '32:400,128:50,512:10'
    """
    return ",".join(f"{int(m)}:{int(k)}" for m, k in stages)


class FunnelError(ValueError):
    """A funnel that does not fit; ``stage`` is the position of the stage at fault (None: the
    funnel as a whole), so that a caller can name it (the server says ``funnel[1]``)."""

    def __init__(self, message: str, stage: int | None = None) -> None:
        super().__init__(message)
        self.stage = stage


def check_funnel(funnel: Sequence[Sequence[int]], d: int) -> list[tuple[int, int]]:
    """Validate a funnel ``[(m1, k1), (m2, k2), ...]`` and return it as a list of int pairs.

    Sizes must not decrease and be at most ``d``; shortlist lengths positive and not increasing
    (a later stage keeps at most what the one before handed it). A repeated size is useful when
    the last stage reranks quantised codes from a float copy (``rerank="float16"``).
    """
    if isinstance(funnel, (str, bytes)) or not isinstance(funnel, Sequence) or len(funnel) == 0:
        raise FunnelError(f"funnel must be a non-empty list of (dim, k) stages, got {funnel!r}")
    stages = []
    for i, st in enumerate(funnel):
        if isinstance(st, (str, bytes)) or not isinstance(st, Sequence) or len(st) != 2:
            raise FunnelError(
                f"each funnel stage must be a (dim, k) pair, got {st!r} in {funnel!r}", i
            )
        m, k = st
        for v, what in ((m, "dim"), (k, "k")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise FunnelError(
                    f"funnel stage {what} must be an integer, got {v!r} in {funnel!r}", i
                )
        if not 1 <= m <= d:
            raise FunnelError(f"funnel sizes must be between 1 and d={d}, got {m} in {funnel!r}", i)
        if k < 1:
            raise FunnelError(
                f"funnel shortlist lengths must be positive, got {k} in {funnel!r}", i
            )
        stages.append((int(m), int(k)))
    for i, ((m1, k1), (m2, k2)) in enumerate(zip(stages, stages[1:]), start=1):
        if m2 < m1:
            raise FunnelError(f"funnel sizes must not decrease, got {m2} after {m1}", i)
        if k2 > k1:
            raise FunnelError(
                f"funnel shortlists cannot grow: stage ({m2}, {k2}) keeps more than the "
                f"{k1} candidates the stage before handed it",
                i,
            )
    return stages


def search_stages(
    k: int | None, dim: int | None, funnel: Sequence[Sequence[int]] | None, d: int
) -> list[tuple[int, int]]:
    """A search's arguments as checked funnel stages: ``[(dim or d, k)]`` at one size.

    With a funnel, ``k`` may be omitted and otherwise must equal the last stage's ``k``.
    """
    if funnel is not None:
        if dim is not None:
            raise ValueError("give either dim or funnel, not both")
        stages = check_funnel(funnel, d)
        if stages[-1][1] > MAX_K:
            raise ValueError(f"a funnel returns at most {MAX_K:,} results per query")
        if k is not None and k != stages[-1][1]:
            raise ValueError(
                f"k={k} differs from the funnel's last shortlist {stages[-1][1]}; "
                "the last stage's k is what is returned"
            )
        return stages
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    if k > MAX_K:
        raise ValueError(f"k must be at most {MAX_K:,} (results per query), got k={k:,}")
    m = d if dim is None else validate_dim(dim, d, "dim")
    return [(m, int(k))]
