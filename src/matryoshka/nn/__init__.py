"""Nested heads, the nested loss and the model that joins a backbone to a head."""

from matryoshka.nn.heads import FixedFeatureHead, MatryoshkaHead
from matryoshka.nn.loss import MatryoshkaLoss, clip_contrastive_loss, in_batch_contrastive_loss
from matryoshka.nn.model import MatryoshkaModel

__all__ = [
    "FixedFeatureHead",
    "MatryoshkaHead",
    "MatryoshkaLoss",
    "MatryoshkaModel",
    "clip_contrastive_loss",
    "in_batch_contrastive_loss",
]
