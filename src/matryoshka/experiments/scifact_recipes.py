"""What a SciFact recipe trains on and starts from: its pairs (with mined hard negatives), the model
it starts from (two phases), the rotation it starts at (PCA) and the teacher it learns from.

A recipe names these in ``TextTrainConfig.extra`` (``pairs``, ``start``, ``negatives``) and in
its ``teacher`` field; ``start`` and ``teacher`` name recipes trained before it in the same run,
so a two-phase recipe reads ``start=plain-lr-titles,teacher=plain-lr-titles``: continue from the
plain fine-tune and keep its full-size rankings while the prefixes learn.

A soup ``NAME@ALPHA`` is recipe ``NAME``'s model moved ``1 - ALPHA`` of the way back toward the
model it started from (with the rotation it started at): :func:`make_soup`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from matryoshka._io import sha256_file
from matryoshka.data.text import BeirDataset, doc_text
from matryoshka.models.text import load_sentence_encoder
from matryoshka.models.text_rotation import Rotation, add_rotation, pca_rotation
from matryoshka.models.text_soup import interpolate_weights
from matryoshka.train import TextTrainConfig, config_from_dict, config_to_dict
from matryoshka.train.text import save_text_model
from matryoshka.train.text_negatives import mine_hard_negatives

__all__ = [
    "NEGATIVES",
    "PAIR_SOURCES",
    "PLAIN_TITLES",
    "Pair",
    "RecipeStart",
    "check_references",
    "make_soup",
    "negative_rows",
    "parse_recipe",
    "parse_soup",
    "parse_soups",
    "recipe_start",
    "training_pairs",
]

PAIR_SOURCES = ("train", "train+titles")
PLAIN_TITLES = "plain-lr-titles"  # the plain fine-tune on the best recipe's pairs (phase one)
NEGATIVES = ("none", "mined")
EXTRA_KEYS = ("pairs", "negatives", "start")


@dataclass
class Pair:
    """A training pair and the corpus row of its positive; ``body``: the positive is the
    document's text without its title (a title -> text pair)."""

    anchor: str
    positive: str
    row: int
    body: bool


def training_pairs(source: str, train_pairs: list[tuple[str, str]], test: BeirDataset) -> list:
    """The recipe's pairs as :class:`Pair` (``source`` one of :data:`PAIR_SOURCES`)."""
    if source not in PAIR_SOURCES:
        raise ValueError(f"extra['pairs'] must be one of {PAIR_SOURCES}, got {source!r}")
    docs = test.doc_texts()
    row_of = {t: i for i, t in enumerate(docs)}
    out = [Pair(a, p, row_of.get(p, -1), False) for a, p in train_pairs]
    if source == "train+titles":
        for i, d in enumerate(test.corpus.values()):
            title, text = d.get("title", "").strip(), d.get("text", "").strip()
            if title and text:
                out.append(Pair(title, text, i, True))
    return out


def check_references(recipes: Mapping[str, TextTrainConfig]) -> None:
    """Raise ``ValueError`` unless every ``start`` and recipe ``teacher`` is trained earlier."""
    seen: list[str] = []
    for name, cfg in recipes.items():
        pairs = cfg.extra.get("pairs", "train")
        if pairs not in PAIR_SOURCES:
            raise ValueError(f"recipe {name!r}: pairs must be one of {PAIR_SOURCES}, got {pairs!r}")
        negatives = cfg.extra.get("negatives", "none")
        if negatives not in NEGATIVES:
            raise ValueError(f"recipe {name!r}: negatives must be one of {NEGATIVES}")
        start = cfg.extra.get("start")
        if start is not None and start not in seen:
            raise ValueError(
                f"recipe {name!r} starts from {start!r}, which is not a recipe before it "
                f"(recipes so far: {seen})"
            )
        teacher = cfg.teacher
        if teacher is not None and teacher not in seen and not Path(teacher).exists():
            raise ValueError(
                f"recipe {name!r}: teacher {teacher!r} is neither a recipe before it "
                f"({seen}) nor a model folder"
            )
        seen.append(name)


def _recipe_value(value: str) -> Any:
    """A value on the command line: ``a/b/c`` is a list, ``none`` is null, the rest YAML."""
    if "/" in value:
        return [yaml.safe_load(v) for v in value.split("/")]
    return None if value.lower() in ("none", "null") else yaml.safe_load(value)


def parse_recipe(spec: str, base: TextTrainConfig) -> tuple[str, TextTrainConfig]:
    """A named recipe from the command line: ``NAME:KEY=VALUE,KEY=VALUE,...`` over ``base``.

    Keys are :class:`~matryoshka.train.TextTrainConfig` fields plus ``pairs`` (one of
    :data:`PAIR_SOURCES`), ``negatives`` (``mined``: one hard negative a pair from the corpus)
    and ``start`` (a recipe before it to continue from), checked by the same typed loader as
    every recipe; ``teacher`` may name a recipe before it; list values are separated by ``/``.
    Example: ``mrl-w:method=mrl,weights=4/2/1/1/1/1,lr=4e-5``.
    """
    name, _, body = spec.partition(":")
    if not name or not body:
        raise ValueError(f"a recipe looks like NAME:KEY=VALUE,..., got {spec!r}")
    data = config_to_dict(base)
    for item in body.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not value:
            raise ValueError(f"recipe {name!r}: expected KEY=VALUE, got {item!r}")
        if key in EXTRA_KEYS:
            choices = {"pairs": PAIR_SOURCES, "negatives": NEGATIVES}.get(key)
            if choices is not None and value not in choices:
                raise ValueError(f"recipe {name!r}: {key} must be one of {choices}, got {value!r}")
            data["extra"] = {**data["extra"], key: value}
        elif key == "extra":
            raise ValueError(f"recipe {name!r}: set extra through {'/'.join(EXTRA_KEYS)}=...")
        else:
            data[key] = _recipe_value(value)
    try:
        return name, config_from_dict(data, TextTrainConfig)
    except ValueError as e:
        raise ValueError(f"recipe {name!r}: {e}") from None


@dataclass
class RecipeStart:
    """Everything a recipe's training needs besides its config."""

    cfg: TextTrainConfig  # with a recipe teacher replaced by its folder
    pairs: list[tuple[str, ...]]
    base: Any  # the model to start from: a folder, or None for the experiment's model
    rotation: Rotation | None


def negative_rows(
    pairs: list[Pair], corpus: np.ndarray, anchors_of: Callable[[list[str]], np.ndarray], seed: int
) -> np.ndarray:
    """One hard negative per pair: a corpus row (N_pairs,) mined with the original model.

    ``corpus``: the original model's (N, d) corpus embeddings; ``anchors_of(texts)``: its
    embeddings of the given anchors (each encoded once). A query with several relevant documents
    draws none of them.
    """
    positives: dict[str, set[int]] = {}
    for p in pairs:
        positives.setdefault(p.anchor, set()).add(p.row)
    unique = list(positives)  # each anchor encoded once, in first-seen order
    at = {a: i for i, a in enumerate(unique)}
    xq = anchors_of(unique)[[at[p.anchor] for p in pairs]]  # (n_pairs, d)
    return np.asarray(mine_hard_negatives(
        xq, corpus, [sorted(positives[p.anchor] - {-1}) for p in pairs], seed=seed
    ))  # fmt: skip


def _with_negatives(pairs: list[Pair], test: BeirDataset, rows: np.ndarray) -> list:
    """Each pair with its negative's text, in the positive's format."""
    docs = list(test.corpus.values())
    neg = [docs[j].get("text", "").strip() if p.body else doc_text(docs[j])
           for p, j in zip(pairs, rows, strict=True)]  # fmt: skip
    return [(p.anchor, p.positive, n) for p, n in zip(pairs, neg, strict=True)]


def recipe_start(
    cfg: TextTrainConfig,
    train_pairs: list[tuple[str, str]],
    test: BeirDataset,
    folders: Mapping[str, Path],
    corpus_of: Callable[[str], np.ndarray],
    anchors_of: Callable[[list[str]], np.ndarray],
) -> RecipeStart:
    """Resolve one recipe's pairs, start model, rotation and teacher.

    ``folders``: trained recipes' folders; ``corpus_of(name)``: the (N, d) test-corpus embeddings
    of a recipe's model (``"original"``: the starting model's), on which a rotation is fitted;
    ``anchors_of(texts)``: the original model's embeddings of anchors, to mine negatives with.
    """
    pairs = training_pairs(cfg.extra.get("pairs", "train"), train_pairs, test)
    if cfg.extra.get("negatives", "none") == "mined":
        rows = negative_rows(pairs, corpus_of("original"), anchors_of, cfg.seed)
        texts: list[tuple[str, ...]] = _with_negatives(pairs, test, rows)
    else:
        texts = [(p.anchor, p.positive) for p in pairs]
    start = cfg.extra.get("start")
    rotation = None
    if cfg.init is not None:
        rotation = pca_rotation(corpus_of(start or "original"), center=cfg.init == "pca-centered")
    if cfg.teacher in folders:
        cfg = replace(cfg, teacher=str(folders[cfg.teacher]))
    base = folders[start] if start is not None else None
    return RecipeStart(cfg, texts, base, rotation)


def parse_soup(spec: str, recipes: Mapping[str, TextTrainConfig]) -> tuple[str, float]:
    """``"NAME@ALPHA"`` -> ``(NAME, ALPHA)``: a recipe of ``recipes`` and a share in (0, 1)."""
    name, sep, value = spec.rpartition("@")
    try:
        alpha = float(value) if sep and name else math.nan
    except ValueError:
        alpha = math.nan
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"a soup is NAME@ALPHA with ALPHA in (0, 1), e.g. mrl-two-phase@0.5; "
                         f"got {spec!r}")  # fmt: skip
    if name not in recipes:
        raise ValueError(f"soup {spec!r}: {name!r} is not a recipe of this run ({list(recipes)})")
    return name, alpha


def make_soup(
    folder: Path,
    end: Path,
    start: RecipeStart,
    model: Any,
    alpha: float,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Save ``W_start + alpha (W_end - W_start)`` into ``folder``; reused when it is there.

    ``end``: a recipe's trained folder; ``start``: what it started from (its ``base`` folder, or
    ``model`` when None, with its ``rotation`` added), as :func:`recipe_start` resolved it.
    """
    base = start.base if start.base is not None else model
    key = {"end": str(end), "end_sha256": sha256_file(Path(end) / "model.safetensors"),
           "start": str(base), "alpha": alpha}  # fmt: skip
    meta_path = Path(folder) / "matryoshka.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("soup") == key:
        return Path(folder)
    seq = start.cfg.max_seq_length
    mixed = load_sentence_encoder(base, device=device, max_seq_length=seq, progress=progress)
    if start.rotation is not None:
        add_rotation(mixed, start.rotation)
    interpolate_weights(mixed, load_sentence_encoder(end, device=device, max_seq_length=seq,
                                                     progress=progress), alpha)  # fmt: skip
    meta = json.loads((Path(end) / "matryoshka.json").read_text())
    info = {k: meta[k] for k in ("method", "base_model", "config") if k in meta}
    return save_text_model(mixed, folder, meta["dims"], overwrite=True, progress=progress,
                           name=Path(folder).name, soup=key, **info)  # fmt: skip


def parse_soups(specs: Sequence[str], recipes: Mapping[str, TextTrainConfig]) -> dict[str, list]:
    """``["NAME@ALPHA", ...]`` -> ``{NAME: [ALPHA, ...]}``, each checked (:func:`parse_soup`)."""
    soups: dict[str, list[float]] = {}
    for spec in specs:
        name, alpha = parse_soup(spec, recipes)
        soups.setdefault(name, []).append(alpha)
    return soups
