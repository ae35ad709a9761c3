"""The sections of the HTML report for each kind of results, built from the results dict alone.

- :func:`compare_sections`: a ``matryoshka demo`` / ``compare`` run's ``results.json``;
- :func:`cifar10_sections`: ``cifar10.json`` (and the Grad-CAM maps saved beside it);
- :func:`scifact_sections`: ``scifact.json``.

Each returns a list of ``(id, title, html)`` sections for :func:`matryoshka.viz.html.html_page`.
Every number shown comes from the dict; charts carry the dict's values in ``data-value``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matryoshka.eval import retention
from matryoshka.experiments.cifar10_report import _selection_text, claims, load_gradcam
from matryoshka.experiments.common import describe_augment, describe_data, duration
from matryoshka.viz.html import (
    PALETTE,
    chart,
    heat_overlay,
    html_list,
    html_table,
    image_grid,
    paragraph,
    png_data_uri,
    section,
)
from matryoshka.viz.tables import METRIC_NAMES

__all__ = [
    "accuracy_chart",
    "accuracy_table",
    "cifar10_sections",
    "cifar10_text_sections",
    "compare_sections",
    "scifact_sections",
]

_COLOURS = {"mrl": PALETTE[0], "mrl-e": PALETTE[1], "ff": PALETTE[2], "pca": PALETTE[3],
            "truncation": PALETTE[4]}  # fmt: skip
Trained = Iterable[int] | dict[str, Iterable[int] | None] | None


def _name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _trained_for(trained: Trained, method: str) -> set[int] | None:
    """The sizes ``method`` was trained at: one list for all, or a list per method."""
    if isinstance(trained, dict):
        sizes = trained.get(method)
        return None if sizes is None else {int(m) for m in sizes}
    return None if trained is None else {int(m) for m in trained}


def _colours(methods: Sequence[str]) -> dict[str, str]:
    free = iter([c for c in PALETTE if c not in set(_COLOURS.values())] * 3)
    return {m: _COLOURS[m] if m in _COLOURS else next(free) for m in methods}


def accuracy_chart(
    results: Sequence[dict[str, Any]], metric: str, trained: Trained, title: str,
    kind: str = "accuracy", caption: str | None = None,
) -> str:  # fmt: skip
    """One metric (percent) against size, one line per method; untrained sizes hollow.

    ``results``: ``[{"method", "dims": {m: {metric: value}}}]``; ``trained``: the trained sizes,
    for all methods or per method (None: no size is marked).
    """
    colours = _colours([r["method"] for r in results])
    series, sizes = [], set()
    for r in results:
        done = _trained_for(trained, r["method"])
        pts = []
        for m, v in sorted((int(m), v) for m, v in r["dims"].items()):
            if v.get(metric) is None:
                continue
            hollow = done is not None and m not in done
            sizes.add(m)
            tip = (f"{r['method']}, size {m}{' (not trained)' if hollow else ''}: "
                   f"{_name(metric)} {100 * v[metric]:.2f}%")  # fmt: skip
            pts.append({"x": m, "y": 100 * v[metric], "value": v[metric], "hollow": hollow,
                        "tip": tip})  # fmt: skip
        if pts:
            series.append({"name": r["method"], "points": pts, "color": colours[r["method"]],
                           "dash": r["method"] in ("pca", "truncation")})  # fmt: skip
    return chart(series, kind, title, "embedding size m (hollow: not trained)",
                 f"{_name(metric)} (%)", x_ticks=sorted(sizes), caption=caption,
                 metric=metric)  # fmt: skip


def accuracy_table(
    results: Sequence[dict[str, Any]], metrics: Sequence[str], trained: Trained,
    kind: str = "accuracy", digits: int = 1,
) -> str:  # fmt: skip
    """One row per size, one column per (method, metric) in percent; rows at sizes no method
    was trained at carry ``*`` and the class ``untrained``."""
    sizes = sorted({int(m) for r in results for m in r["dims"]})
    header = ["size"] + [f"{r['method']} {_name(k)}" for r in results for k in metrics]
    rows, classes = [], []
    for m in sizes:
        untrained = all(
            (t := _trained_for(trained, r["method"])) is not None and m not in t for r in results
        )
        row = [f"{m}*" if untrained else str(m)]
        for r in results:
            vals = r["dims"].get(m) or {}
            row += ["–" if vals.get(k) is None else f"{100 * vals[k]:.{digits}f}" for k in metrics]
        rows.append(row)
        classes.append("untrained" if untrained else "")
    return html_table(header, rows, kind, row_classes=classes)


def _figures(*parts: str) -> str:
    return '<div class="figures">' + "".join(p for p in parts if p) + "</div>"


def _sec(kind: str, name: str, title: str, parts: Sequence[str]) -> tuple:
    """A section with the id ``sec-KIND-NAME`` and ``data-kind`` NAME."""
    return section(f"{kind}-{name}", title, parts, kind=name)


def _command(command: str) -> str:
    return paragraph("Reproduced with: `" + command + "`")


# ------------------------------------------------------------------------------ compare / demo
def compare_sections(data: dict[str, Any]) -> list[tuple]:
    """A comparison's (``matryoshka demo`` / ``compare``) sections: summary and accuracy."""
    cfg, dims, results = data["config"], data["trained"], data["results"]
    optim = cfg["optim"]
    seen = ""
    if "n_train" in data:
        seen = (f" {data['n_train']:,} training and {data['n_test']:,} test examples; the run "
                f"took {duration(data['run_seconds'])}.")  # fmt: skip
    summary = [
        paragraph(f"Data: {describe_data(cfg['data'])} (`{cfg['data']['name']}`), "
                  f"{describe_augment(cfg['data'])}; backbone `{cfg['model']['backbone']}`, "
                  f"d = {cfg['model']['d']}; trained sizes {dims}; {cfg['epochs']} epochs, "
                  f"{optim['name']} lr {optim['lr']}, batch {cfg['batch_size']}, seed "
                  f"{cfg['seed']}.{seen}"),
        _command(data["command"]),
    ]  # fmt: skip
    acc = [
        paragraph("Top-1 on the test split: each method's own head (MRL, MRL-E, FF) or, for PCA "
                  "and truncation, a logistic-regression probe; 1-NN: cosine nearest neighbour, "
                  "database = train split. Hollow points and sizes marked * were never trained."),
        _figures(accuracy_chart(results, "top1", dims, "head / probe top-1"),
                 accuracy_chart(results, "knn1", dims, "1-NN top-1")),
        accuracy_table(results, ("top1", "knn1"), dims),
    ]  # fmt: skip
    return [
        _sec("compare", "summary", "Summary", summary),
        _sec("compare", "accuracy", "Accuracy at every size", acc),
    ]


# ------------------------------------------------------------------------------ CIFAR-10
def _gap_rows(by: dict[str, Any], dims: list[int]) -> list[list[str]]:
    rows = []
    for m in dims:
        mrl = by["mrl"][m]["top1"]
        rows.append([str(m)] + [f"{100 * (mrl - by[b][m]['top1']):+.1f}"
                                for b in ("ff", "pca", "truncation")])  # fmt: skip
    return rows


def _adaptive_chart(adaptive: dict[str, Any]) -> str:
    """Test top-1 against expected size: the best points, fixed sizes, the chosen point."""
    front = [{"x": p["expected_size"], "y": 100 * p["top1"], "value": p["top1"],
              "tip": f"start {p['start']}, target precision {p['precision']}: expected size "
                     f"{p['expected_size']:.1f}, top-1 {100 * p['top1']:.2f}%"}
             for p in adaptive["front"]]  # fmt: skip
    fixed = [{"x": int(m), "y": 100 * v, "value": v, "tip": f"MRL at size {m}: top-1 "
              f"{100 * v:.2f}%"} for m, v in sorted((int(m), v) for m, v in
                                                     adaptive["fixed"].items())]  # fmt: skip
    series = [
        {"name": "adaptive (MRL cascade), best points", "points": front},
        {"name": "MRL at a fixed size", "points": fixed, "color": PALETTE[4], "dash": True},
    ]
    sel = adaptive.get("selected")
    if sel:
        series.append({"name": "chosen on held-out data", "line": False, "color": "#000",
                       "points": [{"x": sel["expected_size"], "y": 100 * sel["top1"],
                                   "value": sel["top1"], "ring": True,
                                   "tip": "chosen on held-out data: expected size "
                                   f"{sel['expected_size']:.1f}, top-1 "
                                   f"{100 * sel['top1']:.2f}%"}]})  # fmt: skip
    ff = adaptive["ff_full_top1"]
    return chart(series, "adaptive", "Adaptive classification", "expected embedding size",
                 "top-1 (%)", hlines=[("FF at full size", 100 * ff)],
                 x_ticks=[int(m) for m in adaptive["fixed"]])  # fmt: skip


def _adaptive_section(adaptive: dict[str, Any], dims: list[int]) -> list[str]:
    sel_text, match_text = _selection_text(adaptive, dims[-1])
    rows = [[p["start"], f"{p['precision']:.3f}", f"{p['expected_size']:.1f}",
             f"{100 * p['top1']:.2f}", f"{100 * p['holdout_top1']:.2f}"]
            for p in adaptive["front"]]  # fmt: skip
    header = ["start size", "target precision", "expected size", "test top-1",
              "held-out top-1"]  # fmt: skip
    return [
        paragraph(f"The MRL heads as a cascade from {dims[0]} to {dims[-1]} dimensions: stop at "
                  "the first size whose max softmax probability clears its threshold. "
                  "Thresholds are tuned on held-out training images."),
        _adaptive_chart(adaptive),
        html_table(header, rows, "adaptive", text_cols=0),
        paragraph(sel_text.replace("**", "")),
        paragraph("Read off the test curve instead (descriptive only): "
                  + match_text.replace("**", "")),
    ]  # fmt: skip


def _gradcam(docs_dir: Path, results: dict[str, Any]) -> str:
    """The Grad-CAM grid: one row per image, the image then its map at each size."""
    maps = load_gradcam(docs_dir, results.get("gradcam"))
    if maps is None:
        return ""
    dims = results["dims"]
    cells, tips = [], []
    for i, label in enumerate(maps["labels"]):
        img = maps["images"][i]  # (3, H, W)
        row = [png_data_uri(img.transpose(1, 2, 0))]
        row += [png_data_uri(heat_overlay(img, maps["cams"][i, j])) for j in range(len(dims))]
        cells.append(row)
        tips.append([f"{label}: image"] + [f"{label}: Grad-CAM at size {m}" for m in dims])
    return image_grid(cells, ["image", *[f"m = {m}" for m in dims]], maps["labels"], "gradcam",
                      caption="Grad-CAM of the last convolutional stage through the MRL head of "
                      "each size, explaining each size's own prediction.", tips=tips)  # fmt: skip


def _spread_rows(spread: dict[Any, dict[str, list[float]]]) -> list[list[str]]:
    rows = []
    for m, v in sorted((int(m), v) for m, v in spread.items()):
        row = [str(m)]
        for name in ("mrl", "ff"):
            vals = v.get(name) or []
            row.append(" / ".join(f"{100 * x:.2f}" for x in vals) or "–")
        rows.append(row)
    return rows


def cifar10_sections(results: dict[str, Any], docs_dir: str | Path) -> list[tuple]:
    """The CIFAR-10 reproduction's sections; Grad-CAM maps are read from ``docs_dir``."""
    dims, adaptive, cfg = results["dims"], results["adaptive"], results["config"]
    by = {r["method"]: r["dims"] for r in results["comparison"]}
    model = cfg["model"]
    summary = [
        paragraph(f"Data: {describe_data(cfg['data'])}; {results['n_train']:,} training and "
                  f"{results['n_test']:,} test images. Backbone `{model['backbone']}`, d = "
                  f"{model['d']}, sizes {dims}; {results['models']} models trained in "
                  f"{duration(results['train_seconds'])}."),
        _command(results["command"]),
        html_list([line[2:] for line in claims(by, dims, adaptive) if line.startswith("- ")],
                  "claims"),
    ]  # fmt: skip
    acc = [
        _figures(accuracy_chart(results["comparison"], "top1", dims, "head / probe top-1"),
                 accuracy_chart(results["comparison"], "knn1", dims, "1-NN top-1")),
        accuracy_table(results["comparison"], ("top1", "knn1"), dims),
        paragraph("Differences at each trained size (points):"),
        html_table(["size", "MRL − FF top-1", "MRL − PCA top-1", "MRL − truncation top-1"],
                   _gap_rows(by, dims), "gaps"),
    ]  # fmt: skip
    if results.get("seeds"):
        acc += [paragraph("Test top-1 (%) of each seed's own head:"),
                html_table(["size", "MRL per seed", "FF per seed"],
                           _spread_rows(results["seeds"]), "seeds")]  # fmt: skip
    ft = [
        accuracy_chart(results["finetune"], "top1", dims, "fine-tuned from FF: top-1",
                       kind="finetune"),
        accuracy_table(results["finetune"], ("top1", "knn1"), dims, kind="finetune"),
    ]  # fmt: skip
    out = [
        _sec("cifar10", "summary", "Summary", summary),
        _sec("cifar10", "accuracy", "Accuracy at every size", acc),
        _sec("cifar10", "finetune", "Fine-tuning from the full-size FF model", ft),
        _sec("cifar10", "adaptive", "Adaptive classification", _adaptive_section(adaptive, dims)),
    ]
    grid = _gradcam(Path(docs_dir), results)
    if grid:
        out.append(_sec("cifar10", "gradcam", "Where the model looks at each size", [grid]))
    return out


# ------------------------------------------------------------------------------ SciFact
def _funnel_chart(funnels: list[dict[str, Any]]) -> str:
    """nDCG@10 against multiply-adds per query, one point per funnel, full size as a line."""
    full = funnels[0]
    pts = [{"x": f["macs"], "y": 100 * f["ndcg@10"], "value": f["ndcg@10"], "label": f["funnel"],
            "tip": f"{f['funnel']}: nDCG@10 {100 * f['ndcg@10']:.2f}%, {f['macs']:,} "
                   f"multiply-adds ({f['cost_ratio']:.1f}x fewer), {f['ms_one_query']:.3f} "
                   "ms one query at a time"} for f in funnels]  # fmt: skip
    return chart([{"name": "funnels", "points": pts, "line": False}], "funnel",
                 "Funnels: nDCG@10 against cost", "multiply-adds per query (log)", "nDCG@10 (%)",
                 hlines=[("full-size search", 100 * full["ndcg@10"]),
                         ("full − 0.5", 100 * (full["ndcg@10"] - 0.005))])  # fmt: skip


def _funnel_rows(funnels: list[dict[str, Any]]) -> list[list[str]]:
    return [[f["funnel"], f"{100 * f['ndcg@10']:.2f}", f"{f['macs']:,}", f"{f['cost_ratio']:.1f}x",
             f"{f['ms_per_query']:.3f}", f"{f['speedup']:.1f}x", f"{f['ms_one_query']:.3f}",
             f"{f['speedup_one_query']:.1f}x"] for f in funnels]  # fmt: skip


def _retention_rows(res: list[dict[str, Any]]) -> list[list[str]]:
    kept = [retention(r) for r in res]
    sizes = sorted({int(m) for r in res for m in r["dims"]})
    return [[str(m)] + [f"{100 * k[m]:.0f}" if m in k else "–" for k in kept] for m in sizes]


def _training_rows(training: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, t in training.items():
        c = t["config"]
        recipe = (f"lr {c['lr']}, batch {c['batch_size']}, epochs {c['epochs']}, temperature "
                  f"{c['temperature']}, weights {c['weights']}, distill {c['distill']}, pairs "
                  f"{c.get('extra', {}).get('pairs', 'train')}, seed {c['seed']}")  # fmt: skip
        rows.append([name, c["method"], t["pairs"], t["steps"], f"{t['seconds']:.0f}", recipe])
    return rows


def scifact_sections(out: dict[str, Any]) -> list[tuple]:
    """The SciFact reproduction's sections: retrieval and STS at every size, funnels, training."""
    res, sts, c, funnels = out["retrieval"], out["sts"], out["counts"], out["funnels"]
    trained = {n: t["config"].get("dims") for n, t in out["training"].items()}
    summary = [
        paragraph(f"SciFact test ({c['corpus']:,} abstracts, {c['queries']} queries), "
                  f"{c['train_pairs']} train pairs; STS-B test ({c['sts']} pairs); max_seq_length "
                  f"{out['max_seq_length']}."
                  + (f" The command took {out['seconds'] / 60:.1f} min." if "seconds" in out
                     else "")),
        _command(out["command"]),
    ]  # fmt: skip
    retrieval = [
        paragraph("nDCG@10 on SciFact test at every size, one line per method (the original "
                  "encoder and PCA are not trained; a trained method's other sizes are hollow)."),
        _figures(accuracy_chart(res, "ndcg@10", trained, "SciFact test nDCG@10"),
                 accuracy_chart(res, "recall@100", trained, "SciFact test recall@100")),
        accuracy_table(res, ("ndcg@10",), trained, kind="ndcg"),
        paragraph("Share of each method's own largest-size nDCG@10 (%):"),
        html_table(["size"] + [r["method"] for r in res], _retention_rows(res), "retention"),
        paragraph("recall@100 and MAP@100 (%):"),
        accuracy_table(res, ("recall@100",), trained, kind="recall"),
        accuracy_table(res, ("map@100",), trained, kind="map100"),
    ]  # fmt: skip
    sts_parts = [accuracy_chart(sts, "spearman", trained, "STS-B test Spearman", kind="sts"),
                 accuracy_table(sts, ("spearman",), trained, kind="sts")]  # fmt: skip
    header = ["funnel", "nDCG@10 (%)", "multiply-adds", "cost ÷", "ms/query, batch", "speed-up",
              "ms/query, one at a time", "speed-up"]  # fmt: skip
    funnel = [
        paragraph(f"Funnels on `{out['funnel_method']}`'s embeddings: shortlist at a small size, "
                  "rerank at larger ones. Cost: multiply-adds per query; time: exact search on "
                  "CPU, per query."),
        _funnel_chart(funnels),
        html_table(header, _funnel_rows(funnels), "funnel"),
    ]  # fmt: skip
    b = out["benchmark"]
    score_all = b.get("score_all_s", b.get("score6_s"))
    cost = [paragraph(f"Encoding corpus and queries once: {b['encode_s']:.1f} s. Scoring every "
                      f"size: {score_all:.2f} s; one size: {b['score1_s']:.2f} s "
                      f"({b['ratio']:.3f}x).")]  # fmt: skip
    training = [
        html_table(
            ["method", "loss", "pairs", "steps", "seconds", "recipe"],
            _training_rows(out["training"]),
            "training",
            text_cols=2,
        )
    ]
    return [
        _sec("scifact", "summary", "Summary", summary),
        _sec("scifact", "retrieval", "Retrieval at every size", retrieval),
        _sec("scifact", "sts", "STS-B at every size", sts_parts),
        _sec("scifact", "funnels", "Funnels", funnel),
        _sec("scifact", "cost", "Cost of evaluating every size", cost),
        _sec("scifact", "training", "Training", training),
    ]


# ------------------------------------------------------------------------------ CIFAR-10 image-text
def cifar10_text_sections(out: dict[str, Any]) -> list[tuple]:
    """The image-text reproduction's sections: zero-shot and text -> image search at every size."""
    cfg, c = out["config"], out["counts"]
    dims = [int(m) for m in cfg["dims"]]
    trained = {"mrl": dims, "mrl-text1": dims, "ff": dims, "pca": None, "truncation": None}
    towers = (f"open_clip {cfg['open_clip']}" if cfg.get("open_clip") else
              f"the compact CNN (width {cfg['width']}) and all-MiniLM-L6-v2")  # fmt: skip
    summary = [
        paragraph(f"CIFAR-10: {c['train']:,} training and {c['test']:,} test images, "
                  f"{c['classes']} classes; towers: {towers}, d = {cfg['d']}. Zero-shot with "
                  f"{len(out['templates']['test'])} prompt templates never seen in training. "
                  f"The command took {out['seconds'] / 60:.1f} min."),
        _command(out["command"]),
    ]  # fmt: skip
    zs = out["zero_shot"]
    zero = [
        paragraph("Zero-shot top-1: each test image goes to the class whose prompts (averaged at "
                  "that size) are nearest. ff: one model per size; truncation and pca: the fixed "
                  "full-size model cut, or rotated by PCA first."),
        _figures(accuracy_chart(zs, "top1", trained, "zero-shot top-1", kind="zeroshot")),
        accuracy_table(zs, ("top1",), trained, kind="zeroshot"),
    ]  # fmt: skip
    ret, funnels = out["retrieval"], out["funnels"]
    header = ["funnel", "nDCG@10 (%)", "multiply-adds", "cost ÷", "ms/query, batch", "speed-up",
              "ms/query, one at a time", "speed-up"]  # fmt: skip
    search = [
        paragraph("Every unseen prompt searches the test images; relevant: its class."),
        _figures(accuracy_chart(ret, "ndcg@10", trained, "text → image nDCG@10", kind="t2i"),
                 _funnel_chart(funnels)),
        accuracy_table(ret, ("ndcg@10", "map@100"), trained, kind="t2i"),
        html_table(header, _funnel_rows(funnels), "funnel"),
    ]  # fmt: skip
    return [
        _sec("cifar10text", "summary", "Summary", summary),
        _sec("cifar10text", "zeroshot", "Zero-shot classification at every size", zero),
        _sec("cifar10text", "search", "Text → image search", search),
    ]
