"""``matryoshka reproduce cifar10|cifar10-text|scifact``: the reproductions, and their reports
redrawn alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from matryoshka.cli._common import add_common, dims_arg, threads_arg

__all__ = ["add_reproduce_command"]

# the keys a results file of each reproduction must hold to render its report
_REQUIRED = {
    "cifar10": ("comparison", "finetune", "adaptive", "config"),
    "scifact": ("retrieval", "sts", "funnels", "training"),
    "cifar10-text": ("zero_shot", "retrieval", "funnels", "training", "config"),
}


def _report_only(args: argparse.Namespace) -> int:
    from matryoshka.experiments import render_cifar10, render_scifact
    from matryoshka.experiments.cifar10_text_report import render_cifar10_text
    from matryoshka.experiments.common import read_results

    made_by = f"`matryoshka reproduce {args.dataset}`"
    if args.dataset == "scifact" and args.results and len(args.results) > 1:
        from matryoshka.experiments.scifact_seeds import render_seeds

        outs = [read_results(Path(p), _REQUIRED["scifact"], made_by) for p in args.results]
        render_seeds(outs, args.docs)
        print(f"wrote {args.docs}/scifact-seeds.md from {len(outs)} runs")
        return 0
    if args.results and len(args.results) > 1:
        raise ValueError("several --results are summarised for scifact only")
    path = Path(args.results[0] if args.results else Path(args.docs) / f"{args.dataset}.json")
    data = read_results(path, _REQUIRED[args.dataset], made_by)
    render = {"cifar10": render_cifar10, "scifact": render_scifact,
              "cifar10-text": render_cifar10_text}[args.dataset]  # fmt: skip
    render(data, args.docs)
    print(f"redrew {args.docs}/{args.dataset}.md and its figures from {path}")
    return 0


def _scifact(args: argparse.Namespace) -> int:
    from matryoshka.experiments.scifact import DIMS, ScifactConfig, reproduce_scifact
    from matryoshka.train import TextTrainConfig

    base = TextTrainConfig(
        dims=list(DIMS),
        epochs=args.epochs or 1,
        max_steps=args.max_steps,
        max_seq_length=args.max_seq_length,
    )
    base.check()
    cfg = ScifactConfig(
        out_dir=args.out or "runs/scifact",
        docs_dir=args.docs,
        data_dir=args.data,
        stsb_dir=args.stsb,
        base=base,
        extra_recipes=args.recipe or (),
        default_methods=not args.only_recipes,
        funnel_method=args.funnel_method,
        threads=args.threads,
        model=args.model,
        device=args.device,
        seed=args.seed,
        pca_after=args.pca_after,
        preset=args.preset,
        soups=args.soup or (),
        rotate_after=args.rotate_after,
        rotation_epochs=args.rotation_epochs,
    )
    res = reproduce_scifact(cfg, progress=not args.quiet)
    print(f"wrote {args.docs}/scifact.md ({res['seconds'] / 60:.1f} min)")
    return 0


def _cifar10(args: argparse.Namespace) -> int:
    from matryoshka.experiments.cifar10 import reproduce_cifar10
    from matryoshka.viz import results_table

    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    out = reproduce_cifar10(
        args.config,
        overrides=overrides,
        out_dir=args.out or "runs/cifar10",
        docs_dir=args.docs,
        finetune_epochs=args.finetune_epochs,
        seeds=args.seeds,
        seed_sizes=args.seed_dims,
        train_only=args.train_only,
        progress=not args.quiet,
    )
    if args.train_only:
        print(f"trained: {', '.join(out['trained'])}")
        return 0
    print(results_table(out["comparison"], trained=out["dims"]))
    print(f"wrote {args.docs}/cifar10.md ({out['seconds'] / 60:.1f} min)")
    return 0


def _cifar10_text(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from matryoshka.experiments.cifar10_text import Cifar10TextConfig, reproduce_cifar10_text

    cfg = Cifar10TextConfig(
        data_dir=args.data, out_dir=args.out or "runs/cifar10-text", docs_dir=args.docs,
        device=args.device, ff=not args.no_ff, open_clip=args.open_clip,
        open_clip_weights=args.open_clip_weights, text_model=args.model,
        train_limit=args.train_limit, test_limit=args.test_limit,
    )  # fmt: skip
    if args.dims:
        cfg = replace(cfg, dims=args.dims, d=args.dims[-1])
    train = {"epochs": args.epochs, "max_steps": args.max_steps, "seed": args.seed}
    cfg.train = replace(cfg.train, **{k: v for k, v in train.items() if v is not None})
    cfg.train.check()
    run = lambda: reproduce_cifar10_text(cfg, progress=not args.quiet)  # noqa: E731
    if args.threads is not None:
        from matryoshka._runtime import threads_for, torch_threads

        with torch_threads(threads_for(0, args.threads)):
            res = run()
    else:
        res = run()
    print(f"wrote {args.docs}/cifar10-text.md ({res['seconds'] / 60:.1f} min)")
    return 0


def _cifar10_text_arguments(g: argparse._ArgumentGroup) -> None:
    """The flags only ``reproduce cifar10-text`` reads (it also reads --data, --epochs,
    --max-steps, --model, --device and --seed)."""
    g.add_argument("--no-ff", action="store_true", help="skip the fixed-size models")
    g.add_argument(
        "--open-clip",
        metavar="ARCH",
        help="fine-tune both towers of this open_clip architecture (a built-in name such as "
        "ViT-B-32, or a folder with open_clip_config.json) instead: the GPU path",
    )
    g.add_argument(
        "--open-clip-weights", metavar="FILE", help="its weights: a local checkpoint file"
    )
    g.add_argument(
        "--dims", type=dims_arg, metavar="M,M,...",
        help="nested sizes, the last one d (default 8,16,32,64,128; an open_clip model: up to "
        "its embedding size, e.g. 8,16,...,512)",
    )  # fmt: skip
    g.add_argument("--train-limit", type=int, help="train on N images drawn at random (smoke runs)")
    g.add_argument("--test-limit", type=int, help="score N test images drawn at random")


def _run(args: argparse.Namespace) -> int:
    if args.report_only:
        return _report_only(args)
    if args.dataset == "cifar10-text":
        return _cifar10_text(args)
    return _scifact(args) if args.dataset == "scifact" else _cifar10(args)


def _rotation_arguments(g: argparse._ArgumentGroup) -> None:
    """The learned-rotation flags of ``reproduce scifact``."""
    g.add_argument(
        "--rotate-after",
        action="append",
        metavar="NAME",
        help="also fit recipe NAME's learned rotation (its prefixes ordered by the nested "
        "contrastive loss on its training pairs, full size unchanged) and score it as row "
        "NAME+rot, saved as a model folder (repeatable; default with --preset rotation: "
        "plain-lr-titles)",
    )
    g.add_argument(
        "--rotation-epochs",
        type=int,
        default=10,
        help="epochs over the training pairs of each learned rotation (default: 10)",
    )


def _scifact_arguments(g: argparse._ArgumentGroup) -> None:
    """The flags of ``reproduce scifact``."""
    g.add_argument(
        "--data",
        help="BEIR folder (default: $MATRYOSHKA_DATA/scifact); cifar10-text: the CIFAR-10 copy "
        "(default: $MATRYOSHKA_DATA/cifar10)",
    )
    g.add_argument("--stsb", help="STS-B folder (default: $MATRYOSHKA_DATA/stsb)")
    g.add_argument(
        "--epochs", type=int, help="fine-tuning epochs (default 1; cifar10-text: 4 per model)"
    )
    g.add_argument("--max-steps", type=int, help="cap on fine-tuning steps")
    g.add_argument("--max-seq-length", type=int, default=256, help="tokens per text")
    g.add_argument(
        "--recipe",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="an extra fine-tuning recipe to measure (repeatable)",
    )
    g.add_argument(
        "--funnel-method",
        metavar="NAME",
        help="whose corpus embeddings the funnels search, a method or recipe name "
        "(default: the preset's best: plain-lr-titles+rot, mrl-two-phase with --preset "
        "two-phase, mrl-lr-titles-w64-384 with --preset peer)",
    )
    g.add_argument(
        "--model",
        metavar="PATH",
        help="the sentence-transformers model to start from (default: the packaged "
        "all-MiniLM-L6-v2)",
    )
    g.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    g.add_argument(
        "--seed",
        type=int,
        help="train every recipe with this seed (default: each recipe's own, 42); give each "
        "seed its own --out and --docs",
    )
    g.add_argument(
        "--pca-after",
        action="append",
        metavar="NAME",
        help="also score this recipe (or 'original') after the PCA rotation of its corpus "
        "embeddings, which keeps its full size (repeatable)",
    )
    g.add_argument(
        "--soup",
        action="append",
        metavar="NAME@ALPHA",
        help="also score recipe NAME's weights moved back toward the model it started from: "
        "start + ALPHA * (end - start), ALPHA in (0, 1); row NAME@ALPHA (repeatable)",
    )
    _rotation_arguments(g)
    g.add_argument(
        "--preset",
        choices=("rotation", "two-phase", "peer"),
        default="rotation",
        help="the default recipes: rotation (a plain fine-tune on the train and title pairs, "
        "then its learned rotation), two-phase (the same plain fine-tune, then the nested loss "
        "from its PCA ordering with it as teacher and mined hard negatives) or peer (ours "
        "against sentence-transformers' Matryoshka recipe on the same pairs and steps)",
    )
    g.add_argument(
        "--only-recipes",
        action="store_true",
        help="train and report only the --recipe ones (with the original and PCA)",
    )


def add_reproduce_command(sub: argparse._SubParsersAction) -> None:
    """Add ``reproduce`` to the ``matryoshka`` subcommands."""
    p = add_common(
        sub.add_parser(
            "reproduce",
            help="reproduce MRL results: cifar10 (images) or scifact (text fine-tuning)",
            description="cifar10: train MRL, MRL-E and a fixed-feature model per size with one "
            "recipe, add PCA and truncation, fine-tune from the FF model, tune an adaptive cascade "
            "on held-out images, draw Grad-CAM per size, and write docs/results/cifar10.md with "
            "cifar10.json. Finished models are reused and interrupted ones resume, so the same "
            "command can be run again. scifact: fine-tune all-MiniLM-L6-v2 on SciFact's train "
            "pairs plus title-to-text pairs from the corpus, then fit a rotation of its "
            "embeddings that orders its prefixes by the nested contrastive loss (full size "
            "unchanged; --preset two-phase trains the encoder with the nested loss instead); "
            "score SciFact and STS-B at every size, with PCA of the original and of each model "
            "beside them, time funnels and write "
            "docs/results/scifact.md with scifact.json (its run-time section says how long it "
            "took; --preset peer: ours against sentence-transformers' MatryoshkaLoss on the "
            "same pairs and steps, 49 minutes on 2 CPU cores). --seed S and --results given "
            "once per seed summarise several seeds. --report-only redraws either report from "
            "its JSON, training nothing.",
        )
    )
    p.add_argument(
        "dataset", choices=["cifar10", "cifar10-text", "scifact"], help="which reproduction"
    )
    p.add_argument("--docs", default="docs/results", help="report folder (default: docs/results)")
    p.add_argument("--out", help="results folder (default: runs/DATASET)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="redraw the report and figures from --results; train and encode nothing",
    )
    p.add_argument(
        "--results",
        action="append",
        help="with --report-only: the results JSON (default: DOCS/DATASET.json); scifact: give "
        "it once per seed to write DOCS/scifact-seeds.md, the runs' means and paired "
        "differences",
    )
    g = p.add_argument_group("cifar10")
    g.add_argument("--config", default="configs/cifar10.yaml", help="the shared recipe")
    g.add_argument("--finetune-epochs", type=int, default=2, help="epochs of each fine-tuning run")
    g.add_argument("--train-only", action="store_true", help="train every model, then stop")
    g.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="seeds of MRL and of FF at --seed-dims, for the spread over seeds",
    )
    g.add_argument(
        "--seed-dims",
        "--seed-sizes",
        type=dims_arg,
        metavar="M,M,...",
        help="FF sizes retrained with every seed (default: 16 and d)",
    )
    _scifact_arguments(p.add_argument_group("scifact"))
    _cifar10_text_arguments(p.add_argument_group("cifar10-text"))
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="cifar10: recipe overrides")
    threads_arg(p)
    p.set_defaults(func=_run)
