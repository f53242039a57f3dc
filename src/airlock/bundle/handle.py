"""The one door to a bundle: `Bundle.open` verifies once and hands out only verified bytes.

Opening a bundle (the single tar, its parts file or its first volume) opens every volume once
and holds the files open for the handle's life. Everything after that reads those held files
(through `/proc/self/fd/N`, which reopens the held file, never the name), so a file renamed over
the bundle, or a volume swapped, after the handle was opened changes nothing it reads:

1. each volume's size against the parts file (with `hash_content`; volumes are hashed as
   wholes only when something below fails, to name the damaged, swapped or wrong one first);
2. the archive's entries (the hardened index of `airlock.bundle.reader`);
3. the signature of airlock.json under the caller's TrustPolicy, and the expiry;
4. index.json against the digest airlock.json pins: read once, and those bytes are `index`;
5. every blob's sha256 (with `hash_content`), and the graph.

Afterwards the handle gives out airlock.json and index.json as the bytes it checked, blob
readers that hash as they read and raise DigestMismatch at the end when the bytes differ
(`open_blob`), copies into a blob store that publish only matching bytes (`copy_blob`), and the
held files' byte spans of a blob for sendfile (`blob_spans`: hashed at open when `hash_content`;
otherwise `check_blob` hashes them on demand, naming the blob and its volume when they differ).

`on_verified` is a test hook: it runs after verification, before the handle is returned, so a
test can replace the bundle's files at exactly that moment.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from airlock.blobstore import BlobStore
from airlock.bundle.layout import blob_member
from airlock.bundle.manifest import BundleManifest
from airlock.bundle.reader import BundleReader, open_volumes
from airlock.bundle.verify import (
    BundleVerificationError,
    VerifyReport,
    recovery_status,
    verify_reader,
)
from airlock.bundle.volumes import Span, VolumeSet, hash_spans, locate_volumes, volume_problem
from airlock.errors import DigestMismatch, VerificationError
from airlock.oci.digest import Hasher
from airlock.progress import ProgressSink, report_done, report_start
from airlock.trust import TrustPolicy

__all__ = ["Bundle"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class _HeldVolumes(VolumeSet):
    """The volumes as held files (`/proc/self/fd/N`), shown under the names the user gave."""

    shown: str = ""

    def display(self) -> str:
        return self.shown


def _held_path(fd: int) -> Path:
    return Path(f"/proc/self/fd/{fd}")


class _VerifyingReader(io.RawIOBase):
    """A blob's bytes, hashed as they are read; the end of a blob that does not match its
    digest (or its size) raises DigestMismatch instead of returning end of file."""

    def __init__(self, raw: BinaryIO, digest: str, size: int, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._hasher = Hasher()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        data = self._raw.read(len(view))
        if not data:
            self._check()
            return 0
        view[: len(data)] = data
        self._hasher.update(data)
        return len(data)

    def _check(self) -> None:
        got = self._hasher.digest
        if got != self._digest or self._hasher.size != self._size:
            raise DigestMismatch(self._what, self._digest, got)

    def close(self) -> None:
        self._raw.close()
        super().close()


class Bundle:
    """An open, verified bundle; see the module doc. Use as a context manager."""

    def __init__(
        self,
        path: Path,
        volumes: VolumeSet,
        files: Sequence[int],
        reader: BundleReader,
        report: VerifyReport,
        index_bytes: bytes,
        index: dict[str, Any],
        hashed: bool,
    ) -> None:
        self.path = path
        self.volumes = volumes  # as found by name, for messages
        self._files = list(files)
        self._reader = reader
        self.report = report
        self.index_bytes = index_bytes
        self.index = index
        self.content_hashed = hashed  # every blob was hashed at open

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        trust: TrustPolicy,
        workers: int | None = None,
        hash_content: bool = True,
        today: Any = None,
        expiry: bool = True,
        on_verified: Callable[[Path], None] | None = None,
        progress: ProgressSink | None = None,
    ) -> Bundle:
        """Open and verify; a BundleVerificationError (exit 3) names every problem found."""
        path = Path(path)
        workers = workers or os.cpu_count() or 1
        volumes = locate_volumes(path)
        files: list[int] = []
        try:
            problems = _hold(volumes, files)
            held = _HeldVolumes(
                volumes.tar_name,
                tuple(_held_path(fd) for fd in files),
                volumes.parts,
                volumes.parts_path,
                shown=volumes.display(),
            )
            volume_bytes = 0
            notes: tuple[str, ...] = ()
            if not problems and hash_content:
                problems = _check_held_sizes(held)
            recovery = (
                recovery_status(volumes.parts_path, problems, workers) if hash_content else None
            )
            if recovery is not None:
                notes = recovery.notes  # damaged recovery volumes of an intact bundle
                if recovery.damage is not None:  # data volumes damaged: repairable or not
                    problems = [*problems, recovery.damage]
            if problems:
                raise BundleVerificationError(
                    VerifyReport(ok=False, path=path, problems=tuple(problems), recovery=notes),
                    recovery.hint if recovery is not None else None,
                )
            try:
                reader = open_volumes(held)
            except VerificationError as exc:
                failed = BundleVerificationError(
                    VerifyReport(ok=False, path=path, problems=(exc.message,))
                )
                raise _name_volumes(held, failed, workers, hash_content, progress) from exc
            try:
                verified = verify_reader(
                    reader,
                    path=path,
                    trust=trust,
                    workers=workers,
                    hash_content=hash_content,
                    today=today,
                    volume_bytes=volume_bytes,
                    expiry=expiry,
                    recovery_notes=notes,
                    progress=progress,
                )
            except BundleVerificationError as exc:
                reader.close()
                raise _name_volumes(held, exc, workers, hash_content, progress) from exc
            except BaseException:
                reader.close()
                raise
            if hash_content and held.parts is not None and verified.report.signed_by is None:
                # nothing checked airlock.json's signature: the parts file's digests are the
                # check left for its bytes, so the volumes are hashed as wholes
                unsure = BundleVerificationError(verified.report._replace(ok=False))
                named = _name_volumes(held, unsure, workers, hash_content, progress)
                if named is not unsure:
                    reader.close()
                    raise named
        except BaseException:
            for fd in files:
                os.close(fd)
            raise
        bundle = cls(
            path,
            volumes,
            files,
            reader,
            verified.report,
            verified.index_bytes,
            verified.index,
            hash_content,
        )
        if on_verified is not None:
            on_verified(path)
        return bundle

    # --- what was verified ------------------------------------------------------------------

    @property
    def manifest(self) -> BundleManifest:
        return self._reader.manifest

    @property
    def manifest_bytes(self) -> bytes:
        return self._reader.manifest_bytes

    @property
    def signature(self) -> bytes | None:
        return self._reader.signature

    @property
    def size(self) -> int:
        return self._reader.size

    def display(self) -> str:
        return self.volumes.display()

    # --- blobs --------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self._reader.has_blob(digest)

    def blob_digests(self) -> list[str]:
        return self._reader.blob_digests()

    def blob_size(self, digest: str) -> int:
        return self._reader.member(blob_member(digest)).size

    def _what(self, digest: str) -> str:
        entry = self.manifest.blob_map().get(digest)
        role = f" ({entry.role}, {entry.source or 'no source'})" if entry else ""
        return f"blob {digest}{role} in {self.display()}"

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob's bytes, hashed as they are read (DigestMismatch at the end if they differ)."""
        raw = self._reader.open_blob(digest)
        reader = _VerifyingReader(raw, digest, self.blob_size(digest), self._what(digest))
        return io.BufferedReader(reader, buffer_size=_CHUNK)

    def read_blob(self, digest: str, *, limit: int) -> bytes:
        size = self.blob_size(digest)
        if size > limit:
            raise VerificationError(f"{self._what(digest)} is {size} bytes, more than {limit}")
        with self.open_blob(digest) as fh:
            return fh.read()

    def copy_blob(
        self, digest: str, store: BlobStore, *, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        """Copy a blob into `store`; it is published there only if its bytes match (once hashed:
        the store's writer checks what it writes). `on_bytes` hears of each chunk copied."""
        with self._reader.open_blob(digest) as src, store.writer(digest) as w:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            w.commit(self._what(digest))

    def blob_spans(self, digest: str) -> list[Span]:
        """Where the blob's bytes are in the held files (for sendfile)."""
        return self._reader.blob_spans(digest)

    def check_blob(
        self, digest: str, *, chunk: int = _CHUNK, on_bytes: Callable[[int], None] | None = None
    ) -> str | None:
        """Hash the blob's bytes in the held files: None when they match its digest and size,
        else the problem, naming the blob and the volume(s) that hold it. `on_bytes` hears of
        each chunk hashed (and may raise to stop)."""
        spans = self.blob_spans(digest)
        try:
            hexd, n = hash_spans(spans, chunk=chunk, on_bytes=on_bytes)
        except OSError as exc:
            return f"{self._what(digest)} cannot be read from {self._volumes_of(spans)}: {exc}"
        if f"sha256:{hexd}" == digest and n == self.blob_size(digest):
            return None
        return (
            f"{self._what(digest)} does not match its digest in {self._volumes_of(spans)}: "
            f"the bytes are sha256:{hexd} ({n} bytes)"
        )

    def _volumes_of(self, spans: Sequence[Span]) -> str:
        held = list(self._reader.volumes.paths)
        names: list[str] = []
        for span in spans:
            name = (
                self.volumes.paths[held.index(span.path)].name
                if span.path in held
                else str(span.path)
            )
            if name not in names:
                names.append(name)
        return ("volume " if len(names) == 1 else "volumes ") + ", ".join(names)

    def damaged_volumes(self) -> list[str]:
        """The held volumes that no longer match the parts file (to name after a mismatch)."""
        if self.volumes.parts is None:
            return []
        problems, _ = _check_held_volumes(self._reader.volumes, workers=2)
        return problems

    # --- life ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._reader.close()
        files, self._files = self._files, []
        for fd in files:
            os.close(fd)

    def __enter__(self) -> Bundle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _hold(volumes: VolumeSet, files: list[int]) -> list[str]:
    """Open every volume (appending to `files`); the volumes that cannot be opened."""
    problems: list[str] = []
    for p in volumes.paths:
        try:
            files.append(os.open(p, os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            problems.append(f"volume {p.name} missing")
        except OSError as exc:
            problems.append(f"volume {p.name} cannot be read: {exc.strerror}")
    return problems


def _check_held_sizes(volumes: VolumeSet) -> list[str]:
    """Each held volume's size against the parts file (a short or long volume is named before
    anything inside is read). Their bytes are not hashed here: every byte of the tar is checked
    by verify (blobs by digest, the rest by structure), and a failure hashes the volumes to
    name the damaged one (`_name_volumes`)."""
    parts = volumes.parts
    if parts is None:
        return []
    problems: list[str] = []
    if sum(v.size for v in parts.volumes) != parts.size:
        problems.append(f"parts file {volumes.display()} is inconsistent: sizes do not add up")
    for v, p in zip(parts.volumes, volumes.paths, strict=True):
        size = os.stat(p).st_size
        if size != v.size:
            problems.append(
                f"volume {v.name} is {size} bytes, expected {v.size} (truncated or wrong file)"
            )
    return problems


def _name_volumes(
    volumes: VolumeSet,
    failed: BundleVerificationError,
    workers: int,
    hash_content: bool,
    progress: ProgressSink | None,
) -> BundleVerificationError:
    """A split bundle failed inside: hash its volumes against the parts file, so the damaged,
    swapped or wrong volume is named first, then what failed inside (the blob, the entry)."""
    if volumes.parts is None or not hash_content:
        return failed
    found, _ = _check_held_volumes(volumes, workers=workers, progress=progress)
    if not found:
        return failed
    recovery = recovery_status(volumes.parts_path, found, workers)
    if recovery is not None and recovery.damage is not None:
        found.append(recovery.damage)
    report = failed.report._replace(problems=(*found, *failed.report.problems))
    return BundleVerificationError(report, recovery.hint if recovery is not None else None)


def _check_held_volumes(
    volumes: VolumeSet, *, workers: int, progress: ProgressSink | None = None
) -> tuple[list[str], int]:
    """Each held volume's size and sha256 against the parts file; a volume holding another's
    bytes is named as swapped. Returns (problems, bytes hashed)."""
    parts = volumes.parts
    if parts is None:
        return [], 0
    problems: list[str] = []
    if sum(v.size for v in parts.volumes) != parts.size:
        problems.append(f"parts file {volumes.display()} is inconsistent: sizes do not add up")
    by_hash = {v.sha256: v.name for v in parts.volumes}

    label = f"check volumes of {volumes.display()}"

    def advance(n: int) -> None:
        if progress is not None:
            progress.advance(label, n)

    def one(i: int) -> tuple[int, str]:
        size = os.stat(volumes.paths[i]).st_size
        hexd, _ = hash_spans([Span(volumes.paths[i], 0, size)], on_bytes=advance)
        return size, hexd

    report_start(progress, label, parts.size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        measured = list(pool.map(one, range(len(parts.volumes))))
    report_done(progress, label)
    hashed = 0
    for v, (size, hexd) in zip(parts.volumes, measured, strict=True):
        hashed += size
        problem = volume_problem(v, size, hexd, by_hash)
        if problem is not None:
            problems.append(problem)
    return problems, hashed
