"""Nested classification heads: MRL (one classifier per size) and MRL-E (one shared, sliced).

Paper: Kusupati et al., "Matryoshka Representation Learning", https://arxiv.org/abs/2205.13147

Both heads compute the logits of every trained size from ONE matrix product: the per-size weights
are laid side by side as a (K*C, d) matrix whose rows for size ``m`` are zero past column ``m``
(a prefix mask). ``z @ W.T`` then gives all K sizes' logits at once, which costs about as much as
K single heads' products but runs as one kernel instead of a Python loop of K products.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from matryoshka.dims import nesting_dims, validate_dim, validate_dims

__all__ = ["MatryoshkaHead", "FixedFeatureHead"]


def _check_input(z: Tensor, d: int) -> None:
    if z.ndim != 2 or z.shape[1] != d:
        raise ValueError(f"expected embeddings of shape (B, d={d}), got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"expected floating-point embeddings, got {z.dtype}")


def _check_sizes(d: object, num_classes: object) -> tuple[int, int]:
    for name, v in (("d", d), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(d), int(num_classes)


class MatryoshkaHead(nn.Module):
    """Linear classifiers on every prefix ``z[:, :m]`` of an embedding.

    Parameters
    ----------
    d : int
        Embedding size.
    num_classes : int
        Number of classes ``C``.
    dims : sequence of int, optional
        Nested sizes, ascending, at most ``d`` (default ``nesting_dims(d)``).
    efficient : bool, default False
        False is MRL: one ``Linear(m, C)`` per size. True is MRL-E: one shared ``Linear(d, C)``
        whose first ``m`` weight columns classify size ``m`` (the bias is shared).
    bias : bool, default True
    device, dtype : passed to the parameters.

    Shapes
    ------
    ``forward(z)``: z (B, d) -> logits (B, K, C), K = len(dims), in the order of ``dims``.
    """

    def __init__(
        self,
        d: int,
        num_classes: int,
        dims: Sequence[int] | None = None,
        efficient: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d, self.num_classes = _check_sizes(d, num_classes)
        self.dims = validate_dims(nesting_dims(d) if dims is None else dims, d)
        self.efficient = bool(efficient)
        kw = {"device": device, "dtype": dtype}
        K, C = len(self.dims), self.num_classes
        # mask[k, 0, j] = 1 where column j belongs to size dims[k]
        cols = torch.arange(d, device=device)
        mask = (cols[None, :] < torch.tensor(self.dims, device=device)[:, None]).to(
            dtype or torch.get_default_dtype()
        )
        self.register_buffer("mask", mask[:, None, :], persistent=False)  # (K, 1, d)
        if self.efficient:
            self.weight = nn.Parameter(torch.empty(C, d, **kw))  # (C, d), shared by all sizes
            self.bias = nn.Parameter(torch.empty(C, **kw)) if bias else None  # (C,)
        else:
            self.weight = nn.Parameter(torch.empty(K, C, d, **kw))  # (K, C, d), masked past m
            self.bias = nn.Parameter(torch.empty(K, C, **kw)) if bias else None  # (K, C)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation, with each size's fan-in ``m``."""
        with torch.no_grad():
            if self.efficient:
                bound = 1.0 / math.sqrt(self.d)
                self.weight.uniform_(-bound, bound)
                if self.bias is not None:
                    self.bias.uniform_(-bound, bound)
                return
            for k, m in enumerate(self.dims):
                bound = 1.0 / math.sqrt(m)
                self.weight[k].uniform_(-bound, bound)
                if self.bias is not None:
                    self.bias[k].uniform_(-bound, bound)
            self.weight.mul_(self.mask)  # entries past m are never used; keep them at zero

    def _stacked_weight(self) -> Tensor:
        w = self.weight if not self.efficient else self.weight.unsqueeze(0)  # (K|1, C, d)
        return (w * self.mask).reshape(-1, self.d)  # (K*C, d)

    def forward(self, z: Tensor) -> Tensor:
        """Logits of every trained size from one product: z (B, d) -> (B, K, C)."""
        _check_input(z, self.d)
        K, C = len(self.dims), self.num_classes
        logits = z @ self._stacked_weight().to(z.dtype).T  # (B, K*C)
        logits = logits.view(z.shape[0], K, C)  # (B, K, C)
        if self.bias is not None:
            logits = logits + self.bias.to(z.dtype)  # (K, C) or (C,) broadcasts
        return logits

    def can_classify(self, m: int) -> bool:
        """Whether :meth:`logits_at` works at size ``m`` (MRL-E: any; MRL: trained sizes)."""
        return 1 <= m <= self.d and (self.efficient or m in self.dims)

    def logits_at(self, z: Tensor, m: int) -> Tensor:
        """Logits at one size ``m``: z (B, d) -> (B, C).

        MRL-E classifies any ``1 <= m <= d`` with the first ``m`` columns of its shared weight,
        so sizes that were never trained work too. MRL has a separate classifier per trained
        size and none for other sizes: asking for one is an error (its embedding prefix is
        still usable, e.g. for nearest-neighbour search).
        """
        _check_input(z, self.d)
        m = validate_dim(m, self.d)
        if self.efficient:
            w, b = self.weight, self.bias  # (C, d), (C,)
        else:
            if m not in self.dims:
                raise ValueError(
                    f"an MRL head has one classifier per trained size {list(self.dims)} and "
                    f"none for m={m}; use a trained size, or an MRL-E head (efficient=True), "
                    "which classifies any size up to d"
                )
            k = self.dims.index(m)
            w = self.weight[k]  # (C, d), zero past column m
            b = None if self.bias is None else self.bias[k]  # (C,)
        logits = z[:, :m] @ w[:, :m].to(z.dtype).T  # (B, C)
        return logits if b is None else logits + b.to(z.dtype)

    def extra_repr(self) -> str:
        kind = "MRL-E" if self.efficient else "MRL"
        return f"{kind}, d={self.d}, num_classes={self.num_classes}, dims={list(self.dims)}"


class FixedFeatureHead(nn.Module):
    """One linear classifier on the whole embedding: the fixed-feature (FF) baseline's head.

    It speaks the same interface as :class:`MatryoshkaHead` with ``dims == (d,)``, so the same
    training loop and evaluation serve both. ``logits_at(z, m)`` with ``m < d`` cuts the weight to
    its first ``m`` columns: that is the rigid model truncated, which is what the truncation
    baseline measures.

    Shapes: ``forward(z)``: z (B, d) -> logits (B, 1, C).
    """

    def __init__(
        self,
        d: int,
        num_classes: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d, self.num_classes = _check_sizes(d, num_classes)
        self.dims = (self.d,)
        self.efficient = False
        self.linear = nn.Linear(d, num_classes, bias=bias, device=device, dtype=dtype)

    def forward(self, z: Tensor) -> Tensor:
        """z (B, d) -> logits (B, 1, C)."""
        _check_input(z, self.d)
        return self.linear(z).unsqueeze(1)  # (B, 1, C)

    def can_classify(self, m: int) -> bool:
        """Only its own size ``d``: cut to a prefix it is the rigid model truncated, which
        :meth:`logits_at` still computes but per-size reports must not show as its accuracy."""
        return m == self.d

    def logits_at(self, z: Tensor, m: int) -> Tensor:
        """Logits from the first ``m`` features and weight columns: z (B, d) -> (B, C)."""
        _check_input(z, self.d)
        m = validate_dim(m, self.d)
        w, b = self.linear.weight, self.linear.bias
        logits = z[:, :m] @ w[:, :m].T  # (B, C)
        return logits if b is None else logits + b

    def extra_repr(self) -> str:
        return f"FF, d={self.d}, num_classes={self.num_classes}"
