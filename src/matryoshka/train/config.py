"""Training recipes as typed dataclasses, and the one loader that reads them.

Two recipe kinds share one loader: :class:`TrainConfig` (image classification with nested heads,
``matryoshka train``) and :class:`TextTrainConfig` (fine-tuning a sentence encoder on text pairs).
Either comes from nested dicts, a YAML file and ``section.key=value`` overrides; every key and
type is checked against the dataclass, and an unknown key is an error that lists the valid ones,
so a typo never silently does nothing. The resolved recipe is saved beside every trained model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from matryoshka.data import DATASETS
from matryoshka.dims import nesting_dims, validate_dims, validate_weights
from matryoshka.models import BACKBONES

HEADS = ("mrl", "mrl-e", "ff")

__all__ = [
    "TEXT_METHODS",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TextDataConfig",
    "TextJobConfig",
    "TextTrainConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "config_diff",
]


@dataclass
class DataConfig:
    name: str = "digits"  # digits | cifar10 | image_folder
    root: str | None = None  # local folder or tar (image data); None = the loader's default
    test_fraction: float = 0.2  # digits only: the held-out share
    train_subset: int | None = None  # use this many training examples (a seeded, stratified pick)
    holdout: int = 0  # examples set aside from the train split (never trained on) for tuning
    augment: bool = True  # random crop + flip for images; ignored for digits
    cache_dir: str | None = None  # decoded-image cache for image folders and tars
    image_size: int | None = None  # image_folder: output side in pixels (e.g. 224 for ImageNet)
    test_split: str = "test"  # image_folder: the evaluation split's folder (ImageNet: val)
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class ModelConfig:
    backbone: str = "mlp"  # mlp | small_cnn | resnet18 | resnet34 | resnet50 | resnet101
    d: int = 64  # full embedding size
    dims: list[int] | None = None  # nested sizes; None = nesting_dims(d, dims_start)
    dims_start: int = 8  # smallest size of the default doubling schedule
    head: str = "mrl"  # mrl (one classifier per size) | mrl-e (one shared) | ff (fixed feature)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to build_backbone


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # peak learning rate, reached after the warm-up
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    warmup_epochs: float = 0.0  # linear warm-up from 0, then cosine decay
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 10
    batch_size: int = 128  # global batch, split across DDP processes
    label_smoothing: float = 0.0
    loss_weights: list[float] | None = None  # one per size; None = all 1
    loss_reduction: str = "sum"  # sum (the paper's: sum_k w_k L_k) | mean ((1/K) sum_k w_k L_k)
    init_from: str | None = None  # a model folder to start from (fine-tuning)
    trainable: str = "all"  # all | head | last<k> (the last k backbone blocks and the head)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    threads: int | None = None  # CPU threads; None: 1 for small models, else the free cores
    eval_every: int = 1  # test-split top-1 every n epochs (0 = only at the end)
    out_dir: str = "runs/train"  # the model folder: weights, config, training state, metrics

    def check(self) -> None:
        """Raise ``ValueError`` naming the first field out of its range (``optim.lr=nan``...)."""
        d, m, o = self.data, self.model, self.optim
        _choice("data.name", d.name, DATASETS)
        _choice("model.backbone", m.backbone, BACKBONES)
        _choice("model.head", m.head, HEADS)
        _choice("optim.name", o.name, ("sgd", "adamw"))
        _choice("loss_reduction", self.loss_reduction, ("sum", "mean"))
        _between("data.test_fraction", d.test_fraction, 0, 1, low_open=True, high_open=True)
        _at_least("data.train_subset", d.train_subset, 1, none_ok=True)
        _at_least("data.holdout", d.holdout, 0)
        _at_least("data.image_size", d.image_size, 1, none_ok=True)
        _at_least("data.num_workers", d.num_workers, 0)
        _at_least("model.d", m.d, 1)
        _at_least("model.dims_start", m.dims_start, 1)
        if m.dims is not None:
            validate_dims(m.dims, m.d, "model.dims")
        _between("optim.lr", o.lr, 0, None, low_open=True)
        _between("optim.momentum", o.momentum, 0, 1, high_open=True)
        _between("optim.weight_decay", o.weight_decay, 0, None)
        for i, b in enumerate(o.betas):
            _between(f"optim.betas[{i}]", b, 0, 1, high_open=True)
        _between("optim.warmup_epochs", o.warmup_epochs, 0, None)
        _between("optim.min_lr_ratio", o.min_lr_ratio, 0, 1)
        _at_least("epochs", self.epochs, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("eval_every", self.eval_every, 0)
        _at_least("threads", self.threads, 1, none_ok=True)
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        _between("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        if self.loss_weights is not None:
            dims = m.dims or nesting_dims(m.d, m.dims_start)
            validate_weights(self.loss_weights, [m.d] if m.head == "ff" else dims)
        t = self.trainable
        last_k = t.startswith("last") and t[4:].isdigit() and int(t[4:]) > 0
        if t not in ("all", "head") and not last_k:
            raise ValueError(
                f"trainable must be 'all', 'head' or 'last<k>' (e.g. last1), got {t!r}"
            )


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")


def _at_least(name: str, value: int | None, low: int, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if value is None or value < low:
        raise ValueError(f"{name} must be at least {low}, got {value!r}")


def _between(
    name: str,
    value: float,
    low: float,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``low <= value <= high`` (open ends as asked), and finite: NaN and inf fail too."""
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        span = f"{lo}{low:g}, {high:g}{hi}" if high is not None else f"{lo}{low:g}, inf)"
        raise ValueError(f"{name} must be a finite number in {span}, got {value!r}")


TEXT_METHODS = ("mrl", "plain", "st-peer")
TEXT_LOSSES = ("in-batch", "cached")


@dataclass
class TextTrainConfig:
    """Recipe of a text fine-tune on (anchor, positive) pairs.

    The defaults are sentence-transformers' Matryoshka recipe, which the SciFact comparison
    trains as the peer: lr 2e-5, batch 32, one epoch, 10% warm-up, scale 20, seed 42.
    """

    method: str = "mrl"  # one of TEXT_METHODS
    dims: list[int] | None = None  # nested sizes (plain: the sizes it is meant to be cut to)
    weights: list[float] | None = None  # one loss weight per size (default all 1; not for plain)
    epochs: int = 1
    max_steps: int | None = None  # stop after this many steps (default: epochs x batches)
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1  # linear warm-up over this fraction of the steps
    weight_decay: float = 0.0
    temperature: float = 0.05  # similarities / temperature (0.05 = sentence-transformers' scale 20)
    symmetric: bool = False  # also rank anchors for each positive
    distill: float = 0.0  # weight of the full-size -> prefix ranking distillation ("mrl" only)
    max_seq_length: int | None = None  # tokens per text (default: the model's own limit)
    no_duplicates: bool = True
    max_grad_norm: float = 1.0
    seed: int = 42
    trainer: str = "loop"  # "loop" (ours, every method) or "sentence-transformers" ("st-peer")
    loss: str = "in-batch"  # in-batch | cached (GradCache: large batches in mini-batches)
    mini_batch_size: int = 32  # cached: texts per forward pass
    query_prompt: str | None = None  # put before every anchor (e.g. "query: ")
    document_prompt: str | None = None  # put before every positive and negative
    extra: dict[str, Any] = field(default_factory=dict)  # free notes (e.g. which pairs)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.method not in TEXT_METHODS:
            raise ValueError(f"method must be one of {TEXT_METHODS}, got {self.method!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ValueError(f"max_seq_length must be at least 1, got {self.max_seq_length}")
        if self.seed < 0:
            raise ValueError(f"seed must be at least 0, got {self.seed}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError(
                f"lr and temperature must be positive, got {self.lr}, {self.temperature}"
            )
        if self.distill < 0:
            raise ValueError(f"distill must be non-negative, got {self.distill}")
        if self.distill and self.method != "mrl":
            raise ValueError(f"distill applies to method 'mrl' only, not {self.method!r}")
        if self.trainer not in ("loop", "sentence-transformers"):
            raise ValueError(
                f"trainer must be 'loop' or 'sentence-transformers', got {self.trainer!r}"
            )
        if self.loss not in TEXT_LOSSES:
            raise ValueError(f"loss must be one of {TEXT_LOSSES}, got {self.loss!r}")
        if self.mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be at least 1, got {self.mini_batch_size}")
        if self.method == "plain" and self.weights is not None:
            raise ValueError("weights apply to the nested sizes; method 'plain' trains one size")
        if self.trainer == "sentence-transformers" and self.method != "st-peer":
            raise ValueError(
                f"trainer 'sentence-transformers' runs method 'st-peer' only, not {self.method!r}"
            )


@dataclass
class TextDataConfig:
    pairs: str | None = None  # a JSONL, CSV, TSV or Parquet file of training pairs
    anchor: str = "anchor"  # the column of the queries
    positive: str = "positive"  # the column of their relevant texts
    negative: str | None = None  # a column of hard negatives, if the file has one


@dataclass
class TextJobConfig:
    """A text fine-tune from the command line (``matryoshka train --config text.yaml``)."""

    kind: str = "text"  # what tells a text recipe from an image one
    base_model: str | None = None  # a model folder or Hub name; None: packaged all-MiniLM-L6-v2
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TextTrainConfig = field(default_factory=TextTrainConfig)
    device: str = "cpu"
    out_dir: str = "runs/text"

    def check(self) -> None:
        if self.kind != "text":
            raise ValueError(f"kind must be 'text' for a text recipe, got {self.kind!r}")
        if not self.data.pairs:
            raise ValueError("data.pairs must name the file of training pairs")
        self.train.check()


Config = TypeVar("Config")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Check (and lightly coerce) a YAML value against a field's type annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0])
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ValueError(f"unknown config key {full!r}; valid keys here: {', '.join(names)}")
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value, f"{full}.")
        else:
            kwargs[key] = _check_value(value, tp, full)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None, cls: type[Config] = TrainConfig) -> Config:
    """Build a recipe of type ``cls`` from nested dicts; unknown keys raise ``ValueError``.

    ``cls`` is :class:`TrainConfig` (default), :class:`TextTrainConfig` or
    :class:`TextJobConfig`; every recipe's ``check()`` runs once it is built.
    """
    cfg = _build(cls, data or {}, "")
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as plain nested dicts (JSON- and YAML-ready)."""
    return dataclasses.asdict(cfg)


# Settings that do not change what a run computes: they may differ between a run and its resume.
_RUNTIME_KEYS = {"out_dir", "device", "amp", "threads", "eval_every", "data.root", "data.cache_dir",
                 "data.num_workers"}  # fmt: skip
# Settings a fixed-feature model (one size, one loss) does not read.
_NESTING_KEYS = {"model.dims", "model.dims_start", "loss_weights", "loss_reduction"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """Dotted keys whose values differ in a way that changes training (runtime keys ignored).

    A backbone argument the training loop filled in itself (``in_features`` of the MLP) counts
    only when the requested config sets it. Between two fixed-feature (``ff``) runs the nesting
    keys are ignored too: a single-size model trains the same whatever sizes its siblings use.
    ``init_from`` paths are compared once resolved (links followed).
    """
    a = _flatten(config_to_dict(saved))
    b = _flatten(config_to_dict(requested))
    for flat in (a, b):  # the same starting model, reached through another path or a link
        if flat.get("init_from"):
            flat["init_from"] = os.path.realpath(flat["init_from"])
    keys = sorted(set(a) | set(b))
    ignore = set(_RUNTIME_KEYS)
    if a.get("model.head") == b.get("model.head") == "ff":
        ignore |= _NESTING_KEYS
    return [
        k
        for k in keys
        if k not in ignore
        and not (k.startswith("model.backbone_kwargs.") and k not in b)
        and a.get(k) != b.get(k)
    ]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted!r}: {p!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings; values parse as YAML (``0.1``, ``[8, 16]``)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value, e.g. optim.lr=0.05")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({e})") from None
        _set_dotted(data, key.strip(), value)
    return data


def _read_yaml(path: Path) -> Any:
    """A YAML file; a syntax error names its line and column."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    cls: type[Config] = TrainConfig,
) -> Config:
    """Read a YAML file (optional), apply ``key=value`` overrides, check every key and type.

    Parameters
    ----------
    path : path, optional
        A YAML mapping whose sections mirror ``cls`` (``data``, ``model``, ``optim`` and
        top-level keys for :class:`TrainConfig`).
    overrides : list of str, optional
        ``section.key=value`` strings; values parse as YAML (``0.1``, ``[8, 16]``, ``null``).
    cls : type, default :class:`TrainConfig`
        :class:`TextTrainConfig` for a text recipe.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = _read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of config sections, got {loaded!r}")
        data = loaded or {}
    data = apply_overrides(data, list(overrides or []))
    try:
        return config_from_dict(data, cls)
    except ValueError as e:
        where = f" in {path}" if path is not None else ""
        raise ValueError(f"{e}{where}") from None
