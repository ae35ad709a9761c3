"""``MatryoshkaIndex.tune`` and ``matryoshka index tune``: the chosen funnel meets its target on
held-out queries (not the tuning sample), and is no slower than the exact full-size search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matryoshka.cli import main
from matryoshka.index import MatryoshkaIndex, recall_at_k


def mrl_like(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d))
    x = centers[rng.integers(0, 64, n)] + 0.8 * rng.standard_normal((n, d))
    return (x * (1.0 + np.arange(d)) ** -0.5).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = mrl_like(6600, 128, 0)
    return x[:6000], x[6000:6300], x[6300:]  # corpus, tuning sample, held-out queries


@pytest.mark.parametrize("target", [0.9, 0.97])
def test_tuned_funnel_meets_its_target_on_held_out_queries(data, target):
    xb, sample, held = data
    index = MatryoshkaIndex(128).add(xb)
    result = index.tune(sample, target_recall=target, repeat=1)
    assert result["recall"] >= target and not result["ann"]
    assert result["confirm_recall"] >= target  # met on the confirming half of the sample too
    chosen = [r["funnel"] for r in result["tried"]].index(result["funnel"])
    # every faster candidate was checked on the confirming half and failed there
    assert all("confirm_recall" in r for r in result["tried"][: chosen + 1])
    assert all(r["recall"] >= target for r in result["tried"])
    _, gt = index.search(held, 10)
    _, ids = index.search(held, funnel=result["funnel"])
    assert recall_at_k(ids, gt) >= target


def test_tune_with_an_approximate_first_stage(data):
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        xb, sample, held = data
        index = MatryoshkaIndex(128).add(xb)
        index.build_ann("hnsw", 32, M=16, ef_construction=40, bits=8)
        result = index.tune(sample, 0.95, ann=True, knob_values=[16, 64], repeat=1)
        assert any(r["ann"] for r in result["tried"])
        _, gt = index.search(held, 10)
        _, ids = index.search(held, funnel=result["funnel"], ann=result["ann"])
        assert recall_at_k(ids, gt) >= 0.95
        # left at the chosen setting (the one it had, 128, when an exact funnel won)
        assert index.ann_.ef_search == (result["ann_params"] if result["ann"] else 128)
        only = index.tune(sample, 0.95, ann=True, knob_values=[16, 64], exact_first=False)
        firsts = {(r["ann"], r["funnel"][0][0]) for r in only["tried"]}
        assert firsts <= {(True, 32), (False, 128)}  # the graph's size, or the full size
        assert (True, 32) in firsts
        for r in only["tried"]:
            if r["ann"]:  # faiss walks with max(ef_search, shortlist): the value that ran
                assert r["ann_params"] >= r["funnel"][0][1]
                assert r["ann_params"] in (16, 64) or r["ann_params"] == r["funnel"][0][1]
    finally:
        faiss.omp_set_num_threads(before)


def test_tune_refuses_bad_targets(data):
    xb, sample, _ = data
    index = MatryoshkaIndex(128).add(xb[:500])
    with pytest.raises(ValueError, match="target_recall"):
        index.tune(sample, target_recall=1.5)
    with pytest.raises(ValueError, match="approximate"):
        index.tune(sample, ann=True)


def test_index_tune_command(data, tmp_path, capsys):
    xb, sample, _ = data
    MatryoshkaIndex(128).add(xb[:3000]).save(tmp_path / "ix")
    np.save(tmp_path / "q.npy", sample)
    argv = ["index", "tune", str(tmp_path / "ix"), "--queries", str(tmp_path / "q.npy"),
            "--target-recall", "0.9", "--sample", "200",
            "--json", str(tmp_path / "t.json")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "chosen: --funnel" in out and "| funnel |" in out
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["recall"] >= 0.9 and result["queries"] == 200
