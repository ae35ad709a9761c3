"""Training: configs, the nested-loss loop with checkpoints and resume, baselines."""

from matryoshka.train.checkpoint import build_model, load_model, read_metrics, save_checkpoint
from matryoshka.train.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    config_diff,
    config_from_dict,
    config_to_dict,
    load_config,
)
from matryoshka.train.loop import is_complete, load_data, load_holdout, resolve_device, train
from matryoshka.train.text import (
    TEXT_METHODS,
    TextTrainConfig,
    fit_st_trainer,
    fit_text,
    load_text_model,
    no_duplicate_batches,
    save_text_model,
)

__all__ = [
    "TEXT_METHODS",
    "TextTrainConfig",
    "fit_st_trainer",
    "fit_text",
    "load_text_model",
    "no_duplicate_batches",
    "save_text_model",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "build_model",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "is_complete",
    "load_data",
    "load_holdout",
    "load_config",
    "load_model",
    "read_metrics",
    "resolve_device",
    "save_checkpoint",
    "train",
]
