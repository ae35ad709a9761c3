"""Text recipes: fine-tuning a sentence encoder on text pairs (:class:`TextTrainConfig`), and
the command-line job around it (:class:`TextJobConfig`: ``matryoshka train --config text.yaml``).

Read through the one loader of :mod:`matryoshka.train.config` (``load_config(path,
cls=TextJobConfig)``), which re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TEXT_INITS",
    "TEXT_LOSSES",
    "TEXT_METHODS",
    "TextDataConfig",
    "TextJobConfig",
    "TextTrainConfig",
]

TEXT_METHODS = ("mrl", "plain", "st-peer")
TEXT_LOSSES = ("in-batch", "cached")
TEXT_INITS = ("pca", "pca-centered")


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
    teacher: str | None = None  # distil this model's full-size rankings (default: the model's own)
    init: str | None = None  # "pca" | "pca-centered": start the prefixes at PCA's ordering
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
        if self.teacher is not None and not self.distill:
            raise ValueError("a teacher needs distill > 0, the weight of its rankings")
        if self.init is not None and self.init not in TEXT_INITS:
            raise ValueError(f"init must be one of {TEXT_INITS} or None, got {self.init!r}")
        if self.init is not None and self.trainer == "sentence-transformers":
            raise ValueError("init runs in our loop: use trainer 'loop' with it")
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
