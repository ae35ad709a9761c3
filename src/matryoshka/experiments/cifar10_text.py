"""CIFAR-10 image-text reproduction: a Matryoshka dual encoder against its baselines at every size.

The image tower is the compact CNN trained from scratch; the text tower is the packaged
all-MiniLM-L6-v2, frozen (``mrl``) or with its last block unfrozen (``mrl-text1``). Each training
image is paired with a caption of its class from one of the training templates; zero-shot
classification is scored with templates never seen in training (CLIP's prompt ensembling, per
size). Beside MRL: a dual encoder trained at one fixed size per size (``ff``), and the fixed
full-size one cut to each size (``truncation``) or turned by the PCA rotation of its training
image embeddings first (``pca``). Text queries (every unseen prompt) search the test images
through the index: at every size, and with a funnel (short prefix, then rerank).

With ``open_clip`` (an architecture, and ``open_clip_weights``, a local checkpoint file) both
towers are that model's instead, fine-tuned from its weights: the GPU path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matryoshka._optional import require
from matryoshka.data import UNSEEN_TEMPLATES, class_prompts, default_data_root
from matryoshka.dims import validate_dims
from matryoshka.eval import zero_shot_per_size
from matryoshka.eval.text import retrieval_per_size
from matryoshka.experiments.common import RunClock, command_line, write_results
from matryoshka.experiments.funnels import funnel_table
from matryoshka.models.dual import DualEncoder, load_dual_encoder, save_dual_encoder
from matryoshka.models.text_rotation import pca_rotation
from matryoshka.train.dual import DualTrainConfig, fit_dual

__all__ = ["Cifar10TextConfig", "reproduce_cifar10_text", "text_models"]

DIMS = (8, 16, 32, 64, 128)


@dataclass
class Cifar10TextConfig:
    """What ``matryoshka reproduce cifar10-text`` trains and where it writes.

    ``train``: the recipe every model shares (epochs, batch, learning rates); each model sets
    its own ``dims`` and ``text_unfreeze``. ``train_limit`` / ``test_limit``: use n images of
    each split drawn at random (smoke runs and tests).
    """

    data_dir: str | Path | None = None  # default $MATRYOSHKA_DATA/cifar10
    cache_dir: str | Path | None = "runs/cache"
    out_dir: str | Path = "runs/cifar10-text"
    docs_dir: str | Path = "docs/results"
    d: int = 128
    dims: Sequence[int] = DIMS
    width: int = 32  # SmallCNN width; its features are 8 * width
    train: DualTrainConfig = field(default_factory=DualTrainConfig)
    text_model: str | Path | None = None  # default: the packaged all-MiniLM-L6-v2
    open_clip: str | None = None  # an open_clip architecture or local-dir folder (GPU path)
    open_clip_weights: str | Path | None = None
    ff: bool = True  # train one fixed-size model per size
    funnels: Sequence[Sequence[Sequence[int]]] | None = None  # default: 16 and 32 dims, then d
    device: str = "cpu"
    train_limit: int | None = None
    test_limit: int | None = None
    batch_size_eval: int = 500


def text_models(cfg: Cifar10TextConfig) -> dict[str, tuple[int, list[int], int]]:
    """Every model to train: name -> (d, sizes the loss is applied at, text blocks unfrozen)."""
    dims = list(validate_dims(cfg.dims, cfg.d))
    models = {"mrl": (cfg.d, dims, 0), "mrl-text1": (cfg.d, dims, 1)}
    if cfg.ff:
        models.update({f"ff-{m}": (m, [m], 0) for m in dims})
    return models


def _data(cfg: Cifar10TextConfig, progress: bool) -> tuple[Any, Any]:
    from matryoshka.data.images import cifar10

    root = Path(cfg.data_dir) if cfg.data_dir is not None else default_data_root("cifar10")
    train = cifar10(root, "train", cache_dir=cfg.cache_dir, progress=progress)
    test = cifar10(root, "test", cache_dir=cfg.cache_dir, progress=progress)
    if cfg.open_clip is not None:  # CLIP's own normalisation
        const = require("open_clip.constants", "open_clip models as dual-encoder towers")
        stats = (const.OPENAI_DATASET_MEAN, const.OPENAI_DATASET_STD)
        train, test = train.with_stats(*stats), test.with_stats(*stats)
    return _subset(train, cfg.train_limit), _subset(test, cfg.test_limit)


def _subset(ds: Any, n: int | None, seed: int = 0) -> Any:
    """``n`` images of a decoded data set drawn at random (seeded; all when None), as the same
    kind of set. Not the first ``n``: a folder copy is sorted by class."""
    if n is None or n >= len(ds):
        return ds
    from matryoshka.data.images import DecodedImageDataset

    rows = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return DecodedImageDataset(
        np.ascontiguousarray(ds.images[rows]), ds.labels[rows].numpy(), ds.classes, ds.augment,
        ds.mean, ds.std, ds.padding, ds.flip,
    )  # fmt: skip


def _build(cfg: Cifar10TextConfig, d: int, dims: list[int], seed: int) -> DualEncoder:
    from matryoshka.models.dual import build_dual_encoder, build_open_clip_dual_encoder

    torch.manual_seed(seed)
    if cfg.open_clip is not None:  # a fixed-size model starts at the first d coordinates
        return build_open_clip_dual_encoder(cfg.open_clip, cfg.open_clip_weights, dims=dims,
                                            device=cfg.device, d=d)  # fmt: skip
    return build_dual_encoder("small_cnn", d=d, image_features=8 * cfg.width, text=cfg.text_model,
                              dims=dims, device=cfg.device,
                              backbone_kwargs={"width": cfg.width})  # fmt: skip


def _recipe(cfg: Cifar10TextConfig, name: str) -> tuple[dict[str, Any], DualTrainConfig]:
    """Model ``name``'s recipe as saved beside it (to tell a reusable folder), and its training
    config."""
    d, dims, unfreeze = text_models(cfg)[name]
    train = replace(cfg.train, dims=dims, text_unfreeze=unfreeze)
    return {"d": d, "train": asdict(train), "width": cfg.width, "open_clip": cfg.open_clip,
            "open_clip_weights": str(cfg.open_clip_weights), "text_model": str(cfg.text_model),
            "train_limit": cfg.train_limit}, train  # fmt: skip


def _train_or_reuse(cfg: Cifar10TextConfig, name: str, train: Any, progress: bool) -> tuple:
    """The model ``name`` from its folder when trained with this recipe, else trained now."""
    folder = Path(cfg.out_dir) / "models" / name
    recipe, tcfg = _recipe(cfg, name)
    if (folder / "config.json").is_file():
        info = json.loads((folder / "config.json").read_text())
        if info.get("recipe") == recipe:
            return load_dual_encoder(folder, device=cfg.device)[0], info["log"], False
        raise ValueError(
            f"{folder} holds a model trained with another recipe; delete it or choose another "
            f"--out (have {info.get('recipe')}, want {recipe})"
        )
    model = _build(cfg, recipe["d"], list(tcfg.dims), tcfg.seed)
    log = fit_dual(model, train, train.classes, tcfg, device=cfg.device, progress=progress)
    save_dual_encoder(model, folder, recipe=recipe, log=log)
    return model, log, True


@torch.no_grad()
def _encode(model: DualEncoder, ds: Any, classes: list[str], batch: int) -> dict[str, np.ndarray]:
    """Images (N, d) of ``ds`` without augmentation, and prompts (C, T, d) of unseen templates."""
    model.eval()
    plain = ds.with_augment("none")
    rows = []
    for s in range(0, len(plain), batch):
        x = torch.stack([x for x, _ in plain.__getitems__(range(s, min(s + batch, len(plain))))])
        rows.append(model.embed_image(x.to(next(model.parameters()).device)).cpu())
    prompts = class_prompts(classes, UNSEEN_TEMPLATES)
    text = model.embed_text([p for row in prompts for p in row]).cpu().numpy()
    return {"images": torch.cat(rows).numpy(),
            "prompts": text.reshape(len(classes), len(UNSEEN_TEMPLATES), -1)}  # fmt: skip


def _sizes(dims: Sequence[int]) -> list[int]:
    """The trained sizes and the midpoints between them (never trained: interpolation)."""
    out = set(dims)
    out.update((a + b) // 2 for a, b in zip(dims, dims[1:], strict=False) if b - a > 1)
    return sorted(out)


def _queries(prompts: np.ndarray, labels: np.ndarray) -> tuple:
    """Every unseen prompt as a text query; relevant: the test images of its class."""
    C, T, _ = prompts.shape
    xq = prompts.reshape(C * T, -1)
    qids = [f"c{c}t{t}" for c in range(C) for t in range(T)]
    docs = [str(i) for i in range(len(labels))]
    qrels = {f"c{c}t{t}": {str(i): 1 for i in np.flatnonzero(labels == c)}
             for c in range(C) for t in range(T)}  # fmt: skip
    return xq, qids, docs, qrels


def _score(name: str, X: dict, labels: np.ndarray, sizes: list[int]) -> tuple[dict, dict]:
    zs = zero_shot_per_size(X["images"], X["prompts"], labels, sizes, method=name)
    xq, qids, docs, qrels = _queries(X["prompts"], labels)
    ret = retrieval_per_size(xq, X["images"], qids, docs, qrels, sizes, method=name,
                             metrics=("ndcg@10", "map@100"))  # fmt: skip
    return zs, ret


def _merge_ff(rows: list[tuple[dict, dict]], dims: list[int]) -> tuple[dict, dict]:
    """One ``ff`` row of each kind from the fixed-size models, each at its own size."""
    zs = {"method": "ff", "dims": {m: r[0]["dims"][m] for m, r in zip(dims, rows, strict=True)}}
    ret = {"method": "ff", "dims": {m: r[1]["dims"][m] for m, r in zip(dims, rows, strict=True)}}
    return zs, ret


def reproduce_cifar10_text(
    cfg: Cifar10TextConfig | None = None, progress: bool = True, command: str | None = None
) -> dict[str, Any]:
    """Train (or reuse) every model, score every size and write ``docs_dir/cifar10-text.md``.

    Returns everything written to ``cifar10-text.json``: ``zero_shot`` and ``retrieval`` rows
    (``{"method", "dims": {m: {...}}}``), ``funnels``, ``training`` and ``seconds``.
    """
    from matryoshka.experiments.cifar10_text_report import render_cifar10_text

    cfg = cfg or Cifar10TextConfig()
    clock = RunClock()
    dims = list(validate_dims(cfg.dims, cfg.d))
    train, test = _data(cfg, progress)
    labels = test.labels.numpy()
    sizes, zero_shot, retrieval, training, trained = _sizes(dims), [], [], {}, []
    encoded: dict[str, dict[str, np.ndarray]] = {}
    for name in text_models(cfg):
        model, log, fresh = _train_or_reuse(cfg, name, train, progress)
        trained += [name] if fresh else []
        training[name] = {k: log[k] for k in ("steps", "seconds", "history", "dims")}
        encoded[name] = _encode(model, test, test.classes, cfg.batch_size_eval)
        if name == f"ff-{cfg.d}":  # the fixed full-size model, cut and rotated
            fitted = _encode(model, _subset(train, 10_000), test.classes, cfg.batch_size_eval)
            rot = pca_rotation(fitted["images"])
            encoded["pca"] = {"images": rot.apply(encoded[name]["images"]),
                              "prompts": rot.apply(encoded[name]["prompts"].reshape(-1, cfg.d))
                              .reshape(encoded[name]["prompts"].shape)}  # fmt: skip
            encoded["truncation"] = encoded[name]
    for name in ("mrl", "mrl-text1", "pca", "truncation"):
        if name in encoded:
            for rows, r in zip((zero_shot, retrieval), _score(name, encoded[name], labels, sizes),
                               strict=True):  # fmt: skip
                rows.append(r)
    if cfg.ff:
        ff = [_score(f"ff-{m}", encoded[f"ff-{m}"], labels, [m]) for m in dims]
        for rows, r in zip((zero_shot, retrieval), _merge_ff(ff, dims), strict=True):
            rows.append(r)
    xq, qids, docs, qrels = _queries(encoded["mrl"]["prompts"], labels)
    funnels = cfg.funnels or [[(m, k), (cfg.d, 10)] for m, k in ((16, 200), (32, 100)) if m < cfg.d]
    out = {
        "experiment": "cifar10-text",
        "command": command or command_line(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "counts": {"train": len(train), "test": len(test), "classes": len(test.classes)},
        "templates": {"train": list(cfg.train.templates), "test": list(UNSEEN_TEMPLATES)},
        "zero_shot": zero_shot,
        "retrieval": retrieval,
        "funnels": funnel_table(xq, encoded["mrl"]["images"], qids, docs, qrels, funnels),
        "training": training,
        **clock.stamp(),
        "trained_here": trained,
    }
    docs_dir = Path(cfg.docs_dir)
    write_results([Path(cfg.out_dir) / "results.json", docs_dir / "cifar10-text.json"], out)
    render_cifar10_text(out, docs_dir)
    return out
