"""Data loaders. Imports nothing else of the package (but the leaf helpers ``matryoshka._io`` and
``matryoshka._optional``).

``load_dataset(name, ...)`` returns ``(train, test, classes)`` for the names the configs use;
:mod:`matryoshka.data.splits` sets a seeded, class-balanced held-out part and training subset
aside (``split_holdout``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from matryoshka.data.captions import (
    CAPTION_FORMATS,
    DEFAULT_TEMPLATES,
    UNSEEN_TEMPLATES,
    class_prompts,
    load_captions,
)
from matryoshka.data.digits import load_digits_split
from matryoshka.data.images import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodedImageDataset,
    ImageFileDataset,
    ImageSurvey,
    cifar10,
    image_folder,
    measure_stats,
    normalize,
    random_crop_flip,
    survey_images,
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
    "CAPTION_FORMATS",
    "DEFAULT_TEMPLATES",
    "UNSEEN_TEMPLATES",
    "class_prompts",
    "load_captions",
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
    "ImageSurvey",
    "cifar10",
    "default_data_root",
    "image_folder",
    "load_dataset",
    "load_digits_split",
    "measure_stats",
    "normalize",
    "random_crop_flip",
    "dataset_labels",
    "split_holdout",
    "stratified_indices",
    "survey_images",
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
    *,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop: bool = True,
    flip: bool = True,
    padding: int = 4,
    crop_fraction: float = 0.875,
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
        The master switch of the train split's augmentation (the test split is never augmented).
    crop, flip : bool
        With ``augment``: the random crop (pad-and-crop; the random-resized crop when decoding
        on the fly at ``image_size``) and the random horizontal flip, each on or off.
    padding : int
        The pad-and-crop's zero padding in pixels.
    cache_dir : path, optional
        Decoded uint8 cache for image data, so epochs after the first skip JPEG decoding.
    channels : {1, 3, None}
        ``image_folder``: 1 (grayscale) or 3 (RGB); None: 1 when every image of a sample of the
        train split is grayscale. CIFAR-10 is RGB.
    mean, std : C floats each, optional
        Per-channel normalisation. None: CIFAR-10's for ``cifar10``; for ``image_folder``
        measured on the train split (:func:`measure_stats`) and used for both splits. The train
        split's ``channels``, ``mean`` and ``std`` attributes say what was used.
    crop_fraction : float
        ``image_folder`` with ``image_size``: the evaluation view's centre crop (1.0: the whole
        image resized).
    """
    if name == "digits":
        return load_digits_split(test_fraction=test_fraction, seed=seed)
    if (mean is None) != (std is None):
        raise ValueError("give mean and std together (one value per channel each), or neither")
    aug, shift = _train_augment(augment, crop, flip, padding)
    common = {"cache_dir": cache_dir, "progress": progress, "padding": shift, "flip": flip,
              **kwargs}  # fmt: skip
    if name == "cifar10":
        if channels not in (None, 3):
            raise ValueError(f"CIFAR-10 is RGB: data.channels must be 3 or null, got {channels}")
        root = root if root is not None else default_data_root("cifar10")
        train = cifar10(root, "train", augment=aug, mean=mean, std=std, **common)
        test = cifar10(root, "test", augment="none", mean=mean, std=std, **common)
        return train, test, list(train.classes)
    if name == "image_folder":
        if root is None:
            raise ValueError("data.root must name the image folder or tar for image_folder data")
        if channels is None:
            channels = survey_images(root, "train").channels
        common.update(image_size=image_size, channels=channels, crop_fraction=crop_fraction)
        train = image_folder(root, "train", augment=aug, mean=mean, std=std, **common)
        if mean is None:
            train = train.with_stats(*measure_stats(train, progress=progress))
        test = image_folder(root, test_split, augment="none", mean=train.mean, std=train.std,
                            **common)  # fmt: skip
        return train, test, list(train.classes)
    raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")


def _train_augment(augment: bool, crop: bool, flip: bool, padding: int) -> tuple[str, int]:
    """The train split's ``augment`` mode and crop padding from the three switches.

    Off, or neither crop nor flip: ``"none"``. Crop: ``"auto"`` (pad-and-crop, or the
    random-resized crop when decoding on the fly at a given size). Flip alone: ``"crop"`` with
    no padding, which only mirrors.
    """
    if not augment or not (crop or flip):
        return "none", padding
    return ("auto", padding) if crop else ("crop", 0)
