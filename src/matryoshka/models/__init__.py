"""Backbones returning (B, d) embeddings: MLP, a compact CNN, torchvision ResNets."""

from matryoshka.models.backbones import (
    BACKBONES,
    MLP,
    SmallCNN,
    backbone_blocks,
    build_backbone,
    resnet,
)
from matryoshka.models.text import encode_texts, load_sentence_encoder, minilm_path

__all__ = [
    "encode_texts",
    "load_sentence_encoder",
    "minilm_path",
    "BACKBONES",
    "MLP",
    "SmallCNN",
    "backbone_blocks",
    "build_backbone",
    "resnet",
]
