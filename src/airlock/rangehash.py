"""sha256 of byte ranges of files, read in large chunks (standard library only: `earlyhash`
runs it before any library is imported; `bundle.volumes.hash_spans` for everything else)."""

from __future__ import annotations

import hashlib
import os

TYPE_CHECKING = False  # not typing's: `earlyhash` imports this before its fork
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["hash_ranges"]


def hash_ranges(
    pieces: Sequence[tuple[str | os.PathLike[str], int, int]],
    *,
    chunk: int,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """sha256 hex and byte count of the concatenated (file, offset, length) ranges (for
    threads: the GIL is released while reading and hashing); `on_bytes` hears of each chunk."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    for path, offset, length in pieces:
        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fh.fileno(), offset, length, os.POSIX_FADV_SEQUENTIAL)
            left = length
            while left > 0:
                n = fh.readinto(view[: min(chunk, left)])
                if not n:
                    break
                h.update(view[:n])
                left -= n
                total += n
                if on_bytes is not None:
                    on_bytes(n)
    return h.hexdigest(), total
