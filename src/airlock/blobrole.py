"""What a blob is to a bundle (standard library only, and apart from `airlock.content`'s
dataclasses: `airlock.bundle.facts` checks roles on `bundle verify`'s early path, which imports no
dataclasses; see `airlock.bundle.rules`)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BlobRole"]


class BlobRole(StrEnum):
    INDEX = "image-index"
    MANIFEST = "image-manifest"
    CONFIG = "image-config"
    LAYER = "image-layer"
    FILE = "file"  # a binary, archive, chart, CNI manifest, OS package, wheel
    FILES_MANIFEST = "files-manifest"  # the OCI artifact manifest that titles the files
    SBOM = "sbom"
    META = "meta"  # anything else airlock writes for itself (empty config, ...)
