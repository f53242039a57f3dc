"""Write a bundle: the OCI layout, the files artifact, the SBOM and airlock.json, as one tar.

`write_bundle` takes what the fetcher produced (images and files whose blobs are verified and
present in a BlobStore), generates the small blobs (files artifact manifest, SBOM, empty config)
into that store, then streams one deterministic, uncompressed tar:

    airlock.json, airlock.json.sig (if signed), oci-layout, index.json, blobs/, blobs/sha256/,
    then every blob once, sorted by digest

Every header is fixed (mtime 0, uid/gid 0, no user/group names, mode 0644/0755, PAX format as
written by Python's tarfile: plain ustar headers unless a value needs an extension), so the same
content gives the same bytes. Blobs are copied in 1 MiB chunks from the store (memory stays flat)
and re-hashed on the way, so a corrupt cache never ends up in a bundle.

The tar goes to a temp name in the output directory and is renamed at the end; any failure
(ENOSPC...) removes it and raises an AirlockError. With `split=SIZE` the same stream is cut into
volumes `NAME.airlock.tar.000, .001, ...` plus `NAME.airlock.parts.json` (each volume's size and
sha256, and the sha256 of the whole tar), written last.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import airlock
from airlock.atomic import TMP_PREFIX, fsync_dir, lock_as_live, remove_dead_temps, write_atomic
from airlock.blobstore import BlobStore
from airlock.bundle.bootvol import (
    BOOT_PARTS,
    BOOT_RECOVERY,
    BOOTSTRAP_SCRIPT,
    BootMember,
    boot_volume_paths,
    bootstrap_script,
    find_boot_volumes,
    write_boot_volume,
)
from airlock.bundle.compression import (
    ANNOTATION_CONTENT_DIGEST,
    ANNOTATION_CONTENT_SIZE,
    RAW_KINDS,
    stored_media_type,
)
from airlock.bundle.layout import (
    AIRLOCK_JSON,
    ANNOTATION_BUNDLE_NAME,
    ANNOTATION_BUNDLE_SEQUENCE,
    ANNOTATION_FILE_KIND,
    ANNOTATION_FILE_PLATFORM,
    ANNOTATION_FILE_URL,
    ANNOTATION_FILE_VERSION,
    BLOB_DIR,
    BLOBS_DIR,
    BUNDLE_NAME_RE,
    EMPTY_CONFIG_DATA,
    EMPTY_CONFIG_DESCRIPTOR,
    EMPTY_CONFIG_DIGEST,
    FILE_NAME_RE,
    FILES_ARTIFACT_TYPE,
    FORMAT_COMPRESSED,
    FORMAT_RECOVERY,
    INDEX_JSON,
    MIN_VOLUME_SIZE,
    OCI_LAYOUT,
    SBOM_MEDIA_TYPE,
    SBOM_TITLE,
    SIGNATURE,
    blob_member,
    bundle_filename,
    file_media_type,
    recovery_index_name,
    recovery_volume_name,
)
from airlock.bundle.manifest import (
    BaseRef,
    BlobEntry,
    BundleManifest,
    ChecksumEntry,
    FileEntry,
    ImageEntry,
    IndexRef,
    RecoveryEntry,
    StoredEntry,
    ToolInfo,
)
from airlock.bundle.recovery import (
    ChunkedVolume,
    RecoveryIndex,
    RecoveryPlan,
    boot_copies_for,
    encode,
    plan_recovery,
    write_index,
)
from airlock.bundle.reuse import forget, load_record, save_record
from airlock.bundle.sbom import build_sbom
from airlock.bundle.signing import SIGNATURE_SIZE, sign
from airlock.bundle.volumes import PartsFile, VolumeInfo, parts_file_path, write_parts
from airlock.content import Blob, BlobRole, FileArtifact, ImageArtifact
from airlock.errors import AirlockError, DigestMismatch, UsageError
from airlock.oci.digest import is_digest, sha256_digest
from airlock.oci.layout import OCI_LAYOUT_CONTENT, canonical_json, image_descriptor
from airlock.oci.media import (
    ANNOTATION_REF_NAME,
    ANNOTATION_TITLE,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
)
from airlock.progress import ProgressSink, report_done, report_start

__all__ = ["Arrivals", "BundleContent", "WriteResult", "build_manifest", "write_bundle"]

_CHUNK = 1 << 20
_DEPTH = 3  # chunks in flight between the reading thread and the writing one
_FLUSH_EVERY = 256 << 20  # start writing back this much to the disk while the rest streams in
OUTPUT_RECORDS = "outputs"  # in the blob store's root: what each bundle output holds
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


@dataclass(frozen=True)
class BundleContent:
    """Everything a bundle carries; blobs of images and files must be in the BlobStore."""

    name: str
    channel: str
    sequence: int
    spec: dict[str, Any]
    resolved: dict[str, Any]
    images: Sequence[ImageArtifact]
    files: Sequence[FileArtifact]
    wheelhouse: Sequence[FileArtifact] = ()
    base: str | None = None  # digest of the inventory a delta bundle was built against
    omitted: Sequence[str] = ()  # digests the target already holds (not carried)
    expires: str | None = None  # ISO date after which `load` refuses the bundle


@dataclass(frozen=True)
class WriteResult:
    path: Path  # the tar, or the parts file when split
    volumes: tuple[Path, ...]  # the volumes when split, else ()
    size: int  # bytes of the tar stream
    sha256: str  # sha256:<hex> of the whole tar stream
    blob_count: int
    unique_blob_bytes: int
    manifest: BundleManifest = field(repr=False)
    signed: bool = False
    recovery_volumes: tuple[Path, ...] = ()
    boot_volumes: tuple[Path, ...] = ()  # copies of the boot volume (with recovery)
    recovery_index: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file written: the tar, or the volumes (and the recovery volumes, index and
        boot copies) and the parts file."""
        if not self.volumes:
            return (self.path,)
        index = (self.recovery_index,) if self.recovery_index else ()
        return (*self.volumes, *self.recovery_volumes, *index, *self.boot_volumes, self.path)


@dataclass(frozen=True)
class _Generated:
    manifest: BundleManifest
    index_bytes: bytes
    generated: dict[str, bytes]  # digest -> bytes of blobs airlock made (files manifest, SBOM)


def _check_content(content: BundleContent) -> None:
    if not BUNDLE_NAME_RE.match(content.name):
        raise UsageError(
            f"bundle name {content.name!r} is not valid",
            "use letters, digits, '.', '_' and '-' (at most 128), starting with a letter or digit",
        )
    if content.sequence < 0:
        raise UsageError(f"bundle sequence must be >= 0, got {content.sequence}")
    names: set[str] = {SBOM_TITLE}
    for f in (*content.files, *content.wheelhouse):
        if not FILE_NAME_RE.match(f.name):
            raise UsageError(f"file name {f.name!r} must be a plain file name (no '/', not '..')")
        if f.name in names:
            raise UsageError(f"two files in the bundle are named {f.name!r}")
        names.add(f.name)
        if not is_digest(f.digest):
            raise UsageError(f"file {f.name} has an invalid digest {f.digest!r}")
        if f.stored is not None and f.kind in RAW_KINDS:
            raise UsageError(f"{f.name} ({f.kind}) is read by the bootstrap: it stays uncompressed")
    refs: dict[str, str] = {}
    for i in content.images:
        if refs.setdefault(i.reference, i.digest) != i.digest:
            raise UsageError(f"image {i.reference} is listed with two different digests")
    for d in content.omitted:
        if not is_digest(d):
            raise UsageError(f"omitted digest {d!r} is not a sha256 digest")


def _file_blob(f: FileArtifact) -> Blob:
    media_type = file_media_type(f.kind, f.media_type)
    if f.stored is not None:
        return Blob(
            f.stored.digest,
            f.stored.size,
            stored_media_type(media_type, f.stored.compression),
            BlobRole.FILE,
            f.url,
        )
    return Blob(f.digest, f.size, media_type, BlobRole.FILE, f.url)


def _stored_entry(f: FileArtifact) -> StoredEntry | None:
    if f.stored is None:
        return None
    return StoredEntry(
        compression=f.stored.compression,  # type: ignore[arg-type]  # validated by pydantic
        digest=f.stored.digest,
        size=f.stored.size,
    )


def _checksum(f: FileArtifact) -> ChecksumEntry | None:
    if f.checksum is None:
        return None
    return ChecksumEntry(
        algorithm=f.checksum.algorithm,  # type: ignore[arg-type]  # validated by pydantic
        value=f.checksum.value.lower(),
        source=f.checksum.source,
    )


def _files_manifest(name: str, files: Sequence[FileArtifact], sbom: bytes) -> bytes:
    layers: list[dict[str, Any]] = []
    for f in sorted(files, key=lambda f: f.name):
        annotations = dict(f.annotations)
        annotations.update({ANNOTATION_TITLE: f.name, ANNOTATION_FILE_KIND: f.kind})
        if f.url:
            annotations[ANNOTATION_FILE_URL] = f.url
        if f.version:
            annotations[ANNOTATION_FILE_VERSION] = f.version
        if f.platform:
            annotations[ANNOTATION_FILE_PLATFORM] = f.platform
        blob = _file_blob(f)
        if f.stored is not None:
            annotations[ANNOTATION_CONTENT_DIGEST] = f.digest
            annotations[ANNOTATION_CONTENT_SIZE] = str(f.size)
        layers.append(
            {
                "mediaType": blob.media_type,
                "digest": blob.digest,
                "size": blob.size,
                "annotations": annotations,
            }
        )
    layers.append(
        {
            "mediaType": SBOM_MEDIA_TYPE,
            "digest": sha256_digest(sbom),
            "size": len(sbom),
            "annotations": {ANNOTATION_TITLE: SBOM_TITLE},
        }
    )
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": FILES_ARTIFACT_TYPE,
            "config": EMPTY_CONFIG_DESCRIPTOR,
            "layers": layers,
            "annotations": {ANNOTATION_BUNDLE_NAME: name},
        }
    )


def _pick_blobs(candidates: Iterable[Blob]) -> dict[str, BlobEntry]:
    """One entry per digest; for a blob reached several ways the smallest (role, source) wins,
    so the choice does not depend on input order."""
    by_digest: dict[str, list[Blob]] = {}
    for blob in candidates:
        by_digest.setdefault(blob.digest, []).append(blob)
    out: dict[str, BlobEntry] = {}
    for digest, cands in by_digest.items():
        sizes = {b.size for b in cands}
        if len(sizes) > 1:
            raise UsageError(f"blob {digest} is listed with different sizes {sorted(sizes)}")
        best = min(cands, key=lambda b: (b.role.value, b.source, b.media_type))
        out[digest] = BlobEntry(
            digest=digest,
            size=best.size,
            media_type=best.media_type,
            role=best.role.value,
            source=best.source,
        )
    return out


def build_manifest(content: BundleContent) -> _Generated:
    """Compute airlock.json, index.json and the generated blobs (pure; nothing written)."""
    _check_content(content)
    version = airlock.__version__
    all_files = [*content.files, *content.wheelhouse]
    sbom = build_sbom(
        bundle_name=content.name, tool_version=version, images=content.images, files=all_files
    )
    files_manifest = _files_manifest(content.name, all_files, sbom)
    sbom_digest = sha256_digest(sbom)
    fm_digest = sha256_digest(files_manifest)
    generated = {
        sbom_digest: sbom,
        fm_digest: files_manifest,
        EMPTY_CONFIG_DIGEST: EMPTY_CONFIG_DATA,
    }

    omitted = set(content.omitted) - set(generated)
    candidates: list[Blob] = [b for image in content.images for b in image.blobs]
    candidates += [_file_blob(f) for f in all_files]
    candidates += [
        Blob(sbom_digest, len(sbom), SBOM_MEDIA_TYPE, BlobRole.SBOM),
        Blob(fm_digest, len(files_manifest), OCI_MANIFEST, BlobRole.FILES_MANIFEST),
        Blob(EMPTY_CONFIG_DIGEST, 2, OCI_EMPTY, BlobRole.META),
    ]
    picked = _pick_blobs(candidates)
    # A file's upstream checksum goes with its blob entry.
    checksums = {f.digest: _checksum(f) for f in sorted(all_files, key=lambda f: f.name)}
    blobs = tuple(
        entry.model_copy(update={"checksum": checksums.get(d)}) if checksums.get(d) else entry
        for d, entry in sorted(picked.items())
        if d not in omitted
    )

    descriptors = [
        image_descriptor(i.reference, i.media_type, i.digest, i.size) for i in content.images
    ]
    descriptors.append(
        {
            "mediaType": OCI_MANIFEST,
            "artifactType": FILES_ARTIFACT_TYPE,
            "digest": fm_digest,
            "size": len(files_manifest),
            # no ref name: `ctr images import` would take it for an image and fail to unpack it
            "annotations": {
                ANNOTATION_BUNDLE_NAME: content.name,
                ANNOTATION_BUNDLE_SEQUENCE: str(content.sequence),
            },
        }
    )
    descriptors.sort(key=lambda d: (d["annotations"].get(ANNOTATION_REF_NAME, ""), d["digest"]))
    index_bytes = canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    )

    manifest = BundleManifest(
        schema="airlock.bundle/v1",
        format_version=FORMAT_COMPRESSED if any(f.stored for f in all_files) else "1.0",
        tool=ToolInfo(name="airlock", version=version),
        name=content.name,
        channel=content.channel,
        sequence=content.sequence,
        created_from=sha256_digest(canonical_json(content.spec)),
        spec=content.spec,
        resolved=content.resolved,
        index=IndexRef(digest=sha256_digest(index_bytes), size=len(index_bytes)),
        blobs=blobs,
        images=tuple(
            ImageEntry(
                reference=i.reference,
                digest=i.digest,
                media_type=i.media_type,
                size=i.size,
                platforms=tuple(i.platforms),
                blobs=tuple(b.digest for b in i.blobs),
                content_size=sum(b.size for b in i.blobs),
            )
            for i in sorted(content.images, key=lambda i: i.reference)
        ),
        files=tuple(
            FileEntry(
                name=f.name,
                kind=f.kind,
                url=f.url,
                digest=f.digest,
                size=f.size,
                media_type=file_media_type(f.kind, f.media_type),
                platform=f.platform,
                version=f.version,
                checksum=_checksum(f),
                annotations=dict(f.annotations),
                stored=_stored_entry(f),
            )
            for f in sorted(all_files, key=lambda f: f.name)
        ),
        files_manifest=fm_digest,
        sbom=sbom_digest,
        base=BaseRef(inventory=content.base) if content.base else None,
        omitted=tuple(sorted(omitted)),
        expires=content.expires,
    )
    return _Generated(manifest, index_bytes, generated)


# --- the tar stream ----------------------------------------------------------------------------


def _header(name: str, size: int, *, directory: bool = False) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = 0 if directory else size
    ti.mtime = 0
    ti.mode = 0o755 if directory else 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


class _Sink:
    """Where the tar stream goes: one temp file, or volumes cut every `split` bytes."""

    def __init__(self, final: Path, split: int | None, *, reuse: bool = False) -> None:
        self.final = final
        self.split = split
        self.whole = hashlib.sha256()
        self.size = 0
        self.temps: list[Path] = []
        self.volumes: list[VolumeInfo] = []
        self._fh: BinaryIO | None = None
        self._vol_hash = hashlib.sha256()
        self._vol_size = 0
        self.recovery: list[tuple[Path, Path]] = []  # (temp, final) of each recovery volume
        # Existing outputs equal to the stream are kept (see airlock.bundle.reuse): while
        # `_old` matches, nothing is written; `kept` are outputs left as they were.
        self._reuse = reuse
        self._old: BinaryIO | None = None
        self._old_path: Path | None = None
        self._same = 0
        self.kept: set[Path] = set()
        # fdatasync of what is written so far, on a thread of its own: the disk writes back
        # while the rest streams in, so the last fsync waits for the tail only
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="airlock-flush")
        self._flushing: Future[None] | None = None
        self._unflushed = 0

    def _output(self, number: int) -> Path:
        return (
            self.final
            if self.split is None
            else self.final.with_name(f"{self.final.name}.{number:03d}")
        )

    def _start_volume(self) -> None:
        """Compare the next volume with the output already there, if any; else open a temp."""
        out = self._output(len(self.temps))
        if self._reuse and out.is_file() and not out.is_symlink():
            try:
                self._old = out.open("rb")
            except OSError:
                self._old = None
            if self._old is not None:
                self._old_path, self._same = out, 0
                self._vol_hash = hashlib.sha256()
                self._vol_size = 0
                return
        self._open_next()

    def _diverge(self) -> BinaryIO:
        """The stream left the old output: a temp file with the prefix that matched."""
        old, same = self._old, self._same
        assert old is not None
        vol_hash, vol_size = self._vol_hash, self._vol_size
        fh = self._open_next()
        self._vol_hash, self._vol_size = vol_hash, vol_size
        old.seek(0)
        left = same
        while left:
            chunk = old.read(min(left, _CHUNK))
            if not chunk:
                raise OSError(errno.EIO, f"{self._old_path} shrank while it was read")
            fh.write(chunk)
            left -= len(chunk)
        old.close()
        self._old = self._old_path = None
        return fh

    def _compare(self, view: memoryview) -> bool:
        """Whether `view` equals the old output's next bytes (consumed when it does)."""
        assert self._old is not None
        theirs = self._old.read(len(view))
        if theirs != view:
            return False
        self._same += len(view)
        return True

    def _open_next(self) -> BinaryIO:
        self._wait_flush()
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + self.final.name + ".", dir=self.final.parent)
        os.fchmod(fd, 0o644)  # a bundle is not secret (it is signed), and is carried around
        lock_as_live(fd)  # a rerun after a kill removes the temp only when no writer holds it
        self.temps.append(Path(tmp))
        self._fh = os.fdopen(fd, "wb")
        self._vol_hash = hashlib.sha256()
        self._vol_size = 0
        return self._fh

    def _flush_early(self, fh: BinaryIO, n: int) -> None:
        self._unflushed += n
        if self._unflushed < _FLUSH_EVERY:
            return
        if self._flushing is not None:
            if not self._flushing.done():
                return
            self._flushing.result()  # a failed write-back (EIO, ENOSPC) is raised here
        fh.flush()
        self._unflushed = 0
        self._flushing = self._flusher.submit(os.fdatasync, fh.fileno())

    def _wait_flush(self) -> None:
        flushing, self._flushing = self._flushing, None
        self._unflushed = 0
        if flushing is not None:
            flushing.result()

    def _close_current(self) -> None:
        if self._old is not None:
            if self._old.read(1):  # the old output is longer: not the same bytes
                self._diverge()
            else:
                assert self._old_path is not None
                self._old.close()
                self.kept.add(self._old_path)
                self.temps.append(self._old_path)  # published as it is (a rename onto itself)
                self._old = self._old_path = None
                self._fh = None
                self._record_volume()
                return
        if self._fh is None:
            return
        self._wait_flush()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        self._record_volume()

    def _record_volume(self) -> None:
        if self.split is not None:
            number = len(self.volumes)
            self.volumes.append(
                VolumeInfo(
                    name=f"{self.final.name}.{number:03d}",
                    size=self._vol_size,
                    sha256=self._vol_hash.hexdigest(),
                )
            )

    def write(self, data: bytes | memoryview) -> None:
        self.hash(data)
        self.put(data)

    def hash(self, data: bytes | memoryview) -> None:
        """The whole stream's hash: the one part of `write` that `put` does not touch, so the
        two can run on two threads (in order, each)."""
        self.whole.update(data)

    def put(self, data: bytes | memoryview) -> None:
        """Everything `write` does but the whole stream's hash."""
        view = memoryview(data)
        self.size += len(view)
        while len(view):
            if self._fh is None and self._old is None:
                self._start_volume()
            room = len(view) if self.split is None else self.split - self._vol_size
            part = view[:room]
            if self._old is not None and not self._compare(part):
                self._diverge()
            if self._fh is not None:
                self._fh.write(part)
                self._flush_early(self._fh, len(part))
            if self.split is None:
                return
            self._vol_hash.update(part)
            self._vol_size += len(part)
            view = view[len(part) :]
            if self._vol_size == self.split:
                self._close_current()

    def finish(self) -> None:
        if self._fh is None and self._old is None and not self.temps:
            self._open_next()
        self._close_current()

    def close(self) -> None:
        """Stop the flushing thread (after a write-back that is still running)."""
        self._flusher.shutdown(wait=True)

    def discard(self) -> None:
        self._flusher.shutdown(wait=True)
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._old is not None:
            self._old.close()
            self._old = None
        for t in (*self.temps, *(tmp for tmp, _ in self.recovery)):
            if t not in self.kept:
                t.unlink(missing_ok=True)


class Arrivals:
    """Blobs still on their way into the store while the bundle is written (bundle create
    fetches layers as the writer streams the tar): the writer waits for each one it reaches;
    a failed fetch stops it with that failure."""

    def __init__(self, pending: Iterable[str]) -> None:
        self._cond = threading.Condition()
        self._pending = set(pending)
        self._error: BaseException | None = None

    def expect(self, digests: Iterable[str]) -> None:
        with self._cond:
            self._pending.update(digests)

    def expects(self, digest: str) -> bool:
        with self._cond:
            return digest in self._pending

    def arrived(self, digest: str) -> None:
        with self._cond:
            self._pending.discard(digest)
            self._cond.notify_all()

    def stop(self, error: BaseException) -> None:
        """No more arrivals: a writer waiting (now or later) for a pending blob gets `error`."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def wait(self, digest: str) -> None:
        with self._cond:
            while digest in self._pending and self._error is None:
                self._cond.wait()
            if digest in self._pending:
                assert self._error is not None
                raise AirlockError(
                    f"blob {digest} did not arrive: {self._error}",
                    "see the fetch error; a rerun fetches what is missing",
                ) from self._error


class _Behind:
    """The sink's work a few chunks behind the reading thread (reads, blob hashes), on two
    threads of its own: one hashes the whole stream (`_Sink.hash`), the other writes it
    (`_Sink.put`: volumes, their hashes, the file). hashlib and file I/O release the GIL, so
    the three use both cores; done one after the other on one thread, the hash and the write
    were what a bundle's write waited for (1.45 s and 1.15 s of a 1.6 GB stream's 2.8 s).
    Each thread takes the chunks in order; an error is raised in the reading thread at the
    next chunk or at `drain`."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="airlock-write")
        self._hashing = ThreadPoolExecutor(1, thread_name_prefix="airlock-hash")
        self._pending: deque[tuple[Future[None], Future[None], bytearray | None]] = deque()
        self._free = [bytearray(_CHUNK) for _ in range(_DEPTH)]
        self.offset = 0  # of the stream's next byte (handed over, maybe not yet written)

    def buffer(self) -> bytearray:
        while not self._free:
            self._reap()
        return self._free.pop()

    def write(self, data: bytes | memoryview, buf: bytearray | None = None) -> None:
        self.offset += len(data)
        hashed = self._hashing.submit(self._sink.hash, data)
        self._pending.append((hashed, self._pool.submit(self._sink.put, data), buf))
        if len(self._pending) > 2 * _DEPTH:
            self._reap()

    def _reap(self) -> None:
        hashed, written, buf = self._pending.popleft()
        try:
            written.result()
        finally:
            try:
                hashed.result()  # the buffer is free only when both threads are done with it
            finally:
                if buf is not None:
                    self._free.append(buf)

    def drain(self) -> None:
        while self._pending:
            self._reap()

    def stop(self) -> None:
        """After a failure: let queued chunks finish (their errors are moot), then stop."""
        for hashed, written, _ in self._pending:
            hashed.cancel()
            written.cancel()
        self._pool.shutdown(wait=True)
        self._hashing.shutdown(wait=True)
        self._pending.clear()


def _copy_blob(
    out: _Behind,
    blobs: BlobStore,
    entry: BlobEntry,
    *,
    progress: ProgressSink | None,
    label: str,
    arrivals: Arrivals | None,
    hashed: bool = False,
) -> None:
    """One blob's bytes into the stream, hashed again on the way (the reading thread; the
    stream's own hash is on the writing one): a corrupt cache never ends up in a bundle.
    `hashed`: this run downloaded the blob and hashed it as it arrived, seconds ago; it is
    copied without a second hash."""
    if arrivals is not None:
        arrivals.wait(entry.digest)
    hasher = None if hashed else hashlib.sha256()
    copied = 0
    try:
        src = blobs.open(entry.digest)
    except FileNotFoundError:
        raise AirlockError(
            f"blob {entry.digest} ({entry.source or entry.role}) is not in {blobs.root}",
            "fetch the content again (`airlock bundle create` fetches what is missing)",
        ) from None
    with src as fh:
        while True:
            buf = out.buffer()
            n = fh.readinto(buf)
            if not n:
                out.write(b"", buf)  # hands the buffer back, in order
                break
            view = memoryview(buf)[:n]
            if hasher is not None:
                hasher.update(view)
            copied += n
            if copied > entry.size:
                out.write(b"", buf)
                break
            out.write(view, buf)
            if progress is not None:
                progress.advance(label, n)
    actual = entry.digest if hasher is None else "sha256:" + hasher.hexdigest()
    if copied != entry.size or actual != entry.digest:
        raise DigestMismatch(
            f"blob {entry.digest} ({entry.source or entry.role}) in {blobs.root}",
            entry.digest,
            actual if copied == entry.size else f"{copied} bytes instead of {entry.size}",
            hint="the cache is corrupt; remove that blob and fetch again",
        )


def _stream_tar(
    sink: _Sink,
    *,
    manifest_bytes: bytes,
    signature: bytes | None,
    index_bytes: bytes,
    blobs: BlobStore,
    entries: Sequence[BlobEntry],
    progress: ProgressSink | None = None,
    label: str = "write",
    arrivals: Arrivals | None = None,
    hashed: Collection[str] = (),
) -> dict[str, int]:
    """Stream the tar into `sink`; returns each blob's offset in the stream."""
    out = _Behind(sink)
    offsets: dict[str, int] = {}
    try:

        def small(name: str, data: bytes) -> None:
            out.write(_header(name, len(data)))
            out.write(data)
            out.write(_padding(len(data)))

        small(AIRLOCK_JSON, manifest_bytes)
        if signature is not None:
            small(SIGNATURE, signature)
        small(OCI_LAYOUT, OCI_LAYOUT_CONTENT)
        small(INDEX_JSON, index_bytes)
        out.write(_header(BLOBS_DIR, 0, directory=True))
        out.write(_header(BLOB_DIR, 0, directory=True))
        report_start(progress, label, sum(e.size for e in entries))
        for entry in entries:
            out.write(_header(blob_member(entry.digest), entry.size))
            offsets[entry.digest] = out.offset
            _copy_blob(
                out,
                blobs,
                entry,
                progress=progress,
                label=label,
                arrivals=arrivals,
                hashed=entry.digest in hashed,
            )
            out.write(_padding(entry.size))
        out.write(b"\0" * (2 * _BLOCK))
        out.drain()
        # the end: records fill the last 10 KiB record (sink.size is final once drained)
        sink.write(b"\0" * (-sink.size % _RECORD))
        report_done(progress, label)
    finally:
        out.stop()
    return offsets


def _lend(
    blobs: BlobStore,
    entries: Sequence[BlobEntry],
    offsets: dict[str, int],
    final: Path,
    hashed: Collection[str],
) -> None:
    """The bundle just written and fsync'd holds every blob it names: the layers this run
    downloaded are lent to it (`BlobStore.lend`: the cache drops its copy, so each layer is
    written to the disk once), and so are blobs the cache held only as lent to this path
    before (the old file is gone now). A later create reads them from here, hashing them
    again as every cached blob; if this file changes, they are missing and fetched again."""
    for entry in entries:
        if entry.role != BlobRole.LAYER.value:
            continue
        if entry.digest in hashed or (
            not blobs.path(entry.digest).is_file()
            and blobs.lent_to(entry.digest) == final.resolve()
        ):
            with contextlib.suppress(OSError):  # then the cache keeps its copy, or fetches again
                blobs.lend(entry.digest, final, offsets[entry.digest], entry.size)


def _resolve_out(out: Path, name: str) -> Path:
    """A path ending in `.tar` is the bundle file; anything else is a directory for it."""
    if out.is_dir() or not out.name.endswith(".tar"):
        return out / bundle_filename(name)
    return out


def _remove_stale_volumes(final: Path, keep: int, keep_recovery: int = 0) -> None:
    """Volumes of an earlier, longer split of the same name would be taken as siblings (and
    recovery volumes, index and boot copies of an earlier run as this bundle's)."""
    n = keep
    while (p := final.parent / f"{final.name}.{n:03d}").exists():
        p.unlink()
        n += 1
    n = keep_recovery
    while (p := final.parent / recovery_volume_name(final.name, n)).exists():
        p.unlink()
        n += 1
    if keep_recovery == 0:
        (final.parent / recovery_index_name(final.name)).unlink(missing_ok=True)
        for p in find_boot_volumes(final):
            p.unlink()


# --- recovery volumes (format 1.2) ---------------------------------------------------------------


def _member_bytes(name: str, size: int) -> int:
    return len(_header(name, size)) + size + len(_padding(size))


def _tar_size(
    manifest_bytes: bytes, signed: bool, index_bytes: bytes, entries: Sequence[BlobEntry]
) -> int:
    """The size of the tar `_stream_tar` writes, computed before writing it."""
    total = _member_bytes(AIRLOCK_JSON, len(manifest_bytes))
    total += _member_bytes(SIGNATURE, SIGNATURE_SIZE) if signed else 0
    total += _member_bytes(OCI_LAYOUT, len(OCI_LAYOUT_CONTENT))
    total += _member_bytes(INDEX_JSON, len(index_bytes))
    total += len(_header(BLOBS_DIR, 0, directory=True)) + len(_header(BLOB_DIR, 0, directory=True))
    total += sum(_member_bytes(blob_member(e.digest), e.size) for e in entries)
    total += 2 * _BLOCK
    return total + (-total % _RECORD)


def _with_recovery(
    manifest: BundleManifest, index_bytes: bytes, split: int, percent: float, *, signed: bool
) -> tuple[BundleManifest, RecoveryPlan]:
    """airlock.json with its `recovery` layout, which depends on the size of the tar that holds
    airlock.json: repeat until the layout no longer changes (once or twice)."""
    for _ in range(8):
        size = _tar_size(manifest.to_bytes(), signed, index_bytes, manifest.blobs)
        plan = plan_recovery(size, split, percent)
        entry = RecoveryEntry(
            scheme="zfec",
            data_volumes=plan.data_volumes,
            recovery_volumes=plan.recovery_volumes,
            volume_size=split,
            chunk_size=plan.chunk_size,
            boot_copies=boot_copies_for(plan.recovery_volumes),
        )
        if manifest.recovery == entry:
            return manifest, plan
        manifest = manifest.model_copy(
            update={"recovery": entry, "format_version": FORMAT_RECOVERY}
        )
    raise AirlockError("internal error: the recovery layout does not settle")


@dataclass
class _Extra:
    index: Path | None = None
    boot: list[Path] = field(default_factory=list)


def _encode_recovery(sink: _Sink, plan: RecoveryPlan) -> bytes:
    """Write the recovery volumes (temp files, published with the data volumes) and return the
    recovery index."""
    final = sink.final
    if len(sink.temps) != plan.data_volumes:
        raise AirlockError(
            f"internal error: {len(sink.temps)} volumes written, {plan.data_volumes} planned"
        )
    handles = []
    try:
        for r in range(plan.recovery_volumes):
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + final.name + ".", dir=final.parent)
            os.fchmod(fd, 0o644)
            lock_as_live(fd)
            sink.recovery.append((Path(tmp), final.parent / recovery_volume_name(final.name, r)))
            handles.append(os.fdopen(fd, "wb"))
        data_chunks, encoded = encode(sink.temps, handles, plan)
        for fh in handles:
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        for fh in handles:
            fh.close()
    index = RecoveryIndex(
        tar=final.name,
        volume_size=plan.volume_size,
        chunk_size=plan.chunk_size,
        data=tuple(
            ChunkedVolume(name=v.name, size=v.size, sha256=v.sha256, chunks=tuple(chunks))
            for v, chunks in zip(sink.volumes, data_chunks, strict=True)
        ),
        recovery=tuple(
            ChunkedVolume(name=dest.name, size=e.size, sha256=e.sha256, chunks=tuple(e.chunks))
            for (_, dest), e in zip(sink.recovery, encoded, strict=True)
        ),
    )
    return write_index(index)


def _write_boot(
    final: Path,
    manifest: BundleManifest,
    small: tuple[bytes, bytes | None, bytes, bytes],
    *,
    blobs: BlobStore,
    wheels: Sequence[FileArtifact],
) -> list[Path]:
    """The boot copies: airlock.json (+ signature) and the wheels first, as in a bundle, so the
    bootstrap script reads a copy as it reads a bundle; then the script, parts and index."""
    manifest_bytes, signature, parts_bytes, index_bytes = small
    members = [BootMember(AIRLOCK_JSON, manifest_bytes)]
    if signature is not None:
        members.append(BootMember(SIGNATURE, signature))
    for w in sorted(wheels, key=lambda w: w.digest):
        members.append(BootMember(blob_member(w.digest), path=blobs.path(w.digest), size=w.size))
    members += [
        BootMember(BOOTSTRAP_SCRIPT, bootstrap_script()),
        BootMember(BOOT_PARTS, parts_bytes),
        BootMember(BOOT_RECOVERY, index_bytes),
    ]
    assert manifest.recovery is not None
    paths = boot_volume_paths(final, manifest.recovery.boot_copies)
    for p in find_boot_volumes(final):
        if p not in paths:
            p.unlink()
    for p in paths:
        write_boot_volume(p, members, tmp_prefix=f"{TMP_PREFIX}{final.name}.")
    return paths


def _unchanged(
    records: Path,
    final: Path,
    manifest: BundleManifest,
    manifest_bytes: bytes,
    signature: bytes | None,
    split: int | None,
) -> WriteResult | None:
    """The outputs as they are, when the record says they hold exactly this bundle (see
    airlock.bundle.reuse); None when they must be written (or compared)."""
    record = load_record(records, final, manifest=manifest_bytes, signature=signature, split=split)
    if record is None or not record.still_holds(final.parent):
        return None
    first = final if split is None else final.with_name(f"{final.name}.000")
    try:
        with first.open("rb") as fh:
            head = fh.read(_BLOCK + len(manifest_bytes))
    except OSError:
        return None
    if head[_BLOCK:] != manifest_bytes:
        return None
    volumes: tuple[Path, ...] = ()
    path = final
    if split is not None:
        volumes = tuple(final.parent / name for name, _, _ in record.volumes)
        path = parts_file_path(final)
        _remove_stale_volumes(final, len(volumes))
    return WriteResult(
        path=path,
        volumes=volumes,
        size=record.size,
        sha256=record.sha256,
        blob_count=len(manifest.blobs),
        unique_blob_bytes=sum(b.size for b in manifest.blobs),
        manifest=manifest,
        signed=signature is not None,
    )


def write_bundle(
    content: BundleContent,
    *,
    blobs: BlobStore,
    out: Path,
    sign_key: Path | None = None,
    split: int | None = None,
    recovery: float | None = None,
    progress: ProgressSink | None = None,
    arrivals: Arrivals | None = None,
    hashed: Collection[str] = (),
    lend: bool = True,
) -> WriteResult:
    """Write `content` as a bundle at `out`: a path ending in `.tar`, or a directory that gets
    NAME.airlock.tar (or its volumes and parts file when `split` is given). `recovery`, a
    percentage of the data volumes (with `split`), adds recovery volumes, the recovery index
    and the boot copies (format 1.2). `arrivals`: blobs still being fetched into `blobs`,
    waited for as the stream reaches them. `hashed`: blobs the caller downloaded into
    `blobs` in this run, hashed as they arrived: copied without a second hash (every other
    blob is hashed again as it is copied). `lend`: an unsplit bundle holds the layers this run
    downloaded for the cache (`_lend`); False keeps the cache's own copies."""
    if split is not None and split < MIN_VOLUME_SIZE:
        raise UsageError(
            f"--split {split} is too small: volumes must be at least 1 MiB",
            "use a size such as 4G (DVD) or 1G",
        )
    gen = build_manifest(content)
    manifest = gen.manifest
    for digest, data in gen.generated.items():
        if not blobs.has(digest):
            blobs.put_bytes(data, digest)
    for entry in manifest.blobs:
        if not blobs.has(entry.digest) and not (arrivals and arrivals.expects(entry.digest)):
            raise AirlockError(
                f"blob {entry.digest} ({entry.source or entry.role}) is not in {blobs.root}",
                "fetch the content again (`airlock bundle create` fetches what is missing)",
            )
    plan: RecoveryPlan | None = None
    if recovery is not None:
        if split is None:
            raise UsageError(
                "--recovery adds volumes to a split bundle: give --split SIZE too",
                "e.g. --split 4G --recovery 20%",
            )
        manifest, plan = _with_recovery(
            manifest, gen.index_bytes, split, recovery, signed=sign_key is not None
        )
    manifest_bytes = manifest.to_bytes()
    signature = sign(manifest_bytes, sign_key) if sign_key is not None else None

    final = _resolve_out(Path(out), content.name)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AirlockError(f"cannot create {final.parent}: {exc.strerror}") from exc
    remove_dead_temps(final.parent, prefix=f"{TMP_PREFIX}{final.name}.")
    records = blobs.root / OUTPUT_RECORDS
    if plan is None:
        kept = _unchanged(records, final, manifest, manifest_bytes, signature, split)
        if kept is not None:
            return kept
    forget(records, final)  # rewritten below: until it is done, no record vouches for it
    sink = _Sink(final, split, reuse=plan is None)
    published: list[Path] = []
    extra = _Extra()
    try:
        offsets = _stream_tar(
            sink,
            manifest_bytes=manifest_bytes,
            signature=signature,
            index_bytes=gen.index_bytes,
            blobs=blobs,
            entries=manifest.blobs,
            progress=progress,
            label=f"write {final.name}",
            arrivals=arrivals,
            hashed=hashed,
        )
        sink.finish()
        sink.close()
        volumes: tuple[Path, ...] = ()
        if split is None:
            os.replace(sink.temps[0], final)
            path = final
        else:
            index_bytes = _encode_recovery(sink, plan) if plan is not None else None
            volumes = tuple(final.parent / v.name for v in sink.volumes)
            for tmp, dest in zip(sink.temps, volumes, strict=True):
                os.replace(tmp, dest)
                published.append(dest)
            for tmp, dest in sink.recovery:
                os.replace(tmp, dest)
                published.append(dest)
            _remove_stale_volumes(final, len(volumes), len(sink.recovery))
            path = parts_file_path(final)
            parts = PartsFile(
                name=content.name,
                tar=final.name,
                volume_size=split,
                size=sink.size,
                sha256=sink.whole.hexdigest(),
                volumes=tuple(sink.volumes),
            )
            parts_bytes = write_parts(parts)
            if index_bytes is not None:
                extra.index = final.parent / recovery_index_name(final.name)
                write_atomic(extra.index, index_bytes)
                published.append(extra.index)
                extra.boot = _write_boot(
                    final,
                    manifest,
                    (manifest_bytes, signature, parts_bytes, index_bytes),
                    blobs=blobs,
                    wheels=content.wheelhouse,
                )
                published += extra.boot
            write_atomic(path, parts_bytes)
        fsync_dir(final.parent)
        if plan is None:
            save_record(
                records,
                final,
                manifest=manifest_bytes,
                signature=signature,
                split=split,
                size=sink.size,
                sha256="sha256:" + sink.whole.hexdigest(),
                files=[*volumes, path] if volumes else [path],
                volumes=[(v.name, v.size, v.sha256) for v in sink.volumes],
            )
        if split is None and lend:
            _lend(blobs, manifest.blobs, offsets, final, hashed)
    except OSError as exc:
        sink.discard()
        for p in published:
            p.unlink(missing_ok=True)
        hint = None
        if exc.errno == errno.ENOSPC:
            hint = (
                f"free space in {final.parent} (the bundle needs about {sink.size} bytes or "
                "more), or write it elsewhere with -o"
            )
        raise AirlockError(
            f"cannot write bundle {final}: {exc.strerror or exc}; nothing was written", hint
        ) from exc
    except BaseException:
        sink.discard()
        for p in published:
            p.unlink(missing_ok=True)
        raise
    return WriteResult(
        path=path,
        volumes=volumes,
        recovery_volumes=tuple(dest for _, dest in sink.recovery),
        boot_volumes=tuple(extra.boot),
        recovery_index=extra.index,
        size=sink.size,
        sha256="sha256:" + sink.whole.hexdigest(),
        blob_count=len(manifest.blobs),
        unique_blob_bytes=sum(b.size for b in manifest.blobs),
        manifest=manifest,
        signed=signature is not None,
    )
