"""2-D maps of the embedding space per size: known answers for the projection, the alignment and
the quality measures."""

import sys

import numpy as np
import pytest

from matryoshka.viz.maps import (
    embedding_maps,
    map_quality,
    procrustes_align,
    project_2d,
    resolve_method,
    sample_rows,
)


def pairwise(A):
    A = np.asarray(A, np.float64)
    return np.sqrt(((A[:, None] - A[None]) ** 2).sum(-1))


def mrl_like(n=300, d=64, seed=0):
    """Three classes, early columns carrying more of the signal (as MRL's do)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    scale = 1 / np.sqrt(np.arange(1, d + 1))
    centres = rng.normal(size=(3, d)) * 3
    X = (centres[y] + rng.normal(size=(n, d))) * scale
    return X.astype(np.float32), y


def test_pca_map_of_data_on_a_plane_is_that_plane_up_to_rotation():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(32, 2)))  # an orthonormal basis of a plane in R^32
    C = rng.normal(size=(80, 2)) + np.array([3.0, 1.0])  # coordinates in the plane
    X = (C @ Q.T).astype(np.float32)
    Cn = C / np.linalg.norm(C, axis=1, keepdims=True)  # the cosine geometry: rows renormalised
    Y = project_2d(X, "pca")
    assert Y.shape == (80, 2) and Y.dtype == np.float32
    np.testing.assert_allclose(pairwise(Y), pairwise(Cn), atol=1e-5)  # a rigid motion
    np.testing.assert_allclose(procrustes_align(Y, Cn), Cn, atol=1e-5)
    maps = embedding_maps(
        X, [32], sample=None, method="pca"
    )  # the full size: centred, RMS radius 1
    scale = np.sqrt((pairwise(maps[32]) ** 2).sum() / (pairwise(Cn) ** 2).sum())
    np.testing.assert_allclose(pairwise(maps[32]), scale * pairwise(Cn), atol=1e-4)
    assert np.allclose(maps[32].mean(0), 0, atol=1e-5)
    assert np.sqrt((maps[32] ** 2).sum(1).mean()) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("reflect", [False, True])
def test_procrustes_recovers_a_rotated_scaled_shifted_copy(reflect):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(50, 2))
    t = 0.7
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    if reflect:
        R = R @ np.diag([1.0, -1.0])
    Y = 3.5 * A @ R + np.array([10.0, -4.0])
    np.testing.assert_allclose(procrustes_align(Y, A), A, atol=1e-5)
    with pytest.raises(ValueError, match="one shape"):
        procrustes_align(Y[:10], A)


def _step(maps, sizes):
    return [float(np.sqrt(((maps[a] - maps[b]) ** 2).sum(1).mean()))
            for a, b in zip(sizes, sizes[1:])]  # fmt: skip


def test_alignment_brings_the_maps_of_consecutive_sizes_closer():
    X, y = mrl_like()
    sizes = [4, 8, 16, 32, 64]
    aligned = embedding_maps(X, sizes, labels=y, sample=None, method="pca")
    raw = embedding_maps(X, sizes, labels=y, sample=None, align="none", method="pca")
    for m in sizes[:-1]:  # the same projection, only moved: distances between points scale
        ratio = pairwise(aligned[m])[0, 1:] / pairwise(raw[m])[0, 1:]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)
    # each size lands as close to the (aligned) size above as any rotation, scale and shift of
    # its own projection can, the projection as it came included
    for m, above in zip(sizes, sizes[1:]):
        mixed = {m: raw[m], above: aligned[above]}
        assert _step(aligned, [m, above])[0] <= _step(mixed, [m, above])[0] + 1e-6
    assert sum(_step(aligned, sizes)) < 0.5 * sum(_step(raw, sizes))
    full = embedding_maps(X, sizes, labels=y, sample=None, align="full", method="pca")
    assert full[64] == pytest.approx(aligned[64]) and full[32] == pytest.approx(aligned[32])


def test_sizes_times_and_bad_arguments():
    X, _ = mrl_like(n=60, d=16)
    times = {}
    maps = embedding_maps(X, [16, 4, 8], sample=40, times=times, method="pca")
    assert list(maps) == [4, 8, 16] and all(v.shape == (40, 2) for v in maps.values())
    assert sorted(times) == [4, 8, 16] and all(t >= 0 for t in times.values())
    with pytest.raises(ValueError, match="between 2 and d = 16"):
        embedding_maps(X, [8, 32])
    with pytest.raises(ValueError, match="method must be one of"):
        embedding_maps(X, [8], method="mds")
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        embedding_maps(X[0], [8])


def test_the_sample_is_seeded_and_keeps_every_class_share():
    y = np.array([0] * 700 + [1] * 200 + [2] * 100)
    rows = sample_rows(1000, 100, seed=0, labels=y)
    assert len(rows) == 100 and len(set(rows)) == 100 and (np.diff(rows) > 0).all()
    assert np.bincount(y[rows]).tolist() == [70, 20, 10]
    assert (sample_rows(1000, 100, seed=0, labels=y) == rows).all()
    assert not (sample_rows(1000, 100, seed=1, labels=y) == rows).all()
    assert (sample_rows(50, 100) == np.arange(50)).all()
    rare = np.array([0] * 98 + [1, 2])
    assert set(rare[sample_rows(100, 10, labels=rare)]) == {0, 1, 2}  # each class at least once


def test_maps_are_deterministic_with_a_seed():
    X, y = mrl_like(n=400)
    a = embedding_maps(X, [8, 64], sample=100, seed=3, labels=y, method="pca")
    b = embedding_maps(X, [8, 64], sample=100, seed=3, labels=y, method="pca")
    c = embedding_maps(X, [8, 64], sample=100, seed=4, labels=y, method="pca")
    assert all((a[m] == b[m]).all() for m in a)
    assert not (a[8] == c[8]).all()


def test_quality_on_a_hand_worked_case():
    # prefix: six points on the unit circle; cosine neighbours follow the angles
    angles = np.radians([0, 10, 25, 90, 100, 115])
    X = np.stack([np.cos(angles), np.sin(angles)], 1)
    line = np.array([0, 1, 2.5, 9, 10, 11.5])  # a map keeping every neighbour
    Y = np.stack([line, np.zeros(6)], 1)
    labels = np.array(["a", "a", "a", "b", "b", "b"])
    q = map_quality(X, Y, labels, k=1)
    assert q == {"knn_kept": 1.0, "trustworthiness": 1.0, "knn_acc_2d": 1.0,
                 "knn_acc_prefix": 1.0}  # fmt: skip
    # points 2 (25°) and 5 (115°) swap places on the map: each lands beside the other group
    Y[[2, 5]] = Y[[5, 2]]
    q = map_quality(X, Y, labels, k=1)
    assert q["knn_kept"] == pytest.approx(4 / 6)
    # each intruder is 4th nearest in the prefix space: 1 - 2 (3 + 3) / (6 * 1 * (12 - 3 - 1))
    assert q["trustworthiness"] == pytest.approx(0.75)
    assert q["knn_acc_2d"] == pytest.approx(4 / 6) and q["knn_acc_prefix"] == 1.0


def test_trustworthiness_agrees_with_scikit_learn():
    from sklearn.manifold import trustworthiness

    X, y = mrl_like(n=120, d=16)
    Y = project_2d(X, "pca")
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for k in (1, 5, 12):
        q = map_quality(X, Y, k=k)
        assert q["trustworthiness"] == pytest.approx(
            trustworthiness(Xn, Y, n_neighbors=k, metric="cosine"), abs=1e-9
        )
    with pytest.raises(ValueError, match="below n / 2"):
        map_quality(X, Y, k=60)
    with pytest.raises(ValueError, match="labels must have shape"):
        map_quality(X, Y, labels=y[:5])


def test_a_better_size_keeps_more_structure():
    X, y = mrl_like(n=300)
    maps = embedding_maps(X, [2, 64], sample=None, method="pca")
    lo = map_quality(X[:, :2], maps[2], y)
    hi = map_quality(X[:, :64], maps[64], y)
    assert lo["knn_kept"] > 0.5  # a 2-D prefix mapped to 2-D keeps most of its neighbours
    assert hi["knn_acc_prefix"] >= lo["knn_acc_prefix"]


@pytest.mark.parametrize(("method", "module", "name"),
                         [("tsne", "openTSNE", "openTSNE"), ("umap", "umap", "umap")])  # fmt: skip
def test_a_missing_projection_package_names_itself_and_the_extra(monkeypatch, method, module,
                                                                name):  # fmt: skip
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    X, _ = mrl_like(n=40, d=8)
    with pytest.raises(ImportError, match=rf"needs {name}, which is not installed: pip install "
                                          r"'matryoshka\[maps\]'"):  # fmt: skip
        embedding_maps(X, [4, 8], method=method)


def test_auto_is_tsne_where_opentsne_is_installed_else_pca(monkeypatch):
    assert resolve_method("pca") == "pca" and resolve_method("umap") == "umap"
    monkeypatch.setitem(sys.modules, "openTSNE", None)
    assert resolve_method("auto") == "pca"
    monkeypatch.delitem(sys.modules, "openTSNE")
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return
    assert resolve_method("auto") == "tsne"


def test_tsne_maps_start_from_the_size_above_and_are_seeded():
    pytest.importorskip("openTSNE")
    X, y = mrl_like(n=150, d=16)
    a = embedding_maps(X, [4, 8, 16], method="tsne", sample=None, seed=0)
    b = embedding_maps(X, [4, 8, 16], method="tsne", sample=None, seed=0)
    assert all(np.allclose(a[m], b[m]) for m in a)
    raw = embedding_maps(X, [4, 8, 16], method="tsne", sample=None, seed=0, align="none")
    assert sum(_step(a, [4, 8, 16])) < sum(_step(raw, [4, 8, 16]))
    assert map_quality(X[:, :16], a[16], y)["knn_acc_2d"] > 0.9


def test_importing_the_maps_loads_no_projection_package():
    import subprocess

    code = ("import sys, matryoshka.viz, matryoshka.experiments.html_report, matryoshka.cli\n"
            "print([m for m in ('openTSNE', 'umap', 'numba') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
