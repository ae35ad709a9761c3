"""Where a split's image files live: a folder or an uncompressed tar, and what they hold.

A source reads one member's bytes by name (``read(name)``); :func:`_open_source` finds the split
under a root (a folder wins over a tar), and :func:`_list` lists its classes (sorted folder names)
and its ``(member, label)`` samples in a fixed order, with a fingerprint that changes when the
source does. Tars are read with positioned reads through one file handle per process, so a
source is safe to use in ``DataLoader`` workers.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class _Source:
    """Where the image files of one split live; ``read(name)`` returns a member's bytes."""

    path: Path

    def read(self, name: str) -> bytes:
        """The bytes of member ``name`` (a path relative to the source, with ``/``)."""
        raise NotImplementedError

    def describe(self, name: str) -> str:
        """Member ``name`` as a user finds it, for error messages."""
        return f"{self.path / name}"


class _FolderSource(_Source):
    """Image files under a folder of class folders (``path/<class>/.../<image>``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> bytes:
        """The bytes of the file ``path / name``."""
        return (self.path / name).read_bytes()

    def list(self) -> tuple[list[str], dict[str, list[str]], tuple[int, int, int]]:
        """Class folder names, their image files (sorted), and (count, bytes, max mtime)."""
        classes = sorted(
            e.name for e in os.scandir(self.path) if e.is_dir() and not e.name.startswith(".")
        )
        files: dict[str, list[str]] = {}
        count = total = newest = 0
        for cls in classes:
            found = []
            for dirpath, dirnames, filenames in os.walk(self.path / cls):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = Path(dirpath).relative_to(self.path)
                for f in filenames:
                    if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                        continue
                    st = os.stat(os.path.join(dirpath, f))
                    count += 1
                    total += st.st_size
                    newest = max(newest, st.st_mtime_ns)
                    found.append((rel / f).as_posix())
            files[cls] = sorted(found)
        return classes, files, (count, total, newest)


class _TarSource(_Source):
    """Members of an uncompressed tar under one prefix, read with positioned reads."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path, self.prefix = path, prefix  # prefix: "train/" or "" (class folders at the top)
        self.members: dict[str, tuple[int, int]] = {}  # name below prefix -> (offset, size)
        self._fd: int | None = None
        self._pid: int | None = None

    def describe(self, name: str) -> str:
        """Member ``name`` as ``member <prefix><name> of <tar>``."""
        return f"member {self.prefix}{name} of {self.path}"

    def list(self) -> tuple[list[str], dict[str, list[str]]]:
        """Index the tar: class names and their image members (sorted)."""
        try:
            tar = tarfile.open(self.path, "r:")  # plain tar only: members must be seekable
        except tarfile.ReadError as e:
            raise ValueError(
                f"{self.path} is not an uncompressed tar file ({e}); decompress it "
                "(e.g. `gunzip`) or extract it and pass the folder"
            ) from None
        dirs: set[str] = set()
        tops: set[str] = set()
        files: dict[str, list[str]] = {}
        with tar:
            for m in tar:
                name = m.name.removeprefix("./")
                if name not in ("", "."):
                    tops.add(name.split("/")[0])
                if not name.startswith(self.prefix):
                    continue
                rest = name[len(self.prefix) :].strip("/")
                if not rest or any(p.startswith(".") for p in rest.split("/")):
                    continue
                if m.isdir():
                    dirs.add(rest.split("/")[0])
                elif m.isfile() and "/" in rest and rest.lower().endswith(IMAGE_EXTENSIONS):
                    self.members[rest] = (m.offset_data, m.size)
                    files.setdefault(rest.split("/")[0], []).append(rest)
                elif m.isfile() and "/" in rest:
                    dirs.add(rest.split("/")[0])
        if self.prefix and not self.members and not dirs:
            found = ", ".join(sorted(tops)) or "nothing"
            raise ValueError(
                f"tar {self.path} has no members under {self.prefix!r} (top level: {found})"
            )
        classes = sorted(dirs | set(files))
        for cls in classes:
            files.setdefault(cls, []).sort()
        return classes, files

    def read(self, name: str) -> bytes:
        """The bytes of member ``name``, by a positioned read (the tar must be listed first)."""
        offset, size = self.members[name]
        if self._fd is None or self._pid != os.getpid():  # one handle per (forked) process
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = os.getpid()
        if hasattr(os, "pread"):
            return os.pread(self._fd, size, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)  # Windows: no pread
        return os.read(self._fd, size)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def _open_source(root: Path, split: str | None) -> _FolderSource | _TarSource:
    """The source of ``split`` under ``root``: ``root/<split>/``, ``root/<split>.tar``, a tar's
    ``<split>/`` members, or with ``split=None`` the folder or tar ``root`` itself."""
    if not root.exists():
        raise FileNotFoundError(f"image data not found: {root}")
    if root.is_file():
        if not tarfile.is_tarfile(root):
            raise ValueError(f"{root} is a file but not a tar file")
        return _TarSource(root, f"{split.strip('/')}/" if split else "")
    if split is None:
        return _FolderSource(root)
    if (root / split).is_dir():
        return _FolderSource(root / split)
    if (root / f"{split}.tar").is_file():
        return _TarSource(root / f"{split}.tar", f"{split}/")
    found = ", ".join(sorted(p.name for p in root.iterdir() if not p.name.startswith(".")))
    raise FileNotFoundError(
        f"no folder {split!r} and no {split}.tar in {root} (found: {found or 'nothing'})"
    )


def _list(source: _FolderSource | _TarSource) -> tuple[list[str], list[tuple[str, int]], Any]:
    """Classes, (member, label) samples in a fixed order, and a fingerprint of the source."""
    if isinstance(source, _FolderSource):
        classes, files, fingerprint = source.list()
    else:
        classes, files = source.list()
        st = source.path.stat()
        fingerprint = (st.st_size, st.st_mtime_ns)
    if not classes:
        raise ValueError(f"no class folders in {source.path} (expected split/class/image.jpg)")
    empty = [c for c in classes if not files[c]]
    if empty:
        raise ValueError(
            f"class folder(s) with no images in {source.path}: {', '.join(empty)} "
            f"(image extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    samples = [(name, label) for label, c in enumerate(classes) for name in files[c]]
    return classes, samples, fingerprint
