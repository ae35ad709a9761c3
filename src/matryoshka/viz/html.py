"""One self-contained HTML page from arrays and result dicts: inline SVG charts, tables, images as
PNG data URIs, and a small inline script for hover tooltips and the map's size slider. Nothing is
fetched from the network: no CDN, no external stylesheet, font or script.

The page's stable hooks (for a browser test):

- ``<main id="report">``; each section ``<section class="report-section" id="sec-NAME"
  data-kind="KIND">`` with an ``<h2>``; ``<nav id="toc">`` links to every section;
- each figure ``<figure class="plot" data-kind="KIND">`` (``accuracy``, ``funnel``, ``adaptive``,
  ``sts``, ``gradcam``, ``map``, ...), holding an ``<svg class="chart">`` or an image grid;
- each chart point ``<circle class="pt">`` with ``data-series``, ``data-x``, ``data-y`` (the value
  shown, e.g. percent), ``data-value`` (the value as the results file holds it) and ``data-tip``
  (the hover text, also in a ``<title>``); a point at a size that was never trained also has
  the class ``untrained`` (drawn hollow); a chart's legend is ``<ul class="legend">``;
- tables ``<table class="results" data-kind="KIND">``; a row at an untrained size has the class
  ``untrained``;
- ``<div id="tooltip" role="tooltip">``, shown while the pointer is over an element with
  ``data-tip``;
- ``<script type="application/json" id="results-data">``: the results the page was drawn from;
- ``<body data-ready="1">`` once the script has run.

Imports nothing of the package but the leaf helpers.
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "PALETTE",
    "chart",
    "fmt_num",
    "heat_overlay",
    "html_list",
    "html_page",
    "html_table",
    "image_grid",
    "json_script",
    "paragraph",
    "png_data_uri",
    "section",
]

PALETTE = ("#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#7f7f7f", "#9467bd", "#8c564b",
           "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39")  # fmt: skip
_W, _H = 560, 340  # chart size in pixels
_PAD = {"left": 58, "right": 16, "top": 30, "bottom": 46}

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#fff;border-bottom:1px solid #ddd;padding:16px 28px}
header h1{margin:0 0 6px;font-size:1.45em}
#toc a{margin-right:14px;font-size:.92em}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:6px 20px 16px;
margin:18px 0}
h2{font-size:1.15em;margin:14px 0 8px}
.figures{display:flex;flex-wrap:wrap;gap:18px}
figure.plot{margin:6px 0;display:inline-block}
figure.plot figcaption{font-size:.9em;color:#444;max-width:560px}
svg.chart{background:#fff;font-size:11px}
svg .axis line,svg .axis path{stroke:#888}
svg .grid line{stroke:#eee}
svg .pt{cursor:pointer}
svg .pt:hover{stroke-width:3}
svg .untrained{fill:#fff}
ul.legend{list-style:none;padding:0;margin:4px 0;font-size:.85em;display:flex;flex-wrap:wrap;
gap:4px 12px}
ul.legend .swatch{display:inline-block;width:12px;height:12px;border-radius:6px;
margin-right:4px;vertical-align:-1px}
table.results{border-collapse:collapse;font-size:.88em;margin:8px 0}
table.results th,table.results td{border:1px solid #ddd;padding:3px 8px;text-align:right}
table.results th{background:#f3f3f3}
table.results td.text,table.results th.text{text-align:left}
table.results tr.untrained td{color:#777;font-style:italic}
table.image-grid td,table.image-grid th{padding:2px;font-size:.8em;font-weight:normal}
table.image-grid img{width:72px;height:72px;display:block}
#tooltip{position:absolute;pointer-events:none;background:#222;color:#fff;padding:4px 8px;
border-radius:4px;font-size:12px;white-space:pre;z-index:10}
.map-controls{margin:6px 0;display:flex;gap:10px;align-items:center}
#map-size{width:260px}
#map-quality{font-size:.88em;color:#333}
code{background:#f1f1f1;padding:0 3px;border-radius:3px}
"""

_JS = """
(function(){
var tip=document.getElementById('tooltip');
function tipOf(e){return e.target&&e.target.closest?e.target.closest('[data-tip]'):null;}
document.addEventListener('mouseover',function(e){var t=tipOf(e);if(!t)return;
tip.textContent=t.getAttribute('data-tip');tip.hidden=false;});
document.addEventListener('mousemove',function(e){if(tip.hidden)return;
tip.style.left=(e.pageX+14)+'px';tip.style.top=(e.pageY+14)+'px';});
document.addEventListener('mouseout',function(e){if(tipOf(e))tip.hidden=true;});
var slider=document.getElementById('map-size');
if(slider){
 var data=JSON.parse(document.getElementById('map-data').textContent);
 var pts=Array.prototype.slice.call(document.querySelectorAll('#map-svg .map-pt'));
 var fig=document.getElementById('map-figure'),out=document.getElementById('map-size-value');
 var qual=document.getElementById('map-quality'),anim=null;
 function show(i){var m=String(data.sizes[i]),to=data.xy[m];out.textContent=m;
  fig.setAttribute('data-size',m);slider.setAttribute('aria-valuetext','size '+m);
  if(qual)qual.textContent=data.quality_text[m]||'';
  var from=pts.map(function(p){return[+p.getAttribute('cx'),+p.getAttribute('cy')];});
  var t0=null;if(anim)cancelAnimationFrame(anim);
  function step(ts){if(t0===null)t0=ts;var a=Math.min(1,(ts-t0)/350);a=a*(2-a);
   pts.forEach(function(p,j){p.setAttribute('cx',(from[j][0]+(to[j][0]-from[j][0])*a).toFixed(1));
    p.setAttribute('cy',(from[j][1]+(to[j][1]-from[j][1])*a).toFixed(1));});
   anim=a<1?requestAnimationFrame(step):null;}
  anim=requestAnimationFrame(step);}
 slider.addEventListener('input',function(){show(+slider.value);});
}
document.body.setAttribute('data-ready','1');
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_num(x: float, digits: int = 4) -> str:
    """A float for an attribute: ``round(x, digits)`` without a trailing ``.0`` (``"76.25"``)."""
    r = round(float(x), digits)
    return str(int(r)) if r == int(r) else repr(r)


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None, keys strings, numpy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_script(obj: Any, element_id: str) -> str:
    """``obj`` as ``<script type="application/json" id=...>``, safe inside HTML (``<``, ``>``
    and ``&`` escaped as JSON ``\\u`` escapes; non-finite numbers become null)."""
    text = json.dumps(_clean(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{_esc(element_id)}">{text}</script>'


def html_page(
    title: str,
    sections: Sequence[tuple[str, str, str]],
    data: Any = None,
    subtitle: str | None = None,
) -> str:
    """A whole HTML document: a header with a table of contents, then the sections.

    ``sections``: ``(id, title, html)`` triples as :func:`section` takes them; ``data``: embedded
    as ``#results-data`` JSON (what the page was drawn from). Returns the document as a string.
    """
    toc = " ".join(f'<a href="#sec-{_esc(i)}">{_esc(t)}</a>' for i, t, _ in sections)
    body = "\n".join(h for _, _, h in sections)
    sub = f'<p class="subtitle">{subtitle}</p>' if subtitle else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>",
        f'<body><header><h1 id="title">{_esc(title)}</h1>{sub}<nav id="toc">{toc}</nav></header>',
        f'<main id="report">\n{body}\n</main>',
        '<div id="tooltip" role="tooltip" hidden></div>',
        json_script(data if data is not None else {}, "results-data"),
        f"<script>{_JS}</script>",
        "</body></html>\n",
    ]
    return "\n".join(parts)


def section(sid: str, title: str, parts: Sequence[str], kind: str | None = None) -> tuple:
    """A ``<section id="sec-SID" class="report-section" data-kind=KIND>`` with an ``<h2>``.

    Returns the ``(id, title, html)`` triple :func:`html_page` takes.
    """
    inner = "\n".join(parts)
    body = (f'<section class="report-section" id="sec-{_esc(sid)}" data-kind="{_esc(kind or sid)}">'
            f"<h2>{_esc(title)}</h2>\n{inner}\n</section>")  # fmt: skip
    return sid, title, body


def paragraph(text: str, raw: bool = False) -> str:
    """``<p>`` of ``text`` (escaped; spans in backticks become ``<code>``; ``raw``: as is)."""
    if raw:
        return f"<p>{text}</p>"
    pieces = _esc(text).split("`")
    return (
        "<p>" + "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces)) + "</p>"
    )


def html_list(items: Sequence[str], cls: str = "") -> str:
    """``<ul>`` of escaped items (backticks become ``<code>``, as in :func:`paragraph`)."""
    lis = "".join("<li>" + paragraph(i)[3:-4] + "</li>" for i in items)
    return f'<ul class="{_esc(cls)}">{lis}</ul>'


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    kind: str,
    text_cols: int = 1,
    row_classes: Sequence[str] | None = None,
) -> str:
    """``<table class="results" data-kind=KIND>``: escaped cells, the first ``text_cols``
    columns left-aligned, ``row_classes`` (one per row, e.g. ``"untrained"``) on the rows."""

    def cls(j: int) -> str:
        return ' class="text"' if j < text_cols else ""

    head = "".join(f"<th{cls(j)}>{_esc(h)}</th>" for j, h in enumerate(header))
    body = []
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes else ""
        attr = f' class="{_esc(rc)}"' if rc else ""
        cells = "".join(f"<td{cls(j)}>{_esc(c)}</td>" for j, c in enumerate(row))
        body.append(f"<tr{attr}>{cells}</tr>")
    return (f'<table class="results" data-kind="{_esc(kind)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")  # fmt: skip


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Tick values: powers of two on a log axis, about five round steps on a linear one."""
    if log:
        a, b = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
        step = max(1, math.ceil((b - a) / 8))
        return [2.0**e for e in range(a, b + 1, step)]
    span = hi - lo or 1.0
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _scale(values: Sequence[float], log: bool, a: float, b: float, pad: float = 0.06) -> Any:
    """A function from data to pixels ([a, b]) for ``values``, with a margin; and its range."""
    vals = [math.log2(v) if log else v for v in values]
    lo, hi = min(vals), max(vals)
    margin = (hi - lo) * pad or (abs(hi) * 0.05 or 1.0)
    lo, hi = lo - margin, hi + margin

    def f(v: float) -> float:
        t = ((math.log2(v) if log else v) - lo) / (hi - lo)
        return a + t * (b - a)

    return f, ((2**lo, 2**hi) if log else (lo, hi))


def _tick_label(v: float, log: bool) -> str:
    """``1.5M``, ``200k`` for large values on a log axis, else ``%g``."""
    if log and v >= 1e6:
        return f"{v / 1e6:g}M"
    if log and v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of two for sizes (up to 65536), else 1-2-5 steps of each decade."""
    if lo >= 0.5 and hi <= 2**16:
        return _ticks(lo, hi, True)
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [s * 10.0**e for s in (1, 2, 5)]
    return [t for t in out if lo <= t <= hi]


def _axes(fx: Any, fy: Any, xr: tuple, yr: tuple, log_x: bool, x_ticks: Any) -> list[str]:
    """Grid lines, tick labels and the frame of a chart."""
    x0, x1, y0, y1 = _PAD["left"], _W - _PAD["right"], _H - _PAD["bottom"], _PAD["top"]
    xt = list(x_ticks) if x_ticks else (_log_ticks(*xr) if log_x else _ticks(*xr, False))
    yt = _ticks(*yr, False)
    out = ['<g class="grid">']
    out += [f'<line x1="{fx(v):.1f}" x2="{fx(v):.1f}" y1="{y0}" y2="{y1}"/>' for v in xt]
    out += [f'<line x1="{x0}" x2="{x1}" y1="{fy(v):.1f}" y2="{fy(v):.1f}"/>' for v in yt]
    out += ['</g><g class="axis">',
            f'<path d="M{x0},{y1}V{y0}H{x1}" fill="none"/>']  # fmt: skip
    out += [f'<text x="{fx(v):.1f}" y="{y0 + 15}" text-anchor="middle">'
            f"{_esc(_tick_label(v, log_x))}</text>" for v in xt]  # fmt: skip
    out += [f'<text x="{x0 - 6}" y="{fy(v) + 4:.1f}" text-anchor="end">{v:g}</text>' for v in yt]
    out.append("</g>")
    return out


def chart(
    series: Sequence[dict[str, Any]],
    kind: str,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = True,
    hlines: Sequence[tuple[str, float]] = (),
    caption: str | None = None,
    x_ticks: Sequence[float] | None = None,
    metric: str | None = None,
) -> str:
    """An SVG line or scatter chart as ``<figure class="plot" data-kind=KIND>``.

    Parameters
    ----------
    series : one dict per series: ``name``; ``points``, each ``{"x", "y"}`` with optional
        ``value`` (the raw number behind ``y``), ``tip`` (hover text), ``hollow`` (drawn
        hollow, class ``untrained``), ``ring`` (a larger ring around the place, class
        ``chosen``) and ``label`` (written beside the point); optional
        ``line`` (default True: join the points), ``color``, ``dash``
    kind : the figure's ``data-kind``
    log_x : a log axis for x (powers of two for sizes; decades for large ranges)
    hlines : ``(label, y)`` reference lines, dashed
    x_ticks : where the x ticks go (default: chosen from the range)
    metric : written as the figure's ``data-metric``
    """
    pts = [p for s in series for p in s["points"]]
    if not pts:
        return ""
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts] + [y for _, y in hlines]
    fx, xr = _scale(xs, log_x, _PAD["left"], _W - _PAD["right"])
    fy, yr = _scale(ys, False, _H - _PAD["bottom"], _PAD["top"], pad=0.08)
    out = [f'<svg class="chart" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
           f'aria-label="{_esc(title)}">',
           f'<text class="chart-title" x="{_W / 2}" y="18" text-anchor="middle" '
           f'font-size="13">{_esc(title)}</text>',
           *_axes(fx, fy, xr, yr, log_x, x_ticks),
           f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle">{_esc(x_label)}</text>',
           f'<text transform="translate(14,{_H / 2}) rotate(-90)" text-anchor="middle">'
           f"{_esc(y_label)}</text>"]  # fmt: skip
    for i, (label, y) in enumerate(hlines):
        tip = _esc(f"{label}: {fmt_num(y, 2)}")
        out.append(f'<line class="hline" x1="{_PAD["left"]}" x2="{_W - _PAD["right"]}" '
                   f'y1="{fy(y):.1f}" y2="{fy(y):.1f}" stroke="{PALETTE[-1 - i]}" '
                   f'stroke-dasharray="5,4" stroke-width="1.5" data-tip="{tip}"><title>{tip}'
                   "</title></line>")  # fmt: skip
    legend = []
    for i, s in enumerate(series):
        out.append(_series_svg(s, s.get("color", PALETTE[i % len(PALETTE)]), fx, fy))
        legend.append(
            f'<li data-series="{_esc(s["name"])}"><span class="swatch" style="background:'
            f'{s.get("color", PALETTE[i % len(PALETTE)])}"></span>{_esc(s["name"])}</li>'
        )
    out.append("</svg>")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    m = f' data-metric="{_esc(metric)}"' if metric else ""
    return (f'<figure class="plot" data-kind="{_esc(kind)}"{m}>{"".join(out)}'
            f'<ul class="legend">{"".join(legend)}</ul>{cap}</figure>')  # fmt: skip


def _series_svg(s: dict[str, Any], color: str, fx: Any, fy: Any) -> str:
    """One series: its line (unless ``line`` is False) and one circle per point."""
    name = _esc(s["name"])
    pts = sorted(s["points"], key=lambda p: p["x"])
    out = [f'<g class="series" data-series="{name}">']
    if s.get("line", True) and len(pts) > 1:
        d = " ".join(f"{fx(p['x']):.1f},{fy(p['y']):.1f}" for p in pts)
        dash = ' stroke-dasharray="6,4"' if s.get("dash") else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
    for p in pts:
        tip = _esc(p.get("tip") or f"{s['name']}: x = {p['x']:g}, y = {fmt_num(p['y'], 2)}")
        hollow, ring = p.get("hollow", False), p.get("ring", False)
        cls = "pt untrained" if hollow else ("pt chosen" if ring else "pt")
        fill = "#fff" if hollow else ("none" if ring else color)
        value = p.get("value", p["y"])
        out.append(
            f'<circle class="{cls}" cx="{fx(p["x"]):.1f}" cy="{fy(p["y"]):.1f}" '
            f'r="{8 if ring else 4.5}" fill="{fill}" stroke="{color}" stroke-width="2" '
            f'data-series="{name}" data-x="{fmt_num(p["x"])}" data-y="{fmt_num(p["y"])}" '
            f'data-value="{_esc(repr(value))}" data-tip="{tip}"><title>{tip}</title></circle>'
        )
        if p.get("label"):
            out.append(f'<text class="pt-label" x="{fx(p["x"]) + 6:.1f}" y="{fy(p["y"]) - 6:.1f}" '
                       f'font-size="9">{_esc(p["label"])}</text>')  # fmt: skip
    out.append("</g>")
    return "".join(out)


# ------------------------------------------------------------------------------ images
def _png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an (H, W, 3) uint8 image: 8-bit RGB, no filter, zlib level 9."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))  # fmt: skip


def png_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an image: (H, W, 3) or (H, W), floats in [0, 1] or
    uint8. Written by a small PNG encoder here (zlib), so no imaging package is needed."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"an image must have shape (H, W, 3) or (H, W), got {a.shape}")
    if a.dtype != np.uint8:
        a = np.round(np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255).astype(np.uint8)
    data = base64.b64encode(_png_bytes(np.ascontiguousarray(a))).decode("ascii")
    return f"data:image/png;base64,{data}"


def heat_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A heat map laid over an image (jet colours): image (3, H, W) or (H, W, 3) in [0, 1],
    cam (H, W) in [0, 1]; returns (H, W, 3) float in [0, 1]."""
    img = np.asarray(image, np.float64)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[2] != 3:
        img = img.transpose(1, 2, 0)
    c = np.clip(np.asarray(cam, np.float64), 0, 1)[..., None]
    jet = np.clip(1.5 - np.abs(4 * c - np.array([3.0, 2.0, 1.0])), 0, 1)  # r, g, b
    return np.clip((1 - alpha) * np.clip(img, 0, 1) + alpha * jet, 0, 1)


def image_grid(
    cells: Sequence[Sequence[str]],
    col_titles: Sequence[str],
    row_titles: Sequence[str],
    kind: str,
    caption: str | None = None,
    tips: Sequence[Sequence[str]] | None = None,
) -> str:
    """A ``<figure class="plot" data-kind=KIND>`` holding ``<table class="image-grid">``:
    ``cells[i][j]`` is the data URI of row ``i``, column ``j``; ``tips`` the hover texts."""
    head = "<tr><th></th>" + "".join(f"<th>{_esc(t)}</th>" for t in col_titles) + "</tr>"
    rows = []
    for i, (title, row) in enumerate(zip(row_titles, cells)):
        tds = []
        for j, uri in enumerate(row):
            tip = _esc(tips[i][j] if tips else f"{title}, {col_titles[j]}")
            tds.append(f'<td><img class="cell" src="{uri}" alt="{tip}" data-row="{i}" '
                       f'data-col="{j}" data-tip="{tip}"></td>')  # fmt: skip
        rows.append(f'<tr><th class="row-title">{_esc(title)}</th>{"".join(tds)}</tr>')
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return (f'<figure class="plot" data-kind="{_esc(kind)}"><table class="image-grid">{head}'
            f'{"".join(rows)}</table>{cap}</figure>')  # fmt: skip
