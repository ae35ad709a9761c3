"""Model folders: ``model.safetensors``, ``config.json``, ``train_state.pt``, ``metrics.json`` and
a ``README.md`` card (what the model is, how to load it, its test top-1 per size).

A folder is written whole into a temporary sibling and swapped into place, so a crash leaves the
previous checkpoint or the new one. Loading never unpickles: weights come from safetensors and the
training state is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from matryoshka._io import FolderKind, atomic_dir, resolve_dir
from matryoshka.dims import nesting_dims
from matryoshka.models import build_backbone
from matryoshka.nn import FixedFeatureHead, MatryoshkaHead, MatryoshkaModel
from matryoshka.train.cards import image_card
from matryoshka.train.config import (
    HEADS,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    saved_recipe,
)
from matryoshka.train.data import data_channels

__all__ = [
    "LoadedModel",
    "build_model",
    "load_model",
    "load_train_state",
    "read_metrics",
    "save_checkpoint",
    "saved_config",
]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATE = "train_state.pt"
METRICS = "metrics.json"
CARD = "README.md"
MODEL_FOLDER = FolderKind(
    "matryoshka model folder", CONFIG, fmt="matryoshka-model",
    names=r"model\.safetensors|config\.json|train_state\.pt|metrics\.json|README\.md",
)  # fmt: skip


def build_model(
    cfg: ModelConfig, num_classes: int, in_channels: int | None = None
) -> MatryoshkaModel:
    """A fresh model from a model config: backbone of size ``cfg.d`` and the chosen head.

    ``in_channels``: the channels of the data's images (1 grayscale, 3 RGB), passed to a CNN
    backbone (not the MLP); a different ``model.backbone_kwargs.in_channels`` is an error.
    """
    if cfg.head not in HEADS:
        raise ValueError(f"model.head must be one of {HEADS}, got {cfg.head!r}")
    kwargs = dict(cfg.backbone_kwargs)
    if in_channels is not None and cfg.backbone != "mlp":
        asked = kwargs.setdefault("in_channels", in_channels)
        if asked != in_channels:
            raise ValueError(
                f"model.backbone_kwargs.in_channels={asked} but the data's images have "
                f"{in_channels} channel(s) (data.channels); leave in_channels out: the backbone "
                "follows the data"
            )
    backbone = build_backbone(cfg.backbone, cfg.d, **kwargs)
    if cfg.head == "ff":
        head: nn.Module = FixedFeatureHead(cfg.d, num_classes)
    else:
        dims = cfg.dims if cfg.dims is not None else nesting_dims(cfg.d, cfg.dims_start)
        head = MatryoshkaHead(cfg.d, num_classes, dims, efficient=cfg.head == "mrl-e")
    return MatryoshkaModel(backbone, head)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: TrainConfig,
    classes: list[str],
    state: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model folder atomically; returns its path.

    ``config.json`` holds the resolved training config plus ``d``, ``dims`` and ``classes``;
    ``README.md`` is the card :func:`~matryoshka.train.cards.image_card` writes from it.
    A folder that exists and is not a model folder is refused unless ``overwrite``; entries
    the project does not write (an ``eval/`` folder, a user's notes) are kept either way.
    """
    model = _unwrap(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {
        "format": "matryoshka-model",
        "format_version": 1,
        "d": model.head.d,
        "dims": list(model.head.dims),
        "classes": list(classes),
        "config": config_to_dict(cfg),
    }
    with atomic_dir(path, MODEL_FOLDER, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(info, indent=2) + "\n")
        if state is not None:
            torch.save(state, tmp / STATE)
        if metrics is not None:
            (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / CARD).write_text(image_card(Path(path).name, info, metrics))
    return Path(path)


def _read_info(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{path} is not a model folder: {CONFIG} is missing (train one with `matryoshka train`)"
        )
    try:
        info = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}); the model folder is corrupt") from e
    if info.get("format") != "matryoshka-model":
        raise ValueError(f"{cfg_path} is not a matryoshka model config")
    return info


class LoadedModel(NamedTuple):
    """A model folder read back: unpack as ``model, config, classes = load_model(path)``."""

    model: MatryoshkaModel  # in eval mode, on the requested device
    config: TrainConfig  # the resolved recipe it was trained with
    classes: list[str]  # class names; the head's class ``i`` is ``classes[i]``


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model from its folder: ``(model in eval mode, config, classes)``."""
    path = resolve_dir(path)
    info = _read_info(path)
    cfg = _recipe(info)
    model = build_model(cfg.model, len(info["classes"]), data_channels(cfg))
    weights = path / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; the model folder is incomplete")
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{weights} could not be read ({e}); the file is corrupt") from e
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ValueError(f"{weights} does not match the architecture in {CONFIG}: {e}") from e
    return LoadedModel(model.to(device).eval(), cfg, list(info["classes"]))


def _recipe(info: dict[str, Any]) -> TrainConfig:
    """The recipe in a model folder's ``config.json`` (older folders' defaults made explicit)."""
    return config_from_dict(saved_recipe(info["config"]))


def saved_config(path: str | Path) -> TrainConfig:
    """The recipe a model folder was trained with, measured numbers included; no weights read."""
    return _recipe(_read_info(resolve_dir(path)))


def load_train_state(path: str | Path) -> dict[str, Any] | None:
    """The resume state of a model folder, or None if it has none.

    Read with ``weights_only=True``: a state file that holds anything but tensors and plain
    containers (a pickled object, a truncated file) is refused with a ``ValueError``.
    """
    state_path = resolve_dir(path) / STATE
    if not state_path.is_file():
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, EOFError, RuntimeError: all mean "not ours, or cut"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{state_path} cannot be read as a training state ({first}); the folder is corrupt "
            "or was not written by matryoshka: start over with --no-resume"
        ) from None
    if not isinstance(state, dict) or not {"epoch", "optimizer", "scheduler"} <= set(state):
        raise ValueError(f"{state_path} is not a training state written by matryoshka")
    return state


def read_metrics(path: str | Path) -> dict[str, Any] | None:
    """``metrics.json`` of a model folder (epochs done, per-epoch history), or None."""
    p = resolve_dir(path) / METRICS
    if not p.is_file():
        return None
    try:
        metrics = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not valid JSON ({e}); the model folder is corrupt") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{p} is not a metrics file written by matryoshka")
    return metrics
