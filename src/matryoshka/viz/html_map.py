"""The embedding-space map as an HTML figure: one SVG scatter of the sample and a size slider that
moves every point to its place on that size's map (the maps of :func:`embedding_maps`, aligned).

Stable hooks (for a browser test): ``<figure class="plot map" id="map-figure" data-kind="map"
data-size=M data-method=METHOD>``; ``<input type="range" id="map-size">`` whose value indexes
``data-sizes`` (ascending; it starts on the largest); ``<output id="map-size-value">`` shows the
size; ``<svg id="map-svg">`` holds one ``<circle class="map-pt">`` per point (``data-i``: the
point's row in the embeddings, ``data-label``, ``data-tip``); ``<p id="map-quality">`` the size's
structure kept; ``<script type="application/json" id="map-data">``: ``sizes``, ``xy`` (pixel
positions per size), ``quality`` and ``quality_text`` per size. One map per page.

Imports nothing of the package but the leaf helpers.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from matryoshka.viz.html import PALETTE, json_script

__all__ = ["map_figure", "quality_text"]

_SIDE, _PAD = 520, 14


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def quality_text(m: int, q: dict[str, float] | None) -> str:
    """One line on what size ``m``'s map keeps (from :func:`map_quality`'s dict)."""
    if not q:
        return f"size {m}"
    text = (f"size {m}: {100 * q['knn_kept']:.0f}% of each point's nearest neighbours kept on "
            f"the map, trustworthiness {q['trustworthiness']:.3f}")  # fmt: skip
    if "knn_acc_2d" in q:
        text += (f", neighbour-vote label accuracy {100 * q['knn_acc_2d']:.1f}% on the map "
                 f"({100 * q['knn_acc_prefix']:.1f}% at this size)")  # fmt: skip
    return text


def _pixels(maps: dict[int, np.ndarray]) -> dict[int, list[list[float]]]:
    """Every size's map in one pixel frame (the bounds of all sizes together, square)."""
    allpts = np.concatenate([np.asarray(v, np.float64) for v in maps.values()])
    lo, hi = allpts.min(0), allpts.max(0)
    centre, span = (lo + hi) / 2, float((hi - lo).max()) or 1.0
    scale = (_SIDE - 2 * _PAD) / span
    out = {}
    for m, Y in maps.items():
        P = (np.asarray(Y, np.float64) - centre) * scale + _SIDE / 2
        P[:, 1] = _SIDE - P[:, 1]  # y grows upwards on the map
        out[m] = np.round(P, 1).tolist()
    return out


def map_figure(
    maps: dict[int, np.ndarray],
    rows: np.ndarray | None = None,
    labels: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    quality: dict[int, dict[str, float]] | None = None,
    method: str = "pca",
    caption: str | None = None,
) -> str:
    """The map with its size slider, as HTML.

    Parameters
    ----------
    maps : ``{m: (n, 2)}`` from :func:`~matryoshka.viz.maps.embedding_maps` (aligned)
    rows : (n,) the points' rows in the embeddings (shown on hover; default 0..n-1)
    labels : n labels (class names or numbers), colouring the points; optional
    names : n names or texts shown on hover (cut to 80 characters); optional
    quality : ``{m: map_quality(...)}``, shown under the slider
    method : the projection's name, for the caption and ``data-method``
    """
    sizes = sorted(int(m) for m in maps)
    if not sizes:
        raise ValueError("no maps to draw")
    n = len(maps[sizes[0]])
    rows = np.arange(n) if rows is None else np.asarray(rows)
    xy = _pixels({m: maps[m] for m in sizes})
    classes = list(dict.fromkeys(str(v) for v in labels)) if labels is not None else []
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    pts = []
    for i, (x, y) in enumerate(xy[sizes[-1]]):
        lab = str(labels[i]) if labels is not None else ""
        tip = " · ".join(filter(None, [f"#{int(rows[i])}", lab,
                                       (names[i][:80] if names is not None else "")]))  # fmt: skip
        fill = colour.get(lab, "#1f77b4")
        pts.append(f'<circle class="map-pt" cx="{x}" cy="{y}" r="3" fill="{fill}"'
                   f' fill-opacity="0.8" data-i="{int(rows[i])}" data-label="{_esc(lab)}" '
                   f'data-tip="{_esc(tip)}"></circle>')  # fmt: skip
    legend = "".join(f'<li data-series="{_esc(c)}"><span class="swatch" style="background:'
                     f'{colour[c]}"></span>{_esc(c)}</li>' for c in classes[:30])  # fmt: skip
    quality = quality or {}
    texts = {m: quality_text(m, quality.get(m)) for m in sizes}
    data = {"sizes": sizes, "xy": xy, "quality": quality, "quality_text": texts, "method": method}
    top = sizes[-1]
    controls = (
        f'<div class="map-controls"><label for="map-size">embedding size</label>'
        f'<input type="range" id="map-size" min="0" max="{len(sizes) - 1}" step="1" '
        f'value="{len(sizes) - 1}" data-sizes="{",".join(map(str, sizes))}" '
        f'aria-valuetext="size {top}"><output id="map-size-value" for="map-size">{top}</output>'
        f'<span class="map-sizes">sizes: {", ".join(map(str, sizes))}</span></div>'
    )
    cap = caption or (f"{n} points projected to 2-D by {method} at each size (cosine geometry: "
                      "each prefix renormalised), every size aligned to the next larger one; "
                      "move the slider to change size.")  # fmt: skip
    return (
        f'<figure class="plot map" id="map-figure" data-kind="map" data-size="{top}" '
        f'data-method="{_esc(method)}">{controls}'
        f'<svg class="chart" id="map-svg" width="{_SIDE}" height="{_SIDE}" '
        f'viewBox="0 0 {_SIDE} {_SIDE}" role="img" aria-label="embedding map">{"".join(pts)}</svg>'
        f'<ul class="legend">{legend}</ul><p id="map-quality">{_esc(texts[top])}</p>'
        f"<figcaption>{_esc(cap)}</figcaption>{json_script(data, 'map-data')}</figure>"
    )
