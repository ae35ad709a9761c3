"""open_clip models as the two towers of a :class:`~matryoshka.models.dual.DualEncoder`.

Any open_clip architecture is built offline: a built-in name (``"ViT-B-32"``) with the weights
from a local file (``weights="…/open_clip_pytorch_model.bin"``: the file users already have), or a
folder written for open_clip's ``local-dir:`` schema (``open_clip_config.json`` holding
``{"model_cfg": {...}}``, and optionally the weights beside it). Nothing is downloaded: a
built-in name without ``weights`` starts from random weights, as a tiny test configuration does.

The model is built with a separate text tower (open_clip's ``CustomTextCLIP``; standard CLIP
checkpoints are converted by open_clip on loading), so the image tower (``model.visual``) and the
text tower (``model.text``) are two modules that freeze and save independently. Each tower's
output is the model's shared embedding (``embed_dim``), so a dual encoder over them starts with
identity projections and the checkpoint's temperature: before fine-tuning its full-size
embeddings are the checkpoint's own.

open_clip (``pip install open_clip_torch``) is imported inside these functions only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matryoshka._optional import require

__all__ = [
    "OpenClipImageTower",
    "OpenClipTextTower",
    "build_open_clip_towers",
    "open_clip_config",
]


def _open_clip() -> Any:
    return require("open_clip", "open_clip models as dual-encoder towers")


class _Group(nn.Module):
    """Modules and parameters that freeze together (a tower's stem or head)."""

    def __init__(self, modules: list[nn.Module], params: list[nn.Parameter]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        for i, p in enumerate(params):
            self.register_parameter(f"p{i}", p)


def _params(module: nn.Module, names: tuple[str, ...]) -> list[nn.Parameter]:
    return [p for n in names if isinstance(p := getattr(module, n, None), nn.Parameter)]


def _mods(module: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    return [m for n in names if isinstance(m := getattr(module, n, None), nn.Module)]


def _transformer_blocks(tower: nn.Module, stem: tuple, stem_p: tuple, head: tuple,
                        head_p: tuple) -> list[nn.Module]:  # fmt: skip
    """Stem, each residual block, head; or every module holding parameters, for other towers."""
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if blocks is None:
        return [m for m in tower.modules() if any(True for _ in m.parameters(recurse=False))]
    return [
        _Group(_mods(tower, stem), _params(tower, stem_p)),
        *blocks,
        _Group(_mods(tower, head), _params(tower, head_p)),
    ]


class OpenClipImageTower(nn.Module):
    """An open_clip image tower: images (B, 3, H, W) -> (B, embed_dim), the model's own
    projection included; images of another size are resized (bilinear) to the tower's.
    ``d``: its output size."""

    def __init__(self, visual: nn.Module, d: int) -> None:
        super().__init__()
        self.visual = visual
        self.d = int(d)

    def forward(self, x: Tensor) -> Tensor:
        size = getattr(self.visual, "image_size", None)
        size = (size, size) if isinstance(size, int) else size
        if size is not None and tuple(x.shape[-2:]) != tuple(size):  # e.g. 32x32 CIFAR -> 224
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out  # (B, d)

    def blocks(self) -> list[nn.Module]:
        """Input to output, for unfreezing the last ``k``: the patch embedding, each
        transformer block, then the final norm with the projection (a ViT)."""
        return _transformer_blocks(self.visual, ("conv1", "ln_pre"),
                                   ("class_embedding", "positional_embedding"),
                                   ("ln_post",), ("proj",))  # fmt: skip


class OpenClipTextTower(nn.Module):
    """An open_clip text tower with its tokenizer, shaped like a sentence-transformers model for
    :class:`~matryoshka.models.dual.DualEncoder`: ``tokenize(texts)`` -> ``{"input_ids": (B, L)}``,
    ``forward(features)`` -> ``{"sentence_embedding": (B, embed_dim)}``."""

    def __init__(self, text: nn.Module, tokenizer: Any, d: int) -> None:
        super().__init__()
        self.text = text
        self.tokenizer = tokenizer
        self.d = int(d)

    def get_embedding_dimension(self) -> int:
        return self.d

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.text(features["input_ids"])
        return {"sentence_embedding": out[0] if isinstance(out, tuple) else out}

    def blocks(self) -> list[nn.Module]:
        """Input to output: the token and position embeddings, each transformer block, then the
        final norm with the projection."""
        return _transformer_blocks(self.text, ("token_embedding",), ("positional_embedding",),
                                   ("ln_final",), ("text_projection",))  # fmt: skip


def open_clip_config(arch: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """open_clip's model name and configuration for ``arch``: a built-in name, or a folder with
    ``open_clip_config.json`` (``{"model_cfg": {...}}``), as open_clip's ``local-dir:`` reads."""
    oc = _open_clip()
    folder = Path(str(arch).removeprefix("local-dir:"))
    if folder.is_dir():
        path = folder / "open_clip_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: an open_clip folder needs it")
        cfg = json.loads(path.read_text())
        if "model_cfg" not in cfg:
            raise ValueError(f"{path} has no 'model_cfg'")
        return f"local-dir:{folder}", cfg["model_cfg"]
    cfg = oc.get_model_config(str(arch))
    if cfg is None:
        raise ValueError(
            f"{arch!r} is neither an open_clip architecture nor a folder with "
            f"open_clip_config.json; architectures: {', '.join(oc.list_models()[:12])}, ..."
        )
    return str(arch), cfg


def build_open_clip_towers(
    arch: str | os.PathLike, weights: str | os.PathLike | None = None, device: str = "cpu"
) -> tuple[OpenClipImageTower, OpenClipTextTower, float]:
    """The image tower, the text tower and the temperature of an open_clip model.

    ``arch``: a built-in architecture name or a ``local-dir`` folder (:func:`open_clip_config`);
    ``weights``: a local checkpoint file (``.bin``, ``.pt``, ``.safetensors``; a folder's own
    weights are read from the folder). Without either the model is randomly initialised.
    Returns ``(image, text, temperature)``.
    """
    oc = _open_clip()
    name, cfg = open_clip_config(arch)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"open_clip weights file {weights} not found")
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns of random weights on purpose
    try:
        model = oc.create_model(name, force_custom_text=True, pretrained_text=False)
        if weights is not None:  # a standard CLIP checkpoint is converted to the separate tower
            oc.load_checkpoint(model, str(weights))
        tokenizer = oc.get_tokenizer(name)
    finally:
        logging.getLogger().setLevel(level)
    model = model.to(device)
    d = int(cfg["embed_dim"])
    temperature = float(1.0 / model.logit_scale.detach().exp().item())
    image, text = OpenClipImageTower(model.visual, d), OpenClipTextTower(model.text, tokenizer, d)
    return image, text, temperature
