"""Atomic file writes: temp file beside the target, fsync, rename, fsync the directory.

A crash at any point leaves either the old file or the new one, never a half-written file
under the final name. Temp names start with `.tmp-`, and a writer holds a lock on its temp file
while it lives, so `remove_dead_temps` removes only what a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TMP_PREFIX",
    "atomic_writer",
    "fsync_dir",
    "lock_as_live",
    "remove_dead_temps",
    "write_atomic",
]

TMP_PREFIX = ".tmp-"


def lock_as_live(fd: int) -> None:
    """Mark a temp file as being written (the lock goes with the process, even on kill -9)."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_dead_temps(directory: Path, *, prefix: str = TMP_PREFIX) -> int:
    """Remove temp files in `directory` whose writer is gone (unlocked); returns how many."""
    removed = 0
    if not directory.is_dir():
        return 0
    for tmp in directory.glob(f"{prefix}*"):
        if tmp.is_symlink():  # a symlink about to be renamed into place: made and moved at once
            tmp.unlink(missing_ok=True)
            removed += 1
            continue
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer
        finally:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(target: Path, *, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces `target`, on error it vanishes.
    `durable=False` skips the fsyncs: for a memo whose reader takes a torn or empty file
    (a power cut) as no memo, where each fsync cost a cold create ~20 ms."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
    lock_as_live(fd)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
        if durable:
            fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_atomic(target: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    with atomic_writer(target, mode=mode, durable=durable) as fh:
        fh.write(data)
