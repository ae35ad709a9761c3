"""The SciFact report (``scifact.md`` and two plots), rendered from the results dict alone.

:func:`render_scifact` reads nothing but the dict :func:`reproduce_scifact` writes as
``scifact.json``, so ``matryoshka reproduce scifact --report-only`` redraws the report, its run-time
section included, without training or encoding. Sizes and counts in the text come from the dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matryoshka._io import write_text
from matryoshka.eval import retention
from matryoshka.experiments.common import number_word, try_pyplot
from matryoshka.experiments.scifact_recipes import PLAIN_TITLES
from matryoshka.viz import markdown_table, plot_accuracy_vs_dim, results_table, save_figure

__all__ = ["quality_rows", "ranked_rows", "render_scifact"]


def _plot(results: list[dict], funnels: list[dict], base: str, png_dir: Path) -> list[str]:
    """nDCG@10 against size for every method, and nDCG@10 against cost for every funnel."""
    plt = try_pyplot("SciFact plots")
    if plt is None:
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


def _target_row(name: str, out: dict[str, Any], small: list[int], plains: list[str]) -> list[str]:
    by, train = {r["method"]: r["dims"] for r in out["retrieval"]}, out["training"]
    t, score = train[name], {m: v["ndcg@10"] for m, v in by[name].items()}
    top, peer = max(by["original"]), train.get("st-peer")
    row = [name]
    if peer:
        same = t["pairs"] == peer["pairs"] and t["steps"] == peer["steps"]
        row.append("yes" if same else f"no ({t['pairs']} pairs, {t['steps']} steps)")
        peer_score = {m: v["ndcg@10"] for m, v in by["st-peer"].items()}
        row += [f"{100 * (score[m] - peer_score[m]):+.1f}" for m in small]
    else:
        row.append("–")
    row += [f"{100 * score[m] / score[top]:.0f}%" if m in score else "–" for m in (64, 32)]
    row += [f"{100 * (score[top] - by[n][top]['ndcg@10']):+.1f}" for n in plains]
    return row


def _targets(out: dict[str, Any]) -> list[str]:
    """The peer comparison's targets where the peer was trained, else the quality targets."""
    return _peer_targets(out) if "st-peer" in out["training"] else _quality_targets(out)


def _peer_targets(out: dict[str, Any]) -> list[str]:
    """Each Matryoshka recipe against the peer (sizes <= 128), its own retention at 64 and 32,
    and its full-size score against every plain fine-tune's."""
    by, train = {r["method"]: r["dims"] for r in out["retrieval"]}, out["training"]
    plains = [n for n, t in train.items() if t["config"]["method"] == "plain"]
    ours = [n for n, t in train.items() if t["config"]["method"] == "mrl"]
    if not ours:
        return []
    top = max(by["original"])
    small = [m for m in sorted(by["original"]) if m <= 128]
    head = ["recipe", "same pairs and steps as the peer"]
    head += [f"vs peer @{m}" for m in small]
    head += ["kept @64", "kept @32"] + [f"{top} vs {n}" for n in plains]
    rows = [_target_row(n, out, small, plains) for n in ours]
    return [
        "## The targets, as measured",
        "",
        f"nDCG@10 differences in points; *kept* = share of the recipe's own {top}-dim nDCG@10. "
        "Targets: beat the peer at every size ≤ 128 on the same pairs and steps; keep ≥ 90% at "
        f"64 and ≥ 75% at 32 while staying within 1 point of the plain fine-tune at {top}.",
        "",
        markdown_table(head, rows, ["l", "l"] + ["r"] * (len(head) - 2)),
    ]


def quality_rows(
    ndcg: dict[str, dict[int, float]], sts: dict[str, dict[int, float]], ours: list[str],
    plain: str,
) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    """Each recipe in ``ours`` against PCA of the original and ``plain``'s truncation.

    ``ndcg``/``sts``: method -> size -> score (0..1); PCA of the original is the better of the
    ``pca`` and ``original+pca`` rows at each size. Returns (header, rows) in points.
    """
    top = max(ndcg[plain])
    sizes = sorted(ndcg[plain])
    pca = {m: max(ndcg[k][m] for k in ("pca", "original+pca") if m in ndcg.get(k, {}))
           for m in sizes}  # fmt: skip

    def worst(name: str, ref: dict[int, float]) -> str:
        m = min(sizes, key=lambda m: ndcg[name][m] - ref[m])
        return f"{100 * (ndcg[name][m] - ref[m]):+.1f} @{m}"

    head = ["recipe", "worst vs PCA of the original", f"worst vs {plain}",
            f"{top} vs {plain}", "kept @64", "kept @32", f"STS-B {top} vs {plain}"]  # fmt: skip
    rows = []
    for n in ours:
        s = ndcg[n]
        rows.append([
            n, worst(n, pca), worst(n, ndcg[plain]), f"{100 * (s[top] - ndcg[plain][top]):+.1f}",
            *[f"{100 * s[m] / s[top]:.1f}%" if m in s else "–" for m in (64, 32)],
            f"{100 * (sts[n][top] - sts[plain][top]):+.1f}",
        ])  # fmt: skip
    return head, rows


def ranked_rows(out: dict[str, Any]) -> list[str]:
    """The rows that compete with the plain fine-tune: Matryoshka recipes and learned rotations."""
    train = out["training"]
    return [n for n, t in train.items() if t["config"]["method"] == "mrl"] + list(
        out.get("rotations", {})
    )


def _quality_targets(out: dict[str, Any]) -> list[str]:
    """Each Matryoshka recipe (and learned rotation) against PCA of the original and the plain
    fine-tune's truncation."""
    train, ours = out["training"], ranked_rows(out)
    if PLAIN_TITLES not in train or not ours:
        return []
    ndcg = {r["method"]: {int(m): v["ndcg@10"] for m, v in r["dims"].items()}
            for r in out["retrieval"]}  # fmt: skip
    sts = {r["method"]: {int(m): v["spearman"] for m, v in r["dims"].items()} for r in out["sts"]}
    head, rows = quality_rows(ndcg, sts, ours, PLAIN_TITLES)
    top = max(ndcg[PLAIN_TITLES])
    return [
        "## The targets, as measured",
        "",
        "nDCG@10 differences in points (*worst*: the size where the recipe is furthest below; "
        f"PCA of the original: the better of `pca` and `original+pca`); *kept* = share of the "
        f"recipe's own {top}-dim nDCG@10. Targets: at or above PCA of the original and the plain "
        f"fine-tune's truncation at every size, within 0.5 of the plain fine-tune at {top}, "
        f"kept ≥ 93% at 64 and ≥ 85% at 32, STS-B at {top} no lower than the plain fine-tune's.",
        "",
        markdown_table(head, rows, ["l"] + ["r"] * (len(head) - 1)),
        "",
    ]


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


def _retention_table(res: list[dict[str, Any]]) -> str:
    kept = [retention(r) for r in res]
    rows = [
        [m] + [f"{100 * k[m]:.0f}" if m in k else "–" for k in kept]
        for m in sorted({int(m) for r in res for m in r["dims"]})
    ]
    return markdown_table(["size"] + [r["method"] for r in res], rows)


def _funnel_section(out: dict[str, Any]) -> list[str]:
    header = ["funnel", "nDCG@10 (%)", "multiply-adds", "cost ÷", "ms/query, batch", "speed-up",
              "ms/query, one at a time", "speed-up"]  # fmt: skip
    rows = [
        [
            f["funnel"],
            f"{100 * f['ndcg@10']:.2f}",
            f"{f['macs']:,}",
            f"{f['cost_ratio']:.1f}x",
            f"{f['ms_per_query']:.3f}",
            f"{f['speedup']:.1f}x",
            f"{f['ms_one_query']:.3f}",
            f"{f['speedup_one_query']:.1f}x",
        ]  # fmt: skip
        for f in out["funnels"]
    ]
    full = out["funnels"][0]
    lines = [
        "## Funnels (Matryoshka corpus embeddings)",
        "",
        f"Method `{out['funnel_method']}`. Cost: multiply-adds per query (N m1 + k1 m2 + ...). "
        "Time: exact search on CPU, best of 3, per query, with all test queries in one batch "
        "and with one query at a time (how a server answers them). In a batch, full-size "
        "search is one matrix product that reads each document once for all queries, while a "
        "funnel's rerank gathers its shortlist per query, so on a corpus this small the "
        "batched funnel is not faster; one query at a time, it is.",
        "",
        markdown_table(header, rows, "l" + "r" * 7).rstrip("\n"),
    ]
    near = [f for f in out["funnels"][1:] if f["ndcg@10"] >= full["ndcg@10"] - 0.005]
    if not near:
        return [*lines, "", "No funnel here lands within 0.005 nDCG@10 of full-size search."]
    f = max(near, key=lambda f: f["cost_ratio"])
    return [
        *lines,
        "",
        f"Cheapest funnel within 0.005 nDCG@10 of full-size search: `{f['funnel']}`, "
        f"{100 * f['ndcg@10']:.2f}% against {100 * full['ndcg@10']:.2f}%, at "
        f"{f['cost_ratio']:.1f}x fewer multiply-adds ({f['speedup_one_query']:.1f}x faster "
        "one query at a time).",
    ]


def _training_table(out: dict[str, Any]) -> str:
    rows = []
    for name, t in out["training"].items():
        c = t["config"]
        recipe = (
            f"lr {c['lr']}, batch {c['batch_size']}, epochs {c['epochs']}, warm-up "
            f"{c['warmup_ratio']}, T {c['temperature']}, weights {c['weights']}, distill "
            f"{c['distill']}, pairs {c['extra'].get('pairs', 'train')}, seed {c['seed']}"
        )
        if c.get("trainer", "loop") != "loop":
            recipe += f", trainer {c['trainer']}"
        for key in ("init", "teacher"):
            if c.get(key):
                recipe += f", {key} {Path(c[key]).name}"
        for key in ("negatives", "start"):
            if key in c["extra"]:
                recipe += f", {key} {c['extra'][key]}"
        rows.append([name, c["method"], t["pairs"], t["steps"], f"{t['seconds']:.0f}", recipe])
    header = ["method", "loss", "pairs", "steps", "seconds", "recipe"]
    return markdown_table(header, rows, "llrrrl")


def _rotation_section(out: dict[str, Any]) -> list[str]:
    """The learned rotations: what each was fitted on and how long it took."""
    rotations = out.get("rotations", {})
    if not rotations:
        return []
    rows = [[row, r["of"], r["pairs"], r["epochs"], f"{r['seconds']:.0f}"]
            for row, r in rotations.items()]  # fmt: skip
    return [
        "## Learned rotations",
        "",
        "An orthogonal rotation of a trained model's embeddings, started at the PCA ordering of "
        "its corpus embeddings and fitted with the nested in-batch contrastive loss at every "
        "size below the full one, on the model's embeddings of its training pairs (anchor, "
        "positive document, one hard negative mined by the original model); no test query or "
        "judgement. Orthogonal, it leaves every full-size similarity as it was. It is saved "
        "in the row's model folder (`models/<row>`) as a last `Dense` layer, so "
        "`SentenceTransformer(path, truncate_dim=m)` gives the rotated prefix.",
        "",
        markdown_table(["row", "of", "pairs", "epochs", "seconds"], rows, "llrrr"),
    ]


def _peer_note(out: dict[str, Any]) -> list[str]:
    if out.get("mrl_vs_peer_max_abs_diff") is None:
        return []
    return [
        "On the peer's own recipe our loss is the peer's divided by the number of sizes (the "
        "mean, not the sum, of the same per-size in-batch losses), a constant factor that "
        "AdamW and the gradient-norm clipping before it cancel: `mrl` and `st-peer` land on "
        "the same model (corpus embeddings differ by at most "
        f"{out['mrl_vs_peer_max_abs_diff']:.1e}). What wins over the peer is the recipe "
        "(learning rate, size weights, distillation), each measured in its own row.",
        "",
    ]


def render_scifact(out: dict[str, Any], docs_dir: str | Path, base: str = "scifact") -> str:
    """Write ``docs_dir/<base>.md`` and its two plots from a SciFact results dict; return the text.

    ``out`` is what :func:`~matryoshka.experiments.scifact.reproduce_scifact` returns, or its
    ``scifact.json`` read back with :func:`matryoshka.eval.read_json`.
    """
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    pngs = _plot(out["retrieval"], out["funnels"], base, docs_dir)
    res, sts, c, b = out["retrieval"], out["sts"], out["counts"], out["benchmark"]
    n_sizes = len({int(m) for r in res[:1] for m in r["dims"]})
    score_all = b.get("score_all_s", b.get("score6_s"))  # the key's name before it was general
    lines = [
        "# Matryoshka fine-tuning of all-MiniLM-L6-v2 on SciFact, measured at every size",
        "",
        f"Command: `{out['command']}`",
        "",
        f"Data: SciFact test ({c['corpus']} abstracts, {c['queries']} queries), "
        f"{c['train_pairs']} train pairs; STS-B test ({c['sts']} pairs). max_seq_length "
        f"{out['max_seq_length']}. Every method below was trained on the same pairs for the same "
        "steps with the same seed, unless its row in *Training* says otherwise.",
        "",
        "## nDCG@10 (%) on SciFact test",
        "",
        results_table(res, metrics=("ndcg@10",)),
        "Share of each method's own largest-size nDCG@10 (%):",
        "",
        _retention_table(res),
        *_targets(out),
        *_peer_note(out),
        "## recall@100 and MAP@100 (%)",
        "",
        results_table(res, metrics=("recall@100",)),
        results_table(res, metrics=("map@100",)),
        "## STS-B test Spearman (%)",
        "",
        results_table(sts, metrics=("spearman",)),
        *_funnel_section(out),
        "",
        "## Cost of evaluating every size",
        "",
        f"Encoding corpus and queries once: {b['encode_s']:.1f} s. Scoring {n_sizes} sizes: "
        f"{score_all:.2f} s; one size: {b['score1_s']:.2f} s. Evaluating "
        f"{number_word(n_sizes)} sizes costs {b['ratio']:.3f}x evaluating one.",
        "",
        *_run_time(out),
        "## Training",
        "",
        _training_table(out),
        *_rotation_section(out),
    ]
    lines += [f"![{p}]({p})" for p in pngs]
    text = "\n".join(lines) + "\n"
    write_text(docs_dir / f"{base}.md", text)
    return text
