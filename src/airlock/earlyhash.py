"""Work that can start before the command line's libraries are imported (standard library only).

Importing typer, rich, pydantic and cryptography takes an interpreter about half a second of
CPU, while `airlock bundle verify` hashes gigabytes with both cores. `start` looks at the
arguments first: for `bundle verify PATH` it indexes the archive (its tar headers, by the
standard-library indexer the bootstrap script also uses) and forks a child that hashes every
blob member on two threads while the rest of airlock imports (a process of its own: threads
here would wait for the GIL the imports hold); it reports a line per member over a pipe, a few
lines per write. Before the fork it imports only the indexer, the volume finder and hashlib:
each module imported there delays the hashing by its import time while the second core idles.
`bundle.verify` then takes a result here for the exact byte ranges it would hash (same files, still the same inode, size and times); what
is not here, or no longer matches, it hashes itself. Nothing here decides anything: a digest
computed early is compared by verify as any other, and any error here only means no head
start.
"""

from __future__ import annotations

import _thread  # not threading: what runs before the fork imports only what it needs
import atexit
import os
import time

from airlock.rangehash import hash_ranges  # standard library only

TYPE_CHECKING = False  # not typing's: importing typing would delay the fork
if TYPE_CHECKING:
    from collections.abc import Sequence

    from airlock.standalone.tarindex import TarEntry

__all__ = ["CHUNK", "hashed", "index", "pieces", "start", "stop"]

_BLOB_DIR = "blobs/sha256/"
_HEX = frozenset("0123456789abcdef")
CHUNK = 512 << 10  # L2-sized: 3% less CPU per byte than 4 MiB reads here (both threads hashing)
_WORKERS = 2
_BATCH_SECONDS = 0.02

Key = tuple[tuple[str, int, int], ...]  # (file, offset, length) per piece of a member

_jobs: dict[Key, int] = {}  # the member's number in the child's list
_identity: dict[str, tuple[int, int, int, int]] = {}
_results: dict[int, tuple[str, int]] = {}
_state: dict[str, int] = {}  # fd: the pipe from the child; pid: the child
_pending = [b""]  # the part of a line read so far
_lock = _thread.allocate_lock()
_reals: dict[str, str] = {}
_index: dict[tuple[str, ...], list[TarEntry]] = {}  # the files indexed -> every member


def _real(path: str) -> str:
    """os.path.realpath, once per path (verify asks for every blob: 5 lstat calls each)."""
    real = _reals.get(path)
    if real is None:
        real = _reals[path] = os.path.realpath(path)
    return real


def index(paths: Sequence[str]) -> list[TarEntry] | None:
    """The archive's members as `start` indexed them, if these are the files it indexed and
    they are still the same (inode, size and times): the early verify need not read the
    headers again. None: index them yourself."""
    try:
        real = tuple(_real(p) for p in paths)
        every = _index.get(real)
        if every is None or any(_id(p) != _identity.get(p) for p in real):
            return None
    except OSError:
        return None
    return every


def _id(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _is_blob(name: str) -> bool:
    """blobs/sha256/<64 lowercase hex> (no re before the fork: it costs the start a millisecond)."""
    digest = name[len(_BLOB_DIR) :]
    return name.startswith(_BLOB_DIR) and len(digest) == 64 and _HEX.issuperset(digest)


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


def pieces(
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
    return hash_ranges(key, chunk=CHUNK)


def _child(keys: list[Key], fd: int) -> None:
    """In the forked child: hash every member on `_WORKERS` threads, a line per result, sent
    at most every `_BATCH_SECONDS` (each write wakes the parent on a core both threads use)
    and at each thread's end."""
    lock = _thread.allocate_lock()
    todo = list(enumerate(keys))
    lines: list[str] = []
    sent = [time.monotonic()]

    def send() -> None:  # with lock
        data = "".join(lines).encode()
        lines.clear()
        sent[0] = time.monotonic()
        while data:
            data = data[os.write(fd, data) :]

    def work(done: _thread.LockType) -> None:
        try:
            while True:
                with lock:
                    if not todo:
                        send()
                        return
                    i, key = todo.pop(0)
                try:
                    hexd, n = _hash(key)
                except OSError:
                    hexd, n = "-", -1
                with lock:
                    lines.append(f"{i} {hexd} {n}\n")
                    if time.monotonic() - sent[0] >= _BATCH_SECONDS:
                        send()
        except OSError:  # the parent is gone: nobody to hash for
            with lock:
                todo.clear()
        finally:
            done.release()  # the thread's end, as threading's join would see it

    ends = []
    for _ in range(_WORKERS):
        done = _thread.allocate_lock()
        done.acquire()
        _thread.start_new_thread(work, (done,))
        ends.append(done)
    for done in ends:
        done.acquire()


def start(argv: Sequence[str]) -> None:
    """Begin hashing the blobs of the bundle `argv` verifies, in a child process forked before
    any library is imported (no-op for any other command)."""
    path = _bundle_arg(argv)
    if path is None or os.environ.get("AIRLOCK_NO_EARLY_HASH") or not hasattr(os, "fork"):
        return
    try:
        from airlock.standalone.tarindex import VolumeReader, iter_entries
        from airlock.standalone.volumes import volume_paths

        paths = [os.path.realpath(p) for p in volume_paths(path)]
        for p in paths:
            _identity[p] = _id(p)
        with VolumeReader(paths) as reader:
            volumes = list(zip(paths, reader.sizes, strict=True))
            every = list(iter_entries(reader.read_at, reader.size))
    except Exception:  # no head start; verify finds and names any problem
        return
    _index[tuple(paths)] = every
    entries = [e for e in every if _is_blob(e.name)]
    entries.sort(key=lambda e: (-e.size, e.name))  # largest first: the threads end together
    keys = [tuple(pieces(volumes, e.offset, e.size)) for e in entries]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hash, report, and leave without running the parent's exit code
        code = 0
        try:
            os.close(read_fd)
            _child(keys, write_fd)
        except BaseException:
            code = 1  # the parent's reader sees the pipe close and hashes the rest itself
        os._exit(code)
    os.close(write_fd)
    _jobs.update((key, i) for i, key in enumerate(keys))
    _state.update(fd=read_fd, pid=pid)
    atexit.register(stop)  # verify refused before it asked: the child ends with this process


def _read_until(index: int) -> None:
    """Take the child's lines until `index` is among them or the pipe closes (with _lock)."""
    while index not in _results and (fd := _state.get("fd")) is not None:
        data = os.read(fd, 1 << 16)
        if not data:
            stop()
            return
        *lines, _pending[0] = (_pending[0] + data).split(b"\n")
        for line in lines:
            i, hexd, n = line.decode().split(" ")
            _results[int(i)] = (hexd, int(n))


def hashed(pieces: Sequence[tuple[str, int, int]]) -> tuple[str, int] | None:
    """(sha256 hex, bytes) of these byte ranges if they were hashed early from files that are
    still the ones hashed; waits for a hash under way. None: hash them yourself."""
    if not _jobs:
        return None
    key = tuple((_real(p), o, n) for p, o, n in pieces)
    index = _jobs.get(key)
    if index is None:
        return None
    try:
        with _lock:
            _read_until(index)
        result = _results.get(index)
        if result is None or any(_id(p) != _identity.get(p) for p, _, _ in key):
            return None  # not hashed, or replaced or written since: the early hash says nothing
    except (OSError, ValueError):  # hash it again, and report what that finds
        return None
    if result[1] != sum(n for _, _, n in key):
        return None  # cut short
    return result


def stop() -> None:
    """Hash nothing more (verify failed early, or is done): end the child, close the pipe."""
    from contextlib import suppress

    fd, pid = _state.pop("fd", None), _state.pop("pid", None)
    if pid is not None:
        import signal  # here, not before the fork (it imports enum), as contextlib

        with suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        with suppress(OSError):
            os.waitpid(pid, 0)
    if fd is not None:
        with suppress(OSError):
            os.close(fd)
