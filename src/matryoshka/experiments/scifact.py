"""Matryoshka fine-tuning of a sentence encoder, measured at every size: ``reproduce scifact``.

On SciFact (BEIR layout) and STS-B, from one command: the original all-MiniLM-L6-v2 truncated,
PCA of its corpus embeddings, plain fine-tunes, our Matryoshka fine-tunes and
sentence-transformers' ``MatryoshkaLoss(MultipleNegativesRankingLoss)`` peer, trained on the
same pairs for the same steps with the same seed (the best recipe adds pairs from the corpus).
Each model and each encoded matrix is written once into ``out_dir`` and reused, so an interrupted
run resumes. Every size is scored from one encoded matrix; funnels (shortlist at a short prefix,
rerank at full size) are timed on the Matryoshka corpus embeddings. The results dict is written
as ``scifact.json``, and :mod:`matryoshka.experiments.scifact_report` renders the report from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import sha256_file
from matryoshka._runtime import threads_for, torch_threads
from matryoshka.data import default_data_root
from matryoshka.data.text import (
    BeirDataset,
    StsPairs,
    beir_train_pairs,
    load_beir,
    load_stsb,
)
from matryoshka.dims import validate_dims, validate_weights
from matryoshka.eval import pca_baseline, retrieval_per_size, sts_per_size
from matryoshka.experiments.cache import encode_cached, train_cached
from matryoshka.experiments.common import RunClock, command_line, write_results
from matryoshka.experiments.funnels import funnel_table
from matryoshka.experiments.scifact_recipes import (
    PAIR_SOURCES,
    PLAIN_TITLES,
    check_references,
    make_soup,
    negative_rows,
    parse_recipe,
    parse_soups,
    recipe_start,
    training_pairs,
)
from matryoshka.experiments.scifact_report import render_scifact
from matryoshka.experiments.scifact_rotation import (
    ROTATED,
    ROTATION_EPOCHS,
    anchor_embeddings,
    learned_rotation,
    save_rotated,
)
from matryoshka.models.text import load_sentence_encoder
from matryoshka.models.text_rotation import pca_rotation
from matryoshka.train import TextTrainConfig

__all__ = [
    "BEST_RECIPE",
    "DEFAULT_FUNNELS",
    "DIMS",
    "PAIR_SOURCES",
    "PEER_BEST",
    "PLAIN_TITLES",
    "PRESETS",
    "TUNED_LR",
    "TWO_PHASE",
    "ScifactConfig",
    "best_weights",
    "default_recipes",
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
TUNED_LR = 1e-4
BEST_RECIPE = PLAIN_TITLES + ROTATED  # the plain fine-tune, its learned rotation saved in it
TWO_PHASE = "mrl-two-phase"  # the best recipe that trains the encoder with the nested loss
PEER_BEST = "mrl-lr-titles-w64-384"  # the best recipe of the peer comparison
PRESETS = ("rotation", "two-phase", "peer")


def best_weights(dims: Sequence[int]) -> list[float]:
    """The size weights of :data:`PEER_BEST`: 3 for the full size, 2 for 64, 1 for the rest.

    Measured on SciFact (one seed): equal weights left the full size 1.3 points below the plain
    fine-tune at the same lr, weight 3 on it alone 1.0, and this 0.6, each keeping 91% at 64.
    """
    top = max(dims)
    return [3.0 if m == top else 2.0 if m == 64 else 1.0 for m in dims]


def default_recipes(
    base: TextTrainConfig, tuned_lr: float = TUNED_LR, preset: str = "rotation"
) -> dict[str, TextTrainConfig]:
    """What ``reproduce scifact`` trains by default, each name mapped to its recipe over ``base``.

    ``preset="rotation"`` (the default): :data:`PLAIN_TITLES` alone, the plain fine-tune at
    ``tuned_lr`` on SciFact's train pairs plus (title, text) pairs from the corpus
    (``extra["pairs"] = "train+titles"``); the run then fits its learned rotation
    (:data:`BEST_RECIPE`, see :mod:`matryoshka.experiments.scifact_rotation`).

    ``preset="two-phase"``, on the same pairs at ``tuned_lr``:

    * :data:`PLAIN_TITLES`: the plain fine-tune (phase one, and the reference at full size);
    * :data:`TWO_PHASE`: phase two, the nested loss continued from it, its prefixes started
      at the PCA ordering of its corpus embeddings (``init="pca"``), its full-size rankings
      distilled into every size (``teacher``, ``distill=1``) and one hard negative per pair
      mined from the corpus by the original model (``extra["negatives"] = "mined"``).

    ``preset="peer"``, the comparison with sentence-transformers' Matryoshka recipe:

    * ``plain``, ``mrl``, ``st-peer``: the plain loss, ours and sentence-transformers'
      ``MatryoshkaLoss`` on ``base`` unchanged (the peer's recipe: same pairs, steps and seed);
    * ``plain-lr``, ``mrl-lr``: the same two losses at ``tuned_lr``;
    * :data:`PEER_BEST`: ours at ``tuned_lr`` on the train and title pairs, sizes weighted by
      :func:`best_weights`.

    Add variants to the returned dict to measure more recipes (:func:`parse_recipe` says
    which ``extra`` keys there are).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    titles = {**base.extra, "pairs": "train+titles"}
    if preset == "rotation":
        return {PLAIN_TITLES: replace(base, method="plain", lr=tuned_lr, extra=titles)}
    if preset == "two-phase":
        phase2 = {**titles, "negatives": "mined", "start": PLAIN_TITLES}
        return {
            PLAIN_TITLES: replace(base, method="plain", lr=tuned_lr, extra=titles),
            TWO_PHASE: replace(base, method="mrl", lr=tuned_lr, init="pca",
                                 teacher=PLAIN_TITLES, distill=1.0, extra=phase2),
        }  # fmt: skip
    out = {m: replace(base, method=m) for m in ("plain", "mrl", "st-peer")}
    out["plain-lr"] = replace(base, method="plain", lr=tuned_lr)
    out["mrl-lr"] = replace(base, method="mrl", lr=tuned_lr)
    weights = best_weights(base.dims or DIMS)
    out[PEER_BEST] = replace(base, method="mrl", lr=tuned_lr, weights=weights, extra=titles)
    return out


@dataclass
class ScifactConfig:
    """One SciFact comparison: where the data and outputs are, the base recipe, what to train.

    Attributes
    ----------
    out_dir : models (``models/<name>``), encoded matrices (``emb/<name>``), ``results.json``
    docs_dir : where ``scifact.md``, ``scifact.json`` and the plots go
    data_dir, stsb_dir : SciFact in BEIR layout and the STS-B folder (default
        ``$MATRYOSHKA_DATA/scifact`` and ``$MATRYOSHKA_DATA/stsb``)
    model : the encoder to start from (default the packaged all-MiniLM-L6-v2)
    base : the recipe every method shares (sizes, steps, batch, lr, seed, token limit); the
        defaults are sentence-transformers' Matryoshka recipe, the peer's
    recipes : name -> recipe to train (default :func:`default_recipes` of ``base``, or none
        with ``default_methods=False``)
    extra_recipes : more recipes as ``NAME:KEY=VALUE,...`` over ``base`` (:func:`parse_recipe`)
    funnels : timed on the corpus embeddings of ``funnel_method`` (default :data:`BEST_RECIPE`,
        else :data:`TWO_PHASE`, :data:`PEER_BEST` or ``mrl``, else the first recipe)
    rotate_after : recipes whose learned rotation is fitted and scored as ``NAME+rot`` (default:
        :data:`PLAIN_TITLES` with the ``rotation`` preset), ``rotation_epochs`` epochs each
    """

    out_dir: str | Path = "runs/scifact"
    docs_dir: str | Path = "docs/results"
    data_dir: str | Path | None = None
    stsb_dir: str | Path | None = None
    model: str | Path | None = None
    base: TextTrainConfig = field(
        default_factory=lambda: TextTrainConfig(dims=list(DIMS), max_seq_length=256)
    )
    recipes: Mapping[str, TextTrainConfig] | None = None
    extra_recipes: Sequence[str] = ()
    default_methods: bool = True
    funnels: Sequence[Sequence[Sequence[int]]] = DEFAULT_FUNNELS
    funnel_method: str | None = None
    encode_batch_size: int = 64
    device: str = "cpu"
    threads: int | None = None  # CPU threads for the whole run (default: torch's)
    seed: int | None = None  # every recipe's seed (default: each recipe's own)
    pca_after: Sequence[str] | None = None  # also scored after PCA (default: preset's)
    preset: str = "rotation"  # the default recipes (:func:`default_recipes`)
    rotate_after: Sequence[str] | None = None
    rotation_epochs: int = ROTATION_EPOCHS
    soups: Sequence[str] = ()  # "NAME@ALPHA": a recipe moved back toward its start (make_soup)

    @property
    def dims(self) -> list[int]:
        return list(self.base.dims or DIMS)

    def resolved_pca_after(self, recipes: Mapping[str, TextTrainConfig]) -> list[str]:
        """Which methods are also scored after PCA: ``pca_after``, by default the original, the
        plain fine-tune on the best recipe's pairs and the best recipe, where trained."""
        if self.pca_after is not None:
            return list(self.pca_after)
        return ["original"] + [n for n in (PLAIN_TITLES, TWO_PHASE) if n in recipes]

    def resolved_rotate_after(self, recipes: Mapping[str, TextTrainConfig]) -> list[str]:
        """Which recipes get a learned rotation (row ``NAME+rot``), each checked."""
        names = self.rotate_after
        if names is None:
            names = [PLAIN_TITLES] if self.preset == "rotation" and PLAIN_TITLES in recipes else []
        for n in names:
            if n not in recipes:
                raise ValueError(
                    f"rotate_after: {n!r} is not a recipe of this run ({list(recipes)})"
                )
        if names and self.rotation_epochs < 1:
            raise ValueError(f"rotation_epochs must be at least 1, got {self.rotation_epochs}")
        return list(names)

    def resolved_recipes(self) -> dict[str, TextTrainConfig]:
        """Every recipe to train, each checked, before any training starts."""
        if self.recipes is not None:
            recipes = dict(self.recipes)
        else:
            recipes = default_recipes(self.base, preset=self.preset) if self.default_methods else {}
        for spec in self.extra_recipes:
            name, cfg = parse_recipe(spec, self.base)
            if name in recipes:
                raise ValueError(f"recipe name {name!r} is taken; choose another")
            recipes[name] = cfg
        if self.seed is not None:
            recipes = {n: replace(c, seed=self.seed) for n, c in recipes.items()}
        for cfg in recipes.values():  # fail before any training, not after an hour of it
            cfg.check()
            if cfg.method != "plain":
                validate_weights(cfg.weights, validate_dims(cfg.dims or self.dims, self.dims[-1]))
        check_references(recipes)
        if not recipes:
            raise ValueError("no recipe to train: keep the default methods or add --recipe")
        return recipes


@dataclass
class _Data:
    """The test split, the train pairs, STS-B and every text to encode, loaded once."""

    test: BeirDataset
    train_pairs: list[tuple[str, str]]
    sts: StsPairs

    @property
    def counts(self) -> dict[str, int]:
        return {"corpus": len(self.test.corpus), "queries": len(self.test.queries),
                "train_pairs": len(self.train_pairs), "sts": len(self.sts)}  # fmt: skip

    @property
    def texts(self) -> dict[str, list[str]]:
        return {
            "corpus": self.test.doc_texts(),
            "queries": self.test.query_texts(),
            "sts1": self.sts.sentences1,
            "sts2": self.sts.sentences2,
        }


class _Scorer:
    """Encodes each model's texts once (cached) and scores retrieval and STS at every size."""

    def __init__(self, cfg: ScifactConfig, data: _Data, data_dir: Path, progress: bool) -> None:
        self.cfg, self.data, self.data_dir = cfg, data, data_dir
        self.texts = data.texts
        self.enc = {"batch_size": cfg.encode_batch_size, "progress": progress}
        self.encoded_here: list[str] = []

    def key(self, name: str, folder: Any) -> dict[str, Any]:
        """What a model's cached encodings were made from (its weights, when trained here)."""
        key = {"model": str(folder), "max_seq_length": self.cfg.base.max_seq_length,
               "data": str(self.data_dir)}  # fmt: skip
        if name != "original":  # a retrained model (same recipe, new weights) is re-encoded
            key["config"] = json.loads((Path(folder) / "matryoshka.json").read_text())["config"]
            key["weights_sha256"] = sha256_file(Path(folder) / "model.safetensors")
        return key

    def encode(self, name: str, folder: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Full-size matrices of every text list (N_i, d) and the seconds each took."""
        seq, key, device = self.cfg.base.max_seq_length, self.key(name, folder), self.cfg.device
        got = encode_cached(
            Path(self.cfg.out_dir) / "emb" / name, key,
            lambda: load_sentence_encoder(folder, device=device, max_seq_length=seq),
            self.texts, **self.enc,
        )  # fmt: skip
        if got.fresh:
            self.encoded_here.append(name)
        return got.arrays, got.seconds

    def anchors(self, texts: list[str], name: str = "original", folder: Any = None) -> np.ndarray:
        """A model's (n, d) embeddings of training anchors (the original's: to mine negatives
        with; a trained recipe's in ``folder``: to fit its rotation on)."""
        seq, model = self.cfg.base.max_seq_length, self.cfg.model if folder is None else folder
        key = {**self.key(name, model), "anchors": len(texts)}
        got = encode_cached(
            Path(self.cfg.out_dir) / "emb" / f"{name}-anchors", key,
            lambda: load_sentence_encoder(model, device=self.cfg.device, max_seq_length=seq),
            {"anchors": texts}, **self.enc,
        )  # fmt: skip
        return got.arrays["anchors"]

    def retrieval(self, name: str, X: dict[str, np.ndarray], dims: list[int]) -> dict[str, Any]:
        """nDCG@10, recall@100 and MAP@100 of one method at every size in ``dims``."""
        t = self.data.test
        return retrieval_per_size(X["queries"], X["corpus"], t.query_ids, t.doc_ids, t.qrels,
                                  dims, name)  # fmt: skip

    def score(self, name: str, X: dict[str, np.ndarray], dims: list[int]) -> tuple[dict, dict]:
        """(retrieval result, STS result) of one method at every size in ``dims``."""
        sts = self.data.sts
        r = self.retrieval(name, X, dims)
        return r, sts_per_size(X["sts1"], X["sts2"], sts.scores, dims, name)


def _with_pca(
    name: str, X: dict[str, np.ndarray], pca_after: Sequence[str]
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``(name, X)``, and ``(name+pca, X rotated)`` when ``name`` is in ``pca_after``: the
    uncentred PCA rotation of its corpus embeddings, which keeps full-size similarities (the
    rotation a model folder can hold, :func:`~matryoshka.models.text_rotation.add_rotation`)."""
    return [(name, X), (f"{name}+pca", _rotated(X))] if name in pca_after else [(name, X)]


def _rotated(X: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every matrix of ``X`` turned by the uncentred PCA rotation of ``X["corpus"]``."""
    rotation = pca_rotation(X["corpus"])
    return {k: rotation.apply(v) for k, v in X.items()}


def _baselines(
    scorer: _Scorer, X0: dict[str, np.ndarray], dims: list[int], pca_after: Sequence[str]
) -> tuple[list[dict], list[dict]]:
    """(retrieval, STS) results of the original model, PCA of it and, where asked, its rotation."""
    pb, pq, p1, p2 = pca_baseline(X0["corpus"], X0["corpus"], X0["queries"], X0["sts1"], X0["sts2"])
    pca_dims = [m for m in dims if m <= pb.shape[1]]  # PCA has min(N, d) components
    rows = [("original", X0, dims),
            ("pca", {"corpus": pb, "queries": pq, "sts1": p1, "sts2": p2}, pca_dims)]  # fmt: skip
    if "original" in pca_after:
        rows.append(("original+pca", _rotated(X0), dims))
    scored = [scorer.score(name, X, sizes) for name, X, sizes in rows]
    return [r for r, _ in scored], [s for _, s in scored]


def _benchmark(scorer: _Scorer, X0: dict[str, np.ndarray], enc_s: dict, dims: list[int]) -> dict:
    """Scoring every size against scoring one, beside the encoding done once for both."""
    t0 = time.perf_counter()
    scorer.retrieval("original", X0, dims)
    score_all = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.retrieval("original", X0, [dims[-1]])
    score1 = time.perf_counter() - t0
    encode_s = enc_s["corpus"] + enc_s["queries"]
    return {"encode_s": encode_s, "score_all_s": score_all, "score1_s": score1,
            "ratio": (encode_s + score_all) / (encode_s + score1)}  # fmt: skip


def _same_as_peer(recipes: dict[str, TextTrainConfig], matrices: dict[str, dict]) -> float | None:
    """Largest corpus-embedding difference of ``mrl`` and ``st-peer`` when their recipes match.

    Our loss on the peer's recipe is the peer's loss divided by the number of sizes, a factor
    that AdamW (and the gradient clipping before it) does not see: this says how close they land.
    """
    if "mrl" not in recipes or "st-peer" not in recipes:
        return None
    a, b = asdict(recipes["mrl"]), asdict(recipes["st-peer"])
    if {k: v for k, v in a.items() if k != "method"} != {
        k: v for k, v in b.items() if k != "method"
    }:
        return None
    return float(np.abs(matrices["mrl"]["corpus"] - matrices["st-peer"]["corpus"]).max())


def _rotate(
    scorer: _Scorer, name: str, rcfg: TextTrainConfig, folder: Path, matrices: dict, progress: bool
) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """Row ``NAME+rot``: recipe ``name``'s learned rotation, fitted on its training pairs with one
    hard negative each (mined by the original model), saved into ``models/NAME+rot``; returns
    (row, its embeddings: the recipe's turned by the rotation, what the fit did)."""
    cfg, data = scorer.cfg, scorer.data
    pairs = training_pairs(rcfg.extra.get("pairs", "train"), data.train_pairs, data.test)
    neg = negative_rows(pairs, matrices["original"]["corpus"], scorer.anchors, rcfg.seed)
    xa = anchor_embeddings(pairs, lambda texts: scorer.anchors(texts, name, folder))
    row, X = name + ROTATED, matrices[name]
    fit = learned_rotation(Path(cfg.out_dir) / "emb" / row, pairs, xa, X["corpus"], neg, cfg.dims,
                           scorer.key(name, folder), cfg.rotation_epochs, rcfg.seed,
                           progress)  # fmt: skip
    save_rotated(Path(cfg.out_dir) / "models" / row, folder, fit.rotation, cfg.dims,
                 cfg.base.max_seq_length, cfg.device, progress)  # fmt: skip
    info = {"of": name, "pairs": fit.pairs, "epochs": cfg.rotation_epochs,
            "seconds": fit.seconds, "fresh": fit.fresh}  # fmt: skip
    return row, {k: fit.rotation.apply(v) for k, v in X.items()}, info


def _load_data(cfg: ScifactConfig) -> tuple[_Data, Path, Path]:
    data_dir = Path(cfg.data_dir) if cfg.data_dir is not None else default_data_root("scifact")
    stsb_dir = Path(cfg.stsb_dir) if cfg.stsb_dir is not None else default_data_root("stsb")
    data = _Data(load_beir(data_dir, "test"), beir_train_pairs(data_dir, "train"),
                 load_stsb(stsb_dir, "test"))  # fmt: skip
    return data, data_dir, stsb_dir


def reproduce_scifact(
    cfg: ScifactConfig | None = None, progress: bool = True, command: str | None = None
) -> dict[str, Any]:
    """Run (or resume) the whole SciFact/STS-B comparison and write ``docs_dir/scifact.md``.

    Returns
    -------
    dict
        Everything written to ``scifact.json``: ``retrieval`` and ``sts`` result lists,
        ``funnels``, ``benchmark``, ``training``, ``seconds`` (wall time of this call),
        ``threads`` (torch's CPU threads) and ``done_here`` (what was trained and encoded in
        this call rather than read from ``out_dir``).
    """
    cfg = cfg or ScifactConfig()
    if cfg.threads is not None:
        with torch_threads(threads_for(0, cfg.threads)):
            return reproduce_scifact(replace(cfg, threads=None), progress, command)
    clock = RunClock()
    recipes = cfg.resolved_recipes()
    pca_after, rotate_after = cfg.resolved_pca_after(recipes), cfg.resolved_rotate_after(recipes)
    soups = parse_soups(cfg.soups, recipes)  # checked before any training
    rows = [*recipes, *(f"{n}@{a:g}" for n, alphas in soups.items() for a in alphas),
            *(n + ROTATED for n in rotate_after)]  # fmt: skip
    best = (n for n in (BEST_RECIPE, TWO_PHASE, PEER_BEST, "mrl") if n in rows)
    funnel_method = cfg.funnel_method or next(best, rows[0])
    if funnel_method not in rows and funnel_method != "original":
        raise ValueError(f"funnel_method {funnel_method!r} is not one of {rows}")
    data, data_dir, _ = _load_data(cfg)
    scorer, dims = _Scorer(cfg, data, data_dir, progress), cfg.dims
    X0, enc_s = scorer.encode("original", cfg.model)
    retrieval, similarity = _baselines(scorer, X0, dims, pca_after)
    benchmark = _benchmark(scorer, X0, enc_s, dims)
    training, matrices, trained_here = {}, {"original": X0}, []
    folders, rotations = {}, {}  # name -> model folder; row -> what its rotation's fit did
    for name, rcfg in recipes.items():
        start = recipe_start(rcfg, data.train_pairs, data.test, folders,
                             lambda n: matrices[n]["corpus"], scorer.anchors)  # fmt: skip
        folders[name] = Path(cfg.out_dir) / "models" / name
        got = train_cached(name, start.cfg, folders[name], start.base or cfg.model, start.pairs,
                           cfg.device, progress, start.rotation)  # fmt: skip
        if got.fresh:
            trained_here.append(name)
        training[name] = {k: got.meta[k] for k in ("config", "pairs", "steps", "seconds", "epochs")}
        matrices[name], _ = scorer.encode(name, folders[name])
        for alpha in soups.get(name, []):
            row = f"{name}@{alpha:g}"
            folders[row] = make_soup(Path(cfg.out_dir) / "models" / row, folders[name], start,
                                     cfg.model, alpha, cfg.device, progress)  # fmt: skip
            matrices[row], _ = scorer.encode(row, folders[row])
        if name in rotate_after:
            row, matrices[row], rotations[row] = _rotate(scorer, name, rcfg, folders[name],
                                                         matrices, progress)  # fmt: skip
        for row in (n for n in matrices if n == name or n.startswith((f"{name}@", name + ROTATED))):
            for method, X in _with_pca(row, matrices[row], pca_after):
                r, s = scorer.score(method, X, dims)
                retrieval.append(r)
                similarity.append(s)
    Xf, t = matrices[funnel_method], data.test
    out = {
        "experiment": "scifact",
        "command": command or command_line(),
        "max_seq_length": cfg.base.max_seq_length,
        "counts": data.counts,
        "retrieval": retrieval,
        "sts": similarity,
        "funnel_method": funnel_method,
        "funnels": funnel_table(
            Xf["queries"], Xf["corpus"], t.query_ids, t.doc_ids, t.qrels, cfg.funnels
        ),  # fmt: skip
        "benchmark": benchmark,
        "training": training,
        "rotations": rotations,
        "mrl_vs_peer_max_abs_diff": _same_as_peer(recipes, matrices),
        **clock.stamp(),
        "done_here": {"trained": trained_here, "encoded": scorer.encoded_here},
    }
    docs_dir = Path(cfg.docs_dir)
    write_results([Path(cfg.out_dir) / "results.json", docs_dir / "scifact.json"], out)
    render_scifact(out, docs_dir)
    return out
