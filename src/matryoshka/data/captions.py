"""Image-caption pairs for dual encoders, and class prompts for zero-shot classification.

:func:`load_captions` reads a folder of images plus a captions file (JSONL or CSV, through
:func:`~matryoshka.data.records.read_records`): one row per pair, the image's path relative to the
folder and its caption. :func:`class_prompts` turns class names into captions with templates such
as ``"a photo of a {}."`` (CLIP's prompt engineering, Radford et al. 2021);
:data:`UNSEEN_TEMPLATES` share none of :data:`DEFAULT_TEMPLATES`, for evaluating with prompts a
model never saw in training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matryoshka.data.records import read_records

__all__ = ["CAPTION_FORMATS", "DEFAULT_TEMPLATES", "UNSEEN_TEMPLATES", "class_prompts",
           "load_captions"]  # fmt: skip

CAPTION_FORMATS = (".jsonl", ".csv")

# training prompts (from CLIP's CIFAR-10 set)
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
)

# evaluation prompts, none of them among DEFAULT_TEMPLATES (also from CLIP's lists)
UNSEEN_TEMPLATES = (
    "a pixelated photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of the {}.",
    "a drawing of a {}.",
    "a rendering of the {}.",
    "itap of a {}.",
    "art of the {}.",
)


def load_captions(
    images_dir: str | os.PathLike,
    captions_file: str | os.PathLike,
    image_column: str = "image",
    caption_column: str = "caption",
) -> list[tuple[Path, str]]:
    """``(image path, caption)`` pairs, in file order, every image checked to exist.

    Parameters
    ----------
    images_dir : the folder the image paths are relative to
    captions_file : a ``.jsonl`` or ``.csv`` file with one row per pair
    image_column, caption_column : the columns holding the image's relative path and its caption

    Raises
    ------
    FileNotFoundError
        The folder or the captions file is missing, or a row's image is (naming the line).
    ValueError
        A row lacks a column or holds an empty or absolute path (naming the line), the format is
        not JSONL or CSV, or the file holds no rows.
    """
    images_dir, captions_file = Path(images_dir), Path(captions_file)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    if not captions_file.is_file():
        raise FileNotFoundError(f"captions file not found: {captions_file}")
    if captions_file.suffix.lower() not in CAPTION_FORMATS:
        raise ValueError(
            f"{captions_file}: captions are read from {' or '.join(CAPTION_FORMATS)} files, "
            f"got {captions_file.suffix!r}"
        )
    pairs = []
    for n, row in read_records(captions_file):
        where = f"{captions_file}, line {n}"
        values = [row.get(c) for c in (image_column, caption_column)]
        for column, value in zip((image_column, caption_column), values):
            if not isinstance(value, str) or not value.strip():
                found = ", ".join(sorted(map(str, row))) or "none"
                raise ValueError(f"{where}: no value in column {column!r} (columns: {found})")
        rel, caption = values
        if Path(rel).is_absolute():
            raise ValueError(f"{where}: image path {rel!r} must be relative to {images_dir}")
        image = images_dir / rel
        if not image.is_file():
            raise FileNotFoundError(f"{where}: image {rel!r} not found in {images_dir}")
        pairs.append((image, caption))
    if not pairs:
        raise ValueError(f"{captions_file} holds no captions")
    return pairs


def class_prompts(
    class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> list[list[str]]:
    """Captions of each class from each template: ``out[c][t] = templates[t].format(name_c)``.

    Underscores in class names become spaces (``"golden_retriever"`` -> ``"golden retriever"``).
    Every template must hold ``{}`` exactly once. Returns C lists of T strings.
    """
    if isinstance(class_names, str) or isinstance(templates, str):
        raise TypeError("class_names and templates must be lists of strings, not one string")
    if not templates:
        raise ValueError("give at least one template, such as 'a photo of a {}.'")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"every template must hold '{{}}' exactly once, got {t!r}")
    return [[t.format(str(c).replace("_", " ")) for t in templates] for c in class_names]
