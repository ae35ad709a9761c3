"""A recipe's data as training sees it: the train split (held-out part and subset applied), the
test split and the class names; the held-out part alone for tuning; the settings an image folder
leaves to be measured (channels, mean, std), filled in so that they are saved with the model."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.utils.data import Dataset, Subset

from matryoshka.data import dataset_labels, load_dataset, split_holdout, stratified_indices
from matryoshka.train.config import TrainConfig

__all__ = ["DataSplits", "data_channels", "eval_split", "load_data", "load_holdout", "resolve_data"]


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
    d = cfg.data
    kw = {"root": d.root, "augment": d.augment, "cache_dir": d.cache_dir, "crop": d.crop,
          "flip": d.flip, "padding": d.padding, "channels": d.channels, "mean": d.mean,
          "std": d.std}  # fmt: skip
    if d.name == "image_folder":
        kw.update(image_size=d.image_size, test_split=d.test_split, crop_fraction=d.crop_fraction)
    return kw


def resolve_data(cfg: TrainConfig, progress: bool = True) -> TrainConfig:
    """Fill what an ``image_folder`` recipe leaves to the data, in place; returns ``cfg``.

    ``data.channels`` null becomes 1 when every image of a sample of the train split is
    grayscale, else 3; ``data.mean`` and ``data.std`` null become the per-channel numbers
    measured on the train split (a seeded sample of up to 10,000 decoded images, before
    augmentation). Training saves the filled recipe with the model, so evaluation and a rerun
    use the same numbers. Other data sets, and a recipe that sets all three, are left as they are.
    """
    d = cfg.data
    if d.name != "image_folder" or None not in (d.channels, d.mean, d.std):
        return cfg
    train, _, _ = _load_raw(cfg, False, progress)
    d.channels = int(train.channels)
    d.mean, d.std = [float(v) for v in train.mean], [float(v) for v in train.std]
    return cfg


def data_channels(cfg: TrainConfig) -> int | None:
    """Channels of the recipe's images: ``data.channels``, 1 for digits, 3 for CIFAR-10; None
    for an image folder whose channels are still to be found (:func:`resolve_data`)."""
    if cfg.data.channels is not None:
        return cfg.data.channels
    return {"digits": 1, "cifar10": 3}.get(cfg.data.name)


def eval_split(test: Dataset, cfg: TrainConfig) -> Dataset:
    """What training scores: the test split, or a seeded, stratified pick of ``eval_subset`` of it
    (the classes in equal shares, seed ``cfg.seed``; the whole split when it is no larger)."""
    if cfg.eval_subset is None or cfg.eval_subset >= len(test):
        return test
    picked = stratified_indices(dataset_labels(test), cfg.eval_subset, cfg.seed)
    return Subset(test, picked.tolist())
