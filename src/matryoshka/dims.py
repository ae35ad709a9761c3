"""Nesting schedules: the sizes ``m`` at which a Matryoshka embedding is trained and used.

Every size is a prefix of the full embedding ``z in R^d``: size ``m`` means ``z[..., :m]``.
This module imports nothing of the package; every other module validates sizes through it.

Reference: Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022,
https://arxiv.org/abs/2205.13147
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "nesting_dims",
    "validate_dims",
    "validate_dim",
    "validate_weights",
    "interpolated_dims",
    "truncate",
]

ArrayT = TypeVar("ArrayT")


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def nesting_dims(d: int, start: int = 8) -> list[int]:
    """Doubling sizes ``start, 2*start, 4*start, ...`` that always end at ``d``.

    >>> nesting_dims(384)
    [8, 16, 32, 64, 128, 256, 384]
    >>> nesting_dims(2048)[:3]
    [8, 16, 32]

    Parameters
    ----------
    d : int
        Full embedding size.
    start : int, default 8
        Smallest size; if it is ``d`` or more the schedule is just ``[d]``.
    """
    d = _as_int(d, "d")
    start = _as_int(start, "start")
    if d <= 0:
        raise ValueError(f"d must be positive, got d={d}")
    if start <= 0:
        raise ValueError(f"start must be positive, got start={start}")
    dims: list[int] = []
    m = start
    while m < d:
        dims.append(m)
        m *= 2
    dims.append(d)
    return dims


def validate_dims(dims: Iterable[int], d: int | None = None, name: str = "dims") -> tuple[int, ...]:
    """Check a nesting list and return it as a tuple of ints.

    Sizes must be integers, positive, strictly ascending and (when ``d`` is given) at most ``d``.
    Each failure raises ``ValueError`` naming the offending value.
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
        raise ValueError(f"{name} must be a list of sizes such as [8, 16, 32], got {dims!r}")
    out = tuple(_as_int(m, f"every size in {name}") for m in dims)
    if not out:
        raise ValueError(f"{name} must hold at least one size, got an empty list")
    for m in out:
        if m <= 0:
            raise ValueError(f"sizes in {name} must be positive, got {m} in {list(out)}")
    for a, b in zip(out, out[1:]):
        if b <= a:
            raise ValueError(f"{name} must be strictly ascending, got {b} after {a} in {list(out)}")
    if d is not None:
        d = _as_int(d, "d")
        if out[-1] > d:
            raise ValueError(f"sizes in {name} must be at most d={d}, got {out[-1]} in {list(out)}")
    return out


def validate_dim(m: int, d: int, name: str = "m") -> int:
    """Check one prefix size ``1 <= m <= d`` and return it as an int."""
    m = _as_int(m, name)
    if not 1 <= m <= d:
        raise ValueError(f"{name} must be between 1 and d={d}, got {name}={m}")
    return m


def validate_weights(weights: Sequence[float] | None, dims: Sequence[int]) -> tuple[float, ...]:
    """Per-size loss weights: one finite, non-negative number per size (default all 1)."""
    if weights is None:
        return tuple(1.0 for _ in dims)
    if isinstance(weights, (str, bytes, Mapping, set, frozenset)) or not isinstance(
        weights, Iterable
    ):
        raise ValueError(
            f"weights must be a list of numbers, one per size {list(dims)}, got {weights!r}"
        )
    if any(isinstance(w, bool) or not isinstance(w, numbers.Real) for w in weights):
        raise ValueError(f"weights must be numbers, got {list(weights)!r}")
    weights = tuple(float(w) for w in weights)
    if len(weights) != len(dims):
        raise ValueError(
            f"weights must have one value per size: got {len(weights)} weights "
            f"{list(weights)} for {len(dims)} sizes {list(dims)}"
        )
    for w in weights:
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weights must be finite and non-negative, got {w} in {list(weights)}")
    if sum(weights) == 0:
        raise ValueError(f"at least one weight must be positive, got {list(weights)}")
    return weights


def interpolated_dims(dims: Sequence[int]) -> list[int]:
    """Sizes half-way between consecutive trained sizes (8, 16, 32 -> 12, 24).

    These were never trained; evaluating them shows whether accuracy interpolates.
    """
    dims = validate_dims(dims)
    mids = [(a + b) // 2 for a, b in zip(dims, dims[1:])]
    return [m for m, a in zip(mids, dims) if m > a]


def truncate(x: ArrayT, m: int, normalize: bool = True, eps: float = 1e-12) -> ArrayT:
    """The size-``m`` prefix of embeddings, optionally L2-renormalised.

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray of shape (..., d)
    m : int
        Prefix size, ``1 <= m <= d``.
    normalize : bool, default True
        Divide each prefix by its L2 norm (zero vectors stay zero). Cosine similarity of
        prefixes needs this: a unit vector's prefix is not a unit vector.

    Returns
    -------
    Same type as ``x``, shape (..., m). Without ``normalize`` this is a view, not a copy.
    """
    if not hasattr(x, "shape") or len(x.shape) == 0:
        raise ValueError(f"x must be an array of shape (..., d), got {type(x).__name__}")
    d = int(x.shape[-1])
    m = validate_dim(m, d)
    out = x[..., :m]
    if not normalize:
        return out
    if isinstance(out, np.ndarray):
        if out.dtype.itemsize < 4 and np.issubdtype(out.dtype, np.floating):
            # float16: a sum of squares overflows to inf (and every prefix to 0) from |x| ~ 256
            return truncate(out.astype(np.float32), m, normalize, eps).astype(out.dtype)
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        return out / np.maximum(norms, eps).astype(out.dtype, copy=False)
    import torch  # imported here so numpy-only users of this module never load torch

    if isinstance(out, torch.Tensor):
        if out.dtype in (torch.float16, torch.bfloat16):  # the norm in float32, as above
            return torch.nn.functional.normalize(out.float(), dim=-1, eps=eps).to(out.dtype)
        return torch.nn.functional.normalize(out, dim=-1, eps=eps)
    raise ValueError(f"x must be a numpy array or a torch tensor, got {type(x).__name__}")
