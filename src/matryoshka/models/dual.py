"""Dual encoders: an image tower and a text tower matched in one shared, nested embedding space.

As ALIGN in the MRL paper (Kusupati et al. 2022, https://arxiv.org/abs/2205.13147; ALIGN: Jia et
al. 2021, CLIP: Radford et al. 2021): each tower is followed by a linear projection to a shared
size ``d``, and the symmetric contrastive loss (learnable temperature, in-batch negatives) is
applied to every renormalised prefix ``z[:, :m]`` of both sides from one forward pass
(:func:`nested_clip_loss`). A 64-dimension prefix of both sides then still does zero-shot
classification and image <-> text search.

The image tower is any module returning (B, f) features (a backbone of
:func:`~matryoshka.models.build_backbone`); the text tower a sentence-transformers model (the
packaged all-MiniLM-L6-v2 by default). sentence-transformers loads inside the functions that
need it, never at ``import matryoshka``.

On disk (:func:`save_dual_encoder`): a folder with ``model.safetensors`` (the image tower, both
projections and the temperature), ``text/`` (the text tower, a sentence-transformers folder
written by its own ``save``) and ``config.json`` (backbone name and arguments, ``d``, ``dims``,
the text tower's subfolder). Loading never unpickles: weights come from safetensors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from matryoshka._io import FolderKind, atomic_dir, resolve_dir
from matryoshka.dims import nesting_dims, validate_dims
from matryoshka.models.backbones import backbone_blocks, build_backbone
from matryoshka.models.text import load_sentence_encoder, quiet_transformers
from matryoshka.nn.loss import MatryoshkaLoss, clip_contrastive_loss

__all__ = [
    "DUAL_ENCODER_FOLDER",
    "DualEncoder",
    "build_dual_encoder",
    "build_open_clip_dual_encoder",
    "load_dual_encoder",
    "nested_clip_loss",
    "save_dual_encoder",
    "text_blocks",
]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TEXT_DIR = "text"
FORMAT = "matryoshka-dual-encoder"
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp of the learnable scale
DUAL_ENCODER_FOLDER = FolderKind(
    "matryoshka dual encoder", CONFIG, fmt=FORMAT,
    names=r"model\.safetensors|config\.json|text|open_clip",
)  # fmt: skip
OPEN_CLIP_DIR = "open_clip"  # an open_clip model's configuration, for open_clip's local-dir
TOWERS = ("image", "text")


def text_blocks(text_tower: Any) -> list[nn.Module]:
    """The text tower's blocks from input to output, for unfreezing the last ``k``.

    A sentence-transformers model over a BERT-like transformer (all-MiniLM-L6-v2): the token
    embeddings, then each transformer layer. A tower with a ``blocks()`` method (an open_clip
    text tower): its list. Other models: every sub-module that holds parameters of its own, in
    order.
    """
    if callable(getattr(text_tower, "blocks", None)):
        return list(text_tower.blocks())
    first = next(iter(text_tower.children()), None)
    auto = getattr(first, "auto_model", None)
    layers = getattr(getattr(auto, "encoder", None), "layer", None)
    if auto is not None and layers is not None and hasattr(auto, "embeddings"):
        return [auto.embeddings, *layers]
    return [m for m in text_tower.modules() if any(True for _ in m.parameters(recurse=False))]


def _tokens(text_tower: Any, texts: list[str]) -> dict[str, Any]:
    """Tokenised inputs on the text tower's device."""
    tok = text_tower.preprocess if hasattr(text_tower, "preprocess") else text_tower.tokenize
    out = tok(texts)
    return {k: (v.to(text_tower.device) if isinstance(v, Tensor) else v) for k, v in out.items()}


class DualEncoder(nn.Module):
    """An image tower and a text tower, each projected to a shared size ``d``.

    Parameters
    ----------
    image_tower : nn.Module
        x (B, ...) -> (B, image_features).
    text_tower : SentenceTransformer or OpenClipTextTower
        list of B strings -> (B, text_features) sentence embeddings (a module with
        ``tokenize``, ``get_embedding_dimension`` and a forward returning
        ``{"sentence_embedding": ...}``).
    d : int
        The shared embedding size.
    image_features : int, optional
        The image tower's output size; default its ``d`` attribute (every backbone of
        :func:`~matryoshka.models.build_backbone` has one).
    dims : sequence of int, optional
        The nested sizes the model is trained and used at; default ``nesting_dims(d)``.
    temperature : float
        Initial temperature; stored as the log of the logit scale (``log(1 / 0.07)``), whose
        exponential is clamped at 100 as in CLIP.
    image_spec : dict, optional
        ``{"backbone": name, "kwargs": {...}}``: how to rebuild the image tower with
        :func:`~matryoshka.models.build_backbone` (what :func:`save_dual_encoder` needs), or
        ``{"open_clip": model_cfg}`` for both towers of an open_clip model.
    identity_projections : bool
        Start both projections at the identity (each tower's output already is the shared
        embedding: a pretrained CLIP), or at its first ``d`` coordinates when ``d`` is smaller;
        needs ``d <= image_features, text_features``.
    """

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: Any,
        d: int,
        image_features: int | None = None,
        dims: Sequence[int] | None = None,
        temperature: float = 0.07,
        image_spec: dict[str, Any] | None = None,
        identity_projections: bool = False,
    ) -> None:
        super().__init__()
        image_features = image_features or getattr(image_tower, "d", None)
        if not image_features:
            raise ValueError("image_features is needed: the image tower has no `d` attribute")
        text_features = text_tower.get_embedding_dimension()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.d = int(d)
        self.dims = validate_dims(dims if dims is not None else nesting_dims(self.d), self.d)
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.image_proj = nn.Linear(int(image_features), self.d)
        self.text_proj = nn.Linear(int(text_features), self.d)
        if identity_projections:
            if self.d > min(image_features, text_features):
                raise ValueError(
                    f"identity projections need both towers' outputs of size at least "
                    f"d={self.d}, got image {image_features} and text {text_features}"
                )
            for proj in (self.image_proj, self.text_proj):
                nn.init.eye_(proj.weight)
                nn.init.zeros_(proj.bias)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.image_features, self.text_features = int(image_features), int(text_features)
        self.image_spec = dict(image_spec) if image_spec is not None else None
        self._frozen: dict[str, list[nn.Module]] = {"image": [], "text": []}

    # ------------------------------------------------------------------ encoding
    def logit_scale(self) -> Tensor:
        """The scale of the cosine similarities: ``exp(log_logit_scale)``, at most 100."""
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def _tower_trains(self, tower: str) -> bool:
        module = self.image_tower if tower == "image" else self.text_tower
        return torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())

    def image_tower_features(self, x: Tensor) -> Tensor:
        """The image tower's output (B, image_features); without gradients when it is frozen."""
        with torch.set_grad_enabled(self._tower_trains("image")):
            return self.image_tower(x)

    def text_tower_features(self, texts: Sequence[str]) -> Tensor:
        """The text tower's sentence embeddings (B, text_features), gradients as above."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        with torch.set_grad_enabled(self._tower_trains("text")):
            return self.text_tower(_tokens(self.text_tower, list(texts)))["sentence_embedding"]

    def embed_image(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) (or the tower's input) -> (B, d), full size, not normalised."""
        return self.image_proj(self.image_tower_features(x))

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """B strings -> (B, d), full size, not normalised (cut with ``matryoshka.truncate``)."""
        return self.text_proj(self.text_tower_features(texts))

    def forward(self, images: Tensor, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Image (B, d) and text (B, d) embeddings of B pairs, full size, not normalised."""
        return self.embed_image(images), self.embed_text(texts)

    # ------------------------------------------------------------------ freezing
    def freeze(self, tower: str, unfreeze_last: int = 0) -> DualEncoder:
        """Freeze a tower (``"image"`` or ``"text"``) but its last ``unfreeze_last`` blocks.

        Blocks are :func:`~matryoshka.models.backbone_blocks` (image) or :func:`text_blocks`
        (text). The projections and the temperature always train. Frozen blocks also stay in
        eval mode under ``model.train()`` (no BatchNorm statistics updates, no dropout), so a
        frozen tower gives the same features at every step. Returns the model.
        """
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
        module = self.image_tower if tower == "image" else self.text_tower
        blocks = backbone_blocks(module) if tower == "image" else text_blocks(module)
        k = int(unfreeze_last)
        if not 0 <= k <= len(blocks):
            raise ValueError(
                f"unfreeze_last must be between 0 and {len(blocks)} (the {tower} tower's "
                f"blocks), got {unfreeze_last}"
            )
        module.requires_grad_(False)
        for block in blocks[len(blocks) - k :]:
            block.requires_grad_(True)
        frozen = [module] if k == 0 else blocks[: len(blocks) - k]
        self._frozen[tower] = [m for block in frozen for m in block.modules()]
        self.image_proj.requires_grad_(True)
        self.text_proj.requires_grad_(True)
        self.log_logit_scale.requires_grad_(True)
        return self.train(self.training)

    def unfreeze(self, tower: str) -> DualEncoder:
        """Make every parameter of a tower trainable again. Returns the model."""
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
        (self.image_tower if tower == "image" else self.text_tower).requires_grad_(True)
        self._frozen[tower] = []
        return self.train(self.training)

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        for modules in self._frozen.values():
            for m in modules:
                m.training = False  # every module of a frozen block is listed
        return self


def nested_clip_loss(
    model: DualEncoder,
    images: Tensor,
    texts: Sequence[str],
    dims: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    labels: Tensor | None = None,
) -> tuple[Tensor, dict[int, Tensor]]:
    """The contrastive loss at every renormalised prefix of one forward pass of B pairs.

    Parameters
    ----------
    model : DualEncoder
    images : Tensor of shape (B, ...), the image tower's input
    texts : B strings, ``texts[i]`` the caption of ``images[i]``
    dims : sizes to apply the loss at (default the model's ``dims``; ``[m]`` alone trains a
        fixed-feature model of size m)
    weights : one non-negative weight per size (default all 1)
    labels : Tensor of shape (B,), optional; pairs with equal labels all match (captions made
        from class names; see :func:`~matryoshka.nn.clip_contrastive_loss`)

    Returns
    -------
    total : Tensor, scalar, the weighted mean over sizes
    per_size : dict of size -> detached scalar Tensor, for logging
    """
    image, text = model(images, texts)  # (B, d) each
    loss = MatryoshkaLoss(
        clip_contrastive_loss,
        model.dims if dims is None else dims,
        weights,
        slice_embeddings=True,
        normalize=True,
    )
    return loss((image, text), model.logit_scale(), labels)


def build_dual_encoder(
    backbone: str = "small_cnn",
    d: int = 128,
    image_features: int = 256,
    text: str | os.PathLike | None = None,
    dims: Sequence[int] | None = None,
    temperature: float = 0.07,
    device: str = "cpu",
    backbone_kwargs: dict[str, Any] | None = None,
) -> DualEncoder:
    """A fresh dual encoder: a :func:`~matryoshka.models.build_backbone` image tower of output
    size ``image_features`` and a sentence-transformers text tower (``text``: a folder or a Hub
    name; default the packaged all-MiniLM-L6-v2), both projected to ``d``."""
    kwargs = dict(backbone_kwargs or {})
    image_tower = build_backbone(backbone, image_features, **kwargs)
    text_tower = load_sentence_encoder(text, device=device, progress=False)
    spec = {"backbone": backbone, "kwargs": kwargs}
    model = DualEncoder(image_tower, text_tower, d, image_features, dims, temperature, spec)
    return model.to(device)


def build_open_clip_dual_encoder(
    arch: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    dims: Sequence[int] | None = None,
    device: str = "cpu",
    d: int | None = None,
) -> DualEncoder:
    """A dual encoder over both towers of an open_clip model (see
    :mod:`matryoshka.models.open_clip_towers`): ``arch`` a built-in name or a folder with
    ``open_clip_config.json``, ``weights`` a local checkpoint file (None: random weights).

    ``d``: the shared size, at most the model's ``embed_dim`` (default: it). The projections
    start at the identity (its first ``d`` coordinates) and the temperature at the
    checkpoint's, so the untouched model embeds as the checkpoint does, cut to ``d``.
    """
    from matryoshka.models.open_clip_towers import build_open_clip_towers, open_clip_config

    image, text, temperature = build_open_clip_towers(arch, weights, device=device)
    spec = {"open_clip": open_clip_config(arch)[1]}
    model = DualEncoder(image, text, d or image.d, image.d, dims, temperature, spec,
                        identity_projections=True)  # fmt: skip
    return model.to(device)


def save_dual_encoder(
    model: DualEncoder, path: str | os.PathLike, overwrite: bool = False, **meta: Any
) -> Path:
    """Write ``model.safetensors``, ``text/`` and ``config.json`` into ``path``, atomically.

    ``meta`` (the training data, the recipe, ...) goes into ``config.json``. The image tower must
    be rebuildable: ``model.image_spec`` names its backbone (as :func:`build_dual_encoder` sets).
    A folder that exists and is not a dual encoder is refused unless ``overwrite``.
    """
    from safetensors.torch import save_file

    if model.image_spec is None:
        raise ValueError(
            "the image tower cannot be rebuilt from a name: build the model with "
            "build_dual_encoder, or give DualEncoder image_spec={'backbone': ..., 'kwargs': ...}"
        )
    open_clip = "open_clip" in model.image_spec  # both towers' weights go to model.safetensors
    tensors = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if open_clip or not k.startswith("text_tower.")
    }
    info = {
        "format": FORMAT,
        "format_version": 1,
        "d": model.d,
        "dims": list(model.dims),
        "image": {**model.image_spec, "features": model.image_features},
        "text": {
            "path": OPEN_CLIP_DIR if open_clip else TEXT_DIR,
            "features": model.text_features,
        },  # fmt: skip
        **meta,
    }
    with atomic_dir(path, DUAL_ENCODER_FOLDER, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        if open_clip:  # the architecture, rebuilt by open_clip's local-dir on loading
            (tmp / OPEN_CLIP_DIR).mkdir()
            config = {"model_cfg": model.image_spec["open_clip"]}
            (tmp / OPEN_CLIP_DIR / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        else:
            with quiet_transformers():
                model.text_tower.save(str(tmp / TEXT_DIR))
        (tmp / CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    return Path(path)


def _rebuild(path: Path, info: dict[str, Any], device: str) -> DualEncoder:
    """The architecture ``config.json`` describes (open_clip towers at random weights, or a
    backbone and the saved sentence-transformers text tower)."""
    image = info["image"]
    if "open_clip" in image:
        from matryoshka.models.open_clip_towers import build_open_clip_towers

        img, text, _ = build_open_clip_towers(path / info["text"]["path"], device=device)
        spec = {"open_clip": image["open_clip"]}
        return DualEncoder(img, text, info["d"], image["features"], info["dims"], image_spec=spec)
    image_tower = build_backbone(image["backbone"], image["features"], **image.get("kwargs", {}))
    text_tower = load_sentence_encoder(path / info["text"]["path"], device=device, progress=False)
    spec = {"backbone": image["backbone"], "kwargs": image.get("kwargs", {})}
    return DualEncoder(image_tower, text_tower, info["d"], image["features"], info["dims"],
                       image_spec=spec)  # fmt: skip


def load_dual_encoder(path: str | os.PathLike, device: str = "cpu") -> tuple[DualEncoder, dict]:
    """A dual encoder written by :func:`save_dual_encoder`, and its ``config.json``.

    Raises ``FileNotFoundError`` for a folder without ``config.json`` and ``ValueError`` for one
    of another kind or with weights that do not fit the configuration.
    """
    from safetensors.torch import load_file

    path = resolve_dir(path)
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path} is not a dual encoder folder: {CONFIG} is missing")
    info = json.loads(cfg_path.read_text())
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} is not the config of a matryoshka dual encoder")
    model = _rebuild(path, info, device)
    missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS)), strict=False)
    if "open_clip" not in info["image"]:  # the text tower's weights are in its own folder
        missing = [k for k in missing if not k.startswith("text_tower.")]
    if missing or unexpected:
        raise ValueError(
            f"{path / WEIGHTS} does not fit {cfg_path}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return model.to(device).eval(), info
