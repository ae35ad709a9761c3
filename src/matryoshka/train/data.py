"""A recipe's data as training sees it: the train split (held-out part and subset applied), the
test split and the class names; the held-out part alone for tuning."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.utils.data import Dataset

from matryoshka.data import load_dataset, split_holdout
from matryoshka.train.config import TrainConfig

__all__ = ["DataSplits", "load_data", "load_holdout"]


class DataSplits(NamedTuple):
    """A recipe's data: unpack as ``train, test, classes = load_data(cfg)``."""

    train: Dataset  # what the model trains on (held-out examples and subset applied)
    test: Dataset
    classes: list[str]


def load_data(cfg: TrainConfig, augment: bool | None = None, progress: bool = True) -> DataSplits:
    """The train and test splits a config names, and the class names.

    The train split is what the model trains on: without ``data.holdout`` examples (set aside
    for tuning, e.g. adaptive-classification thresholds) and cut to ``data.train_subset``.
    Pass ``augment=False`` to encode the train split; ``progress=False`` keeps a first decoding
    of image files quiet.
    """
    train, test, classes = _load_raw(cfg, augment, progress)
    if cfg.data.holdout or cfg.data.train_subset:
        train, _ = split_holdout(train, cfg.data.holdout, cfg.data.train_subset, cfg.seed)
    return DataSplits(train, test, classes)


def load_holdout(cfg: TrainConfig, progress: bool = True) -> Dataset:
    """The ``data.holdout`` examples set aside from the train split, without augmentation."""
    if not cfg.data.holdout:
        raise ValueError("this config sets no data.holdout; set e.g. data.holdout=5000")
    train, _, _ = _load_raw(cfg, False, progress)
    return split_holdout(train, cfg.data.holdout, None, cfg.seed)[1]


def _load_raw(
    cfg: TrainConfig, augment: bool | None, progress: bool
) -> tuple[Dataset, Dataset, list[str]]:
    kwargs = _data_kwargs(cfg)
    if augment is not None and kwargs:
        kwargs["augment"] = augment
    return load_dataset(
        cfg.data.name, seed=cfg.seed, test_fraction=cfg.data.test_fraction, progress=progress,
        **kwargs,
    )  # fmt: skip


def _data_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.data.name == "digits":
        return {}
    kw = {"root": cfg.data.root, "augment": cfg.data.augment, "cache_dir": cfg.data.cache_dir}
    if cfg.data.name == "image_folder":
        kw.update(image_size=cfg.data.image_size, test_split=cfg.data.test_split)
    return kw
