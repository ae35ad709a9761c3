"""Nothing lost: writes over any path, crashes at every step of a save, two crashes in a row,
concurrent writers and readers, files changed under a memory-mapped index.

A crash is simulated faithfully: a forked child runs the save and dies with ``os._exit`` just
before its k-th file-system call (rename, unlink, mkdir, link, fsync), so no cleanup code runs,
for every k the save makes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from matryoshka._io import FolderLockedError, atomic_dir, writer_lock
from matryoshka.cli import main
from matryoshka.index import MatryoshkaIndex

CALLS = ("replace", "rename", "unlink", "rmdir", "mkdir", "link", "fsync")


def vectors(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _die_at(k: int) -> None:
    """In a forked child: exit before the k-th file-system call (k = 0: never)."""
    count = [0]
    for name in CALLS:
        real = getattr(os, name)

        def wrapped(*a, _real=real, **kw):
            count[0] += 1
            if count[0] == k:
                os._exit(17)
            return _real(*a, **kw)

        setattr(os, name, wrapped)


def save_in_child(path: Path, x: np.ndarray, k: int) -> bool:
    """Save an index of ``x`` at ``path`` in a forked child dying at call k; True if it died."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            _die_at(k)
            MatryoshkaIndex(x.shape[1]).add(x).save(path)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status) == 17


def loaded(path: Path) -> np.ndarray:
    index = MatryoshkaIndex.load(path, mmap=False)
    return index.reconstruct(index.ids)


def versions() -> dict[str, np.ndarray]:
    return {"A": vectors(20, 40, 0), "B": vectors(30, 40, 1), "C": vectors(25, 40, 2)}


def which(path: Path, vs: dict[str, np.ndarray]) -> str:
    x = loaded(path)
    found = [k for k, v in vs.items() if v.shape == x.shape and np.array_equal(v, x)]
    assert len(found) == 1, "the index is none of the versions written"
    return found[0]


def test_a_crash_at_every_step_leaves_the_old_or_the_new_index(tmp_path):
    vs = versions()
    k, outcomes = 1, []
    while True:
        path = tmp_path / f"k{k}" / "ix"
        MatryoshkaIndex(40).add(vs["A"]).save(path)
        died = save_in_child(path, vs["B"], k)
        outcomes.append(which(path, vs))  # old or new, whole, never an error
        if not died:
            break
        k += 1
    assert k > 10  # the save makes that many calls: each was a crash point
    assert outcomes[0] == "A" and outcomes[-1] == "B"


def test_two_crashes_in_a_row_at_every_pair_of_steps(tmp_path):
    vs = versions()
    n_first = 1
    while True:
        base = tmp_path / f"first{n_first}"
        path = base / "ix"
        MatryoshkaIndex(40).add(vs["A"]).save(path)
        if not save_in_child(path, vs["B"], n_first):
            break
        n_second = 1
        while True:  # the next save crashes too, at every step of its own (recovery included)
            trial = base / f"second{n_second}"
            trial.mkdir()
            for p in base.iterdir():  # a copy of the state the first crash left
                if p.name.startswith(".ix") or p.name == "ix":
                    os.system(f"cp -a '{p}' '{trial}/'")
            died = save_in_child(trial / "ix", vs["C"], n_second)
            assert which(trial / "ix", vs) in ("A", "B", "C")
            MatryoshkaIndex(40).add(vs["C"]).save(trial / "ix")  # and a clean save still works
            assert which(trial / "ix", vs) == "C"
            left = sorted(p.name for p in trial.iterdir())
            assert left == [".ix.lock", "ix"], left  # leftovers of both crashes cleaned
            if not died:
                break
            n_second += 1
        n_first += 1
    assert n_first > 10


def test_saving_over_a_folder_that_is_not_ours_is_refused(tmp_path, capsys):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "thesis.txt").write_text("draft")
    np.save(tmp_path / "emb.npy", vectors(10, 8, 0))
    assert main(["index", "build", str(tmp_path / "emb.npy"), "--out", str(victim)]) == 2
    err = capsys.readouterr().err
    assert "victim exists and is not a matryoshka index (it holds sub, thesis.txt)" in err
    assert err.count("\n") == 1 and (victim / "thesis.txt").read_text() == "draft"
    with pytest.raises(FileExistsError, match="is not a matryoshka index"):
        MatryoshkaIndex(8).add(vectors(3, 8, 0)).save(victim)
    assert main(["train", "--out", str(victim), "epochs=1", "data.train_subset=50"]) == 2
    assert "is not a matryoshka model folder" in capsys.readouterr().err
    assert sorted(p.name for p in victim.iterdir()) == ["sub", "thesis.txt"]
    # --overwrite writes ours into it and keeps everything else
    argv = ["index", "build", str(tmp_path / "emb.npy"), "--out", str(victim), "--quiet"]
    assert main([*argv, "--overwrite"]) == 0
    assert (victim / "thesis.txt").read_text() == "draft" and (victim / "sub").is_dir()
    assert len(MatryoshkaIndex.load(victim)) == 10
    assert main(argv) == 0  # now it is an index: saved over without the flag, notes still kept
    assert (victim / "thesis.txt").read_text() == "draft"


def test_saving_over_a_file_is_refused_and_leaves_it(tmp_path):
    f = tmp_path / "ix"
    f.write_text("mine")
    for _ in range(2):  # and again: nothing was renamed aside
        with pytest.raises(FileExistsError, match="ix is a file, not a folder"):
            MatryoshkaIndex(8).add(vectors(3, 8, 0)).save(f)
        assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_our_own_extra_entries_survive_a_save(tmp_path):
    path = tmp_path / "ix"
    index = MatryoshkaIndex(8).add(vectors(5, 8, 0), ids=[10, 11, 12, 13, 14])
    index.save(path)
    (path / "notes.md").write_text("what this index is for")
    MatryoshkaIndex(8).add(vectors(4, 8, 1)).save(path)  # ids 0..3 now: no ids.npy
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "notes.md", "panel_0.npy"]
    assert (path / "notes.md").read_text() == "what this index is for"  # kept; stale ids.npy gone


def _writer(path: str, seed: int, n: int, out: mp.Queue) -> None:
    errors = []
    for _ in range(n):
        try:
            MatryoshkaIndex(16).add(vectors(8 + seed, 16, seed)).save(path)
        except Exception as e:  # noqa: BLE001 - any error is what the test counts
            errors.append(f"{type(e).__name__}: {e}")
    out.put(errors)


def test_two_writers_take_turns(tmp_path):
    path = str(tmp_path / "ix")
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, s, 30, out)) for s in (1, 2)]
    for p in procs:
        p.start()
    errors = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert errors == [[], []]  # ordered success: each waits for the other's save
    assert len(MatryoshkaIndex.load(path)) in (9, 10)


def test_a_second_writer_is_refused_clearly_when_it_cannot_wait(tmp_path):
    path = tmp_path / "ix"
    with writer_lock(path):  # another writer holds the folder
        with pytest.raises(FolderLockedError, match="another process is writing .*ix"):
            with atomic_dir(path, lock_timeout=0.1):
                pass
    assert not path.exists()


def _reader(path: str, n: int, out: mp.Queue) -> None:
    sizes, errors = [], []
    for i in range(n):
        try:
            index = MatryoshkaIndex.load(path, mmap=bool(i % 2))
            x = index.reconstruct(index.ids)
            sizes.append(len(x))
            expected = vectors(len(x), 16, len(x) - 8)  # the writer saves n = 8 + seed rows
            if not np.array_equal(x, expected):
                errors.append(f"load {i}: a mix of two versions")
        except Exception as e:  # noqa: BLE001
            errors.append(f"load {i}: {type(e).__name__}: {e}")
    out.put((errors, sorted(set(sizes))))


def test_a_reader_always_sees_one_whole_version(tmp_path):
    path = str(tmp_path / "ix")
    MatryoshkaIndex(16).add(vectors(9, 16, 1)).save(path)
    ctx = mp.get_context("fork")
    out_w, out_r = ctx.Queue(), ctx.Queue()
    writer = ctx.Process(target=_alternate, args=(path, 150, out_w))
    reader = ctx.Process(target=_reader, args=(path, 300, out_r))
    writer.start()
    reader.start()
    errors, sizes = out_r.get(timeout=300)
    assert out_w.get(timeout=300) == []
    writer.join()
    reader.join()
    assert errors == []
    assert sizes == [9, 10]  # it did read both versions


def _alternate(path: str, n: int, out: mp.Queue) -> None:
    errors = []
    for i in range(n):
        seed = 1 + i % 2
        try:
            MatryoshkaIndex(16).add(vectors(8 + seed, 16, seed)).save(path)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
    out.put(errors)


def test_a_file_truncated_under_a_mapped_index_is_an_error_not_a_signal(tmp_path):
    path = tmp_path / "ix"
    MatryoshkaIndex(64).add(vectors(5000, 64, 0)).save(path)
    index = MatryoshkaIndex.load(path, mmap=True)
    index.search(vectors(2, 64, 1), 3)
    os.truncate(path / "panel_1.npy", 1000)  # another program cuts a panel short
    with pytest.raises(ValueError, match="panel_1.npy changed on disk since the index was loaded"):
        index.search(vectors(2, 64, 1), 3)
    # the project's own save never changes a loaded file: a mapped index keeps working
    other = tmp_path / "iy"
    MatryoshkaIndex(64).add(vectors(100, 64, 0)).save(other)
    mapped = MatryoshkaIndex.load(other, mmap=True)
    MatryoshkaIndex(64).add(vectors(50, 64, 2)).save(other)
    assert mapped.search(vectors(1, 64, 3), 2)[1].shape == (1, 2)


def test_a_manifest_edited_by_hand_is_refused(tmp_path):
    path = tmp_path / "ix"
    MatryoshkaIndex(8, "ip").add(vectors(5, 8, 0)).save(path)
    man = json.loads((path / "manifest.json").read_text())
    man["metric"] = "l2"  # results would change without a word
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="fails its own checksum"):
        MatryoshkaIndex.load(path)


def _half_trained(out: Path) -> list[str]:
    """A model folder one epoch into a two-epoch run; the command that resumes it."""
    from matryoshka.train import load_config, train

    argv = ["epochs=2", "model.d=8", "model.dims_start=4", "data.train_subset=100", "device=cpu"]
    train(load_config(None, [*argv, f"out_dir={out}"]), progress=False, stop_after_epoch=1)
    return ["train", "--quiet", "--out", str(out), *argv]


def test_training_refuses_to_restart_over_a_model_without_its_state(tmp_path, capsys):
    out = tmp_path / "m"
    argv = _half_trained(out)
    (out / "train_state.pt").unlink()
    before = (out / "model.safetensors").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a model trained for 1 epoch(s) but no train_state.pt" in err
    assert (out / "model.safetensors").read_bytes() == before  # nothing was overwritten
    assert main([*argv, "--no-resume"]) == 0  # asked for: starts over


def test_a_broken_training_state_is_a_clear_error(tmp_path, capsys):
    import pickle

    out = tmp_path / "m"
    argv = _half_trained(out)
    (out / "train_state.pt").write_bytes(pickle.dumps(os.system))  # would run code if unpickled
    assert main(argv) == 2
    assert "train_state.pt cannot be read as a training state" in capsys.readouterr().err
    (out / "train_state.pt").write_bytes(b"\x80\x02truncated")
    assert main(argv) == 2
    assert "train_state.pt cannot be read as a training state" in capsys.readouterr().err


def test_eval_results_inside_a_model_folder_survive_further_training(tmp_path):
    out = tmp_path / "m"
    argv = _half_trained(out)
    (out / "eval").mkdir()
    (out / "eval" / "results.json").write_text("{}")
    assert main(argv) == 0  # resumes and saves the folder again
    assert (out / "eval" / "results.json").read_text() == "{}"
    assert json.loads((out / "metrics.json").read_text())["complete"]


def test_a_second_training_run_into_the_same_folder_is_refused(tmp_path):
    from matryoshka.train import TrainConfig, train

    cfg = TrainConfig()
    cfg.out_dir = str(tmp_path / "m")
    with writer_lock(cfg.out_dir, timeout=0, name="run"):  # a run in another process
        with pytest.raises(FolderLockedError, match="another process is training into"):
            train(cfg, progress=False)


def test_a_crash_at_every_step_of_a_checkpoint_leaves_a_model(tmp_path):
    """The model folder's save is the same sequence: every crash point leaves epoch 1 or 2."""
    from matryoshka.train import load_config, load_model, read_metrics, train
    from matryoshka.train.checkpoint import save_checkpoint

    cfg = load_config(None, ["model.d=8", "model.dims_start=4", "data.train_subset=100",
                             "device=cpu", "epochs=2", f"out_dir={tmp_path / 'src'}"])  # fmt: skip
    train(cfg, progress=False)
    model, cfg, classes = load_model(tmp_path / "src")  # the recipe as resolved by training
    k = 1
    while True:
        out = tmp_path / f"k{k}" / "m"
        save_checkpoint(out, model, cfg, classes, metrics={"epochs_done": 1})
        pid = os.fork()
        if pid == 0:
            try:
                _die_at(k)
                save_checkpoint(out, model, cfg, classes, metrics={"epochs_done": 2})
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert read_metrics(out)["epochs_done"] in (1, 2)
        assert load_model(out).classes == classes  # whole: config and weights of one version
        if os.WEXITSTATUS(status) != 17:
            assert read_metrics(out)["epochs_done"] == 2
            break
        k += 1
    assert k > 5
