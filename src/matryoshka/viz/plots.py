"""Plots from result dicts. Each draws onto the ``ax`` it is given (``ax=None`` makes one) and
returns it; matplotlib is imported inside the functions (extra ``viz``)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matryoshka._io import atomic_file
from matryoshka._optional import require

__all__ = ["plot_accuracy_vs_dim", "plot_adaptive", "plot_gradcam_grid", "pyplot", "save_figure"]

_STYLES = {
    "mrl": {"marker": "o", "color": "C3"},
    "mrl-e": {"marker": "s", "color": "C1"},
    "ff": {"marker": "^", "color": "C0"},
    "pca": {"marker": "v", "color": "C2", "linestyle": "--"},
    "truncation": {"marker": "D", "color": "C7", "linestyle": ":"},
}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or an ``ImportError`` naming the extra.

    The one way the package imports pyplot: a report that draws figures calls this first and,
    when matplotlib is missing, can still write its text and say why a figure is absent.
    """
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg", force=False)  # no display here; figures are written to files
    return require("matplotlib.pyplot", "plots")


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
    plt = pyplot()
    from matplotlib import colors as matplotlib_colors

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    trained_set = None if trained is None else {int(m) for m in trained}
    # methods without a fixed style get colours the fixed ones leave free (tab20 past ten lines)
    used = {_STYLES[r["method"]]["color"] for r in results if r["method"] in _STYLES}
    n_free = sum(r["method"] not in _STYLES for r in results)
    cmap = "tab10" if n_free + len(used) <= 10 else "tab20"
    used_hex = {matplotlib_colors.to_hex(c) for c in used}
    palette = [matplotlib_colors.to_hex(c) for c in plt.get_cmap(cmap).colors]
    free = iter([c for c in palette if c not in used_hex] * 2)
    markers = itertools.cycle(["o", "s", "^", "D", "P", "X", "*", "h"])
    for r in results:
        pts = sorted((int(m), v[metric]) for m, v in r["dims"].items() if v.get(metric) is not None)
        if not pts:
            continue
        style = dict(_STYLES.get(r["method"], {}))
        if not style:
            style = {"marker": next(markers), "color": next(free)}
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())


def plot_adaptive(
    adaptive: dict[str, Any],
    reference: dict[str, float] | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Adaptive classification: test top-1 against expected size, beside fixed sizes.

    Parameters
    ----------
    adaptive : the dict returned by :func:`matryoshka.eval.adaptive_classification`
    reference : optional ``{label: top1}`` drawn as horizontal lines (e.g. full-size FF)
    """
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    pts = [(p["expected_size"], 100 * p["top1"]) for p in adaptive["front"]]
    ax.plot(*zip(*pts), marker="o", color="C3", label="adaptive (MRL cascade), best points")
    chosen = adaptive.get("selected")
    if chosen:
        ax.scatter([chosen["expected_size"]], [100 * chosen["top1"]], s=120, facecolors="none",
                   edgecolors="k", zorder=4, label="chosen on held-out data")  # fmt: skip
    fixed = sorted((int(m), 100 * v) for m, v in adaptive["fixed"].items())
    ax.plot(*zip(*fixed), marker="s", color="C7", linestyle=":", label="MRL at a fixed size")
    for i, (label, top1) in enumerate((reference or {}).items()):
        ax.axhline(100 * top1, color=f"C{i}", linestyle="--", linewidth=1, label=label)
    ax.set_xscale("log", base=2)
    ticks = [m for m, _ in fixed]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("expected embedding size")
    ax.set_ylabel("top-1 accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def plot_gradcam_grid(
    images: Any,
    cams: Any,
    sizes: Sequence[int],
    row_labels: Sequence[str] | None = None,
    fig: Any = None,
) -> Any:
    """A grid of Grad-CAM overlays: rows are images, columns are the image then each size.

    Parameters
    ----------
    images : array of shape (B, 3, H, W), values in [0, 1]
    cams : array of shape (B, S, H, W), values in [0, 1]
    sizes : the S sizes, for the column titles
    """
    import numpy as np

    plt = pyplot()
    images, cams = np.asarray(images), np.asarray(cams)
    B, S = cams.shape[:2]
    if fig is None:
        fig = plt.figure(figsize=(1.6 * (S + 1), 1.6 * B))
    axes = fig.subplots(B, S + 1, squeeze=False)
    for i in range(B):
        img = np.clip(images[i].transpose(1, 2, 0), 0, 1)  # (H, W, 3)
        axes[i, 0].imshow(img)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for j in range(S):
            axes[i, j + 1].imshow(img)
            axes[i, j + 1].imshow(cams[i, j], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if i == 0:
                axes[i, j + 1].set_title(f"m = {sizes[j]}", fontsize=9)
    if B:
        axes[0, 0].set_title("image", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
