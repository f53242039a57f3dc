"""Read a bundle in place: index its tar headers, never extract.

`open_bundle` accepts the single tar, the parts file or the first volume. The headers are read by
the one hardened indexer (`airlock.standalone.tarindex`, which the bootstrap script embeds too):
no absolute paths, no `..`, no links or devices, pax headers bounded. airlock.json (the first
member) is read before anything else; then each entry is checked before it is trusted: no
duplicates, nothing that airlock.json does not list, every size equal to the size airlock.json
pins, no more entries than it accounts for (the rules: `airlock.bundle.rules`, which
`airlock.earlyverify` applies too). A hostile archive is refused with a VerificationError naming
the entry.

Members are located as byte spans of the volumes, so `open_member` streams across volumes and
`member_spans` lets a registry sendfile a blob straight out of the bundle.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from airlock.bundle.layout import (
    AIRLOCK_JSON,
    BLOB_DIR,
    MAX_AIRLOCK_JSON_BYTES,
    MAX_MEMBERS,
    blob_member,
)
from airlock.bundle.manifest import BundleManifest, parse_manifest
from airlock.bundle.rules import HOSTILE_HINT, Member, check_first, index_members, refuse
from airlock.bundle.volumes import ConcatReader, Span, VolumeSet, locate_volumes, spans
from airlock.errors import VerificationError
from airlock.standalone.tarindex import TarIndexError, iter_entries

__all__ = ["BundleReader", "Member", "bundle_paths", "open_bundle", "open_volumes"]


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

    def byte_spans(self, offset: int, length: int) -> list[Span]:
        """Where the tar's bytes [offset, offset+length) are in the volumes."""
        return spans(self._stream.volumes, offset, length)

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


def _read_at(stream: ConcatReader, offset: int, size: int) -> bytes:
    stream.seek(offset)
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def open_bundle(path: Path, *, max_members: int = MAX_MEMBERS) -> BundleReader:
    """Index a bundle (tar, parts file or first volume) and check every entry; see module doc."""
    return open_volumes(locate_volumes(Path(path)), max_members=max_members)


def open_volumes(volumes: VolumeSet, *, max_members: int = MAX_MEMBERS) -> BundleReader:
    """Index the bundle whose bytes are `volumes` (as `open_bundle`, volumes already found)."""
    where = volumes.display()
    stream = ConcatReader(volumes.paths)
    try:
        return _index(volumes, stream, where, max_members)
    except TarIndexError as exc:
        stream.close()
        raise _translate(exc, where) from exc
    except BaseException:
        stream.close()
        raise


def _translate(exc: TarIndexError, where: str) -> VerificationError:
    if exc.truncated:
        return VerificationError(
            f"{where} is truncated: {exc.message}",
            "a volume is missing or short; check the volumes against the parts file",
        )
    if exc.member is not None:
        return refuse(exc.member, exc.reason)
    return VerificationError(f"{where} is not a readable bundle: {exc.message}", HOSTILE_HINT)


def _index(volumes: VolumeSet, stream: ConcatReader, where: str, max_members: int) -> BundleReader:
    entries = iter_entries(
        lambda offset, n: _read_at(stream, offset, n), stream.size, max_members=max_members
    )
    first = check_first(next(entries, None), where)
    manifest_bytes = _read_at(stream, first.offset, first.size)
    manifest = parse_manifest(manifest_bytes, what=f"{AIRLOCK_JSON} of {where}")
    members, sig = index_members(
        first,
        entries,
        blob_sizes={blob_member(b.digest): b.size for b in manifest.blobs},
        index_size=manifest.index.size,
        max_members=max_members,
    )
    signature = None if sig is None else _read_at(stream, sig.offset, sig.size)
    return BundleReader(volumes, stream, manifest_bytes, manifest, signature, members)


def bundle_paths(path: Path) -> tuple[Path, ...]:
    """Every file that makes up the bundle at `path` (volumes and parts file, or the tar)."""
    vs = locate_volumes(path)
    return (*vs.paths, vs.parts_path) if vs.parts_path else vs.paths
