"""A content-addressed blob directory (`blobs/sha256/<hex>`), as in an OCI image layout.

Below both `oci/` (the store's layout, the registry) and `fetch/` (the download cache), which
share it; it knows neither a registry nor a bundle.

Writes stream into a temp file in the blob directory while hashing, then fsync and rename only
if the digest matches: a mismatch or a crash never leaves a file under a final name, so a retry
starts clean. An existing blob is trusted by its name only after `verify` (never by its size).

A blob can also be lent to a file that holds its bytes (`lend`: a bundle just written and
fsync'd): the store keeps a note of where (`lent/<hex>`: path, offset, size and the file's
identity) and drops its own copy, so a cold `bundle create` writes each downloaded layer to
the disk once (into the bundle; the cache's copy, still in the page cache, is unlinked before
it is written back). The note holds only while that file is the one written then (inode,
size, mtime, ctime): a file replaced, rewritten or removed makes the blob missing, and it is
fetched again. Readers go through `open`, which serves either.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from airlock.atomic import TMP_PREFIX, fsync_dir, lock_as_live, remove_dead_temps, write_atomic
from airlock.errors import DigestMismatch
from airlock.oci.digest import Hasher, digest_hex, file_digest

__all__ = ["BlobStore", "BlobWriter", "file_identity"]

_CHUNK = 1 << 20
_LENT = "lent"  # in the root: blobs whose bytes are in another file (see `lend`)


def file_identity(path: Path) -> list[int] | None:
    """What changes when anyone writes to, replaces or truncates the file (None: no file)."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if not path.is_file() or path.is_symlink():
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class _Range(io.RawIOBase):
    """`size` bytes of an open file from where it stands (a lent blob inside a bundle)."""

    def __init__(self, fh: io.FileIO, size: int) -> None:
        super().__init__()
        self._fh = fh
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")[: self._left]
        if not len(view):
            return 0
        n = self._fh.readinto(view)
        self._left -= n or 0
        return n or 0

    def close(self) -> None:
        self._fh.close()
        super().close()


class BlobWriter:
    """A file being written into the store; `commit()` checks the digest and publishes it."""

    def __init__(self, store: BlobStore, fh: BinaryIO, tmp: Path, expected: str | None) -> None:
        self._store = store
        self._fh = fh
        self.tmp = tmp
        self.expected = expected
        self.hasher = Hasher()

    def write(self, chunk: bytes) -> None:
        self.hasher.update(chunk)
        self._fh.write(chunk)

    @property
    def size(self) -> int:
        return self.hasher.size

    def commit(self, what: str | None = None) -> str:
        digest = self.hasher.digest
        if self.expected is not None and digest != self.expected:
            raise DigestMismatch(what or self.expected, self.expected, digest)
        self._fh.flush()
        if self._store.durable:
            os.fsync(self._fh.fileno())
        self._fh.close()
        final = self._store.path(digest)
        os.replace(self.tmp, final)
        if self._store.durable:
            fsync_dir(final.parent)
        return digest


class BlobStore:
    """`durable=False` skips the fsyncs of each commit: for a cache whose every blob is hashed
    again before it is used (bundle create's download cache: the writer re-hashes each blob
    it copies), where a blob torn by a power cut is named then, not trusted."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.durable = durable

    def ensure(self) -> None:
        self.blob_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blob_dir / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file() or self._lent(digest) is not None

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            lent = self._lent(digest)
            if lent is None:
                raise
            return lent[2]

    def read(self, digest: str) -> bytes:
        with self.open(digest) as fh:
            return fh.readall()

    def open(self, digest: str) -> io.RawIOBase:
        """The blob's bytes, unbuffered: its own file, or its range of the file it was lent
        to (FileNotFoundError when neither is there)."""
        try:
            return io.FileIO(self.path(digest), "rb")
        except FileNotFoundError:
            lent = self._lent(digest)
            if lent is None:
                raise
        path, offset, size = lent
        fh = io.FileIO(path, "rb")
        fh.seek(offset)
        return _Range(fh, size)

    def _note(self, digest: str) -> Path:
        return self.root / _LENT / digest_hex(digest)

    def _lent(self, digest: str) -> tuple[Path, int, int] | None:
        """Where a lent blob's bytes are, while that file is still the one lent to."""
        try:
            doc = json.loads(self._note(digest).read_bytes())
            path, offset, size = Path(doc["path"]), int(doc["offset"]), int(doc["size"])
            identity = [int(x) for x in doc["identity"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if file_identity(path) != identity:
            return None
        return path, offset, size

    def lent_to(self, digest: str) -> Path | None:
        """The file a blob was last lent to (whether or not it still holds it)."""
        try:
            return Path(json.loads(self._note(digest).read_bytes())["path"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def lend(self, digest: str, path: Path, offset: int, size: int) -> None:
        """`path` (written and fsync'd by the caller) holds the blob's `size` bytes at
        `offset`: note where, then drop the store's own copy (its pages, if not yet written
        back, never reach the disk). The caller has checked those bytes are the blob's."""
        identity = file_identity(path)
        if identity is None:
            return
        doc = {"path": str(path.resolve()), "offset": offset, "size": size, "identity": identity}
        write_atomic(self._note(digest), json.dumps(doc).encode(), durable=self.durable)
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        if not self.blob_dir.is_dir():
            return []
        return sorted(
            "sha256:" + p.name
            for p in self.blob_dir.iterdir()
            if not p.name.startswith(TMP_PREFIX) and len(p.name) == 64
        )

    @contextlib.contextmanager
    def writer(self, expected: str | None = None) -> Iterator[BlobWriter]:
        """Stream bytes in; call `commit()` inside the block, else the temp file is dropped."""
        self.ensure()
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.blob_dir)
        lock_as_live(fd)
        tmp_path = Path(tmp)
        fh = os.fdopen(fd, "wb")
        try:
            yield BlobWriter(self, fh, tmp_path, expected)
        finally:
            if not fh.closed:
                fh.close()
            tmp_path.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        with self.writer(expected) as w:
            w.write(data)
            return w.commit()

    def put_stream(
        self, src: BinaryIO, expected: str | None = None, what: str | None = None
    ) -> str:
        with self.writer(expected) as w:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
            return w.commit(what)

    def adopt(self, src: Path, digest: str) -> None:
        """Move in a file its writer hashed as it wrote it (a finished download), by rename:
        no second copy. `src` must be on this store's file system and `digest` the sha256
        of its bytes as the writer saw them."""
        self.ensure()
        if self.durable:
            with src.open("rb") as fh:
                os.fsync(fh.fileno())
        final = self.path(digest)
        os.replace(src, final)
        if self.durable:
            fsync_dir(final.parent)

    def put_file(self, src: Path, expected: str | None = None) -> str:
        with src.open("rb") as fh:
            return self.put_stream(fh, expected, what=str(src))

    def verify(self, digest: str, what: str | None = None) -> None:
        """Re-hash a stored blob; a mismatch names it."""
        with self.open(digest) as fh:
            actual = file_digest(cast(BinaryIO, fh))
        if actual != digest:
            raise DigestMismatch(what or f"blob {digest} in {self.root}", digest, actual)

    def remove_temp_files(self) -> int:
        """Temp files a killed writer left (a live writer's, e.g. a registry upload, stay)."""
        return remove_dead_temps(self.blob_dir)

    def copy_in(self, other: BlobStore, digest: str) -> None:
        """Copy a blob from another store (verified while copying)."""
        with other.open(digest) as src, self.writer(digest) as w:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
            w.commit(f"blob {digest} from {other.root}")

    @staticmethod
    def free_bytes(path: Path) -> int:
        probe = path
        while not probe.exists():
            probe = probe.parent
        return shutil.disk_usage(probe).free
