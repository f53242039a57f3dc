"""Work that can start before the command line's libraries are imported (standard library only).

Importing typer, rich, pydantic and cryptography takes an interpreter about half a second of
CPU, while `airlock bundle verify` hashes gigabytes with both cores. `start` looks at the
arguments first: for `bundle verify PATH` it indexes the archive (its tar headers, by the
standard-library indexer the bootstrap script also uses) and hashes every blob member on
daemon threads while the rest of airlock imports. `bundle.verify` then takes a result here for
the exact byte ranges it would hash (same files, still the same inode, size and times); what
is not here, or no longer matches, it hashes itself. Nothing here decides anything: a digest
computed early is compared by verify as any other, and any error here only means no head
start.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future

__all__ = ["hashed", "start", "stop"]

_BLOB = re.compile(r"^blobs/sha256/[0-9a-f]{64}$")
_CHUNK = 4 << 20  # a hashing thread waits for the GIL between reads: fewer, larger reads
_WORKERS = 2

Key = tuple[tuple[str, int, int], ...]  # (file, offset, length) per piece of a member

_jobs: dict[Key, Future[tuple[str, int]]] = {}
_identity: dict[str, tuple[int, int, int, int]] = {}
_stop = threading.Event()


def _id(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _bundle_arg(argv: Sequence[str]) -> str | None:
    """PATH of `[global flags] bundle verify [options] PATH`, if that is the command."""
    try:
        at = next(i for i in range(len(argv) - 1) if argv[i : i + 2] == ["bundle", "verify"])
    except StopIteration:
        return None
    if any(not a.startswith("-") for a in argv[:at]):
        return None  # something else comes first: not this command
    rest = list(argv[at + 2 :])
    while rest:
        arg = rest.pop(0)
        if arg in ("--key", "--progress"):  # options of verify that take a value
            rest = rest[1:]
        elif not arg.startswith("-"):
            return arg
    return None


def _pieces(
    volumes: Sequence[tuple[str, int]], offset: int, length: int
) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    start = 0
    for path, size in volumes:
        end = start + size
        if length > 0 and offset < end and offset + length > start:
            lo = max(offset, start)
            n = min(offset + length, end) - lo
            out.append((path, lo - start, n))
        start = end
    return out


def _hash(key: Key) -> tuple[str, int]:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    total = 0
    for path, offset, length in key:
        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            left = length
            while left > 0 and not _stop.is_set():
                n = fh.readinto(view[: min(_CHUNK, left)])
                if not n:
                    break
                h.update(view[:n])
                left -= n
                total += n
    return h.hexdigest(), total


def _worker(queue: list[tuple[Key, Future[tuple[str, int]]]], lock: threading.Lock) -> None:
    while not _stop.is_set():
        with lock:
            if not queue:
                return
            key, future = queue.pop(0)
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(_hash(key))
        except BaseException as exc:  # the caller hashes it itself
            future.set_exception(exc)


def start(argv: Sequence[str]) -> None:
    """Begin hashing the blobs of the bundle `argv` verifies (no-op for any other command)."""
    path = _bundle_arg(argv)
    if path is None or os.environ.get("AIRLOCK_NO_EARLY_HASH"):
        return
    try:
        from airlock.standalone.tarindex import VolumeReader, iter_entries
        from airlock.standalone.volumes import locate

        paths = [os.path.realpath(p) for p in locate(path).paths]
        for p in paths:
            _identity[p] = _id(p)
        with VolumeReader(paths) as reader:
            volumes = list(zip(paths, reader.sizes, strict=True))
            entries = [e for e in iter_entries(reader.read_at, reader.size) if _BLOB.match(e.name)]
    except Exception:  # no head start; verify finds and names any problem
        return
    entries.sort(key=lambda e: (-e.size, e.name))  # largest first: the threads end together
    queue: list[tuple[Key, Future[tuple[str, int]]]] = []
    for e in entries:
        key = tuple(_pieces(volumes, e.offset, e.size))
        future: Future[tuple[str, int]] = Future()
        _jobs[key] = future
        queue.append((key, future))
    lock = threading.Lock()
    for _ in range(_WORKERS):
        threading.Thread(target=_worker, args=(queue, lock), daemon=True).start()


def hashed(pieces: Sequence[tuple[str, int, int]]) -> tuple[str, int] | None:
    """(sha256 hex, bytes) of these byte ranges if they were hashed early from files that are
    still the ones hashed; waits for a hash under way. None: hash them yourself."""
    if not _jobs:
        return None
    key = tuple((os.path.realpath(p), o, n) for p, o, n in pieces)
    future = _jobs.get(key)
    if future is None:
        return None
    try:
        result = future.result()
        if any(_id(p) != _identity.get(p) for p, _, _ in key):
            return None  # replaced or written since: the early hash says nothing
    except Exception:  # hash it again, and report what that finds
        return None
    if result[1] != sum(n for _, _, n in key):
        return None  # stopped or cut short
    return result


def stop() -> None:
    """Hash nothing more (verify failed early, or is done)."""
    _stop.set()
    for future in _jobs.values():
        future.cancel()
