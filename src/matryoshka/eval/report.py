"""Results as data: per-size dicts, merged, written as JSON and read back with sizes as ints.

JSON turns the integer size keys of ``{"dims": {8: {...}}}`` into strings; :func:`read_json`
turns them back, so a report rendered from a file equals one rendered from the run itself.
Tables and plots of these dicts live in :mod:`matryoshka.viz`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matryoshka._io import write_json

__all__ = ["int_keys", "load_results", "merge_results", "read_json", "save_results"]


def merge_results(method: str, parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One result dict from several (e.g. one FF model per size): sizes are united."""
    dims: dict[int, dict[str, float]] = {}
    for part in parts:
        for m, vals in part["dims"].items():
            dims.setdefault(int(m), {}).update(vals)
    return {"method": method, "dims": dict(sorted(dims.items()))}


def int_keys(obj: Any) -> Any:
    """``obj`` with every dict whose keys are all decimal integers re-keyed by ``int``, deeply.

    Result dicts are keyed by size; after a JSON round trip ``{"8": ...}`` becomes ``{8: ...}``
    again. Dicts with any other key are left keyed by strings.
    """
    if isinstance(obj, dict):
        items = {k: int_keys(v) for k, v in obj.items()}
        if items and all(isinstance(k, str) and k.lstrip("-").isdigit() for k in items):
            return {int(k): v for k, v in items.items()}
        return items
    if isinstance(obj, list):
        return [int_keys(v) for v in obj]
    return obj


def read_json(path: str | Path) -> Any:
    """A results JSON file with its size keys as ints (see :func:`int_keys`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        return int_keys(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the results file is corrupt") from None


def save_results(path: str | Path, results: Sequence[dict[str, Any]], **meta: Any) -> None:
    """Write results (and any metadata, e.g. the command) as JSON, atomically."""
    write_json(path, {**meta, "results": list(results)})


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Read results written by :func:`save_results`; size keys come back as ints."""
    data = read_json(path)
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{path} holds no 'results' list; it was not written by save_results")
    return data["results"]
