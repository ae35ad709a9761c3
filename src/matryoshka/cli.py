"""The ``matryoshka`` command line. Nothing imports this module.

matryoshka demo                      every method on the built-in digits, at every size
matryoshka train --config C [k=v..]  train one model with the nested loss
matryoshka eval MODEL [--out DIR]    score a trained model at trained and in-between sizes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _int_list(text: str) -> list[int]:
    """``"16,256"`` -> ``[16, 256]``, for argparse (a bad item is a usage error)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 16,256, got {text!r}"
        ) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from matryoshka.experiments import run_demo

    out = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    print(out["table"])
    print(f"wrote {args.out}/report.md, results.json, accuracy_vs_dim.png ({out['seconds']:.0f}s)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from matryoshka.train import load_config, train

    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"out_dir={args.out}")
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=not args.no_resume, progress=not args.quiet)
    last = result["history"][-1] if result["history"] else {}
    if "test_top1" in last:
        acc = ", ".join(f"{m}: {100 * v:.1f}%" for m, v in last["test_top1"].items())
        print(f"test top-1 per size: {acc}")
    print(f"model folder: {cfg.out_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from matryoshka._io import write_text
    from matryoshka.dims import interpolated_dims
    from matryoshka.eval import encode, evaluate_embeddings, results_table, save_results
    from matryoshka.train import load_data, load_model, resolve_device

    device = resolve_device(args.device)
    model, cfg, _ = load_model(args.model, device)
    dims = list(model.head.dims)
    sizes = sorted(set(dims) | set(interpolated_dims(dims)) | set(args.sizes or []))
    train_ds, test_ds, _ = load_data(cfg, augment=False)
    Xtr, ytr = encode(model, train_ds, device=device, progress=not args.quiet, desc="encode train")
    Xte, yte = encode(model, test_ds, device=device, progress=not args.quiet, desc="encode test")
    method = cfg.model.head
    result = evaluate_embeddings(method, Xtr, ytr, Xte, yte, sizes, head=model.head.cpu())
    table = results_table([result], trained=dims)
    print(table)
    out = Path(args.out or Path(args.model) / "eval")
    save_results(out / "results.json", [result], trained=dims, sizes=sizes, model=str(args.model))
    write_text(out / "report.md", f"# {args.model}\n\n{table}")
    print(f"wrote {out}/results.json and report.md")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from matryoshka.eval import encode, save_embeddings
    from matryoshka.train import load_data, load_model, resolve_device

    device = resolve_device(args.device)
    model, cfg, classes = load_model(args.model, device)
    train_ds, test_ds, _ = load_data(cfg, augment=False)
    parts = {"train": [train_ds], "test": [test_ds], "all": [train_ds, test_ds]}[args.split]
    encoded = [
        encode(model, ds, batch_size=args.batch, device=device, progress=not args.quiet)
        for ds in parts
    ]
    X = np.concatenate([x for x, _ in encoded])  # (N, d)
    y = np.concatenate([y for _, y in encoded])  # (N,)
    save_embeddings(
        args.out, X, y, dtype=args.dtype, model=str(args.model), split=args.split,
        dims=list(model.head.dims), classes=classes,
    )  # fmt: skip
    print(f"wrote {args.out}/embeddings.npy {X.shape} {args.dtype}, labels.npy, meta.json")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    out_dir = args.out or f"runs/{args.dataset}"
    if args.dataset == "scifact":
        from matryoshka.reproduce_text import reproduce_scifact

        res = reproduce_scifact(
            out_dir=out_dir, docs_dir=args.docs, data_dir=args.data, stsb_dir=args.stsb,
            epochs=args.epochs, max_steps=args.max_steps, max_seq_length=args.max_seq_length,
            extra_recipes=args.recipe or (), default_methods=not args.only_recipes,
            funnel_method=args.funnel_method,
            progress=not args.quiet,
        )  # fmt: skip
        print(f"wrote {args.docs}/scifact.md ({res.get('seconds', 0) / 60:.1f} min)")
        return 0
    from matryoshka.reproduce import reproduce_cifar10

    out = reproduce_cifar10(
        args.config,
        overrides=list(args.overrides),
        out_dir=out_dir,
        docs_dir=args.docs,
        finetune_epochs=args.finetune_epochs,
        seeds=args.seeds,
        seed_sizes=args.seed_sizes,
        train_only=args.train_only,
        progress=not args.quiet,
    )
    if args.train_only:
        print(f"trained: {', '.join(out['trained'])}")
        return 0
    print(out["comparison"]["table"])
    print(f"wrote {args.docs}/cifar10.md ({out['seconds'] / 60:.1f} min)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (each has its own ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="matryoshka",
        description="Matryoshka Representation Learning: train embeddings that can be cut to "
        "any size, compare them with the baselines, and score them at every size.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="train MRL, MRL-E, FF, PCA and truncation on built-in digits; table + plot",
        description="The main job, offline on 2 CPU cores in about a minute: trains MRL, MRL-E "
        "and a fixed-feature model per size on scikit-learn's digits, adds the PCA and "
        "truncation baselines, scores every size (trained and in-between) and writes "
        "report.md, results.json and accuracy_vs_dim.png. Finished models are reused.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per model (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "train",
        help="train one model with the nested loss (YAML config + key=value overrides)",
        description="Train one model. Settings come from the YAML file, then from KEY=VALUE "
        "overrides such as model.head=mrl-e optim.lr=0.05 model.dims=[8,16,32]. An unknown "
        "key is an error. Checkpoints go to out_dir every epoch; running the same command "
        "again resumes. Under torchrun it trains with DDP.",
    )
    p.add_argument("--config", help="YAML config file (default: built-in defaults, digits)")
    p.add_argument("--out", help="model folder (overrides out_dir)")
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if a checkpoint exists"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "eval",
        help="score a trained model at every size (head top-1 and 1-NN)",
        description="Encode the model's train and test splits once, then score head top-1 and "
        "cosine 1-NN at the trained sizes and the sizes in between.",
    )
    p.add_argument("model", help="model folder written by `matryoshka train`")
    p.add_argument("--out", help="output folder (default: MODEL/eval)")
    p.add_argument("--sizes", type=int, nargs="*", help="extra sizes to score")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "embed",
        help="encode a data split with a trained model into embeddings.npy (full size, once)",
        description="Encode the model's data (train, test or both, without augmentation) once "
        "at full size into OUT/embeddings.npy (N, d), labels.npy and meta.json. Every size is "
        "a prefix of these rows.",
    )
    p.add_argument("model", help="model folder written by `matryoshka train`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=["train", "test", "all"], default="all", help="default: all")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--batch", type=int, default=512, help="images per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser(
        "reproduce",
        help="reproduce MRL results: cifar10 (images) or scifact (text fine-tuning)",
        description="cifar10: train MRL, MRL-E and a fixed-feature model per size with one "
        "recipe, add "
        "PCA and truncation, fine-tune from the FF model, tune an adaptive cascade on held-out "
        "images, draw Grad-CAM per size, and write docs/results/cifar10.md. Finished models are "
        "reused and interrupted ones resume, so the same command can be run again. scifact: "
        "fine-tune all-MiniLM-L6-v2 with the nested loss, the plain loss and sentence-"
        "transformers' MatryoshkaLoss on the same pairs (the peer's recipe), the nested and "
        "plain losses again at lr 1e-4, and the best recipe (lr 1e-4, title-to-abstract "
        "pairs from the corpus, sizes 64 and 384 weighted up), score SciFact and STS-B at "
        "every size, time funnels and write docs/results/scifact.md (49 minutes on 2 CPU "
        "cores from empty caches).",
    )
    p.add_argument("dataset", choices=["cifar10", "scifact"], help="which reproduction")
    p.add_argument("--config", default="configs/cifar10.yaml", help="cifar10: the shared recipe")
    p.add_argument("--out", help="results folder (default: runs/DATASET)")
    p.add_argument("--docs", default="docs/results", help="report folder (default: docs/results)")
    p.add_argument("--finetune-epochs", type=int, default=2, help="epochs of each fine-tuning run")
    p.add_argument("--train-only", action="store_true", help="cifar10: train every model, stop")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="cifar10: seeds of MRL and of FF at --seed-sizes, for the spread over seeds",
    )
    p.add_argument(
        "--seed-sizes",
        type=_int_list,
        metavar="M,M,...",
        help="cifar10: FF sizes retrained with every seed (default: 16 and d)",
    )
    p.add_argument("--data", help="scifact: BEIR folder (default: $MATRYOSHKA_DATA/scifact)")
    p.add_argument("--stsb", help="scifact: STS-B folder (default: $MATRYOSHKA_DATA/stsb)")
    p.add_argument("--epochs", type=int, default=1, help="scifact: fine-tuning epochs")
    p.add_argument("--max-steps", type=int, help="scifact: cap on fine-tuning steps")
    p.add_argument("--max-seq-length", type=int, default=256, help="scifact: tokens per text")
    p.add_argument(
        "--recipe",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="scifact: an extra fine-tuning recipe to measure (repeatable)",
    )
    p.add_argument(
        "--funnel-method",
        metavar="NAME",
        help="scifact: whose corpus embeddings the funnels search, a method or recipe name "
        "(default: the best recipe, mrl-lr-titles-w64-384)",
    )
    p.add_argument(
        "--only-recipes",
        action="store_true",
        help="scifact: train and report only the --recipe ones (with the original and PCA)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the recipe")
    p.set_defaults(func=_cmd_reproduce)

    from matryoshka.index.commands import add_index_commands  # index build, search, plan

    add_index_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``matryoshka`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come before or after options; argparse only takes one run of them
    if (
        extra
        and hasattr(args, "overrides")
        and all("=" in e and not e.startswith("-") for e in extra)
    ):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"matryoshka {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
