"""Model cards other tools read: a ``README.md`` that says what a model is, and the metadata
inference servers look for.

A text model's card names its base model, its training data and recipe, the sizes it can be cut
to and, once an evaluation ran, a table of scores per size; the YAML front matter carries the
Hugging Face Hub's fields (``base_model``, ``tags`` with ``matryoshka``). Its ``config.json``
gains ``matryoshka_dimensions``, which vLLM reads to accept a ``dimensions`` request. An image
model's card holds the recipe and its test top-1 per size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matryoshka._markdown import markdown_table

__all__ = ["image_card", "mark_matryoshka_config", "text_card"]


def _results(results: Mapping[int, Mapping[str, float]] | None, what: str) -> list[str]:
    if not results:
        return ["No evaluation has been run on this model yet (`matryoshka eval MODEL ...`).", ""]
    metrics = sorted({k for v in results.values() for k in v})
    rows = [[m, *(f"{100 * v[k]:.1f}" if k in v else "–" for k in metrics)]
            for m, v in sorted(results.items())]  # fmt: skip
    table = markdown_table(["size", *metrics], rows)
    return [f"{what} (%), each size a prefix of the one full-size embedding:", "", table]


def text_card(
    name: str,
    d: int,
    dims: Sequence[int],
    meta: Mapping[str, Any],
    results: Mapping[int, Mapping[str, float]] | None = None,
    results_on: str = "",
) -> str:
    """The ``README.md`` of a fine-tuned text model.

    ``meta``: what :func:`~matryoshka.train.save_text_model` stores (``base_model``, ``data``,
    ``pairs``, ``steps``, ``config``...). ``results``: ``{size: {metric: value}}``.
    """
    base = meta.get("base_model") or "an unnamed base model"
    cfg = meta.get("config") or {}
    sizes = ", ".join(str(m) for m in dims)
    front = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags:",
        "- sentence-transformers",
        "- matryoshka",
        "- feature-extraction",
    ]
    if meta.get("base_model"):
        front.append(f"base_model: {meta['base_model']}")
    recipe = ", ".join(f"{k} {cfg[k]}" for k in ("method", "loss", "lr", "batch_size", "epochs",
                                                  "weights") if k in cfg)  # fmt: skip
    return "\n".join([
        *front, "---", "",
        f"# {name}", "",
        f"A Matryoshka fine-tune of `{base}`: every prefix of its {d}-dimensional embedding is "
        f"itself an embedding, trained at sizes {sizes}.", "",
        "## Training", "",
        f"- data: {meta.get('data', 'not recorded')} ({meta.get('pairs', '?')} pairs, "
        f"{meta.get('steps', '?')} steps)",
        f"- recipe: {recipe or 'not recorded'}",
        "- trained with the `matryoshka` library (`matryoshka train`)", "",
        "## Use", "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f"model = SentenceTransformer(\"{name}\", truncate_dim={dims[0]})  # any size up to {d}",
        "```", "",
        "## Results", "",
        *_results(results, f"Scores on {results_on}" if results_on else "Scores"),
    ])  # fmt: skip


def mark_matryoshka_config(folder: Path, dims: Sequence[int]) -> None:
    """Add ``matryoshka_dimensions`` (and ``is_matryoshka``) to the model's ``config.json``.

    vLLM reads these to serve a ``dimensions`` request; transformers keeps unknown keys.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():  # not a transformers model folder: nothing to mark
        return
    config = json.loads(path.read_text())
    config["matryoshka_dimensions"] = [int(m) for m in dims]
    config["is_matryoshka"] = True
    path.write_text(json.dumps(config, indent=2) + "\n")


def image_card(name: str, info: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
    """The ``README.md`` of an image model folder: what it is, how to load it, top-1 per size.

    ``info``: the folder's ``config.json`` (``d``, ``dims``, ``classes``, ``config``);
    ``metrics``: its ``metrics.json``. The results are the last evaluated epoch's head top-1.
    """
    cfg = info.get("config", {})
    model, optim, data = cfg.get("model", {}), cfg.get("optim", {}), cfg.get("data", {})
    evaluated = [r for r in (metrics or {}).get("history") or [] if r.get("test_top1")]
    results = None
    what = "Test top-1 of each size's head"
    if evaluated:
        last = evaluated[-1]
        results = {int(m): {"top-1": v} for m, v in last["test_top1"].items()}
        count = f" on {last['test_count']} test images" if last.get("test_count") else ""
        what += f" after epoch {last.get('epoch')}{count}"
    done = (metrics or {}).get("epochs_done", 0)
    kinds = {"mrl": "MRL: one classifier per size", "mrl-e": "MRL-E: one shared classifier, sliced",
             "ff": "fixed feature: one size"}  # fmt: skip
    head = kinds.get(model.get("head"), model.get("head"))
    side = data.get("image_size")
    size = f"resized to {side}x{side}" if side else "at their own size"
    channels = {1: "1 channel (grayscale)", 3: "3 channels (RGB)"}.get(
        data.get("channels"), "the data set's channels"
    )
    norm = "the data set's mean and std"
    if data.get("mean"):
        norm = f"mean {data.get('mean')}, std {data.get('std')}"
    classes = info.get("classes", [])
    m = (info.get("dims") or [info.get("d")])[0]
    return "\n".join([
        "---", "tags:", "- matryoshka", "- image-classification", "---", "",
        f"# {name}", "",
        f"A `{model.get('backbone')}` backbone with a `{model.get('head')}` head ({head}): "
        f"embeddings of d = {info.get('d')}, trained at sizes {info.get('dims')}; each size is a "
        "prefix of the full embedding.", "",
        "## Data", "",
        f"- `{data.get('name')}` from `{data.get('root')}`: {len(classes)} classes "
        f"({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})",
        f"- images: {channels}, {size}, normalised with {norm}",
        f"- augmentation: crop {data.get('crop', True) and data.get('augment', True)}, flip "
        f"{data.get('flip', True) and data.get('augment', True)}", "",
        "## Training", "",
        f"- {cfg.get('epochs')} epochs ({done} done), {optim.get('name')} lr {optim.get('lr')}, "
        f"batch {cfg.get('batch_size')}, seed {cfg.get('seed')}", "",
        "## Use", "",
        "```python",
        "from matryoshka.train import load_data, load_model",
        "",
        f'model, cfg, classes = load_model("{name}")  # the recipe in config.json comes back too',
        "train_ds, test_ds, _ = load_data(cfg, augment=False)  # normalised as in training",
        "x, y = test_ds[0]",
        f"z = model.embed(x[None])[:, :{m}]  # (1, {m}): any size up to {info.get('d')}",
        "```", "",
        "`matryoshka eval MODEL` scores every size; `matryoshka embed MODEL --out DIR` writes the "
        "embeddings; `matryoshka train --config MODEL/config.json out_dir=...` repeats the "
        "run.", "",
        "## Results", "",
        *_results(results, what),
    ])  # fmt: skip
