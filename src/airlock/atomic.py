"""Atomic file writes: temp file beside the target, fsync, rename, fsync the directory.

A crash at any point leaves either the old file or the new one, never a half-written file
under the final name. Temp names start with `.tmp-` so cleanup can find leftovers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["TMP_PREFIX", "atomic_writer", "fsync_dir", "write_atomic"]

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(target: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces `target`, on error it vanishes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_atomic(target: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_writer(target, mode=mode) as fh:
        fh.write(data)
