"""Saving and loading a MatryoshkaIndex: round trips, atomic saves, refused corrupt files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from matryoshka.index import MatryoshkaIndex


def vectors(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * (1.0 + np.arange(d)) ** -0.5).astype(np.float32)


@pytest.mark.parametrize(
    "precision, rerank",
    [("float32", None), ("float16", None), ("int8", None), ("binary", "float16")],
)
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(tmp_path, precision, rerank, mmap):
    xb, xq = vectors(500, 40, 0), vectors(7, 40, 1)
    index = MatryoshkaIndex(40, "l2", precision, rerank=rerank).add(xb, ids=np.arange(500) * 3)
    index.save(tmp_path / "ix")
    back = MatryoshkaIndex.load(tmp_path / "ix", mmap=mmap)
    assert (back.d, back.metric, back.precision, back.rerank, len(back)) == (
        40,
        "l2",
        precision,
        rerank,
        500,
    )
    assert isinstance(back._store.panels[0], np.memmap) == mmap
    for kw in ({"k": 5}, {"k": 5, "dim": 8}, {"funnel": [(8, 50), (40, 5)]}):
        D1, I1 = index.search(xq, **kw)
        D2, I2 = back.search(xq, **kw)
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_allclose(D1, D2)
    assert set(np.unique(back.search(xq, 5)[1])) <= set(np.arange(500) * 3)
    back.add(vectors(2, 40, 3))  # a loaded (memory-mapped) index still takes new vectors
    assert back.ids[-2:].tolist() == [1498, 1499] and len(back) == 502


def test_manifest_describes_the_files(tmp_path):
    MatryoshkaIndex(300, "cosine", "int8").add(vectors(10, 300, 0)).save(tmp_path / "ix")
    man = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert man["format_version"] == 2 and man["d"] == 300 and man["count"] == 10
    assert man["precision"] == "int8" and man["metric"] == "cosine"
    assert man["panels"] == [[0, 32], [32, 64], [64, 128], [128, 256], [256, 300]]
    assert set(man["files"]) == {f"panel_{i}.npy" for i in range(5)} | {"params.npy"}
    assert all(len(f["sha256"]) == 64 for f in man["files"].values())


def test_save_replaces_the_previous_index(tmp_path):
    MatryoshkaIndex(8).add(vectors(5, 8, 0)).save(tmp_path / "ix")
    MatryoshkaIndex(8).add(vectors(9, 8, 1)).save(tmp_path / "ix")
    assert len(MatryoshkaIndex.load(tmp_path / "ix")) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ix.lock", "ix"]  # no temporary left


_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from matryoshka.index import MatryoshkaIndex

    save = np.save
    def slow_save(*args, **kwargs):  # a slow disk: stall after the first file is written
        save(*args, **kwargs)
        print("writing", flush=True)
        time.sleep(120)
    np.save = slow_save
    x = np.random.default_rng(1).standard_normal((2000, 16)).astype(np.float32)
    MatryoshkaIndex(16).add(x).save(sys.argv[1])
    """
)


def test_killed_save_leaves_the_previous_index(tmp_path):
    path = tmp_path / "ix"
    old = vectors(50, 16, 0)
    MatryoshkaIndex(16).add(old).save(path)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()  # the child is now inside save(), mid-write
        assert line.strip() == "writing", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".ix.tmp-") for p in tmp_path.iterdir())  # the half-written one
    back = MatryoshkaIndex.load(path)
    assert len(back) == 50
    np.testing.assert_array_equal(back.reconstruct(np.arange(50)), old)
    MatryoshkaIndex(16).add(vectors(3, 16, 2)).save(path)  # and the next save works
    assert len(MatryoshkaIndex.load(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ix.lock", "ix"]  # and cleans up


def test_crash_between_the_two_renames_finds_the_old_index(tmp_path):
    path = tmp_path / "ix"
    MatryoshkaIndex(8).add(vectors(6, 8, 0)).save(path)
    path.rename(tmp_path / ".ix.old")  # the state after 'move old aside', before 'move new in'
    assert len(MatryoshkaIndex.load(path)) == 6


@pytest.fixture()
def saved(tmp_path) -> Path:
    path = tmp_path / "ix"
    MatryoshkaIndex(16, "ip", "int8").add(vectors(40, 16, 0), ids=np.arange(40) + 10).save(path)
    return path


def _edit_manifest(path: Path, checksum: bool = True, **changes) -> None:
    """Change manifest fields; ``checksum`` recomputes its checksum (a careful forger)."""
    from matryoshka.index.manifest import _checksum

    man = json.loads((path / "manifest.json").read_text())
    man.update(changes)
    if checksum:
        man["checksum"] = _checksum(man)
    (path / "manifest.json").write_text(json.dumps(man))


def test_flipped_byte_fails_the_checksum(saved):
    f = saved / "panel_0.npy"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="panel_0.npy fails its sha256 checksum"):
        MatryoshkaIndex.load(saved)


def test_truncated_file_is_refused(saved):
    f = saved / "panel_0.npy"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt: panel_0.npy has .* bytes, the manifest says"):
        MatryoshkaIndex.load(saved, verify=False)


def test_missing_file_is_refused(saved):
    (saved / "params.npy").unlink()
    with pytest.raises(ValueError, match="incomplete: params.npy is missing"):
        MatryoshkaIndex.load(saved)


def test_unknown_version_and_other_folders_are_refused(saved, tmp_path):
    with pytest.raises(ValueError, match="no manifest.json"):
        MatryoshkaIndex.load(tmp_path / "nothing")
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MatryoshkaIndex.load(saved)
    (saved / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a matryoshka index manifest"):
        MatryoshkaIndex.load(saved)
    (saved / "manifest.json").write_text(
        json.dumps({"format": "matryoshka-index", "format_version": 99})
    )
    with pytest.raises(ValueError, match="format version 99"):
        MatryoshkaIndex.load(saved)


def test_mismatched_manifest_is_refused(saved):
    _edit_manifest(saved, d=24)
    with pytest.raises(ValueError, match="lists panels"):
        MatryoshkaIndex.load(saved)


def test_mismatched_count_is_refused(saved):
    _edit_manifest(saved, count=41)
    with pytest.raises(ValueError, match="does not match its manifest"):
        MatryoshkaIndex.load(saved)


def test_pickled_arrays_are_never_loaded(saved):
    import hashlib

    f = saved / "ids.npy"
    np.save(f, np.array([{"evil": 1}] * 40, dtype=object), allow_pickle=True)
    files = json.loads((saved / "manifest.json").read_text())["files"]
    files["ids.npy"].update(
        bytes=f.stat().st_size, sha256=hashlib.sha256(f.read_bytes()).hexdigest()
    )
    _edit_manifest(saved, files=files)
    with pytest.raises(ValueError, match="ids.npy cannot be read"):
        MatryoshkaIndex.load(saved, mmap=False)
