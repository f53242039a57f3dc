"""A verified bundle as the registry's content (`airlock registry serve --bundle`).

The registry (airlock.oci.server) reads through a ContentSource; this one is an open `Bundle`:
the catalog is built from index.json as the handle verified it, manifests are read once through
the handle's verifying readers and served from memory (those verified bytes), and blobs go out
as byte ranges of the files the handle holds open (sendfile). Read-only: pushes are refused.

Blob bytes are checked once each, before their first byte is served (`BlobChecks`): the handle
is opened without hashing content (signature, index.json, the tar's index and the graph are
checked), so the registry answers as soon as that is done; a background thread then hashes the
blobs it can serve (the configs and layers its manifests name: a bundle's files never go out
through the registry) in the order they lie in the bundle, and a request for a blob not yet
checked hashes it itself (or waits for the thread that is). A blob whose bytes do not match its
digest is never served: every request for it answers an error naming the blob and its volume.
Manifests are read (and hashed) when the catalog is built: a damaged one stops the registry
before it starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from types import TracebackType

from airlock.bundle.handle import Bundle
from airlock.errors import DigestMismatch, VerificationError
from airlock.oci.digest import is_digest
from airlock.oci.sources import (
    MAX_MANIFEST_SIZE,
    BlobLocation,
    Catalog,
    ManifestInfo,
    Segment,
    build_catalog,
    manifest_info,
)

__all__ = ["BlobChecks", "BundleSource"]

log = logging.getLogger("airlock.registry")
# Bytes hashed per read: a thread that hashes while another holds the GIL (the registry's
# imports, its requests) waits up to the switch interval (5 ms) between reads; with 4 MiB
# (about 3 ms of SHA-256) it still hashes at about half speed instead of a tenth.
_CHUNK = 4 << 20


class _Stopped(Exception):
    """The background check was asked to stop (the registry is closing)."""


class BlobChecks:
    """Each blob of a bundle hashed once; `check(digest)` returns when its bytes matched and
    raises VerificationError (naming the blob and volume) when they did not."""

    def __init__(self, bundle: Bundle) -> None:
        self._bundle = bundle
        self._lock = threading.Lock()
        self._results: dict[str, Future[str | None]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self._queue: deque[str] = deque()  # the background thread's work, next first

    def finished(self) -> bool:
        """Whether the background thread has been through every blob."""
        return self._finished.is_set()

    def passed(self, digest: str) -> bool:
        """Whether the blob was hashed and matched (nothing left to do before serving it)."""
        with self._lock:
            fut = self._results.get(digest)
        return fut is not None and fut.done() and fut.exception() is None and fut.result() is None

    def check(self, digest: str) -> None:
        """Hash the blob now unless it was (or is being) hashed; blocking: call off the loop."""
        problem = self._run(digest).result()
        if problem is not None:
            raise VerificationError(
                f"refusing to serve {problem}",
                "the bundle is damaged: copy the named volume again from the source",
            )

    def _run(self, digest: str) -> Future[str | None]:
        with self._lock:
            fut = self._results.get(digest)
            if fut is not None:
                return fut
            fut = Future()
            self._results[digest] = fut
        fut.set_running_or_notify_cancel()
        try:
            problem = self._bundle.check_blob(digest, chunk=_CHUNK, on_bytes=self._stopping)
        except BaseException as exc:
            with self._lock:
                self._results.pop(digest, None)  # interrupted: whoever asks next hashes it
            fut.set_exception(exc)
            raise
        if problem is not None:
            log.error("refusing to serve %s", problem)
        fut.set_result(problem)
        return fut

    def _stopping(self, _n: int) -> None:
        if self._stop.is_set():
            raise _Stopped

    # -- background ---------------------------------------------------------------------------

    def start(self, digests: Iterable[str] | None = None) -> None:
        """Hash `digests` (default: every blob) in a background thread, in the order the blobs
        lie in the bundle (one sequential read of the medium), except those `prefer` names."""
        if self._thread is None:
            wanted = list(self._bundle.blob_digests() if digests is None else digests)
            with self._lock:
                self._queue.extend(sorted(wanted, key=lambda d: _position(self._bundle, d)))
            self._thread = threading.Thread(target=self._all, name="blob-checks", daemon=True)
            self._thread.start()

    def prefer(self, digests: Sequence[str]) -> None:
        """Move `digests` to the front of the background work (a client that fetched a
        manifest asks for its config and layers next)."""
        with self._lock:
            for digest in reversed(digests):
                if digest not in self._results and digest in self._queue:
                    self._queue.remove(digest)
                    self._queue.appendleft(digest)

    def _next(self) -> str | None:
        with self._lock:
            while self._queue:
                digest = self._queue.popleft()
                if digest not in self._results:
                    return digest
        return None

    def _all(self) -> None:
        t0 = time.monotonic()
        bad = count = 0
        while not self._stop.is_set() and (digest := self._next()) is not None:
            count += 1
            try:
                if self._run(digest).result() is not None:
                    bad += 1
            except _Stopped:
                return
            except Exception as exc:  # a request hashes it again and says why
                log.error("checking blob %s failed: %s", digest, exc)
        if self._stop.is_set():
            return
        self._finished.set()
        log.info(
            "checked %d blobs of %s in %.1f s (%d do not match)",
            count,
            self._bundle.display(),
            time.monotonic() - t0,
            bad,
        )

    def close(self) -> None:
        """Stop the background thread (it stops within one chunk) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _position(bundle: Bundle, digest: str) -> tuple[int, str, int]:
    """Where a blob starts: held volumes are /proc/self/fd/N opened in order, so the shorter
    name, then the name, then the offset."""
    spans = bundle.blob_spans(digest)
    if not spans:
        return (0, "", 0)
    path = str(spans[0].path)
    return (len(path), path, spans[0].offset)


class BundleSource:
    """A ContentSource over an open Bundle whose signature, index and graph were verified.

    With `checks`, blob bytes are hashed lazily (see the module doc); without, the handle must
    have hashed every blob at open (`content_hashed`).
    """

    def __init__(self, bundle: Bundle, checks: BlobChecks | None = None) -> None:
        if checks is None and not bundle.content_hashed:
            raise ValueError("a bundle opened without hashing its content needs BlobChecks")
        self.bundle = bundle
        self.checks = checks
        self._manifests: dict[str, bytes] = {}
        self._blobs_of: dict[str, tuple[str, ...]] = {}  # image manifest -> config, layers
        self._catalog = build_catalog(list(bundle.index.get("manifests", [])), self._info)

    def _info(self, digest: str, media_type: str | None) -> ManifestInfo | None:
        if not self.bundle.has_blob(digest):
            return None
        if self.bundle.blob_size(digest) > MAX_MANIFEST_SIZE:
            return None
        try:
            data = self.bundle.read_blob(digest, limit=MAX_MANIFEST_SIZE)  # hashed as read
        except DigestMismatch as exc:
            # a damaged manifest is refused at start, as a damaged bundle was: name its volume
            problem = self.bundle.check_blob(digest) or exc.message
            raise VerificationError(
                f"refusing to serve {problem}",
                "the bundle is damaged: copy the named volume again from the source",
            ) from exc
        except (OSError, VerificationError):
            return None
        info = manifest_info(data, media_type)
        if info is not None:
            self._manifests[digest] = data
            self._blobs_of[digest] = info.blobs
        return info

    @property
    def description(self) -> str:
        return f"bundle {self.bundle.display()}"

    @property
    def store(self) -> None:
        return None

    def catalog(self) -> Catalog:
        return self._catalog

    def locate(self, digest: str) -> BlobLocation | None:
        if not is_digest(digest) or not self.bundle.has_blob(digest):
            return None
        data = self._manifests.get(digest)
        if data is not None:  # verified when the catalog was built
            if self.checks is not None:  # its config and layers are asked for next
                self.checks.prefer(self._blobs_of.get(digest, ()))
            return BlobLocation(digest, len(data), (), data=data)
        spans = self.bundle.blob_spans(digest)
        segments = tuple(Segment(s.path, s.offset, s.length) for s in spans)
        checks = self.checks
        pending = None
        if checks is not None and not checks.passed(digest):

            def pending() -> None:
                checks.check(digest)

        return BlobLocation(digest, self.bundle.blob_size(digest), segments, check=pending)

    # -- life ---------------------------------------------------------------------------------

    def __enter__(self) -> BundleSource:
        if self.checks is not None:
            # what the registry can serve: the configs and layers of its repositories (files
            # and blobs no manifest names are never served, so never need hashing)
            served = set().union(*(r.blobs for r in self._catalog.repositories.values()))
            self.checks.start(sorted(d for d in served if self.bundle.has_blob(d)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.checks is not None:
            self.checks.close()
