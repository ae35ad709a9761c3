"""Training recipes as typed dataclasses, and the one loader that reads them.

Two recipe kinds share one loader: :class:`TrainConfig` (image classification with nested heads,
``matryoshka train``) and :class:`TextTrainConfig` (fine-tuning a sentence encoder on text pairs).
Either comes from nested dicts, a YAML file and ``section.key=value`` overrides; every key and
type is checked against the dataclass, and an unknown key is an error that lists the valid ones,
so a typo never silently does nothing. The resolved recipe is saved beside every trained model,
and a model folder (or its ``config.json``) reads back as the recipe it was trained with. The
text recipe classes live in :mod:`matryoshka.train.text_config` and are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from matryoshka.data import DATASETS, IMAGENET_MEAN, IMAGENET_STD
from matryoshka.dims import nesting_dims, validate_dims, validate_weights
from matryoshka.models import BACKBONES
from matryoshka.train.text_config import (
    TEXT_LOSSES,
    TEXT_METHODS,
    TextDataConfig,
    TextJobConfig,
    TextTrainConfig,
)

HEADS = ("mrl", "mrl-e", "ff")

__all__ = [
    "TEXT_LOSSES",
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
    "read_recipe",
    "saved_recipe",
]


@dataclass
class DataConfig:
    name: str = "digits"  # digits | cifar10 | image_folder
    root: str | None = None  # local folder or tar (image data); None = the loader's default
    test_fraction: float = 0.2  # digits only: the held-out share
    train_subset: int | None = None  # use this many training examples (a seeded, stratified pick)
    holdout: int = 0  # examples set aside from the train split (never trained on) for tuning
    augment: bool = True  # images: the master switch of crop and flip (false: neither)
    crop: bool = True  # random crop: pad-and-crop, or the random-resized crop on the fly
    flip: bool = True  # random horizontal flip (wrong for digits and text)
    padding: int = 4  # pad-and-crop: zero padding in pixels, the largest shift
    cache_dir: str | None = None  # decoded-image cache for image folders and tars
    image_size: int | None = None  # image_folder: output side in pixels (e.g. 224 for ImageNet)
    crop_fraction: float = 0.875  # with image_size: centre crop of the shorter side (1.0: resize)
    channels: int | None = None  # image_folder: 1 (grayscale) | 3 (RGB) | None = from the folder
    mean: list[float] | None = None  # per channel; None: CIFAR-10's, or measured (image_folder)
    std: list[float] | None = None  # as mean; the measured numbers are saved with the model
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
    eval_every: int = 1  # test-split top-1 every n epochs and at the last (0 = never)
    eval_subset: int | None = None  # score a seeded, stratified pick of this many test images
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
        _check_image_data(d)
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
        _at_least("eval_subset", self.eval_subset, 1, none_ok=True)
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


def _check_image_data(d: DataConfig) -> None:
    """The image settings: padding, crop fraction, channels, and mean/std matching them."""
    _at_least("data.padding", d.padding, 0)
    _between("data.crop_fraction", d.crop_fraction, 0, 1, low_open=True)
    if d.channels not in (None, 1, 3):
        raise ValueError(f"data.channels must be 1, 3 or null (from the data), got {d.channels!r}")
    fixed = {"digits": 1, "cifar10": 3}.get(d.name)
    if fixed and d.channels not in (None, fixed):
        raise ValueError(
            f"data.channels={d.channels}, but {d.name} images have {fixed} channel(s); leave it "
            "null"
        )
    if (d.mean is None) != (d.std is None):
        raise ValueError("data.mean and data.std go together: set both, or neither (null)")
    if d.mean is None:
        return
    expect = d.channels or len(d.mean)
    if len(d.mean) != expect or len(d.std) != expect or expect not in (1, 3):
        raise ValueError(
            f"data.mean and data.std need one value per channel ({d.channels or '1 or 3'}), got "
            f"{d.mean} and {d.std}"
        )
    for i, (m, s) in enumerate(zip(d.mean, d.std)):
        _between(f"data.mean[{i}]", m, 0, 1)
        _between(f"data.std[{i}]", s, 0, None, low_open=True)


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
_RUNTIME_KEYS = {"out_dir", "device", "amp", "threads", "eval_every", "eval_subset", "data.root",
                 "data.cache_dir", "data.num_workers"}  # fmt: skip
# Settings measured from the data when left null: they count only when the request sets them.
MEASURED_KEYS = ("data.channels", "data.mean", "data.std")
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

    A backbone argument the training loop filled in itself (``in_features`` of the MLP), and a
    setting measured from the data (:data:`MEASURED_KEYS`), count only when the requested config
    sets it. Between two fixed-feature (``ff``) runs the nesting
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
        and not (k in MEASURED_KEYS and b.get(k) is None)
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


def read_recipe(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The nested settings :func:`load_config` builds a recipe from, not yet checked.

    ``base`` under the file's settings under the ``overrides``; shows what a user set.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir() and (path / "config.json").is_file():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = _read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of config sections, got {loaded!r}")
        data = loaded or {}
        if data.get("format") == "matryoshka-model" and isinstance(data.get("config"), dict):
            data = saved_recipe(data["config"])  # a model folder's config.json
    return apply_overrides(_merge(base or {}, data), list(overrides or []))


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    cls: type[Config] = TrainConfig,
    base: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML file (optional), apply ``key=value`` overrides, check every key and type.

    Parameters
    ----------
    path : path, optional
        A YAML mapping whose sections mirror ``cls`` (``data``, ``model``, ``optim`` and
        top-level keys for :class:`TrainConfig`); or a model folder, or its ``config.json``,
        whose saved recipe (measured numbers included) is read, to repeat a run.
    overrides : list of str, optional
        ``section.key=value`` strings; values parse as YAML (``0.1``, ``[8, 16]``, ``null``).
    cls : type, default :class:`TrainConfig`
        :class:`TextTrainConfig` for a text recipe.
    base : dict, optional
        Nested settings under the file's: the file's keys win over them, overrides over both.
    """
    data = read_recipe(path, overrides, base)
    try:
        return config_from_dict(data, cls)
    except ValueError as e:
        where = f" in {path}" if path is not None else ""
        raise ValueError(f"{e}{where}") from None


def _merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """``low`` updated with ``high``, section by section (``high`` wins); neither is changed."""
    out = copy.deepcopy(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def saved_recipe(config: dict[str, Any]) -> dict[str, Any]:
    """A recipe saved in a model folder, as that model was trained.

    Folders written before ``data.mean`` existed normalised ``image_folder`` data with
    ImageNet's numbers in 3 channels; their recipe says so explicitly when read back.
    """
    data = config.get("data")
    if isinstance(data, dict) and data.get("name") == "image_folder" and "mean" not in data:
        data = {**data, "channels": 3, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        return {**config, "data": data}
    return config
