"""A bundle read over the network from the first node's share (`airlock/fleet/share.py`).

airlock.json and its signature are fetched first and checked against the node's trusted keys
(no key: refused unless allow_unsigned, then UNVERIFIED); every blob is then fetched by digest
and hashed while it streams: a mismatch raises before the end of the blob is returned. Only
the blobs `node install` opens are fetched, so a node receives what it needs, not the bundle.

With a cache (`FETCHED_DIR` on the node, a blob directory) each blob is fetched once: written
there only when its digest matches, and a blob already there is hashed again (locally) before
it is used; one that does not match the signed airlock.json is dropped and fetched again. A
rerun on a converged node so fetches airlock.json and its signature, nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from airlock.blobstore import BlobStore
from airlock.bundle.compression import open_content
from airlock.bundle.manifest import BundleManifest, FileEntry, parse_manifest
from airlock.bundle.signing import key_id, verify_signature
from airlock.errors import DigestMismatch, FetchError, VerificationError
from airlock.oci.digest import file_digest
from airlock.trust import UNVERIFIED, TrustPolicy

__all__ = ["FETCHED_DIR", "RemoteBundle", "RemoteSource"]

# where a node keeps the blobs it fetched from the share (a blob directory, not the store)
FETCHED_DIR = Path("/var/lib/airlock/fetched")

_MAX_MANIFEST = 64 << 20
_MAX_SIGNATURE = 4096


class _Checked(io.RawIOBase):
    """The response's bytes, hashed as they are read; a short or wrong blob raises at its end."""

    def __init__(self, raw: BinaryIO, digest: str, size: int, counter: list[int]) -> None:
        super().__init__()
        self._raw, self._digest, self._size, self._counter = raw, digest, size, counter
        self._hash = hashlib.sha256()
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        data = self._raw.read(min(len(view), self._size + 1 - self._read))
        if not data:
            got = "sha256:" + self._hash.hexdigest()
            if got != self._digest or self._read != self._size:
                raise DigestMismatch(f"blob {self._digest} from the share", self._digest, got)
            return 0
        view[: len(data)] = data
        self._hash.update(data)
        self._read += len(data)
        self._counter[0] += len(data)
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


class RemoteBundle:
    def __init__(self, url: str, *, trust: TrustPolicy, timeout: float = 60) -> None:
        self.url = url.rstrip("/") + "/"
        self.timeout = timeout
        self.fetched = [0]  # bytes received, airlock.json and its signature included
        data = self._get("airlock.json", _MAX_MANIFEST)
        if data is None:
            raise FetchError(
                f"{self.url}airlock.json: not found", "is this the first node's share?"
            )
        signature = self._get("airlock.json.sig", _MAX_SIGNATURE)
        self.trust = self._check(data, signature, trust)
        self.manifest_bytes = data
        self.manifest: BundleManifest = parse_manifest(data, what=f"{self.url}airlock.json")

    def _open(self, name: str) -> BinaryIO | None:
        try:
            response = urllib.request.urlopen(self.url + name, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise FetchError(f"{self.url}{name}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(
                f"{self.url}{name}: {reason}", "is the first node's share running and reachable?"
            ) from exc
        return response  # type: ignore[no-any-return]

    def _get(self, name: str, limit: int) -> bytes | None:
        fh = self._open(name)
        if fh is None:
            return None
        with fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise VerificationError(f"{self.url}{name} is larger than {limit} bytes")
        self.fetched[0] += len(data)
        return data

    @staticmethod
    def _check(data: bytes, signature: bytes | None, trust: TrustPolicy) -> str:
        if signature is None:
            if trust.requires_signature:
                raise VerificationError(
                    "the share's airlock.json is not signed, but a key was given"
                )
            return UNVERIFIED
        if not trust.keys:
            return UNVERIFIED
        return f"signed by {key_id(verify_signature(data, signature, trust.keys))}"

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        entry = self.manifest.blob_map().get(digest)
        if entry is None:
            raise VerificationError(f"blob {digest} is not listed in airlock.json")
        fh = self._open(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        if fh is None:
            raise FetchError(f"{self.url}: the share has no blob {digest}")
        with io.BufferedReader(_Checked(fh, digest, entry.size, self.fetched), 1 << 20) as out:
            yield out


class RemoteSource:
    """An ArtifactSource over a RemoteBundle (`node install --from URL`).

    `cache`: blobs already fetched (hashed again before use); `fill`: fetched blobs are kept
    there (False under --dry-run: a plan changes nothing, but may use what is already there).
    `reused` names the blobs taken from the cache, `dropped` those there that did not match.
    """

    def __init__(
        self, remote: RemoteBundle, *, cache: BlobStore | None = None, fill: bool = True
    ) -> None:
        self.remote = remote
        self.cache = cache
        self.fill = fill and cache is not None
        self.reused: set[str] = set()
        self.dropped: set[str] = set()
        self._checked: set[str] = set()  # cached blobs hashed in this run
        self._listed = remote.manifest.blob_map()
        self._by_digest = {f.digest: f for f in remote.manifest.files}

    def files(self) -> Sequence[FileEntry]:
        return list(self.remote.manifest.files)

    def _cached(self, digest: str) -> Path | None:
        """The cached blob, hashed (once per run) against the digest airlock.json pins."""
        if self.cache is None or not self.cache.has(digest):
            return None
        path = self.cache.path(digest)
        if digest in self._checked:
            return path
        with path.open("rb") as fh:
            good = file_digest(fh) == digest
        if good:
            self._checked.add(digest)
            self.reused.add(digest)
            return path
        self.dropped.add(digest)
        if self.fill:
            path.unlink(missing_ok=True)
        return None

    @contextlib.contextmanager
    def _blob(self, digest: str) -> Iterator[BinaryIO]:
        if digest not in self._listed:
            raise VerificationError(f"blob {digest} is not listed in airlock.json")
        path = self._cached(digest)
        if path is None and self.fill and self.cache is not None:
            with self.remote.open_blob(digest) as fh:
                self.cache.put_stream(fh, digest, what=f"blob {digest} from the share")
            self._checked.add(digest)  # hashed as it was written
            path = self.cache.path(digest)
        if path is None:  # no cache, or a plan: streamed, hashed as it is read
            with self.remote.open_blob(digest) as fh:
                yield fh
            return
        with path.open("rb") as fh:
            yield fh

    @contextlib.contextmanager
    def open(self, digest: str) -> Iterator[BinaryIO]:
        entry = self._by_digest.get(digest)
        if entry is None or entry.stored is None:
            with self._blob(digest) as fh:
                yield fh
            return
        stored = self._blob(entry.stored.digest)
        with (
            stored as raw,
            open_content(raw, entry.stored.compression, size=entry.size, what=entry.name) as fh,
        ):
            yield fh
