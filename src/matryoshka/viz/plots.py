"""Plots from result dicts. Each draws onto the ``ax`` it is given (``ax=None`` makes one) and
returns it; matplotlib is imported inside the functions (extra ``viz``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_accuracy_vs_dim", "save_figure"]

_STYLES = {
    "mrl": {"marker": "o", "color": "C3"},
    "mrl-e": {"marker": "s", "color": "C1"},
    "ff": {"marker": "^", "color": "C0"},
    "pca": {"marker": "v", "color": "C2", "linestyle": "--"},
    "truncation": {"marker": "D", "color": "C7", "linestyle": ":"},
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'matryoshka[viz]'") from e
    return plt


def plot_accuracy_vs_dim(
    results: Sequence[dict[str, Any]],
    metric: str = "top1",
    ax: Any = None,
    trained: Iterable[int] | None = None,
    title: str | None = None,
) -> Any:
    """Accuracy (percent) against size on a log-2 axis, one line per method.

    Sizes not in ``trained`` (interpolated) are drawn as hollow markers.
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    trained_set = None if trained is None else {int(m) for m in trained}
    for r in results:
        pts = sorted((int(m), v[metric]) for m, v in r["dims"].items() if v.get(metric) is not None)
        if not pts:
            continue
        style = dict(_STYLES.get(r["method"], {"marker": "o"}))
        xs = [m for m, _ in pts]
        ys = [100 * v for _, v in pts]
        marker = style.pop("marker")
        (line,) = ax.plot(xs, ys, label=r["method"], **style)
        solid = [(x, y) for x, y in zip(xs, ys) if trained_set is None or x in trained_set]
        hollow = [
            (x, y) for x, y in zip(xs, ys) if trained_set is not None and x not in trained_set
        ]
        if solid:
            ax.scatter(*zip(*solid), marker=marker, color=line.get_color(), zorder=3)
        if hollow:
            ax.scatter(*zip(*hollow), marker=marker, facecolors="none",
                       edgecolors=line.get_color(), zorder=3)  # fmt: skip
    ax.set_xscale("log", base=2)
    ticks = (
        sorted(trained_set) if trained_set else sorted({int(m) for r in results for m in r["dims"]})
    )
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("embedding size m (hollow: not trained)")
    ax.set_ylabel({"top1": "top-1 accuracy (%)", "knn1": "1-NN accuracy (%)"}.get(metric, metric))
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def save_figure(fig: Any, path: str | Path, dpi: int = 150) -> None:
    """Save a figure as PNG atomically (rendered in memory, then renamed into place)."""
    import io

    from matryoshka._io import atomic_file

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())
