"""Crash-safe writes and consistent reads of the files and folders the project owns.

Promises (``docs/reliability.md`` lists the tests that check each):

- **Nothing of the user's is deleted.** A folder is written only where nothing is, where an empty
  folder is, or where a folder of the same kind written by this project is (recognised by its
  marker file, e.g. an index's ``manifest.json``). Anything else is refused with a message unless
  ``overwrite=True``. Either way, every entry of the old folder that the project did not write
  (a user's notes, an ``eval/`` folder inside a model folder) is carried into the new version by
  hard links, so no save deletes it. A regular file is never replaced by a folder.
- **Old or new, never half, through any two crashes.** A folder is built in a temporary sibling
  (``.NAME.tmp-*``) and swapped in with two renames (``NAME`` -> ``.NAME.old``, temporary ->
  ``NAME``); the previous version is deleted only once the new one is in place. Every write first
  finishes or rolls back a swap a crash interrupted (:func:`recover_dir`) and deletes leftover
  temporary folders, so a crash during that recovery, or during the next save, still leaves one
  whole version behind.
- **One writer at a time.** Writers of one folder take an exclusive lock on ``.NAME.lock`` beside
  it (``fcntl.flock``); a second writer waits up to ``lock_timeout`` seconds, then gets a clear
  error.
- **Readers see one whole version.** :class:`FolderReader` opens the folder once and reads every
  file relative to that open folder, so all files come from the same version even while a writer
  swaps in the next one; a file deleted under it makes :func:`read_folder` start again.

A leaf helper: imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, writers are not serialised
    fcntl = None

__all__ = [
    "LOCK_TIMEOUT",
    "FolderKind",
    "FolderLockedError",
    "FolderReader",
    "atomic_dir",
    "atomic_file",
    "check_destination",
    "read_folder",
    "read_json_lines",
    "recover_dir",
    "resolve_dir",
    "sha256_bytes",
    "sha256_file",
    "write_json",
    "write_text",
    "writer_lock",
]

LOCK_TIMEOUT = 30.0  # seconds a second writer waits for the first before it gives up
T = TypeVar("T")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    A folder at ``path`` is refused (``IsADirectoryError``) before anything is written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(path, "w") as f:
        f.write(text)


def read_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON lines file.

    A line that is not valid JSON, or not a JSON object, raises ``ValueError`` naming the file
    and the line.
    """
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}"
                )
            yield n, obj


def sha256_file(path: str | os.PathLike | BinaryIO) -> str:
    """Hex SHA-256 of a file (a path or an open binary file), read in 16 MiB chunks."""
    h = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        f = path if hasattr(path, "read") else stack.enter_context(open(path, "rb"))
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------- locking
class FolderLockedError(OSError):
    """Another process is writing the same folder."""


@contextlib.contextmanager
def writer_lock(
    path: str | os.PathLike, timeout: float = LOCK_TIMEOUT, name: str = "lock"
) -> Iterator[None]:
    """Hold the exclusive lock ``name`` of ``path`` (on ``.NAME.<name>`` beside it).

    ``"lock"`` orders the writes of a folder; ``"run"`` marks a training run writing it. Waits
    up to ``timeout`` seconds for another holder, then raises :class:`FolderLockedError`. The
    lock is advisory: it orders this project's processes, not other programs.
    """
    path = Path(path)
    if fcntl is None:  # pragma: no cover
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.{name}")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    doing = "training into" if name == "run" else "writing"
                    raise FolderLockedError(
                        f"another process is {doing} {path} (it holds {lock.name}); try again "
                        f"when it is done (waited {timeout:g} s)"
                    ) from None
                time.sleep(0.02 + 0.03 * random.random())
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class FolderKind:
    """What a folder written by the project is, and how to tell one from a user's folder.

    Attributes
    ----------
    what : a name for messages, e.g. ``"matryoshka index"``
    marker : the file every folder of this kind holds, e.g. ``"manifest.json"``
    fmt : the marker's JSON ``"format"`` field, or None: any JSON object with ``keys`` counts
    keys : fields the marker's JSON must hold when ``fmt`` is None
    names : a regular expression of the entry names a folder of this kind writes: an old
        version's entry matching it that a new version does not write again is dropped (a
        stale file of ours); every other entry is carried over. None: carry over all.
    """

    what: str
    marker: str
    fmt: str | None = None
    keys: tuple[str, ...] = ()
    names: str | None = None

    def owns(self, folder: Path) -> bool:
        """Whether ``folder`` is empty or a folder of this kind (by its marker file)."""
        entries = [e for e in folder.iterdir()]
        if not entries:
            return True
        try:
            meta = json.loads((folder / self.marker).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(meta, dict):
            return False
        if self.fmt is not None:
            return meta.get("format") == self.fmt
        return all(k in meta for k in self.keys)


def _tmp_siblings(path: Path) -> list[Path]:
    """Temporary folders of unfinished writes of ``path`` (this version's and older names)."""
    if not path.parent.is_dir():
        return []
    new = f".{path.name}.tmp-"
    old_prefix = f".{path.name}."  # before: tempfile.mkdtemp(prefix=".NAME.", suffix=".tmp")
    return [
        p for p in path.parent.iterdir()
        if p.name.startswith(new) or (p.name.startswith(old_prefix) and p.name.endswith(".tmp")
                                      and p.is_dir())
    ]  # fmt: skip


def recover_dir(path: str | os.PathLike) -> None:
    """Finish or roll back a swap of ``path`` a crash interrupted; delete unfinished writes.

    Call it holding :func:`writer_lock`: ``NAME`` missing with ``.NAME.old`` present (a crash
    between the two renames) puts the old version back; ``.NAME.old`` beside a present ``NAME``
    is deleted; so are the temporary folders of writes that never finished.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():
        os.replace(old, path)  # roll back: the previous version, whole
        _fsync_dir(path.parent)
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    for tmp in _tmp_siblings(path):
        shutil.rmtree(tmp, ignore_errors=True)


def check_destination(
    path: str | os.PathLike, kind: FolderKind | None, overwrite: bool = False
) -> None:
    """Refuse a file at ``path``, or a folder of something else unless ``overwrite``.

    What :func:`atomic_dir` checks first; call it early to fail before long work.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(
            f"{path} is a file, not a folder; choose another path for the "
            f"{kind.what if kind else 'folder'} (nothing was written)"
        )
    if not path.is_dir() or kind is None or kind.owns(path) or overwrite:
        return
    found = sorted(e.name for e in path.iterdir())
    shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
    raise FileExistsError(
        f"{path} exists and is not a {kind.what} (it holds {shown}); choose another path, "
        "or overwrite it explicitly (--overwrite), which writes ours into it and keeps "
        "its other files"
    )


def _sync_tree(folder: Path) -> None:
    """fsync every file and folder below ``folder`` (links are left alone)."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            file = os.path.join(dirpath, name)
            if not os.path.islink(file):
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _carry_over(path: Path, tmp: Path, kind: FolderKind | None) -> None:
    """Hard-link into ``tmp`` every entry of ``path`` the new version does not write.

    Links, not moves: until the swap the originals stay where they are, so a crash that leaves
    ``tmp`` behind (and the next save deleting it) loses nothing.
    """
    if not path.is_dir():
        return
    ours = re.compile(kind.names) if kind is not None and kind.names else None
    for entry in path.iterdir():
        dest = tmp / entry.name
        if dest.exists() or dest.is_symlink() or (ours and ours.fullmatch(entry.name)):
            continue  # written anew, or a stale file of ours
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dest)
        elif entry.is_dir():
            shutil.copytree(entry, dest, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dest)


def _link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _swap_in(tmp: Path, path: Path) -> None:
    """``path`` -> ``.NAME.old``, ``tmp`` -> ``path``, then delete the old version."""
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike,
    kind: FolderKind | None = None,
    overwrite: bool = False,
    lock_timeout: float = LOCK_TIMEOUT,
) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it into place on success.

    Yields the temporary folder to write into. See the module docstring for what is promised.

    Parameters
    ----------
    path : the folder to write
    kind : what the folder is; an existing non-empty folder of another kind is refused
        (``FileExistsError``) unless ``overwrite``. None: any existing folder is written over.
    overwrite : write over a folder that is not of ``kind``; entries with the names written are
        replaced and every other entry is kept (as it always is)
    lock_timeout : seconds to wait for another writer of ``path``

    Raises
    ------
    FileExistsError
        ``path`` is a file, or a folder of something else (without ``overwrite``).
    FolderLockedError
        Another process kept writing ``path`` for ``lock_timeout`` seconds.
    """
    path = Path(path)
    try:  # before the lock: a clear error costs no wait
        check_destination(path, kind, overwrite)
    except FileNotFoundError:  # another writer is swapping its version in; checked again below
        pass
    with writer_lock(path, lock_timeout):
        recover_dir(path)
        check_destination(path, kind, overwrite)  # again: another writer may have won
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{random.getrandbits(32):08x}")
        tmp.mkdir(mode=0o777 & ~_UMASK)
        try:
            yield tmp
            _carry_over(path, tmp, kind)
            _sync_tree(tmp)
            _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def resolve_dir(path: str | os.PathLike) -> Path:
    """The folder :func:`atomic_dir` wrote at ``path``, or its previous version after a crash."""
    path = Path(path)
    if path.exists():
        return path
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        return old
    return path


# ------------------------------------------------------------------------------- reading
class FolderReader:
    """Every file of one version of a folder, read through one open handle of the folder.

    Files are opened relative to the folder as it was when the reader was made (``dir_fd``),
    so a writer renaming the next version into place does not mix two versions. Use it through
    :func:`read_folder`, which starts again when the version it holds is deleted under it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.want = Path(path)
        self.path = resolve_dir(path)  # the previous version, when a swap is half done
        self._fd: int | None = None
        if os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY"):
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

    def _opener(self, name: str, flags: int) -> int:
        if os.sep in name or name in ("..", "."):
            raise ValueError(f"{name!r} is not a file name inside {self.path}")
        return os.open(name, flags, dir_fd=self._fd)

    def open(self, name: str) -> BinaryIO:
        """The file ``name`` of this version, opened for binary reading."""
        if self._fd is None:  # pragma: no cover - platforms without dir_fd
            return open(self.path / name, "rb")
        return open(name, "rb", opener=self._opener)

    def is_file(self, name: str) -> bool:
        """Whether this version holds a regular file ``name``."""
        if self._fd is None:  # pragma: no cover - platforms without dir_fd
            return (self.path / name).is_file()
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=self._fd).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def is_current(self) -> bool:
        """Whether the folder read is the one at the path asked for (no writer swapped it out,
        and it is not the previous version a half-done swap left aside)."""
        if self._fd is None:  # pragma: no cover
            return self.path == self.want and self.path.exists()
        try:
            return os.stat(self.want).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False

    def read_text(self, name: str) -> str:
        with self.open(name) as f:
            return f.read().decode("utf-8")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_folder(path: str | os.PathLike, read: Callable[[FolderReader], T], attempts: int = 5) -> T:
    """``read(reader)`` on one whole version of the folder at ``path``.

    A ``FileNotFoundError`` while reading (a writer deleted the version being read after
    swapping in the next) starts again on the new version, up to ``attempts`` times.
    """
    for attempt in range(attempts):
        try:
            with FolderReader(path) as reader:
                return read(reader)
        except FileNotFoundError:
            if attempt == attempts - 1 or not (Path(path).exists() or resolve_dir(path).exists()):
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover
