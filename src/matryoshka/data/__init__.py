"""Data loaders. Imports nothing else of the package (but the leaf helpers ``matryoshka._io`` and
``matryoshka._optional``).

``load_dataset(name, ...)`` returns ``(train, test, classes)`` for the names the configs use;
:mod:`matryoshka.data.splits` sets a seeded, class-balanced held-out part and training subset
aside (``split_holdout``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from matryoshka.data.digits import load_digits_split
from matryoshka.data.images import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodedImageDataset,
    ImageFileDataset,
    cifar10,
    image_folder,
    normalize,
    random_crop_flip,
)
from matryoshka.data.records import TEXT_FORMATS, Texts, load_pairs, load_texts, read_records
from matryoshka.data.splits import dataset_labels, split_holdout, stratified_indices
from matryoshka.data.text import (
    BeirDataset,
    StsPairs,
    beir_train_pairs,
    doc_text,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
    load_stsb,
    title_text_pairs,
)

__all__ = [
    "TEXT_FORMATS",
    "Texts",
    "load_pairs",
    "load_texts",
    "read_records",
    "BeirDataset",
    "StsPairs",
    "beir_train_pairs",
    "doc_text",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "load_stsb",
    "title_text_pairs",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "DecodedImageDataset",
    "ImageFileDataset",
    "cifar10",
    "default_data_root",
    "image_folder",
    "load_dataset",
    "load_digits_split",
    "normalize",
    "random_crop_flip",
    "dataset_labels",
    "split_holdout",
    "stratified_indices",
]

DATASETS = ("digits", "cifar10", "image_folder")


def default_data_root(name: str) -> Path:
    """``$MATRYOSHKA_DATA/<name>``, by default ``~/.cache/matryoshka/<name>``."""
    base = os.environ.get("MATRYOSHKA_DATA", Path.home() / ".cache" / "matryoshka")
    return Path(base) / name


def load_dataset(
    name: str,
    seed: int = 0,
    test_fraction: float = 0.2,
    root: str | os.PathLike | None = None,
    augment: bool = True,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    test_split: str = "test",
    progress: bool = True,
    **kwargs: Any,
) -> tuple[Dataset, Dataset, list[str]]:
    """Train split, test split and class names of a named data set.

    Parameters
    ----------
    name : {"digits", "cifar10", "image_folder"}
        ``digits``: scikit-learn's built-in 8x8 digits, split with ``test_fraction``.
        ``cifar10``: torchvision's CIFAR-10 under ``root`` (downloaded there with
        ``download=True``) or a local ImageNet-layout copy (``train.tar``/``test.tar``).
        ``image_folder``: any ``root/<split>/<class>/<image>`` folder or tar (e.g. ImageNet,
        with ``test_split="val"`` and ``image_size=224``).
    augment : bool
        Random crop and flip on the train split (the test split is never augmented).
    cache_dir : path, optional
        Decoded uint8 cache for image data, so epochs after the first skip JPEG decoding.
    """
    if name == "digits":
        return load_digits_split(test_fraction=test_fraction, seed=seed)
    if name == "cifar10":
        root = root if root is not None else default_data_root("cifar10")
        aug = "auto" if augment else "none"
        common = {"cache_dir": cache_dir, "progress": progress, **kwargs}
        train = cifar10(root, "train", augment=aug, **common)
        test = cifar10(root, "test", augment="none", **common)
        return train, test, list(train.classes)
    if name == "image_folder":
        if root is None:
            raise ValueError("data.root must name the image folder or tar for image_folder data")
        common = {"cache_dir": cache_dir, "image_size": image_size, "progress": progress}
        aug = "auto" if augment else "none"
        train = image_folder(root, "train", augment=aug, **common, **kwargs)
        test = image_folder(root, test_split, augment="none", **common, **kwargs)
        return train, test, list(train.classes)
    raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
