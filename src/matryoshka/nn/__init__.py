"""Nested heads, the nested loss and the model that joins a backbone to a head."""

from matryoshka.nn.heads import FixedFeatureHead, MatryoshkaHead
from matryoshka.nn.loss import MatryoshkaLoss, in_batch_contrastive_loss
from matryoshka.nn.model import MatryoshkaModel

__all__ = [
    "FixedFeatureHead",
    "MatryoshkaHead",
    "MatryoshkaLoss",
    "MatryoshkaModel",
    "in_batch_contrastive_loss",
]
