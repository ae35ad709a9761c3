"""A recipe for a folder of one's own images (``matryoshka train --data PATH``), and its YAML.

:func:`folder_recipe` proposes settings from what :func:`~matryoshka.data.survey_images` found in
the folder's train split: ``image_folder`` data with the folder's channels (1 when every image is
grayscale), a crop padding scaled to the image side, no flip (a mirrored digit or letter is
another symbol), a decoded cache, and a ResNet-18 (with the CIFAR stem for small images). The
mean and std are left null for :func:`~matryoshka.train.resolve_data` to measure. A YAML file or
``key=value`` overrides win over every proposal. :func:`recipe_yaml` writes the resolved recipe
as YAML with a comment on the settings a user is most likely to change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from matryoshka.data import ImageSurvey
from matryoshka.train.config import TrainConfig, config_to_dict

__all__ = ["FOLDER_NOTES", "folder_recipe", "recipe_yaml", "survey_line"]

# Comments recipe_yaml puts beside these settings of a folder recipe.
FOLDER_NOTES = {
    "data.flip": "off: a mirrored digit or letter is another symbol; photos: data.flip=true",
    "data.crop": "random shift by up to data.padding pixels (zero padding)",
    "data.channels": "1: every image read is grayscale (decoded as Pillow's 'L'); 3: RGB",
    "data.mean": "measured on the train split (decoded images, before augmentation)",
    "data.std": "measured with data.mean; the model folder keeps both for eval and reruns",
    "data.image_size": "null: the images' own size (they all share it)",
    "data.crop_fraction": "with image_size: 1.0 resizes the whole image, below 1 centre-crops",
}


def folder_recipe(
    root: str | os.PathLike,
    survey: ImageSurvey,
    image_size: int | None = None,
    model: bool = True,
) -> dict[str, Any]:
    """Settings proposed for an image folder in the ImageNet layout (nested dicts).

    Parameters
    ----------
    root : path
        The folder (``train/`` and ``test/`` or ``val/``, or their tars) or a tar of both.
    survey : ImageSurvey
        What :func:`~matryoshka.data.survey_images` found in the train split.
    image_size : int, optional
        The side the images will be resized to, when the user sets one; otherwise their own.
    model : bool
        Propose the model too (False when the user names a backbone: its arguments are theirs).

    Returns
    -------
    dict with ``data``, ``out_dir`` and (``model=True``) ``model`` sections; ``data.mean`` and
    ``data.std`` absent (measured later).
    """
    root = Path(root)
    side = image_size or (min(survey.size) if survey.size else None)
    data: dict[str, Any] = {
        "name": "image_folder",
        "root": str(root),
        "channels": survey.channels,
        "cache_dir": "runs/cache",  # decoded once; pad-and-crop needs decoded images
        "crop": True,
        "flip": False,
        "padding": max(1, round(side / 8)) if side else 4,  # 4 for 32 px, as for CIFAR-10
        "crop_fraction": 1.0,
    }
    if root.is_dir() and not _has_split(root, "test") and _has_split(root, "val"):
        data["test_split"] = "val"
    recipe: dict[str, Any] = {"data": data, "out_dir": f"runs/{root.name.removesuffix('.tar')}"}
    if model:
        small = side is not None and side <= 64  # a 3x3 stride-1 stem keeps small images' detail
        recipe["model"] = {"backbone": "resnet18", "d": 512, "dims_start": 8, "head": "mrl",
                           "backbone_kwargs": {"cifar_stem": small}}  # fmt: skip
    return recipe


def _has_split(root: Path, split: str) -> bool:
    return (root / split).is_dir() or (root / f"{split}.tar").is_file()


def survey_line(root: str | os.PathLike, survey: ImageSurvey) -> str:
    """One line on what the train split holds: classes, images, sizes, colour."""
    names = ", ".join(survey.classes[:8]) + (", ..." if len(survey.classes) > 8 else "")
    sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(survey.sizes.items())[:4])
    read = "" if survey.sampled == survey.count else f" ({survey.sampled} read)"
    colour = "grayscale" if survey.grayscale else "colour"
    return (
        f"{root}: {len(survey.classes)} classes ({names}), {survey.count} training images{read}, "
        f"sizes {sizes}{', ...' if len(survey.sizes) > 4 else ''}, {colour}"
    )


def recipe_yaml(
    cfg: TrainConfig, header: list[str] | None = None, notes: Mapping[str, str] | None = None
) -> str:
    """The recipe as YAML, ``# header`` lines first and ``# note`` beside the dotted keys named.

    Reading it back (``load_config``) gives ``cfg`` again: comments are YAML comments.
    """
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    lines, section = [], ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            section = line.split(":")[0]
        key = line.strip().split(":")[0]
        dotted = f"{section}.{key}" if line.startswith("  ") and section else key
        if line.startswith("   "):  # deeper than a section's keys
            dotted = ""
        note = (notes or {}).get(dotted)
        lines.append(f"{line}  # {note}" if note else line)
    return "\n".join([*(f"# {h}" for h in header or []), *lines]) + "\n"
