"""``--data PATH`` of ``train`` and ``compare``: a recipe proposed from a folder of images."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matryoshka.train import TrainConfig

__all__ = ["folder_config"]


def folder_config(args: argparse.Namespace, overrides: list[str], command: str) -> TrainConfig:
    """``train --data PATH`` (or ``compare``): a recipe proposed from the folder, under the YAML
    and the overrides.

    The folder's path wins over the YAML's ``data.root``; ``data.mean``/``data.std`` and
    ``data.channels`` left null are measured; the resolved recipe is printed as YAML.
    """
    from matryoshka.data import survey_images
    from matryoshka.train import folder_recipe, load_config, recipe_yaml, resolve_data
    from matryoshka.train.config import read_recipe
    from matryoshka.train.folder import FOLDER_NOTES, survey_line

    overrides = ["data.name=image_folder", f"data.root={json.dumps(str(args.data))}", *overrides]
    named_backbone = "backbone" in (read_recipe(args.config, overrides).get("model") or {})
    size = load_config(args.config, overrides).data.image_size  # the user's, checked
    survey = survey_images(args.data, "train")
    base = folder_recipe(args.data, survey, size, model=not named_backbone)
    cfg = load_config(args.config, overrides, base=base)
    if cfg.data.image_size is None and survey.size is None:
        sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(survey.sizes.items())[:6])
        common = max(survey.sizes, key=survey.sizes.get)
        raise ValueError(
            f"the training images of {args.data} differ in size ({sizes}); pass "
            f"data.image_size=N to resize them all, e.g. data.image_size={min(common)}"
        )
    resolve_data(cfg, progress=not args.quiet)
    header = [
        f"matryoshka {command} --data {args.data}: the resolved recipe (YAML, overrides win)",
        survey_line(args.data, survey),
    ]
    if command == "train":
        header.append(f"repeat this run: matryoshka train --config {cfg.out_dir}/config.json "
                      "out_dir=NEW")  # fmt: skip
    print(recipe_yaml(cfg, header, FOLDER_NOTES), flush=True)
    return cfg
