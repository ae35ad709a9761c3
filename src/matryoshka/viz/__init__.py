"""Figures and tables from result dicts and arrays.

``plots``: PNG figures (matplotlib is loaded only when one is drawn, through :func:`pyplot`);
``tables``: Markdown tables. Imports nothing of the package but the leaf helpers.
"""

from matryoshka.viz.plots import (
    plot_accuracy_vs_dim,
    plot_adaptive,
    plot_gradcam_grid,
    pyplot,
    save_figure,
)
from matryoshka.viz.tables import format_bytes, markdown_table, plan_table, results_table

__all__ = [
    "format_bytes",
    "markdown_table",
    "plan_table",
    "plot_accuracy_vs_dim",
    "plot_adaptive",
    "plot_gradcam_grid",
    "pyplot",
    "results_table",
    "save_figure",
]
