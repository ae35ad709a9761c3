"""The one Markdown table writer (reports, cards, command output). A leaf helper: imports nothing
of the package."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["markdown_table"]


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | Sequence[str] = "r"
) -> str:
    """A Markdown table: ``| a | b |`` lines under a header and an alignment row.

    Parameters
    ----------
    header : sequence of str
        Column titles.
    rows : iterable of sequences
        One sequence per row, as many cells as ``header``; cells are written with ``str``.
    align : str or sequence of str
        ``"r"`` (right, ``---:``) or ``"l"`` (left, ``---``), for every column or per column:
        ``"lrr"`` or ``["l", "r", "r"]``.

    Returns
    -------
    str, ending with a newline.
    """
    n = len(header)
    spec = [align] * n if align in ("l", "r") else list(align)
    if len(spec) != n or any(a not in ("l", "r") for a in spec):
        raise ValueError(f"align must be 'l', 'r' or one of them per column ({n}), got {align!r}")
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in spec) + "|")
    for i, row in enumerate(rows):
        cells = [str(c) for c in row]
        if len(cells) != n:
            raise ValueError(f"row {i} has {len(cells)} cells, the header {n}: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
