"""``MatryoshkaModel``: a backbone that maps inputs to (B, d) embeddings, and a nested head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from matryoshka.nn.heads import FixedFeatureHead, MatryoshkaHead

__all__ = ["MatryoshkaModel"]


class MatryoshkaModel(nn.Module):
    """Backbone + head. The backbone is any module returning embeddings of shape (B, d).

    ``forward(x)`` gives every trained size's logits (B, K, C) from one backbone pass;
    ``embed(x)`` gives the full embedding (B, d), from which every size is a slice.
    """

    def __init__(self, backbone: nn.Module, head: MatryoshkaHead | FixedFeatureHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def d(self) -> int:
        return self.head.d

    @property
    def dims(self) -> tuple[int, ...]:
        return self.head.dims

    def embed(self, x: Tensor) -> Tensor:
        """Full embeddings: x (B, ...) -> z (B, d)."""
        z = self.backbone(x)
        if z.ndim != 2 or z.shape[1] != self.head.d:
            raise ValueError(
                f"the backbone must return (B, d={self.head.d}) embeddings, got {tuple(z.shape)}"
            )
        return z

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every trained size: x (B, ...) -> (B, K, C)."""
        return self.head(self.embed(x))

    @torch.no_grad()
    def logits_at(self, x: Tensor, m: int) -> Tensor:
        """Logits at one size ``m`` (see the head's ``logits_at``): x (B, ...) -> (B, C)."""
        return self.head.logits_at(self.embed(x), m)
