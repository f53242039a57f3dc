"""A verified bundle as the registry's content (`airlock registry serve --bundle`).

The registry (airlock.oci.server) reads through a ContentSource; this one is an open `Bundle`:
the catalog is built from index.json as the handle verified it, manifests are read through the
handle's verifying readers, and blobs go out as byte ranges of the files the handle holds open
(sendfile), hashed when the handle was opened. Read-only: pushes are refused.
"""

from __future__ import annotations

from airlock.bundle.handle import Bundle
from airlock.errors import VerificationError
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

__all__ = ["BundleSource"]


class BundleSource:
    """A ContentSource over an open, verified Bundle."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._catalog = build_catalog(list(bundle.index.get("manifests", [])), self._info)

    def _info(self, digest: str, media_type: str | None) -> ManifestInfo | None:
        if not self.bundle.has_blob(digest):
            return None
        if self.bundle.blob_size(digest) > MAX_MANIFEST_SIZE:
            return None
        try:
            data = self.bundle.read_blob(digest, limit=MAX_MANIFEST_SIZE)
        except (OSError, VerificationError):
            return None
        return manifest_info(data, media_type)

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
        spans = self.bundle.blob_spans(digest)
        segments = tuple(Segment(s.path, s.offset, s.length) for s in spans)
        return BlobLocation(digest, self.bundle.blob_size(digest), segments)
