"""The text side of ``train``, ``embed`` and ``eval``: a text recipe, a corpus file, a text model.

``train --config text.yaml`` (a recipe with ``kind: text``) fine-tunes a sentence encoder on the
user's pairs; ``embed TEXT_MODEL --texts FILE`` encodes a corpus once into an embeddings folder
whose ``names.json`` keeps the corpus's ids; ``eval TEXT_MODEL --beir PATH`` (or ``--corpus``,
``--queries``, ``--qrels``) scores the model at every size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "add_retrieval_arguments",
    "embed_text",
    "eval_text",
    "is_text_model",
    "is_text_recipe",
    "train_text",
]


def is_text_model(path: str | Path) -> bool:
    """Whether ``path`` is a sentence-transformers folder (ours has ``matryoshka.json`` too), or
    ``packaged`` (the packaged all-MiniLM-L6-v2)."""
    if str(path) == "packaged" and not Path(path).exists():
        return True
    path = Path(path)
    return (path / "matryoshka.json").is_file() or (path / "modules.json").is_file()


def is_text_recipe(config: str | None, overrides: list[str]) -> bool:
    """Whether a recipe is a text one: ``kind: text`` in the YAML or ``kind=text`` given."""
    if any(o.replace(" ", "") == "kind=text" for o in overrides):
        return True
    if config is None or not Path(config).is_file():
        return False
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text())
    except yaml.YAMLError:
        return False  # the image loader reports the error with its line and column
    return isinstance(data, dict) and data.get("kind") == "text"


def train_text(args: argparse.Namespace) -> int:
    from matryoshka.train import TextJobConfig, load_config, run_text_job

    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"out_dir={args.out}")
    job = load_config(args.config, overrides, cls=TextJobConfig)
    got = run_text_job(job, progress=not args.quiet, overwrite=args.overwrite)
    meta = got.meta
    done = "trained" if got.fresh else "already trained (reused)"
    print(f"{done}: {meta['pairs']} pairs, {meta['steps']} steps, sizes {meta['dims']}")
    print(f"model folder: {job.out_dir}")
    return 0


def embed_text(args: argparse.Namespace) -> int:
    from matryoshka.cli.embed_shards import check_shard_arguments, embed_text_shard, text_threads
    from matryoshka.data import load_texts
    from matryoshka.eval import save_embeddings
    from matryoshka.models.text import encode_texts, load_sentence_encoder

    if args.texts is None:
        raise ValueError(f"{args.model} is a text model: give the texts to embed with --texts")
    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    check_shard_arguments(args)
    texts = load_texts(args.texts, args.text_column, args.id_column, args.title_column)
    model = load_sentence_encoder(args.model, progress=not args.quiet)
    if args.shard is not None:
        with text_threads(args.threads):
            return embed_text_shard(args, model, texts)
    with text_threads(args.threads):
        X = encode_texts(
            model, texts.texts, batch_size=args.batch, progress=not args.quiet, prompt=args.prompt
        )  # fmt: skip  (N, d), full size, once
    save_embeddings(
        args.out, X, dtype=args.dtype, overwrite=args.overwrite, names=texts.ids,
        model=str(args.model), source=str(args.texts), prompt=args.prompt,
    )  # fmt: skip
    print(f"wrote {args.out}/embeddings.npy {X.shape} {args.dtype}, names.json, meta.json")
    return 0


def eval_text(args: argparse.Namespace) -> int:
    from matryoshka.experiments.text_eval import evaluate_text_model, load_retrieval_data

    data = load_retrieval_data(args.beir, args.split, args.corpus, args.queries, args.qrels)
    if args.out is None and not Path(args.model).is_dir():  # "packaged": no folder of its own
        args.out = "runs/packaged-eval"
    out = evaluate_text_model(
        args.model, data, dims=args.dims, exclude_self=args.exclude_self,
        query_prompt=args.query_prompt, document_prompt=args.document_prompt,
        progress=not args.quiet, out=args.out,
    )  # fmt: skip
    print(out["table"])
    where = args.out or f"{args.model}/eval"
    card = "; the model card shows them" if (Path(args.model) / "matryoshka.json").is_file() else ""
    print(f"wrote {where}/results.json and report.md{card}")
    return 0


def add_text_arguments(embed: argparse.ArgumentParser, evaluate: argparse.ArgumentParser) -> None:
    """The flags of ``embed`` and ``eval`` that only a text model reads."""
    g = embed.add_argument_group("text models")
    g.add_argument("--texts", help="a JSONL, CSV, TSV, Parquet or .txt file of texts to embed")
    g.add_argument("--text-column", default="text", help="the texts' column (default: text)")
    g.add_argument("--id-column", help="the ids' column (default: _id or id, else line number)")
    g.add_argument("--title-column", help="a title column to put before each text")
    g.add_argument("--prompt", help="put before every text, e.g. 'query: '")
    add_retrieval_arguments(evaluate.add_argument_group("text models"))


def add_retrieval_arguments(g: argparse._ActionsContainer, exclude_self: bool = True) -> None:
    """The flags naming retrieval data and its prompts (``eval`` and ``compare --text``):
    ``--beir``/``--split`` or ``--corpus``/``--queries``/``--qrels``, ``--exclude-self`` (unless
    ``exclude_self`` is False), ``--query-prompt``, ``--document-prompt``."""
    g.add_argument("--beir", help="a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    g.add_argument("--split", default="test", help="with --beir: the qrels split (default test)")
    g.add_argument("--corpus", help="a corpus file (JSONL with _id, title, text; or CSV...)")
    g.add_argument("--queries", help="a queries file (JSONL with _id and text; or CSV...)")
    g.add_argument("--qrels", help="relevance judgements: query-id, corpus-id, score (TSV)")
    if exclude_self:
        g.add_argument(
            "--exclude-self",
            action="store_true",
            help="the queries are documents of the corpus: none retrieves itself",
        )
    g.add_argument("--query-prompt", help="put before every query")
    g.add_argument("--document-prompt", help="put before every document")
