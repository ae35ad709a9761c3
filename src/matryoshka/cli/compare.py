"""``matryoshka compare``: MRL against its baselines, side by side, on any data set.

The same job as the demo and the core of ``reproduce cifar10``, for the user's own recipe: MRL,
MRL-E, one fixed-feature model per size, PCA and truncation of the full-size FF embedding, each
scored at the trained sizes and the sizes in between. The report is titled and described from the
recipe that ran.

``compare --text MODEL`` is the text side: at each size, which representation of a Matryoshka
text model to ship (the model cut to m, PCA of the original model's embeddings, or PCA of the MRL
model's), scored on the user's retrieval data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matryoshka.cli._common import add_common, dims_arg, threads_arg
from matryoshka.cli.text import add_retrieval_arguments

__all__ = ["add_compare_command"]

_METHODS = ("mrl", "mrl-e", "ff", "pca", "truncation")


def _methods(text: str) -> list[str]:
    got = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in got if m not in _METHODS]
    if bad or not got:
        raise argparse.ArgumentTypeError(
            f"methods are a comma-separated subset of {','.join(_METHODS)}, got {text!r}"
        )
    return got


def _recipe(args: argparse.Namespace):
    """The shared recipe: ``--config`` (or the defaults), then the overrides; models in OUT."""
    from matryoshka.train import load_config

    overrides = [o for o in args.overrides if not o.replace(" ", "").startswith("out_dir=")]
    if len(overrides) != len(args.overrides):
        raise ValueError("compare keeps its models in OUT/models: set --out instead of out_dir")
    overrides.append(f"out_dir={Path(args.out) / 'models'}")
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    if args.data is not None:  # measured once here: every model shares the numbers
        from matryoshka.cli.folder import folder_config

        return folder_config(args, overrides, "compare")
    return load_config(args.config, overrides)


# flags of one mode that the other does not read: given there, they are an error, not ignored
_IMAGE_ONLY = ("--config", "--data", "--methods", "--title", "--report-only")
_TEXT_ONLY = ("--original", "--beir", "--corpus", "--queries", "--qrels", "--save-rotated",
              "--query-prompt", "--document-prompt")  # fmt: skip


def _given(args: argparse.Namespace, flags: tuple[str, ...]) -> list[str]:
    return [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_"))]


def _compare_text(args: argparse.Namespace) -> int:
    """``compare --text MODEL``: what to ship at each size, from one encoding per model."""
    from matryoshka.cli.embed_shards import text_threads
    from matryoshka.experiments.text_choice import choose_text_representation
    from matryoshka.experiments.text_eval import load_retrieval_data

    mixed = _given(args, _IMAGE_ONLY) + (["KEY=VALUE overrides"] if args.overrides else [])
    if mixed:
        raise ValueError(
            f"--text compares representations of a text model; {', '.join(mixed)} belong to the "
            "image-recipe mode: give --text or a recipe, not both"
        )
    data = load_retrieval_data(args.beir, args.split, args.corpus, args.queries, args.qrels)
    out = args.out if args.out is not None else str(Path(args.text) / "choice")
    with text_threads(args.threads):
        got = choose_text_representation(
            args.text, data, original=args.original, dims=args.dims, progress=not args.quiet,
            out=out, query_prompt=args.query_prompt, document_prompt=args.document_prompt,
            save_rotated=args.save_rotated,
        )  # fmt: skip
    print(got["table"])
    rotated = f"; the rotated MRL model to {args.save_rotated}" if args.save_rotated else ""
    print(f"wrote {out}/report.md and results.json{rotated}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from matryoshka.experiments.common import read_results
    from matryoshka.experiments.compare import compare_methods, render_comparison

    if args.text is not None:
        return _compare_text(args)
    stray = _given(args, _TEXT_ONLY)
    if stray:
        raise ValueError(f"{', '.join(stray)} only work with --text MODEL")
    args.out = args.out or "runs/compare"
    args.methods = args.methods or list(_METHODS)
    if args.report_only:
        data = read_results(Path(args.out) / "results.json", ("results", "trained", "config"),
                            "`matryoshka compare`")  # fmt: skip
        print(render_comparison(data, args.out))
        print(f"redrew {args.out}/report.md and accuracy_vs_dim.png from results.json")
        return 0
    base = _recipe(args)
    base.check()
    out = compare_methods(base, args.out, methods=args.methods, dims=args.dims,
                          progress=not args.quiet, title=args.title)  # fmt: skip
    print(f"# {out['title']}\n\n{out['table']}")
    print(f"wrote {args.out}/report.md, results.json, accuracy_vs_dim.png ({out['seconds']:.0f}s)")
    return 0


def add_compare_command(sub: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the ``matryoshka`` subcommands."""
    p = add_common(
        sub.add_parser(
            "compare",
            help="MRL against FF, PCA and truncation at every size, on any data",
            description="Train (or reuse) MRL, MRL-E and one fixed-feature model per size on one "
            "shared recipe, take PCA and truncation of the full-size FF embedding, and score all "
            "of them at the trained sizes and the sizes in between (head or probe top-1, 1-NN). "
            "The recipe is --config (default: the built-in digits recipe) or one proposed from an "
            "image folder (--data), with KEY=VALUE overrides, as for `matryoshka train`. Model "
            "folders go to OUT/models and are reused when finished (an interrupted one resumes); "
            "the report, results.json and a plot go to OUT. With --text MODEL instead: which "
            "representation of a Matryoshka text model to ship at each size (the model cut to m, "
            "PCA of the original model's embeddings, or PCA of the MRL model's), scored by "
            "nDCG@10 on --beir or --corpus/--queries/--qrels.",
        )
    )
    p.add_argument("--config", help="YAML recipe shared by every model (e.g. configs/*.yaml)")
    p.add_argument(
        "--data",
        metavar="PATH",
        help="an image folder in the ImageNet layout: propose the recipe from it, as "
        "`matryoshka train --data` does (a --config and KEY=VALUE overrides win)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--out", help="output folder (default runs/compare; with --text: MODEL/choice)")
    p.add_argument(
        "--methods",
        type=_methods,
        metavar="M,M,...",
        help=f"a subset of {','.join(_METHODS)} (default: all)",
    )
    p.add_argument(
        "--dims",
        type=dims_arg,
        metavar="M,M,...",
        help="trained sizes (default: the recipe's model.dims, else doubling to model.d); with "
        "--text: sizes to score besides the model's trained ones",
    )
    p.add_argument("--title", help="the report's title (default: from the recipe's data)")
    p.add_argument(
        "--report-only", action="store_true", help="redraw the report from OUT/results.json"
    )
    threads_arg(p)
    _add_text_mode(p)
    p.set_defaults(func=_compare)


def _add_text_mode(p: argparse.ArgumentParser) -> None:
    """The flags of ``compare --text MODEL`` (with ``--out``, ``--dims`` and ``--threads``)."""
    g = p.add_argument_group(
        "text models (--text)",
        "which representation of a Matryoshka text model to ship at each size; not with a recipe",
    )
    g.add_argument(
        "--text",
        metavar="MODEL",
        help="the Matryoshka text model's folder: compare it cut to m with PCA of the original "
        "model's and of its own embeddings (fitted on the corpus) at each size",
    )
    g.add_argument(
        "--original",
        metavar="MODEL",
        help="the model it was fine-tuned from: a folder, a Hub name or 'packaged' (default: the "
        "packaged all-MiniLM-L6-v2)",
    )
    add_retrieval_arguments(g, exclude_self=False)
    g.add_argument(
        "--save-rotated",
        metavar="PATH",
        help="also save the MRL model with its PCA rotation inside, so that "
        "SentenceTransformer(PATH, truncate_dim=m) gives the pca-mrl embedding",
    )
