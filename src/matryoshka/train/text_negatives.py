"""Hard negatives mined from a corpus: for each training pair, a document the current model
ranks high for its anchor that is not one of its positives.

In-batch negatives are mostly easy (random documents); a mined negative is a near miss, which
teaches the finer distinctions the small prefixes lose first. Negatives are drawn from a band of
ranks (default 10 to 50) rather than the very top, where unjudged relevant documents (false
negatives) gather.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matryoshka.dims import truncate

__all__ = ["mine_hard_negatives"]


def mine_hard_negatives(
    xq: np.ndarray,
    xb: np.ndarray,
    positives: Sequence[Sequence[int]],
    ranks: tuple[int, int] = (10, 50),
    seed: int = 0,
    block: int = 1024,
) -> np.ndarray:
    """One hard negative per anchor: a random corpus row among its ranks ``[lo, hi)``.

    Parameters
    ----------
    xq : ndarray of shape (nq, d), the anchors' embeddings
    xb : ndarray of shape (N, d), the corpus' embeddings (cosine similarity: rows renormalised)
    positives : nq sequences of corpus rows that are relevant to each anchor (never drawn)
    ranks : the band of ranks (0 = best) a negative is drawn from, positives left out; on a
        corpus too small for it, the band ends at the corpus' last row and starts at most
        there
    seed : the draws' random seed

    Returns
    -------
    ndarray of shape (nq,), int64 corpus rows
    """
    xq, xb = np.asarray(xq, np.float32), np.asarray(xb, np.float32)
    if xq.ndim != 2 or xb.ndim != 2 or xq.shape[1] != xb.shape[1]:
        raise ValueError(f"xq (nq, d) and xb (N, d) must share d, got {xq.shape} and {xb.shape}")
    if len(positives) != len(xq):
        raise ValueError(f"{len(xq)} anchors but {len(positives)} lists of positives")
    lo, hi = ranks
    if not 0 <= lo < hi:
        raise ValueError(f"ranks must be (lo, hi) with 0 <= lo < hi, got {ranks}")
    most = max((len(p) for p in positives), default=0)
    if len(xb) <= most:
        raise ValueError(f"the corpus has {len(xb)} rows: none is left besides the positives")
    hi = min(hi, len(xb) - most)
    lo = min(lo, hi - 1)
    d = xb.shape[1]
    qn, bn = truncate(xq, d), truncate(xb, d)
    rng = np.random.default_rng(seed)
    out = np.empty(len(xq), np.int64)
    for start in range(0, len(xq), block):
        scores = qn[start : start + block] @ bn.T  # (b, N)
        top = np.argsort(-scores, axis=1)[:, : hi + most]  # (b, hi + most)
        for j, row in enumerate(top):
            pos = set(positives[start + j])
            band = [int(i) for i in row if i not in pos][lo:hi]
            out[start + j] = band[rng.integers(len(band))]
    return out
