"""Matryoshka fine-tuning of a sentence encoder, measured at every size: ``reproduce scifact``.

On SciFact (BEIR layout) and STS-B, from one command: the original all-MiniLM-L6-v2 truncated,
PCA of its corpus embeddings, plain fine-tunes, our Matryoshka fine-tunes and
sentence-transformers' ``MatryoshkaLoss(MultipleNegativesRankingLoss)`` peer, trained on the
same pairs for the same steps with the same seed (the best recipe adds pairs from the corpus).
Each model and each encoded matrix is written once into ``out_dir`` and reused, so an
interrupted run resumes. Every size is scored from one
encoded matrix; funnels (shortlist at a short prefix, rerank at full size) are timed on the
Matryoshka corpus embeddings. Writes ``docs_dir/scifact.md``, its JSON and two plots.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import atomic_file, sha256_file, write_json, write_text
from matryoshka.data import default_data_root
from matryoshka.data.text import beir_train_pairs, load_beir, load_stsb, title_text_pairs
from matryoshka.dims import validate_dims, validate_weights
from matryoshka.eval.report import results_table
from matryoshka.eval.retrieval import retrieval_metrics, run_from_search
from matryoshka.eval.text import pca_baseline, retention, retrieval_per_size, sts_per_size
from matryoshka.index import MatryoshkaIndex, check_funnel
from matryoshka.models.text import encode_texts, load_sentence_encoder
from matryoshka.train.text import TextTrainConfig, fit_text, load_text_model, save_text_model

__all__ = [
    "BEST_RECIPE",
    "DEFAULT_FUNNELS",
    "TUNED_LR",
    "best_weights",
    "default_recipes",
    "funnel_table",
    "parse_recipe",
    "reproduce_scifact",
]

DIMS = (16, 32, 64, 128, 256, 384)
DEFAULT_FUNNELS = (
    ((16, 400), (384, 10)),
    ((32, 100), (384, 10)),
    ((32, 200), (384, 10)),
    ((32, 400), (384, 10)),
    ((64, 100), (384, 10)),
    ((64, 200), (384, 10)),
    ((32, 400), (128, 50), (384, 10)),
)
PAIR_SOURCES = ("train", "train+titles")


TUNED_LR = 1e-4
BEST_RECIPE = "mrl-lr-titles-w64-384"


def best_weights(dims: Sequence[int]) -> list[float]:
    """The size weights of :data:`BEST_RECIPE`: 3 for the full size, 2 for 64, 1 for the rest.

    Measured on SciFact (one seed): equal weights left the full size 1.3 points below the plain
    fine-tune at the same lr, weight 3 on it alone 1.0, and this 0.6, each keeping 91% at 64.
    """
    top = max(dims)
    return [3.0 if m == top else 2.0 if m == 64 else 1.0 for m in dims]


def default_recipes(
    base: TextTrainConfig, tuned_lr: float = TUNED_LR
) -> dict[str, TextTrainConfig]:
    """What ``reproduce scifact`` trains by default, each name mapped to its recipe over ``base``.

    * ``plain``, ``mrl``, ``st-peer``: the plain loss, ours and sentence-transformers'
      ``MatryoshkaLoss`` on ``base`` unchanged (the peer's recipe: same pairs, steps and seed);
    * ``plain-lr``, ``mrl-lr``: the same two losses at ``tuned_lr``, the learning rate that
      suits both on SciFact's 29 steps;
    * :data:`BEST_RECIPE`: ours at ``tuned_lr`` with (title, abstract) pairs from the corpus
      added to the train pairs (``extra["pairs"] = "train+titles"``), sizes weighted by
      :func:`best_weights`.

    Add variants to the returned dict to measure more recipes; ``extra["pairs"]`` is one of
    ``"train"`` (SciFact's judged train pairs, the default) and ``"train+titles"``.
    """
    out = {m: replace(base, method=m) for m in ("plain", "mrl", "st-peer")}
    out["plain-lr"] = replace(base, method="plain", lr=tuned_lr)
    out["mrl-lr"] = replace(base, method="mrl", lr=tuned_lr)
    weights = best_weights(base.dims or DIMS)
    out[BEST_RECIPE] = replace(
        base, method="mrl", lr=tuned_lr, weights=weights,
        extra={**base.extra, "pairs": "train+titles"},
    )  # fmt: skip
    return out


def parse_recipe(spec: str, base: TextTrainConfig) -> tuple[str, TextTrainConfig]:
    """A named recipe from the command line: ``NAME:KEY=VALUE,KEY=VALUE,...`` over ``base``.

    Keys are :class:`TextTrainConfig` fields plus ``pairs`` (one of ``PAIR_SOURCES``); list
    values are separated by ``/``. Example: ``mrl-w:method=mrl,weights=4/2/1/1/1/1,lr=4e-5``.
    """
    name, _, body = spec.partition(":")
    if not name or not body:
        raise ValueError(f"a recipe looks like NAME:KEY=VALUE,..., got {spec!r}")
    types = {f.name: f.type for f in fields(TextTrainConfig)}
    changes: dict[str, Any] = {}
    extra = dict(base.extra)
    for item in body.split(","):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise ValueError(f"recipe {name!r}: expected KEY=VALUE, got {item!r}")
        if key == "pairs":
            if value not in PAIR_SOURCES:
                raise ValueError(
                    f"recipe {name!r}: pairs must be one of {PAIR_SOURCES}, got {value!r}"
                )
            extra["pairs"] = value
            continue
        if key not in types or key == "extra":
            valid = sorted(k for k in types if k != "extra") + ["pairs"]
            raise ValueError(f"recipe {name!r}: unknown key {key!r}; valid keys: {valid}")
        kind = str(types[key])
        try:
            if key in ("dims", "weights"):
                cast = int if key == "dims" else float
                changes[key] = [cast(v) for v in value.split("/")]
            elif kind.startswith("bool"):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                changes[key] = value.lower() in ("true", "1")
            elif kind.startswith("int"):
                changes[key] = None if value == "none" else int(value)
            elif kind.startswith("float"):
                changes[key] = float(value)
            else:
                changes[key] = value
        except ValueError:
            raise ValueError(f"recipe {name!r}: bad value {value!r} for {key} ({kind})") from None
    cfg = replace(base, **changes, extra=extra)
    cfg.check()
    return name, cfg


def _save_npy(path: Path, x: np.ndarray) -> None:
    with atomic_file(path, "wb") as f:
        np.save(f, x)


def _encode_cached(
    folder: Path, key: dict[str, Any], model_fn: Any, texts: Mapping[str, list[str]], **enc: Any
) -> tuple[dict[str, np.ndarray], dict[str, float], bool]:
    """Encode each named list of texts once into ``folder/<name>.npy``; reused when ``key`` matches.

    Returns the arrays (N_i, d), the seconds each encoding took (when it was done) and whether
    it was done now (False: read from the cache).
    """
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and all((folder / f"{n}.npy").is_file() for n in texts):
            return {n: np.load(folder / f"{n}.npy") for n in texts}, meta["seconds"], False
    model = model_fn()
    out, seconds = {}, {}
    for name, items in texts.items():
        t0 = time.perf_counter()
        out[name] = encode_texts(model, items, desc=f"encode {folder.name}/{name}", **enc)
        seconds[name] = time.perf_counter() - t0
    for name, x in out.items():
        _save_npy(folder / f"{name}.npy", x)
    write_json(
        meta_path, {"key": key, "seconds": seconds, "counts": {n: len(t) for n, t in texts.items()}}
    )
    return out, seconds, True


def _pairs(source: str, train_pairs: list, corpus: Mapping) -> list[tuple[str, str]]:
    if source == "train":
        return train_pairs
    if source == "train+titles":
        return train_pairs + title_text_pairs(corpus)
    raise ValueError(f"extra['pairs'] must be one of {PAIR_SOURCES}, got {source!r}")


def _train_cached(
    name: str,
    cfg: TextTrainConfig,
    folder: Path,
    model_path: Any,
    pairs: list,
    device: str,
    progress: bool,
) -> tuple[dict[str, Any], bool]:
    """Train into ``folder`` unless a model trained with exactly ``cfg`` is there already.

    Returns the model's ``matryoshka.json`` and whether it was trained now (False: reused).
    """
    want = asdict(cfg)
    if (folder / "matryoshka.json").is_file():
        _, meta = load_text_model(folder)  # checks the folder
        if meta.get("config") != want:
            have = meta.get("config") or {}
            diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            raise ValueError(
                f"{folder} holds a model {name!r} trained with another recipe (have, want): "
                f"{diff}; choose another out_dir or delete the folder"
            )
        return meta, False
    model = load_sentence_encoder(model_path, device=device, max_seq_length=cfg.max_seq_length)
    log = fit_text(model, pairs, cfg, progress=progress)
    dims = log["dims"] or list(cfg.dims or DIMS)
    save_text_model(
        model, folder, dims, method=cfg.method, name=name, config=want, pairs=len(pairs),
        steps=log["steps"], seconds=log["seconds"], epochs=log["epochs"], history=log["history"],
    )  # fmt: skip
    return json.loads((folder / "matryoshka.json").read_text()), True


def funnel_table(
    xb: np.ndarray,
    xq: np.ndarray,
    doc_ids: Sequence[str],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    funnels: Sequence[Sequence[Sequence[int]]],
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """nDCG@10, multiply-adds per query and measured time of full-size search and each funnel.

    Cost of a funnel ``[(m1, k1), (m2, k2), ...]`` per query: ``N m1 + k1 m2 + ...`` multiply-adds
    (``N d`` for full-size search). Time is the best of ``repeats`` runs over all queries.

    Returns
    -------
    list of dict with keys ``funnel``, ``ndcg@10``, ``macs``, ``cost_ratio`` (full / this),
    ``ms_per_query``, ``speedup`` (full time / this), the same two one query at a time
    (``ms_one_query``, ``speedup_one_query``); full-size search first
    """
    n, d = xb.shape
    index = MatryoshkaIndex(d, metric="cosine", precision="float32").add(xb)
    rows = []
    for funnel in [None, *funnels]:
        stages = [(d, 10)] if funnel is None else check_funnel(funnel, d)
        if stages[-1][1] < 10:
            raise ValueError(f"a funnel must return at least 10 results for nDCG@10, got {funnel}")
        macs = n * stages[0][0] + sum(k * m for (_, k), (m, _) in zip(stages, stages[1:]))
        kw: dict[str, Any] = {"k": 10, "dim": d} if funnel is None else {"funnel": stages}
        best = best_one = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            D, I = index.search(xq, **kw)  # noqa: E741  all queries in one batch
            best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(len(xq)):  # one query at a time, as a server answers them
                index.search(xq[i : i + 1], **kw)
            best_one = min(best_one, time.perf_counter() - t0)
        run = run_from_search(D, I, query_ids, doc_ids)
        rows.append({
            "funnel": "full" if funnel is None else ",".join(f"{m}:{k}" for m, k in stages),
            "ndcg@10": retrieval_metrics(qrels, run, (10,))["ndcg@10"],
            "macs": int(macs),
            "ms_per_query": 1000 * best / max(1, len(xq)),
            "ms_one_query": 1000 * best_one / max(1, len(xq)),
        })  # fmt: skip
    for r in rows:
        r["cost_ratio"] = rows[0]["macs"] / r["macs"]
        r["speedup"] = rows[0]["ms_per_query"] / max(r["ms_per_query"], 1e-9)
        r["speedup_one_query"] = rows[0]["ms_one_query"] / max(r["ms_one_query"], 1e-9)
    return rows


def _plot(results: list[dict], funnels: list[dict], base: str, png_dir: Path) -> list[str]:
    try:
        from matryoshka.viz.plots import _pyplot, plot_accuracy_vs_dim, save_figure

        plt = _pyplot()
    except ImportError:
        return []
    fig, ax = plt.subplots(figsize=(6, 4) if len(results) <= 8 else (8, 5))
    plot_accuracy_vs_dim(results, metric="ndcg@10", ax=ax, title="SciFact test nDCG@10 (%)")
    if len(results) > 8:
        ax.legend(fontsize=7, ncol=2)
    save_figure(fig, png_dir / f"{base}_ndcg.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([f["macs"] for f in funnels[1:]], [100 * f["ndcg@10"] for f in funnels[1:]], "o")
    for f in funnels[1:]:
        ax.annotate(f["funnel"], (f["macs"], 100 * f["ndcg@10"]), fontsize=7)
    ax.axhline(100 * funnels[0]["ndcg@10"], color="k", ls="--", label="full-size search")
    ax.axhline(100 * (funnels[0]["ndcg@10"] - 0.005), color="grey", ls=":", label="full - 0.5")
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds per query")
    ax.set_ylabel("nDCG@10 (%)")
    ax.set_title("Funnels on the Matryoshka embeddings")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, png_dir / f"{base}_funnel.png")
    plt.close(fig)
    return [f"{base}_ndcg.png", f"{base}_funnel.png"]


def _targets(out: dict[str, Any]) -> list[str]:
    """Each Matryoshka recipe against the peer (sizes <= 128), its own retention at 64 and 32,
    and its full-size score against every plain fine-tune's."""
    by = {r["method"]: r["dims"] for r in out["retrieval"]}
    train = out["training"]
    peer = train.get("st-peer")
    plains = [n for n, t in train.items() if t["config"]["method"] == "plain"]
    ours = [n for n, t in train.items() if t["config"]["method"] == "mrl"]
    if not ours:
        return []
    top = max(dims for dims in by["original"])
    small = [m for m in sorted(by["original"]) if m <= 128]
    head = ["recipe", "same pairs and steps as the peer"]
    head += [f"vs peer @{m}" for m in small] if peer else []
    head += ["kept @64", "kept @32"]
    head += [f"{top} vs {n}" for n in plains]
    lines = [
        "## The targets, as measured",
        "",
        "nDCG@10 differences in points; *kept* = share of the recipe's own 384-dim nDCG@10. "
        "Targets: beat the peer at every size ≤ 128 on the same pairs and steps; keep ≥ 90% at "
        "64 and ≥ 75% at 32 while staying within 1 point of the plain fine-tune at 384.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for n in ours:
        t, score = train[n], {m: v["ndcg@10"] for m, v in by[n].items()}
        row = [n]
        if peer:
            same = t["pairs"] == peer["pairs"] and t["steps"] == peer["steps"]
            row.append("yes" if same else f"no ({t['pairs']} pairs, {t['steps']} steps)")
            peer_score = {m: v["ndcg@10"] for m, v in by["st-peer"].items()}
            row += [f"{100 * (score[m] - peer_score[m]):+.1f}" for m in small]
        else:
            row.append("–")
        row += [f"{100 * score[m] / score[top]:.0f}%" if m in score else "–" for m in (64, 32)]
        row += [f"{100 * (score[top] - by[n][top]['ndcg@10']):+.1f}" for n in plains]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _run_time(out: dict[str, Any]) -> list[str]:
    """How long the command that wrote this report took, and what it did rather than reuse."""
    if "seconds" not in out:
        return []
    done, names = out["done_here"], list(out["training"])
    reused_t = [n for n in names if n not in done["trained"]]
    reused_e = [n for n in ["original", *names] if n not in done["encoded"]]
    lines = [
        "## Run time",
        "",
        f"This command took {out['seconds'] / 60:.1f} min of wall time with {out['threads']} "
        f"torch CPU thread(s). It trained {len(done['trained'])} of {len(names)} models and "
        f"encoded {len(done['encoded'])} of {len(names) + 1} models' texts itself.",
    ]
    if reused_t or reused_e:
        lines.append(
            f"Read from `out_dir` instead (done by an earlier run): trained "
            f"{', '.join(reused_t) or 'none'}; encoded {', '.join(reused_e) or 'none'}."
        )
    return [*lines, ""]


def _report(out: dict[str, Any], pngs: list[str]) -> str:
    res, sts = out["retrieval"], out["sts"]
    lines = [
        "# Matryoshka fine-tuning of all-MiniLM-L6-v2 on SciFact, measured at every size",
        "",
        f"Command: `{out['command']}`",
        "",
        f"Data: SciFact test ({out['counts']['corpus']} abstracts, {out['counts']['queries']} "
        f"queries), {out['counts']['train_pairs']} train pairs; STS-B test "
        f"({out['counts']['sts']} pairs). max_seq_length {out['max_seq_length']}. Every method "
        "below was trained on the same pairs for the same steps with the same seed, unless its "
        "row in *Training* says otherwise.",
        "",
        "## nDCG@10 (%) on SciFact test",
        "",
        results_table(res, metrics=("ndcg@10",)),
        "Share of each method's own largest-size nDCG@10 (%):",
        "",
    ]
    header = ["size"] + [r["method"] for r in res]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    kept = [retention(r) for r in res]
    for m in sorted({int(m) for r in res for m in r["dims"]}):
        lines.append(
            "| "
            + " | ".join([str(m)] + [f"{100 * k[m]:.0f}" if m in k else "–" for k in kept])
            + " |"
        )
    lines += ["", *_targets(out)]
    if out.get("mrl_vs_peer_max_abs_diff") is not None:
        lines += [
            "On the peer's own recipe our loss is the peer's divided by the number of sizes (the "
            "mean, not the sum, of the same per-size in-batch losses), a constant factor that "
            "AdamW and the gradient-norm clipping before it cancel: `mrl` and `st-peer` land on "
            "the same model (corpus embeddings differ by at most "
            f"{out['mrl_vs_peer_max_abs_diff']:.1e}). What wins over the peer is the recipe "
            "(learning rate, size weights, distillation), each measured in its own row.",
            "",
        ]
    lines += [
        "## recall@100 and MAP@100 (%)",
        "",
        results_table(res, metrics=("recall@100",)),
        results_table(res, metrics=("map@100",)),
        "## STS-B test Spearman (%)",
        "",
        results_table(sts, metrics=("spearman",)),
        "## Funnels (Matryoshka corpus embeddings)",
        "",
        f"Method `{out['funnel_method']}`. Cost: multiply-adds per query (N m1 + k1 m2 + ...). "
        "Time: exact search on CPU, best of 3, per query, with all test queries in one batch "
        "and with one query at a time (how a server answers them). In a batch, full-size "
        "search is one matrix product that reads each document once for all queries, while a "
        "funnel's rerank gathers its shortlist per query, so on a corpus this small the "
        "batched funnel is not faster; one query at a time, it is.",
        "",
        "| funnel | nDCG@10 (%) | multiply-adds | cost ÷ | ms/query, batch | speed-up "
        "| ms/query, one at a time | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in out["funnels"]:
        lines.append(
            f"| {f['funnel']} | {100 * f['ndcg@10']:.2f} | {f['macs']:,} | {f['cost_ratio']:.1f}x "
            f"| {f['ms_per_query']:.3f} | {f['speedup']:.1f}x | {f['ms_one_query']:.3f} "
            f"| {f['speedup_one_query']:.1f}x |"
        )
    near = [f for f in out["funnels"][1:] if f["ndcg@10"] >= out["funnels"][0]["ndcg@10"] - 0.005]
    if near:
        f = max(near, key=lambda f: f["cost_ratio"])
        lines += [
            "",
            f"Cheapest funnel within 0.005 nDCG@10 of full-size search: `{f['funnel']}`, "
            f"{100 * f['ndcg@10']:.2f}% against {100 * out['funnels'][0]['ndcg@10']:.2f}%, at "
            f"{f['cost_ratio']:.1f}x fewer multiply-adds ({f['speedup_one_query']:.1f}x faster "
            "one query at a time).",
        ]
    else:
        lines += ["", "No funnel here lands within 0.005 nDCG@10 of full-size search."]
    b = out["benchmark"]
    lines += [
        "",
        "## Cost of evaluating every size",
        "",
        f"Encoding corpus and queries once: {b['encode_s']:.1f} s. Scoring 6 sizes: "
        f"{b['score6_s']:.2f} s; one size: {b['score1_s']:.2f} s. Evaluating six sizes costs "
        f"{b['ratio']:.3f}x evaluating one.",
        "",
        *_run_time(out),
        "## Training",
        "",
        "| method | loss | pairs | steps | seconds | recipe |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, t in out["training"].items():
        c = t["config"]
        recipe = (
            f"lr {c['lr']}, batch {c['batch_size']}, epochs {c['epochs']}, warm-up "
            f"{c['warmup_ratio']}, T {c['temperature']}, weights {c['weights']}, distill "
            f"{c['distill']}, pairs {c['extra'].get('pairs', 'train')}, seed {c['seed']}"
        )
        if c.get("trainer", "loop") != "loop":
            recipe += f", trainer {c['trainer']}"
        lines.append(
            f"| {name} | {c['method']} | {t['pairs']} | {t['steps']} | {t['seconds']:.0f} "
            f"| {recipe} |"
        )
    lines.append("")
    lines += [f"![{p}]({p})" for p in pngs]
    return "\n".join(lines) + "\n"


def reproduce_scifact(
    out_dir: str | Path = "runs/scifact",
    docs_dir: str | Path = "docs/results",
    data_dir: str | Path | None = None,
    stsb_dir: str | Path | None = None,
    model: str | Path | None = None,
    dims: Sequence[int] = DIMS,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 2e-5,
    max_seq_length: int = 256,
    seed: int = 42,
    recipes: Mapping[str, TextTrainConfig] | None = None,
    extra_recipes: Sequence[str] = (),
    default_methods: bool = True,
    funnels: Sequence[Sequence[Sequence[int]]] = DEFAULT_FUNNELS,
    funnel_method: str | None = None,
    encode_batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole SciFact/STS-B comparison and write ``docs_dir/scifact.md``.

    Parameters
    ----------
    out_dir : path
        Models (``models/<name>``), encoded matrices (``emb/<name>``) and ``results.json``.
    docs_dir : path
        Where ``scifact.md``, ``scifact.json`` and the plots go.
    data_dir, stsb_dir : path, optional
        SciFact in BEIR layout and the STS-B folder (default ``$MATRYOSHKA_DATA/scifact`` and
        ``$MATRYOSHKA_DATA/stsb``).
    model : str or path, optional
        The encoder to start from (default the packaged all-MiniLM-L6-v2).
    dims, epochs, max_steps, batch_size, lr, max_seq_length, seed
        The base recipe shared by every method (the issue's peer recipe by default).
    recipes : dict of name -> TextTrainConfig, optional
        Methods to train (default :func:`default_recipes` of the base recipe).
    extra_recipes : sequence of str
        More recipes as ``NAME:KEY=VALUE,...`` over the base recipe (:func:`parse_recipe`),
        e.g. ``"mrl-titles:method=mrl,pairs=train+titles"`` from ``--recipe`` on the command line.
    default_methods : bool
        Train and report :func:`default_recipes` (when ``recipes`` is not given); False measures
        only ``extra_recipes`` (e.g. a second process trying recipes beside a running one).
    funnels : list of funnels
        Timed on the corpus embeddings of ``funnel_method`` (default :data:`BEST_RECIPE`, else
        ``mrl``, else the first recipe).

    Returns
    -------
    dict
        Everything written to ``scifact.json``: ``retrieval`` and ``sts`` result lists,
        ``funnels``, ``benchmark``, ``training``, ``seconds`` (wall time of this call),
        ``threads`` (torch's CPU threads) and ``done_here`` (what was trained and encoded in
        this call rather than read from ``out_dir``).
    """
    import torch

    t_start = time.perf_counter()
    out_dir, docs_dir = Path(out_dir), Path(docs_dir)
    data_dir = Path(data_dir) if data_dir is not None else default_data_root("scifact")
    stsb_dir = Path(stsb_dir) if stsb_dir is not None else default_data_root("stsb")
    command = command or " ".join(shlex.quote(a) for a in ["matryoshka", *sys.argv[1:]])
    base = TextTrainConfig(
        dims=list(dims), epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
        max_seq_length=max_seq_length, seed=seed,
    )  # fmt: skip
    if recipes is None:
        recipes = default_recipes(base) if default_methods else {}
    recipes = dict(recipes)
    for spec in extra_recipes:
        name, cfg = parse_recipe(spec, base)
        if name in recipes:
            raise ValueError(f"recipe name {name!r} is taken; choose another")
        recipes[name] = cfg
    for cfg in recipes.values():  # fail before any training, not after an hour of it
        cfg.check()
        if cfg.method != "plain":
            validate_weights(cfg.weights, validate_dims(cfg.dims or dims, dims[-1]))
        _pairs(cfg.extra.get("pairs", "train"), [], {})
    if not recipes:
        raise ValueError("no recipe to train: keep the default methods or add --recipe")
    if funnel_method is None:
        funnel_method = next((n for n in (BEST_RECIPE, "mrl") if n in recipes), next(iter(recipes)))
    if funnel_method not in recipes and funnel_method != "original":
        raise ValueError(f"funnel_method {funnel_method!r} is not one of {list(recipes)}")

    test = load_beir(data_dir, "test")
    train_pairs = beir_train_pairs(data_dir, "train")
    sts = load_stsb(stsb_dir, "test")
    texts = {
        "corpus": test.doc_texts(),
        "queries": test.query_texts(),
        "sts1": sts.sentences1,
        "sts2": sts.sentences2,
    }
    enc = {"batch_size": encode_batch_size, "progress": progress}

    done_here: dict[str, list[str]] = {"trained": [], "encoded": []}

    def evaluate(name: str, folder: Any) -> tuple[dict, dict, dict[str, np.ndarray], dict]:
        key = {"model": str(folder), "max_seq_length": max_seq_length, "data": str(data_dir)}
        if name != "original":  # a retrained model (same recipe, new weights) is re-encoded
            key["config"] = json.loads((Path(folder) / "matryoshka.json").read_text())["config"]
            key["weights_sha256"] = sha256_file(Path(folder) / "model.safetensors")
        X, seconds, fresh = _encode_cached(
            out_dir / "emb" / name, key,
            lambda: load_sentence_encoder(folder, device=device, max_seq_length=max_seq_length),
            texts, **enc,
        )  # fmt: skip
        if fresh:
            done_here["encoded"].append(name)
        r = retrieval_per_size(
            X["corpus"], X["queries"], test.doc_ids, test.query_ids, test.qrels, dims, name
        )
        s = sts_per_size(X["sts1"], X["sts2"], sts.scores, dims, name)
        return r, s, X, seconds

    retrieval, similarity, matrices = [], [], {}
    r, s, X0, enc_s = evaluate("original", model)
    retrieval.append(r)
    similarity.append(s)
    matrices["original"] = X0
    # the benchmark line: scoring is what grows with the number of sizes; encoding is done once
    t0 = time.perf_counter()
    retrieval_per_size(X0["corpus"], X0["queries"], test.doc_ids, test.query_ids, test.qrels, dims)
    score6 = time.perf_counter() - t0
    t0 = time.perf_counter()
    retrieval_per_size(
        X0["corpus"], X0["queries"], test.doc_ids, test.query_ids, test.qrels, [dims[-1]]
    )
    score1 = time.perf_counter() - t0
    encode_s = enc_s["corpus"] + enc_s["queries"]
    benchmark = {
        "encode_s": encode_s,
        "score6_s": score6,
        "score1_s": score1,
        "ratio": (encode_s + score6) / (encode_s + score1),
    }
    pb, pq, p1, p2 = pca_baseline(X0["corpus"], X0["corpus"], X0["queries"], X0["sts1"], X0["sts2"])
    pca_dims = [m for m in dims if m <= pb.shape[1]]  # PCA has min(N, d) components
    retrieval.append(
        retrieval_per_size(pb, pq, test.doc_ids, test.query_ids, test.qrels, pca_dims, "pca")
    )
    similarity.append(sts_per_size(p1, p2, sts.scores, pca_dims, "pca"))

    training = {}
    for name, cfg in recipes.items():
        pairs = _pairs(cfg.extra.get("pairs", "train"), train_pairs, test.corpus)
        folder = out_dir / "models" / name
        meta, trained = _train_cached(name, cfg, folder, model, pairs, device, progress)
        if trained:
            done_here["trained"].append(name)
        training[name] = {k: meta[k] for k in ("config", "pairs", "steps", "seconds", "epochs")}
        r, s, X, _ = evaluate(name, folder)
        retrieval.append(r)
        similarity.append(s)
        matrices[name] = X

    # Our loss on the peer's recipe is the peer's loss divided by the number of sizes, a factor
    # that AdamW (and the gradient clipping before it) does not see: say how close the two land.
    same_as_peer = None
    if "mrl" in recipes and "st-peer" in recipes:
        a, b = asdict(recipes["mrl"]), asdict(recipes["st-peer"])
        if {k: v for k, v in a.items() if k != "method"} == {
            k: v for k, v in b.items() if k != "method"
        }:
            diff = np.abs(matrices["mrl"]["corpus"] - matrices["st-peer"]["corpus"]).max()
            same_as_peer = float(diff)
    Xf = matrices[funnel_method]
    funnel_rows = funnel_table(
        Xf["corpus"], Xf["queries"], test.doc_ids, test.query_ids, test.qrels, funnels
    )
    out = {
        "command": command,
        "max_seq_length": max_seq_length,
        "counts": {
            "corpus": len(test.corpus),
            "queries": len(test.queries),
            "train_pairs": len(train_pairs),
            "sts": len(sts),
        },
        "retrieval": retrieval,
        "sts": similarity,
        "funnel_method": funnel_method,
        "funnels": funnel_rows,
        "benchmark": benchmark,
        "training": training,
        "mrl_vs_peer_max_abs_diff": same_as_peer,
        "seconds": time.perf_counter() - t_start,
        "threads": torch.get_num_threads(),
        "done_here": done_here,
    }
    write_json(out_dir / "results.json", out)
    pngs = _plot(retrieval, funnel_rows, "scifact", docs_dir)
    write_json(docs_dir / "scifact.json", out)
    write_text(docs_dir / "scifact.md", _report(out, pngs))
    return out
