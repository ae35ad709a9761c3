"""Backbones returning (B, d) embeddings: MLP, a compact CNN, torchvision ResNets; text encoders;
dual encoders (an image tower and a text tower in one nested space)."""

from matryoshka.models.backbones import (
    BACKBONES,
    MLP,
    SmallCNN,
    backbone_blocks,
    build_backbone,
    resnet,
)
from matryoshka.models.dual import (
    DualEncoder,
    build_dual_encoder,
    build_open_clip_dual_encoder,
    load_dual_encoder,
    nested_clip_loss,
    save_dual_encoder,
    text_blocks,
)
from matryoshka.models.text import encode_texts, load_sentence_encoder, minilm_path

__all__ = [
    "DualEncoder",
    "build_dual_encoder",
    "build_open_clip_dual_encoder",
    "load_dual_encoder",
    "nested_clip_loss",
    "save_dual_encoder",
    "text_blocks",
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
