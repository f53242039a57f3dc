"""Read a bundle in place: index its tar headers, never extract.

`open_bundle` accepts the single tar, the parts file or the first volume. It reads airlock.json
(the first member) before anything else, then walks the remaining headers and checks each entry
before it is trusted: no absolute paths, no `..`, no links or devices, no duplicates, nothing
that airlock.json does not list, every size equal to the size airlock.json pins, bounded entry
count and total size. A hostile archive is refused with a VerificationError naming the entry.

Members are located as byte spans of the volumes, so `open_member` streams across volumes and
`member_spans` lets a registry sendfile a blob straight out of the bundle.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

from airlock.bundle.layout import (
    AIRLOCK_JSON,
    BLOB_DIR,
    BLOBS_DIR,
    INDEX_JSON,
    MAX_AIRLOCK_JSON_BYTES,
    MAX_MEMBERS,
    OCI_LAYOUT,
    SIGNATURE,
    blob_member,
)
from airlock.bundle.manifest import BundleManifest, parse_manifest
from airlock.bundle.volumes import ConcatReader, Span, VolumeSet, locate_volumes, spans
from airlock.errors import VerificationError

__all__ = ["BundleReader", "Member", "bundle_paths", "open_bundle"]

_SMALL_MEMBER_MAX = 4096  # oci-layout, airlock.json.sig
_MAX_HEADER_READ = 1 << 20  # largest single read while indexing (pax / long-name data)
_HOSTILE_HINT = "the archive was not written by airlock or was altered; do not extract it"


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    offset: int  # of the data, in the whole tar stream
    is_dir: bool = False


class _SpanReader(io.RawIOBase):
    """A member's bytes, read straight from its spans (across volumes)."""

    def __init__(self, pieces: Sequence[Span]) -> None:
        super().__init__()
        self._pieces = list(pieces)
        self._size = sum(p.length for p in pieces)
        self._pos = 0
        self._fh: io.FileIO | None = None
        self._fh_path: Path | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        start = 0
        for piece in self._pieces:
            if self._pos < start + piece.length:
                if self._fh_path != piece.path:
                    if self._fh is not None:
                        self._fh.close()
                    self._fh = io.FileIO(piece.path, "rb")
                    self._fh_path = piece.path
                assert self._fh is not None
                self._fh.seek(piece.offset + self._pos - start)
                want = min(len(view), start + piece.length - self._pos)
                n = self._fh.readinto(view[:want]) or 0
                self._pos += n
                return n
            start += piece.length
        return 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def _refuse(name: str, why: str) -> VerificationError:
    return VerificationError(f"unsafe bundle entry {name!r}: {why}", _HOSTILE_HINT)


def _check_path(name: str) -> None:
    if name.startswith("/"):
        raise _refuse(name, "absolute path")
    parts = PurePosixPath(name).parts
    if ".." in parts or ".." in name.split("/"):
        raise _refuse(name, "path contains '..'")
    if "\0" in name or "\\" in name:
        raise _refuse(name, "path contains NUL or backslash")


def _check_type(info: tarfile.TarInfo) -> None:
    if info.issym() or info.islnk():
        raise _refuse(info.name, f"is a link (to {info.linkname!r}); bundles hold no links")
    if info.ischr() or info.isblk() or info.isfifo():
        raise _refuse(info.name, "is a device or FIFO; bundles hold regular files only")
    if not (info.isreg() or info.isdir()) or info.issparse():
        raise _refuse(info.name, f"has unsupported entry type {info.type!r}")


class BundleReader:
    """An indexed bundle: the manifest, the signature and where every member's bytes are."""

    def __init__(
        self,
        volumes: VolumeSet,
        stream: ConcatReader,
        manifest_bytes: bytes,
        manifest: BundleManifest,
        signature: bytes | None,
        members: dict[str, Member],
    ) -> None:
        self.volumes = volumes
        self._stream = stream
        self.manifest_bytes = manifest_bytes
        self.manifest = manifest
        self.signature = signature
        self.members = members
        self.size = stream.size

    @property
    def path(self) -> Path:
        return self.volumes.parts_path or self.volumes.paths[0]

    def member(self, name: str) -> Member:
        m = self.members.get(name)
        if m is None or m.is_dir:
            raise VerificationError(f"{name} is missing from bundle {self.volumes.display()}")
        return m

    def member_spans(self, name: str) -> list[Span]:
        m = self.member(name)
        return spans(self._stream.volumes, m.offset, m.size)

    def open_member(self, name: str) -> BinaryIO:
        """A streaming, seekable reader of one member (across volumes)."""
        return io.BufferedReader(_SpanReader(self.member_spans(name)), buffer_size=1 << 20)

    def read_member(self, name: str, *, limit: int = MAX_AIRLOCK_JSON_BYTES) -> bytes:
        m = self.member(name)
        if m.size > limit:
            raise VerificationError(f"{name} is {m.size} bytes, more than the {limit} allowed")
        with self.open_member(name) as fh:
            return fh.read()

    def blob_digests(self) -> list[str]:
        """Digests of the blobs present in the bundle, sorted."""
        prefix = BLOB_DIR + "/"
        return sorted(
            "sha256:" + n[len(prefix) :]
            for n, m in self.members.items()
            if n.startswith(prefix) and not m.is_dir
        )

    def has_blob(self, digest: str) -> bool:
        return blob_member(digest) in self.members

    def blob_spans(self, digest: str) -> list[Span]:
        return self.member_spans(blob_member(digest))

    def open_blob(self, digest: str) -> BinaryIO:
        return self.open_member(blob_member(digest))

    def missing_blobs(self) -> list[str]:
        """Blobs airlock.json lists that the archive does not hold (truncated bundle)."""
        return [b.digest for b in self.manifest.blobs if blob_member(b.digest) not in self.members]

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _next(tar: tarfile.TarFile, where: str) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except tarfile.TarError as exc:
        raise VerificationError(
            f"{where} is not a readable tar archive: {exc}",
            "the bundle is damaged or truncated; copy it again",
        ) from exc


def _read_at(stream: ConcatReader, offset: int, size: int) -> bytes:
    stream.seek(offset)
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(size - len(data), _MAX_HEADER_READ))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def open_bundle(path: Path, *, max_members: int = MAX_MEMBERS) -> BundleReader:
    """Index a bundle (tar, parts file or first volume) and check every entry; see module doc."""
    volumes = locate_volumes(Path(path))
    where = volumes.display()
    stream = ConcatReader(volumes.paths)
    stream.max_read = _MAX_HEADER_READ
    try:
        return _index(volumes, stream, where, max_members)
    except BaseException:
        stream.close()
        raise


def _index(volumes: VolumeSet, stream: ConcatReader, where: str, max_members: int) -> BundleReader:
    try:
        # The TarFile is only a header parser over `stream`, which the reader owns and closes.
        tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115
    except tarfile.TarError as exc:
        raise VerificationError(
            f"{where} is not a tar archive", "pass a NAME.airlock.tar bundle or its parts file"
        ) from exc
    first = _next(tar, where)
    if first is None or first.name != AIRLOCK_JSON or not first.isreg():
        got = "nothing" if first is None else repr(first.name)
        raise VerificationError(
            f"{where} is not an airlock bundle: its first member is {got}, expected {AIRLOCK_JSON}",
            "airlock bundles start with airlock.json; was it made by `airlock bundle create`?",
        )
    if first.size > MAX_AIRLOCK_JSON_BYTES:
        raise _refuse(AIRLOCK_JSON, f"is {first.size} bytes (at most {MAX_AIRLOCK_JSON_BYTES})")
    if first.offset_data + first.size > stream.size:
        raise VerificationError(f"{where} is truncated inside {AIRLOCK_JSON}")
    manifest_bytes = _read_at(stream, first.offset_data, first.size)
    manifest = parse_manifest(manifest_bytes, what=f"{AIRLOCK_JSON} of {where}")

    blob_sizes = {blob_member(b.digest): b.size for b in manifest.blobs}
    fixed: dict[str, int | None] = {
        SIGNATURE: None,
        OCI_LAYOUT: None,
        INDEX_JSON: manifest.index.size,
        BLOBS_DIR: -1,
        BLOB_DIR: -1,
    }
    limit_members = min(max_members, len(blob_sizes) + len(fixed) + 1)
    members: dict[str, Member] = {AIRLOCK_JSON: Member(AIRLOCK_JSON, first.size, first.offset_data)}
    signature: bytes | None = None
    count = 1
    while (info := _next(tar, where)) is not None:
        count += 1
        name = info.name
        _check_path(name)
        if count > limit_members:
            raise _refuse(name, f"more entries than the {limit_members} airlock.json accounts for")
        _check_type(info)
        if name in members:
            raise _refuse(name, "duplicate entry")
        if name in fixed:
            expected = fixed[name]
            if (expected == -1) != info.isdir():
                raise _refuse(name, "has the wrong entry type")
            if name == SIGNATURE and count != 2:
                raise _refuse(name, "must directly follow airlock.json")
            if expected is None and info.size > _SMALL_MEMBER_MAX:
                raise _refuse(name, f"is {info.size} bytes (at most {_SMALL_MEMBER_MAX})")
            if expected is not None and expected >= 0 and info.size != expected:
                raise _refuse(
                    name, f"is {info.size} bytes but airlock.json says {expected} (size mismatch)"
                )
        elif name in blob_sizes:
            if not info.isreg():
                raise _refuse(name, "a blob must be a regular file")
            if info.size != blob_sizes[name]:
                raise _refuse(
                    name,
                    f"is {info.size} bytes but airlock.json says {blob_sizes[name]} (size mismatch)",
                )
        else:
            raise _refuse(name, "is not listed in airlock.json")
        if info.offset_data + info.size > stream.size:
            raise VerificationError(
                f"{where} is truncated inside {name}",
                "a volume is missing or short; check the volumes against the parts file",
            )
        members[name] = Member(name, info.size, info.offset_data, is_dir=info.isdir())
        if name == SIGNATURE:
            signature = _read_at(stream, info.offset_data, info.size)
        # tarfile keeps every TarInfo; we only need our own index.
        tar.members.clear()  # type: ignore[attr-defined]
    stream.max_read = None
    return BundleReader(volumes, stream, manifest_bytes, manifest, signature, members)


def bundle_paths(path: Path) -> tuple[Path, ...]:
    """Every file that makes up the bundle at `path` (volumes and parts file, or the tar)."""
    vs = locate_volumes(path)
    return (*vs.paths, vs.parts_path) if vs.parts_path else vs.paths
