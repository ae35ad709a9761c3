"""Training: typed recipes, the nested-loss loop with checkpoints and resume, text fine-tuning."""

from matryoshka.train.checkpoint import (
    LoadedModel,
    build_model,
    load_model,
    read_metrics,
    save_checkpoint,
    saved_config,
)
from matryoshka.train.config import (
    TEXT_METHODS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TextDataConfig,
    TextJobConfig,
    TextTrainConfig,
    TrainConfig,
    apply_overrides,
    config_diff,
    config_from_dict,
    config_to_dict,
    load_config,
)
from matryoshka.train.data import DataSplits, load_data, load_holdout, resolve_data
from matryoshka.train.device import resolve_device
from matryoshka.train.dual import DualTrainConfig, fit_dual
from matryoshka.train.folder import folder_recipe, recipe_yaml
from matryoshka.train.loop import is_complete, train
from matryoshka.train.text import (
    fit_st_trainer,
    fit_text,
    load_text_model,
    no_duplicate_batches,
    save_text_model,
)
from matryoshka.train.text_job import fit_or_reuse, run_text_job

__all__ = [
    "DualTrainConfig",
    "fit_dual",
    "TEXT_METHODS",
    "DataConfig",
    "TextDataConfig",
    "TextJobConfig",
    "fit_or_reuse",
    "run_text_job",
    "DataSplits",
    "LoadedModel",
    "ModelConfig",
    "OptimConfig",
    "TextTrainConfig",
    "TrainConfig",
    "apply_overrides",
    "build_model",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "fit_st_trainer",
    "fit_text",
    "folder_recipe",
    "is_complete",
    "load_config",
    "load_data",
    "load_holdout",
    "load_model",
    "load_text_model",
    "no_duplicate_batches",
    "read_metrics",
    "recipe_yaml",
    "resolve_data",
    "resolve_device",
    "save_checkpoint",
    "saved_config",
    "save_text_model",
    "train",
]
