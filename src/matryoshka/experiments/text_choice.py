"""Which representation of a text model to ship at each size: ``matryoshka compare --text MODEL``.

Three candidates at every size ``m``, all scored on the user's retrieval data with nDCG@10:

- ``"mrl"``: the Matryoshka model's embeddings cut to ``m``;
- ``"pca-original"``: the starting (original) model's embeddings, rotated by PCA of its corpus
  embeddings, cut to ``m``;
- ``"pca-mrl"``: the Matryoshka model's embeddings, rotated by PCA of its corpus embeddings, cut
  to ``m``.

Each model encodes the corpus and the queries once at full size; the rotations are fitted on the
corpus embeddings, uncentred (orthogonal: the full size keeps every similarity of the model), and
every size is a prefix of the rotated matrices. The choice at a size is the best of the three;
ties go to ``"mrl"``, then ``"pca-mrl"`` (no extra layer to ship). ``save_rotated`` writes the
Matryoshka model with its rotation inside, so ``SentenceTransformer(path, truncate_dim=m)`` gives
the ``"pca-mrl"`` prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from matryoshka._io import check_destination, write_text
from matryoshka._markdown import markdown_table
from matryoshka.dims import nesting_dims, validate_dims
from matryoshka.eval import retrieval_per_size, save_results
from matryoshka.experiments.text_eval import RetrievalData
from matryoshka.models.text import encode_texts, load_sentence_encoder

__all__ = ["CANDIDATES", "choose_text_representation", "pick_per_size"]

# in the order ties are broken: the plain model first, then the one with no second model
CANDIDATES = ("mrl", "pca-mrl", "pca-original")
ROTATION = "pca of the corpus embeddings"
_TIE = 1e-9  # nDCG@10 differences below this are float noise (a rotation's rounding)
_WHAT = {
    "mrl": "the MRL model cut to m",
    "pca-mrl": "PCA of the MRL model's embeddings cut to m (--save-rotated writes that model)",
    "pca-original": "PCA of the original model's embeddings cut to m",
}


def _encode(model: Any, data: RetrievalData, prompts: tuple[str | None, str | None],
            progress: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(xq (nq, d), xb (N, d))``: the queries and the corpus, each encoded once at full size."""
    xb = encode_texts(model, data.corpus.texts, prompt=prompts[1], progress=progress)
    xq = encode_texts(model, data.queries.texts, prompt=prompts[0], progress=progress)
    return xq, xb


def _scored(name: str, xq: np.ndarray, xb: np.ndarray, data: RetrievalData, sizes: list[int],
            rotation: Any = None) -> dict[str, Any]:  # fmt: skip
    """One row: nDCG@10, recall@100, MAP@100 at every size (at most d) of ``(xq, xb)``,
    rotated first when a rotation is given."""
    if rotation is not None:
        xq, xb = rotation.apply(xq), rotation.apply(xb)  # (nq, d), (N, d), by variance
    sizes = [m for m in sizes if m <= xb.shape[1]]
    return retrieval_per_size(xq, xb, data.queries.ids, data.corpus.ids, data.qrels, sizes, name)


def pick_per_size(results: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The best row at each size by nDCG@10, and its margin over the runner-up.

    ``results`` are rows ``{"method": name, "dims": {m: {"ndcg@10": x}}}`` named from
    :data:`CANDIDATES`; a row without a size (a smaller original model) is left out there. Ties
    (within 1e-9) go to the earlier name of :data:`CANDIDATES`. Returns
    ``{m: {"ship": name, "ndcg@10": x, "margin": y}}``; ``margin`` is None with one candidate.
    """
    rows = sorted(results, key=lambda r: CANDIDATES.index(r["method"]))
    sizes = sorted({int(m) for r in rows for m in r["dims"]})
    out: dict[int, dict[str, Any]] = {}
    for m in sizes:
        got = [(r["method"], r["dims"][m]["ndcg@10"]) for r in rows if m in r["dims"]]
        top = max(score for _, score in got)
        ship, score = next((name, s) for name, s in got if s >= top - _TIE)
        others = [s for name, s in got if name != ship]
        margin = max(score - max(others), 0.0) if others else None
        out[m] = {"ship": ship, "ndcg@10": float(score), "margin": margin}
    return out


def _sentence(choice: dict[int, dict[str, Any]]) -> str:
    """One sentence: which representation to ship at which sizes."""
    parts = []
    for name in CANDIDATES:
        sizes = [str(m) for m, c in choice.items() if c["ship"] == name]
        if sizes:
            parts.append(f"{_WHAT[name]} at {', '.join(sizes)}")
    return "Ship " + "; ".join(parts) + "."


def _table(results: list[dict[str, Any]], choice: dict[int, dict[str, Any]]) -> str:
    """Markdown: one row per size, nDCG@10 (%) of each candidate, what to ship and by how much."""
    by_name = {r["method"]: r["dims"] for r in results}

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    rows = []
    for m, c in choice.items():
        scores = [pct(dims[m]["ndcg@10"] if m in dims else None) for dims in by_name.values()]
        margin = "–" if c["margin"] is None else f"+{100 * c['margin']:.1f}"
        rows.append([m, *scores, c["ship"], margin])
    header = ["size", *(f"{n} nDCG@10" for n in by_name), "ship", "margin"]
    return markdown_table(header, rows, align="rrrrlr")


def _model_sizes(model_path: Path, d: int, dims: list[int] | None) -> tuple[dict, list, list]:
    """The model's ``matryoshka.json`` (or ``{}``), its trained sizes, and the sizes to score:
    the trained ones (``dims`` in the meta, else doubling from 16 to ``d``) and ``dims``."""
    meta_path = model_path / "matryoshka.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    trained = list(validate_dims(meta.get("dims") or nesting_dims(d, 16), d))
    sizes = list(validate_dims(sorted(set(trained) | set(dims or [])), d, "--dims"))
    return meta, trained, sizes


def _save_rotated(model: Any, rotation: Any, path: Path, trained: list[int], meta: dict,
                  progress: bool) -> None:  # fmt: skip
    """The MRL model with the rotation as its last layers, saved with the model's own meta."""
    from matryoshka.models.text_rotation import add_rotation
    from matryoshka.train.text import save_text_model

    kept = {k: v for k, v in meta.items()
            if k not in ("format", "d", "dims", "overwrite", "progress")}  # fmt: skip
    add_rotation(model, rotation)
    save_text_model(model, path, trained, progress=progress, **kept, rotation=ROTATION)


def choose_text_representation(
    model_path: str | Path,
    data: RetrievalData,
    original: str | Path | None = None,
    dims: list[int] | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    save_rotated: str | Path | None = None,
) -> dict[str, Any]:
    """Score the MRL model cut to ``m``, PCA of the original model and PCA of the MRL model at
    every size, and pick what to ship at each.

    Parameters
    ----------
    model_path : the MRL model's folder (a sentence-transformers folder, ideally with
        ``matryoshka.json``, whose ``dims`` are the sizes scored)
    data : corpus (N texts), queries (nq texts) and their judgements
    original : the starting model (a folder, a Hub name or ``"packaged"``); default the packaged
        all-MiniLM-L6-v2
    dims : sizes to score besides the trained ones (without ``matryoshka.json``: doubling from 16)
    out : where ``results.json`` and ``report.md`` go (default ``MODEL/choice``)
    query_prompt, document_prompt : put before every query / document, for both models
    save_rotated : also save the MRL model with its PCA rotation inside, to this folder

    Returns
    -------
    ``{"results": [row, row, row], "choice": {m: {"ship": name, "ndcg@10": x, "margin": y}},
    "table": markdown}``; rows are ``{"method": name, "dims": {m: {"ndcg@10": ...}}}``.
    """
    from matryoshka.models.text_rotation import pca_rotation

    model_path = Path(model_path)
    if not model_path.is_dir():
        raise FileNotFoundError(f"no model folder at {model_path}")
    if not data.corpus.ids or not data.queries.ids:
        n, nq = len(data.corpus.ids), len(data.queries.ids)
        raise ValueError(f"{data.source}: the comparison needs a corpus and queries, got {n} "
                         f"documents and {nq} queries")  # fmt: skip
    if save_rotated is not None:
        from matryoshka.train.text import TEXT_MODEL_FOLDER

        if Path(save_rotated).resolve() == model_path.resolve():
            raise ValueError("--save-rotated must be a new folder, not the MRL model itself")
        check_destination(save_rotated, TEXT_MODEL_FOLDER)  # before the encoding, not after
    prompts = (query_prompt, document_prompt)
    model = load_sentence_encoder(model_path, progress=progress)
    meta, trained, sizes = _model_sizes(model_path, model.get_embedding_dimension(), dims)
    xq, xb = _encode(model, data, prompts, progress)  # (nq, d), (N, d)
    rotation = pca_rotation(xb)  # uncentred: orthogonal, the full size is unchanged
    first = load_sentence_encoder(original, progress=progress)
    oq, ob = _encode(first, data, prompts, progress)  # (nq, d0), (N, d0)
    del first
    results = [
        _scored("mrl", xq, xb, data, sizes),
        _scored("pca-original", oq, ob, data, sizes, pca_rotation(ob)),
        _scored("pca-mrl", xq, xb, data, sizes, rotation),
    ]
    choice = pick_per_size(results)
    table = _table(results, choice)
    out = Path(out) if out is not None else model_path / "choice"
    orig = "the packaged all-MiniLM-L6-v2" if original is None else str(original)
    about = {"data": data.source, "model": str(model_path), "original": orig}
    save_results(out / "results.json", results, choice=choice, trained=trained, sizes=sizes,
                 rotation=ROTATION, **about)  # fmt: skip
    write_text(out / "report.md", f"# What to ship from {model_path.name} at each size, on "
               f"{data.source}\n\nnDCG@10 (%) of the MRL model cut to m, of PCA of the original "
               f"model ({orig}) and of PCA of the MRL model (rotations fitted on the corpus "
               f"embeddings).\n\n{table}\n{_sentence(choice)}\n")  # fmt: skip
    if save_rotated is not None:
        _save_rotated(model, rotation, Path(save_rotated), trained, meta, progress)
    return {"results": results, "choice": choice, "table": table}
