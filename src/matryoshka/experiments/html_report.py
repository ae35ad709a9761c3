"""``matryoshka report RUN_DIR``: one self-contained HTML file of a run's results.

What RUN_DIR may hold, looked for in this order:

- a docs folder: ``cifar10.json``, ``cifar10-text.json`` and/or ``scifact.json`` (``matryoshka
  reproduce``; all in one page when several are there), the CIFAR-10 Grad-CAM maps
  (``cifar10_gradcam.npz``) beside them;
- a run folder: ``results.json`` of ``matryoshka demo`` / ``compare`` (or of a reproduction's
  ``--out`` folder, recognised by its keys).

The page is rendered from the results dicts alone (see :mod:`~matryoshka.experiments.html_sections`
for the sections), plus, when there are embeddings, a map of the embedding space at every size
with a size slider (:func:`matryoshka.viz.maps.embedding_maps`; t-SNE where openTSNE is
installed, else PCA, unless told):

- ``embeddings``: a folder ``matryoshka embed`` wrote (labels, class names, row names and the
  trained sizes come with it) or an ``.npy`` (N, d) file, with ``labels`` (an ``.npy`` (N,) or a
  text file, one label a line) optional;
- otherwise, for a demo / compare run whose MRL model folder is there (``RUN_DIR/models/mrl``),
  the test split encoded with that model (at most ``map_sample`` rows, labelled by class);
- otherwise no map (the reproductions' docs folders keep no embeddings: pass ``embeddings``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import write_text
from matryoshka.dims import nesting_dims
from matryoshka.eval import read_json
from matryoshka.experiments.common import read_results
from matryoshka.experiments.html_sections import (
    cifar10_sections,
    cifar10_text_sections,
    compare_sections,
    scifact_sections,
)
from matryoshka.viz.html import html_page, paragraph, section
from matryoshka.viz.html_map import map_figure
from matryoshka.viz.maps import embedding_maps, map_quality, resolve_method, sample_rows

__all__ = [
    "REQUIRED",
    "MapInput",
    "demo_map_input",
    "find_results",
    "load_map_input",
    "map_section",
    "render_report",
    "results_kind",
    "write_report",
]

# the keys a results file of each kind must hold, and the command that writes it
REQUIRED = {
    "cifar10": (("comparison", "finetune", "adaptive", "config", "dims"),
                "`matryoshka reproduce cifar10`"),
    "scifact": (("retrieval", "sts", "funnels", "training", "counts"),
                "`matryoshka reproduce scifact`"),
    "cifar10-text": (("zero_shot", "retrieval", "funnels", "config", "counts"),
                     "`matryoshka reproduce cifar10-text`"),
    "compare": (("results", "trained", "config", "command"), "`matryoshka demo` or `compare`"),
}  # fmt: skip
_TITLES = {
    "cifar10": "CIFAR-10: MRL against its baselines at every size",
    "scifact": "SciFact: Matryoshka fine-tuning of all-MiniLM-L6-v2 at every size",
    "cifar10-text": "CIFAR-10 image–text: a Matryoshka dual encoder at every size",
}


def results_kind(data: Any, path: str | Path = "results.json") -> str:
    """``"cifar10"``, ``"cifar10-text"``, ``"scifact"`` or ``"compare"``: which report a
    results dict is for."""
    if isinstance(data, dict):
        if data.get("experiment") == "cifar10-text" or "zero_shot" in data:
            return "cifar10-text"
        if data.get("experiment") == "cifar10" or "comparison" in data:
            return "cifar10"
        if "retrieval" in data or "funnels" in data:
            return "scifact"
        if "results" in data or "trained" in data:
            return "compare"
    raise ValueError(
        f"{path} is not a results file of matryoshka demo, compare or reproduce (it holds none "
        "of comparison, retrieval or results); pass the folder such a command wrote"
    )


def find_results(run_dir: str | Path) -> list[tuple[str, Path]]:
    """The results files in ``run_dir``: ``[(kind, path)]``, docs files first.

    Raises ``FileNotFoundError`` when there is none (or ``run_dir`` is not a folder) and
    ``ValueError`` when ``results.json`` is corrupt or of no known kind.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder; give a docs folder (cifar10.json, "
                                "cifar10-text.json, scifact.json) or a run folder "
                                "(results.json)")  # fmt: skip
    found = [(k, run_dir / f"{k}.json") for k in ("cifar10", "cifar10-text", "scifact")
             if (run_dir / f"{k}.json").is_file()]  # fmt: skip
    if not found and (run_dir / "results.json").is_file():
        path = run_dir / "results.json"
        found = [(results_kind(read_json(path), path), path)]
    if not found:
        raise FileNotFoundError(
            f"{run_dir} holds no results: expected cifar10.json, cifar10-text.json or scifact.json "
            "(a docs folder of `matryoshka reproduce`) or results.json (a `matryoshka demo` or "
            "`compare` run)"
        )
    return found


@dataclass
class MapInput:
    """Embeddings for the map: ``X`` (N, d), optional ``labels`` (N,) (names or numbers) and
    ``names`` (N,), the ``sizes`` to map, and ``source`` (in words, for the caption)."""

    X: np.ndarray
    labels: np.ndarray | None = None
    names: list[str] | None = None
    sizes: list[int] = field(default_factory=list)
    source: str = ""
    rows: np.ndarray | None = None  # each row's number in the data it came from (default 0..N-1)


def _read_labels(path: Path, n: int) -> np.ndarray:
    """Labels (N,) from an ``.npy`` file or a text file with one label a line."""
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    if path.suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    else:
        labels = np.array([line.strip() for line in path.read_text().splitlines() if line.strip()])
    if labels.shape != (n,):
        raise ValueError(f"{path} holds {labels.shape} labels; the embeddings have {n} rows")
    return labels


def load_map_input(embeddings: str | Path, labels: str | Path | None = None) -> MapInput:
    """Embeddings for the map from a ``matryoshka embed`` folder or an ``.npy`` (N, d) file."""
    from matryoshka.eval import load_embeddings

    path = Path(embeddings)
    if path.is_dir():
        X, y, meta = load_embeddings(path)
        if y is not None and meta.get("classes"):
            classes = meta["classes"]
            y = np.array([classes[int(i)] if 0 <= int(i) < len(classes) else str(i) for i in y])
        inp = MapInput(X, y, meta.get("names"), list(meta.get("dims") or []), f"`{path}`")
    elif path.is_file():
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path} is not a readable .npy array ({e})") from None
        inp = MapInput(X, source=f"`{path}`")
    else:
        raise FileNotFoundError(f"embeddings not found: {path} (give a folder `matryoshka embed` "
                                "wrote or an .npy file of shape (N, d))")  # fmt: skip
    if inp.X.ndim != 2:
        raise ValueError(f"{path}: embeddings must have shape (N, d), got {inp.X.shape}")
    if labels is not None:
        inp.labels = _read_labels(Path(labels), len(inp.X))
    return inp


def demo_map_input(run_dir: Path, data: dict[str, Any], sample: int, seed: int) -> MapInput | None:
    """The test split of a demo / compare run encoded with its MRL model (at most ``sample``
    rows, drawn with ``seed``), or None when the model folder is not there."""
    folder = run_dir / "models" / "mrl"
    if not (folder / "model.safetensors").is_file():
        folder = Path(data["config"].get("out_dir") or "") / "mrl"
        if not (folder / "model.safetensors").is_file():
            return None
    import torch.utils.data

    from matryoshka.eval import encode
    from matryoshka.train import load_data, load_model

    model, cfg, classes = load_model(folder)
    _, test_ds, _ = load_data(cfg, augment=False, progress=False)
    rows = sample_rows(len(test_ds), sample, seed)
    X, y = encode(model, torch.utils.data.Subset(test_ds, rows.tolist()))
    labels = np.array([classes[int(i)] if classes else str(int(i)) for i in y])
    sizes = [m for m in data["trained"] if m >= 2]
    return MapInput(X, labels, None, sizes, f"the test split encoded with `{folder}`", rows)


def map_section(
    inp: MapInput, method: str = "auto", sample: int | None = 2000, seed: int = 0,
    sizes: list[int] | None = None, k: int = 10,
) -> tuple:  # fmt: skip
    """The map section: aligned maps of ``inp`` at every size, with each size's quality."""
    d = inp.X.shape[1]
    sizes = sorted({m for m in (sizes or inp.sizes or nesting_dims(d, min(8, d))) if 2 <= m <= d})
    if not sizes:
        raise ValueError(f"no map size between 2 and d = {d}; give --map-sizes")
    method = resolve_method(method)  # "auto": t-SNE where openTSNE is installed, else PCA
    maps = embedding_maps(inp.X, sizes, method, sample, seed, inp.labels)
    picked = sample_rows(len(inp.X), sample, seed, inp.labels)
    Xs = np.asarray(inp.X[picked], np.float32)
    labels = None if inp.labels is None else inp.labels[picked]
    kk = max(1, min(k, (len(picked) - 1) // 2))
    quality = ({m: map_quality(Xs[:, :m], maps[m], labels, kk) for m in sizes}
               if len(picked) >= 3 else {})  # fmt: skip
    rows = picked if inp.rows is None else np.asarray(inp.rows)[picked]
    names = None if inp.names is None else [str(inp.names[i]) for i in picked]
    fig = map_figure(maps, rows, None if labels is None else labels.tolist(), names, quality,
                     method)  # fmt: skip
    text = (f"{len(picked):,} of {len(inp.X):,} rows of {inp.source}, d = {d}, mapped at sizes "
            f"{sizes} by {method}. Quality: the share of each point's {kk} nearest neighbours "
            "(cosine, at that size) kept among its nearest on the map, trustworthiness"
            + (", and the label of a point's map neighbours' vote" if labels is not None else "")
            + ".")  # fmt: skip
    return section("map", "The embedding space at every size", [paragraph(text), fig])


def render_report(
    run_dir: str | Path,
    embeddings: str | Path | None = None,
    labels: str | Path | None = None,
    map_method: str = "auto",
    map_sample: int = 2000,
    map_sizes: list[int] | None = None,
    seed: int = 0,
    auto_map: bool = True,
) -> str:
    """The HTML page of everything ``run_dir`` holds (see the module docstring); returns it."""
    run_dir = Path(run_dir)
    found = find_results(run_dir)
    if labels is not None and embeddings is None:
        raise ValueError("labels are for the map's embeddings: give the embeddings too")
    datas, sections = {}, []
    for kind, path in found:
        required, what = REQUIRED[kind]
        data = read_results(path, required, what)
        datas[kind] = data
        if kind == "cifar10":
            sections += cifar10_sections(data, path.parent)
        elif kind == "scifact":
            sections += scifact_sections(data)
        elif kind == "cifar10-text":
            sections += cifar10_text_sections(data)
        else:
            sections += compare_sections(data)
    inp = None
    if embeddings is not None:
        inp = load_map_input(embeddings, labels)
    elif auto_map and "compare" in datas:
        inp = demo_map_input(run_dir, datas["compare"], map_sample, seed)
    if inp is not None:
        sections.append(map_section(inp, map_method, map_sample, seed, map_sizes))
    kinds = list(datas)
    title = (_TITLES.get(kinds[0]) or datas[kinds[0]].get("title", "Results")
             if len(kinds) == 1 else "Matryoshka results: " + ", ".join(kinds))  # fmt: skip
    return html_page(
        title, sections, data=datas, subtitle=f"from <code>{html.escape(str(run_dir))}</code>"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None, **kw: Any) -> Path:
    """Render :func:`render_report` and write it atomically to ``out`` (default
    ``run_dir/report.html``); returns the path."""
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    write_text(out, render_report(run_dir, **kw))
    return out
