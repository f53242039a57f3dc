"""A content-addressed blob directory (`blobs/sha256/<hex>`), as in an OCI image layout.

Below both `oci/` (the store's layout, the registry) and `fetch/` (the download cache), which
share it; it knows neither a registry nor a bundle.

Writes stream into a temp file in the blob directory while hashing, then fsync and rename only
if the digest matches: a mismatch or a crash never leaves a file under a final name, so a retry
starts clean. An existing blob is trusted by its name only after `verify` (never by its size).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from airlock.atomic import TMP_PREFIX, fsync_dir, lock_as_live, remove_dead_temps
from airlock.errors import DigestMismatch
from airlock.oci.digest import Hasher, digest_hex, file_digest

__all__ = ["BlobStore", "BlobWriter"]

_CHUNK = 1 << 20


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
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

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
        with self.path(digest).open("rb") as fh:
            actual = file_digest(fh)
        if actual != digest:
            raise DigestMismatch(what or f"blob {digest} in {self.root}", digest, actual)

    def remove_temp_files(self) -> int:
        """Temp files a killed writer left (a live writer's, e.g. a registry upload, stay)."""
        return remove_dead_temps(self.blob_dir)

    def copy_in(self, other: BlobStore, digest: str) -> None:
        """Copy a blob from another store (verified while copying)."""
        with other.path(digest).open("rb") as src, self.writer(digest) as w:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
            w.commit(f"blob {digest} from {other.root}")

    @staticmethod
    def free_bytes(path: Path) -> int:
        probe = path
        while not probe.exists():
            probe = probe.parent
        return shutil.disk_usage(probe).free
