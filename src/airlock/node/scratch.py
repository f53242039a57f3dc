"""Working directories of `airlock node install`, under the node's state directory.

Release archives are unpacked and package files copied before they are installed; that work
lives in `/var/lib/airlock/tmp/work-*` (under `--root` in a sysroot), never in the shared temp
directory. Each directory holds a lock file its process keeps locked (the lock goes with the
process, even on kill -9), so the next run removes exactly what dead runs left and never what a
live run is using: an interrupted install can be rerun and leaves nothing behind.

    scratch = Scratch.create(root)   # clears dead runs' directories first
    scratch.subdir("archive-")       # private directories inside it
    scratch.close()                  # or at exit; a killed process leaves it to the next run
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from airlock.system import host_path

__all__ = ["SCRATCH_DIR", "STATE_DIR", "Scratch", "remove_dead_scratch"]

STATE_DIR = "/var/lib/airlock"
SCRATCH_DIR = f"{STATE_DIR}/tmp"
_PREFIX = "work-"
_LOCK = ".lock"
_GRACE_SECONDS = 60


def remove_dead_scratch(parent: Path) -> list[Path]:
    """Remove the working directories in `parent` whose process is gone; returns them."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for work in sorted(parent.glob(f"{_PREFIX}*")):
        if not work.is_dir() or work.is_symlink():
            continue
        if _held(work / _LOCK):
            continue  # a live run
        shutil.rmtree(work, ignore_errors=True)
        removed.append(work)
    return removed


def _held(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        # no lock file: a run that died before it took it, or one taking it right now
        try:
            return time.time() - lock.parent.stat().st_mtime < _GRACE_SECONDS
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _cleanup(path: Path, fd: int) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(fd)


class Scratch:
    """One run's working directory (see the module doc)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._finalizer = weakref.finalize(self, _cleanup, path, fd)

    @classmethod
    def create(cls, root: Path = Path("/")) -> Scratch:
        """A new working directory under the node's state directory in `root`, after removing
        what dead runs left there. Where that cannot be written (a dry run by a user who is not
        root), a directory of the same kind in the system's temp directory."""
        for parent in (host_path(SCRATCH_DIR, root), Path(tempfile.gettempdir()) / "airlock-node"):
            try:
                parent.mkdir(parents=True, exist_ok=True)
                remove_dead_scratch(parent)
                path = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=parent))
            except PermissionError:
                continue
            fd = os.open(path / _LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return cls(path, fd)
        raise PermissionError(f"cannot create a working directory under {SCRATCH_DIR}")

    def subdir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.path))

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
