"""Figures and tables from result dicts and arrays.

``plots``: PNG figures (matplotlib is loaded only when one is drawn, through :func:`pyplot`);
``tables``: Markdown tables; ``maps``: aligned 2-D maps of the embedding space at every size and
how much structure they keep; ``html`` and ``html_map``: one self-contained HTML page (inline SVG
charts, PNG data URIs, the map with a size slider). Imports nothing of the package but the leaf
helpers.
"""

from matryoshka.viz.html import html_page
from matryoshka.viz.html_map import map_figure
from matryoshka.viz.maps import embedding_maps, map_quality, procrustes_align
from matryoshka.viz.plots import (
    plot_accuracy_vs_dim,
    plot_adaptive,
    plot_gradcam_grid,
    pyplot,
    save_figure,
)
from matryoshka.viz.tables import format_bytes, markdown_table, plan_table, results_table

__all__ = [
    "embedding_maps",
    "format_bytes",
    "html_page",
    "map_figure",
    "map_quality",
    "markdown_table",
    "plan_table",
    "plot_accuracy_vs_dim",
    "plot_adaptive",
    "plot_gradcam_grid",
    "procrustes_align",
    "pyplot",
    "results_table",
    "save_figure",
]
