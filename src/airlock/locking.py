"""An inter-process lock on a file (fcntl.flock), re-entrant within a thread, with a deadline.

What a read-modify-write of a shared file needs (the store's index.json and sequence record,
the download cache's partial files): processes take the flock, threads of one process take
the lock object's RLock first (flock alone does not exclude threads that open the file through
one lock object), and the same thread may take it again inside (a Store transaction that calls
the layout's own locked merge). The kernel drops a flock when its holder dies, even on kill -9,
so a crashed writer never leaves the lock held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from airlock.errors import AirlockError

__all__ = ["FileLock", "LockTimeout", "async_locked", "locked"]

_POLL = 0.05


class LockTimeout(AirlockError):
    """Another process held the lock for longer than the deadline."""


class FileLock:
    """`with lock:` holds `path` exclusively; see the module doc."""

    def __init__(self, path: Path, *, timeout: float = 600, what: str | None = None) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.what = what or str(path)
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise self._timeout()
        try:
            if self._depth == 0:
                self._fd = self._take()
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()

    @property
    def held(self) -> bool:
        return self._depth > 0

    def _take(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise self._timeout() from None
                time.sleep(_POLL)

    def _timeout(self) -> LockTimeout:
        return LockTimeout(
            f"{self.what} stayed locked by another airlock process for {self.timeout:.0f}s",
            hint=f"wait for it to finish (see `fuser {self.path}`), then run again",
        )


@contextlib.contextmanager
def locked(path: Path, *, timeout: float = 600, what: str | None = None) -> Iterator[FileLock]:
    """A one-off FileLock held for the block."""
    with FileLock(path, timeout=timeout, what=what) as lock:
        yield lock


@contextlib.asynccontextmanager
async def async_locked(
    path: Path, *, timeout: float = 6 * 3600, what: str | None = None
) -> AsyncIterator[None]:
    """The same flock for a coroutine: waits with `asyncio.sleep`, never blocking the loop.
    Each holder opens the file itself, so two tasks of one process exclude each other too."""
    import asyncio  # here: the blocking lock's users (bundle verify, load) never load asyncio

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FileLock(path, timeout=timeout, what=what)._timeout() from None
                await asyncio.sleep(_POLL)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
