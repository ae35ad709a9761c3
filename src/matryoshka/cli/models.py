"""Commands that train and score models: ``demo``, ``train``, ``eval``, ``embed``."""

from __future__ import annotations

import argparse
from pathlib import Path

from matryoshka.cli._common import add_common, dims_arg, threads_arg
from matryoshka.cli.embed_shards import (
    add_shard_arguments,
    check_shard_arguments,
    embed_image_shard,
)
from matryoshka.cli.folder import folder_config
from matryoshka.cli.text import (
    add_text_arguments,
    embed_text,
    eval_text,
    is_text_model,
    is_text_recipe,
    train_text,
)

__all__ = ["add_model_commands"]


def _demo(args: argparse.Namespace) -> int:
    from matryoshka.experiments.common import read_results
    from matryoshka.experiments.compare import render_comparison, run_demo

    if args.report_only:
        data = read_results(
            Path(args.out) / "results.json", ("results", "trained", "config"), "`matryoshka demo`"
        )
        print(render_comparison(data, args.out))
        print(f"redrew {args.out}/report.md and accuracy_vs_dim.png from results.json")
        return 0
    out = run_demo(
        args.out, epochs=args.epochs, seed=args.seed, progress=not args.quiet, threads=args.threads
    )
    print(out["table"])
    print(f"wrote {args.out}/report.md, results.json, accuracy_vs_dim.png ({out['seconds']:.0f}s)")
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.data is None and is_text_recipe(args.config, list(args.overrides)):
        return train_text(args)
    from matryoshka.train import load_config, train

    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"out_dir={args.out}")
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    if args.data is not None:
        cfg = folder_config(args, overrides, "train")
    else:
        cfg = load_config(args.config, overrides)
    result = train(
        cfg, resume=not args.no_resume, progress=not args.quiet, overwrite=args.overwrite
    )
    scored = [r for r in result["history"] if "test_top1" in r]
    if scored:
        acc = ", ".join(f"{m}: {100 * v:.1f}%" for m, v in scored[-1]["test_top1"].items())
        print(f"test top-1 per size: {acc}")
    else:  # eval_every=0: metrics.json has no test_top1; the card says no evaluation ran
        print(
            f"no evaluation ran during training (eval_every={cfg.eval_every}): score every size "
            f"with `matryoshka eval {cfg.out_dir}`"
        )
    print(f"model folder: {cfg.out_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if is_text_model(args.model):
        return eval_text(args)
    from matryoshka._io import write_text
    from matryoshka.dims import interpolated_dims, validate_dims
    from matryoshka.eval import encode, evaluate_embeddings, save_results
    from matryoshka.train import load_data, load_model, resolve_device
    from matryoshka.viz import results_table

    device = resolve_device(args.device)
    model, cfg, _ = load_model(args.model, device)
    dims = list(model.head.dims)
    extra = validate_dims(sorted(set(args.dims or [])), model.d, "--dims") if args.dims else ()
    sizes = sorted(set(dims) | set(interpolated_dims(dims)) | set(extra))
    train_ds, test_ds, _ = load_data(cfg, augment=False, progress=not args.quiet)
    kw = {"device": device, "progress": not args.quiet, "threads": args.threads}
    Xtr, ytr = encode(model, train_ds, desc="encode train", **kw)
    Xte, yte = encode(model, test_ds, desc="encode test", **kw)
    result = evaluate_embeddings(cfg.model.head, Xtr, ytr, Xte, yte, sizes, head=model.head.cpu())
    table = results_table([result], trained=dims)
    print(table)
    out = Path(args.out or Path(args.model) / "eval")
    save_results(out / "results.json", [result], trained=dims, sizes=sizes, model=str(args.model))
    write_text(out / "report.md", f"# {args.model}\n\n{table}")
    print(f"wrote {out}/results.json and report.md")
    return 0


def _embed(args: argparse.Namespace) -> int:
    if is_text_model(args.model):
        return embed_text(args)
    if args.texts is not None:
        raise ValueError(f"{args.model} is an image model: --texts is for text models")
    import numpy as np

    from matryoshka.eval import encode, save_embeddings
    from matryoshka.train import load_data, load_model, resolve_device

    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    check_shard_arguments(args)
    device = resolve_device(args.device)
    model, cfg, classes = load_model(args.model, device)
    train_ds, test_ds, _ = load_data(cfg, augment=False, progress=not args.quiet)
    parts = {"train": [train_ds], "test": [test_ds], "all": [train_ds, test_ds]}[args.split]
    if args.shard is not None:
        from torch.utils.data import ConcatDataset

        return embed_image_shard(args, model, ConcatDataset(parts), classes, device)
    encoded = [
        encode(
            model,
            ds,
            batch_size=args.batch,
            device=device,
            progress=not args.quiet,
            threads=args.threads,
        )  # fmt: skip
        for ds in parts
    ]
    X = np.concatenate([x for x, _ in encoded])  # (N, d)
    y = np.concatenate([y for _, y in encoded])  # (N,)
    save_embeddings(
        args.out,
        X,
        y,
        dtype=args.dtype,
        model=str(args.model),
        split=args.split,
        dims=list(model.head.dims),
        classes=classes,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out}/embeddings.npy {X.shape} {args.dtype}, labels.npy, meta.json")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = add_common(
        sub.add_parser(
            "demo",
            help="train MRL, MRL-E, FF, PCA and truncation on built-in digits; table + plot",
            description="The main job, offline on 2 CPU cores in about a minute: trains MRL, MRL-E "
            "and a fixed-feature model per size on scikit-learn's digits, adds the PCA and "
            "truncation baselines, scores every size (trained and in-between) and writes "
            "report.md, results.json and accuracy_vs_dim.png. Finished models are reused.",
        )
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per model (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="redraw report.md and the plot from OUT/results.json; train nothing",
    )
    threads_arg(p)
    p.set_defaults(func=_demo)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = add_common(
        sub.add_parser(
            "train",
            help="train one model with the nested loss (YAML config + key=value overrides)",
            description="Train one model. Settings come from the YAML file, then from KEY=VALUE "
            "overrides such as model.head=mrl-e optim.lr=0.05 model.dims=[8,16,32]. An unknown "
            "key is an error. Checkpoints go to out_dir every epoch; running the same command "
            "again resumes. Under torchrun it trains with DDP. A recipe with `kind: text` "
            "fine-tunes a sentence encoder on a file of pairs (configs/text.yaml); a finished "
            "text model is reused when its recipe matches. --data PATH trains on a folder of "
            "one's own images (PATH/train/<class>/*.png and PATH/test/..., or train.tar and "
            "test.tar) without a YAML file: classes, image size, grayscale or colour, mean and "
            "std are read from the folder, and the resolved recipe is printed before training.",
        )
    )
    p.add_argument(
        "--config",
        help="YAML config file, or a model folder (or its config.json) to repeat its run "
        "(default: built-in defaults, digits)",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="an image folder in the ImageNet layout: propose the recipe from it (a --config "
        "and KEY=VALUE overrides win over the proposals); flip is off, data.flip=true turns it on",
    )
    p.add_argument("--out", help="model folder (overrides out_dir)")
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if a checkpoint exists"
    )
    _overwrite_arg(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    threads_arg(p)
    p.set_defaults(func=_train)


def _add_eval(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_common(
        sub.add_parser(
            "eval",
            help="score a trained model at every size (head top-1 and 1-NN)",
            description="Encode the model's train and test splits once, then score head top-1 and "
            "cosine 1-NN at the trained sizes and the sizes in between.",
        )
    )
    p.add_argument("model", help="model folder written by `matryoshka train` (image or text), or "
                   "'packaged' (the packaged all-MiniLM-L6-v2)")  # fmt: skip
    p.add_argument("--out", help="output folder (default: MODEL/eval)")
    p.add_argument(
        "--dims",
        "--sizes",
        type=dims_arg,
        metavar="M,M,...",
        help="extra sizes to score, e.g. 5,12 (trained and in-between sizes always)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    threads_arg(p)
    p.set_defaults(func=_eval)
    return p


def _add_embed(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_common(
        sub.add_parser(
            "embed",
            help="encode a data split with a trained model into embeddings.npy (full size, once)",
            description="Encode the model's data (train, test or both, without augmentation) once "
            "at full size into OUT/embeddings.npy (N, d), labels.npy and meta.json. Every size is "
            "a prefix of these rows. A large data set can be encoded in shards (--shard I/N), "
            "each written memory-mapped to OUT/shard-IIIII-of-NNNNN/ and resumed where it "
            "stopped when the same command runs again.",
        )
    )
    p.add_argument("model", help="model folder written by `matryoshka train` (image or text), or "
                   "'packaged' (the packaged all-MiniLM-L6-v2)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=["train", "test", "all"], default="all", help="default: all")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--batch", type=int, default=512, help="images or texts per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_shard_arguments(p)
    _overwrite_arg(p)
    threads_arg(p)
    p.set_defaults(func=_embed)
    return p


def _overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write over an --out folder that holds something else (its other files are kept)",
    )


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``, ``train``, ``eval`` and ``embed`` to the ``matryoshka`` subcommands."""
    _add_demo(sub)
    _add_train(sub)
    evaluate, embed = _add_eval(sub), _add_embed(sub)
    add_text_arguments(embed, evaluate)
