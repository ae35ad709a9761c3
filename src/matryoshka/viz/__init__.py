"""Plots from result dicts and arrays (matplotlib is loaded only when a plot is drawn)."""

from matryoshka.viz.plots import (
    plot_accuracy_vs_dim,
    plot_adaptive,
    plot_gradcam_grid,
    save_figure,
)

__all__ = ["plot_accuracy_vs_dim", "plot_adaptive", "plot_gradcam_grid", "save_figure"]
