"""Classification at every size from one encoded matrix: head top-1, linear probe, 1-NN.

A split is encoded once into ``X`` of shape (N, d); each size ``m`` is scored on ``X[:, :m]``.
Nothing here runs the backbone again per size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from matryoshka._runtime import progress_bar, step_flops, threads_for, torch_threads
from matryoshka.dims import validate_dim
from matryoshka.eval.retrieval import knn_label_accuracy

__all__ = [
    "encode",
    "encode_batches",
    "head_top1",
    "knn1_top1",
    "linear_probe_top1",
    "PCABaseline",
    "evaluate_embeddings",
]


def encode(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "encode",
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Full embeddings and labels of a data set, in one pass.

    Parameters
    ----------
    model : module with ``.embed(x) -> (B, d)`` (a :class:`~matryoshka.nn.MatryoshkaModel`)
    dataset : Dataset of (x, label)
    threads : int, optional
        CPU threads; default one for a small model, else the free cores
        (:func:`matryoshka._runtime.threads_for`).

    Returns
    -------
    X : ndarray of shape (N, d), float32
    y : ndarray of shape (N,), int64
    """
    xs, ys = [], []
    with progress_bar(total=len(dataset), desc=desc, unit="img", disable=not progress) as bar:
        for x, y in encode_batches(model, dataset, batch_size, device, threads):
            xs.append(x)
            ys.append(y)
            bar.update(len(x))
    if not xs:
        raise ValueError("the data set to encode is empty")
    return np.concatenate(xs), np.concatenate(ys)


def encode_batches(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Full embeddings and labels of rows ``[start, stop)`` of a data set, batch by batch.

    What :func:`encode` collects; a writer that streams rows to disk (a shard of
    ``matryoshka embed --shard``) takes them one batch at a time. The model is in eval mode and
    torch runs on ``threads`` CPU threads until the generator ends or is closed; both are put
    back then.

    Yields
    ------
    X : ndarray of shape (B, d), float32, rows ``start + k*batch_size ...`` in order
    y : ndarray of shape (B,), int64
    """
    stop = len(dataset) if stop is None else stop
    if not 0 <= start <= stop <= len(dataset):
        raise ValueError(f"rows [{start}, {stop}) are not inside the {len(dataset)} examples")
    part = dataset if (start, stop) == (0, len(dataset)) else Subset(dataset, range(start, stop))
    if not len(part):
        return
    was_training = model.training
    model.eval().to(device)
    work = step_flops(model, part[0][0].to(device), batch_size)
    try:
        with torch_threads(threads_for(work, threads)):
            for x, y in DataLoader(part, batch_size=batch_size):
                with torch.no_grad():  # not across the yield: the caller's grad mode stays its own
                    X = model.embed(x.to(device)).float().cpu().numpy()  # (B, d)
                yield X, torch.as_tensor(y).numpy().astype(np.int64)
    finally:
        model.train(was_training)


def _check_xy(X: np.ndarray, y: np.ndarray, name: str) -> None:
    if X.ndim != 2:
        raise ValueError(f"{name} embeddings must have shape (N, d), got {X.shape}")
    if len(X) != len(y):
        raise ValueError(f"{name} has {len(X)} embeddings but {len(y)} labels")


@torch.no_grad()
def head_top1(
    head: nn.Module, X: np.ndarray, y: np.ndarray, sizes: Iterable[int], batch_size: int = 4096
) -> dict[int, float]:
    """Top-1 of ``head.logits_at(z, m)`` at each size, from stored embeddings X (N, d).

    Sizes the head cannot classify (an MRL head at an untrained size) are left out.
    """
    _check_xy(X, y, "test")
    head = head.eval().cpu()
    sizes = [m for m in sizes if head.can_classify(m)]
    correct = dict.fromkeys(sizes, 0)
    yt = torch.from_numpy(np.asarray(y))
    for start in range(0, len(X), batch_size):
        z = torch.from_numpy(np.ascontiguousarray(X[start : start + batch_size], np.float32))
        yb = yt[start : start + batch_size]
        for m in sizes:
            pred = head.logits_at(z, m).argmax(1)  # (B,)
            correct[m] += int((pred == yb).sum())
    return {m: correct[m] / len(X) for m in sizes}


def knn1_top1(
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xte: np.ndarray,
    yte: np.ndarray,
    sizes: Iterable[int],
    metric: str = "cosine",
    exclude_self: bool = False,
) -> dict[int, float]:
    """1-nearest-neighbour top-1 at each size: database = train split, queries = test split.

    ``exclude_self``: the two splits are the same rows (a corpus scored against itself), and each
    row's own match is skipped.
    """
    _check_xy(Xtr, ytr, "train")
    _check_xy(Xte, yte, "test")
    return {
        m: knn_label_accuracy(Xte, yte, Xtr, ytr, dim=m, metric=metric, exclude_self=exclude_self)
        for m in sizes
    }


def _fit_probe(
    Z: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int
) -> nn.Linear:
    probe = nn.Linear(Z.shape[1], num_classes)
    opt = torch.optim.LBFGS(
        probe.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(probe(Z), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def linear_probe_top1(
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xte: np.ndarray,
    yte: np.ndarray,
    sizes: Iterable[int],
    l2: float = 1e-4,
    max_iter: int = 200,
    seed: int = 0,
) -> dict[int, float]:
    """Top-1 of a multinomial logistic regression fitted on ``Xtr[:, :m]`` at each size.

    Features are standardised with the train split's statistics; the fit is full-batch L-BFGS
    with a small L2 penalty. This is how the baselines without a head of their own (PCA,
    truncation) are given a classifier at every size.
    """
    _check_xy(Xtr, ytr, "train")
    _check_xy(Xte, yte, "test")
    num_classes = int(max(np.max(ytr), np.max(yte))) + 1
    ytr_t = torch.from_numpy(np.asarray(ytr, np.int64))
    yte_t = torch.from_numpy(np.asarray(yte, np.int64))
    out = {}
    for m in sizes:
        m = validate_dim(m, Xtr.shape[1])
        tr = torch.from_numpy(np.ascontiguousarray(Xtr[:, :m], np.float32))
        te = torch.from_numpy(np.ascontiguousarray(Xte[:, :m], np.float32))
        mu, sd = tr.mean(0), tr.std(0).clamp(min=1e-6)
        torch.manual_seed(seed)
        probe = _fit_probe((tr - mu) / sd, ytr_t, num_classes, l2, max_iter)
        with torch.no_grad():
            out[m] = float((probe((te - mu) / sd).argmax(1) == yte_t).float().mean())
    return out


class PCABaseline:
    """PCA of full-size embeddings, fitted on one split; its size-``m`` output is a prefix.

    Components are sorted by explained variance, so the projection onto the top ``m`` components
    equals the first ``m`` columns of the full projection: one transformed matrix serves every size,
    like a Matryoshka embedding does.

    Attributes (after ``fit``)
    ----------
    mean_ : ndarray of shape (d,)
    components_ : ndarray of shape (d, d), rows sorted by variance
    explained_variance_ratio_ : ndarray of shape (d,)
    """

    def fit(self, X: np.ndarray) -> PCABaseline:
        X = np.asarray(X, np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must have shape (N, d), got {X.shape}")
        self.mean_ = X.mean(0)
        _, s, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        self.components_ = vt  # (min(N, d), d)
        var = s**2
        self.explained_variance_ratio_ = var / max(var.sum(), 1e-12)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(N, d) -> (N, r) with r = min(N_fit, d); columns sorted by explained variance."""
        return ((np.asarray(X, np.float64) - self.mean_) @ self.components_.T).astype(np.float32)


def evaluate_embeddings(
    method: str,
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xte: np.ndarray,
    yte: np.ndarray,
    sizes: Sequence[int],
    head: nn.Module | None = None,
    probe: bool = False,
    knn: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score one method at every size; returns ``{"method": ..., "dims": {m: {"top1", "knn1"}}}``.

    ``top1`` comes from the method's own ``head`` when given, else from a linear probe when
    ``probe`` is set; ``knn1`` is 1-NN top-1 with cosine similarity.
    """
    sizes = sorted(set(int(m) for m in sizes))
    per: dict[int, dict[str, float]] = {m: {} for m in sizes}
    if head is not None:
        for m, v in head_top1(head, Xte, yte, sizes).items():
            per[m]["top1"] = v
    elif probe:
        for m, v in linear_probe_top1(Xtr, ytr, Xte, yte, sizes).items():
            per[m]["top1"] = v
    if knn:
        for m, v in knn1_top1(Xtr, ytr, Xte, yte, sizes).items():
            per[m]["knn1"] = v
    result: dict[str, Any] = {"method": method, "dims": per}
    if extra:
        result.update(extra)
    return result
