"""Backbones returning (B, d) embeddings: MLP, a compact CNN, torchvision ResNets."""

from matryoshka.models.backbones import (
    BACKBONES,
    MLP,
    SmallCNN,
    backbone_blocks,
    build_backbone,
    resnet,
)

__all__ = ["BACKBONES", "MLP", "SmallCNN", "backbone_blocks", "build_backbone", "resnet"]
