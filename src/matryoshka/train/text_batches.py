"""Batches of text pairs (or triples with a hard negative) for in-batch contrastive training.

In-batch negatives are the other rows' positives, so a batch must not hold the same text twice
(a negative that is a copy of the positive would teach the model to push a text from itself):
:func:`no_duplicate_batches` keeps such a pair for a later batch, as sentence-transformers'
``NoDuplicatesBatchSampler`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["check_pairs", "epoch_batches", "no_duplicate_batches", "shuffled_batches"]


def check_pairs(pairs: Sequence[tuple[str, ...]], batch_size: int) -> list[tuple[str, ...]]:
    """The pairs as a list, all ``(anchor, positive)`` or all ``(anchor, positive, negative)``.

    Raises ``ValueError`` naming the first bad pair, and when there are fewer than two pairs or a
    batch of fewer than two (no in-batch negatives).
    """
    pairs = [tuple(p) for p in pairs]
    width = len(pairs[0]) if pairs else 2
    for i, p in enumerate(pairs):
        if len(p) not in (2, 3) or len(p) != width or not all(isinstance(t, str) and t for t in p):
            raise ValueError(
                f"pairs[{i}] must be {width} non-empty strings (anchor, positive"
                f"{', negative' if width == 3 else ''}), got {p!r}"
            )
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs for in-batch negatives, got {len(pairs)}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 for in-batch negatives, got {batch_size}")
    return pairs


def no_duplicate_batches(
    pairs: Sequence[tuple[str, ...]], batch_size: int, seed: int, epoch: int = 0
) -> list[list[int]]:
    """Shuffled batches of pair indices in which no text appears twice.

    A pair whose texts are already in the batch waits for a later batch, as in
    sentence-transformers' ``NoDuplicatesBatchSampler``; the last batch may be smaller.

    Returns
    -------
    list of lists of int, every index once, ``ceil(n / batch_size)`` batches when duplicates allow
    """
    g = torch.Generator().manual_seed(seed + epoch)
    remaining = torch.randperm(len(pairs), generator=g).tolist()
    batches = []
    while remaining:
        batch: list[int] = []
        seen: set[str] = set()
        rest = []
        for i in remaining:
            texts = pairs[i]
            if len(batch) < batch_size and not any(t in seen for t in texts):
                batch.append(i)
                seen.update(texts)
            else:
                rest.append(i)
        batches.append(batch)
        remaining = rest
    return batches


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of ``range(n)``, duplicates allowed."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def epoch_batches(
    pairs: Sequence[tuple[str, ...]], batch_size: int, seed: int, epoch: int, no_duplicates: bool
) -> list[list[int]]:
    """One epoch's batches of pair indices (seeded by ``seed + epoch``)."""
    if no_duplicates:
        return no_duplicate_batches(pairs, batch_size, seed, epoch)
    return shuffled_batches(len(pairs), batch_size, seed, epoch)
