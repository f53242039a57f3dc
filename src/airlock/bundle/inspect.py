"""Summarize a bundle without verifying every byte: what `airlock bundle inspect` shows.

Reads airlock.json (and the SBOM blob for its component count) in place. With keys, the
signature is checked too (cheap: airlock.json is small); the blobs are not hashed, that is
`verify_bundle`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock.bundle.layout import MAX_JSON_BLOB_BYTES, blob_member
from airlock.bundle.manifest import ChecksumEntry
from airlock.bundle.reader import open_bundle
from airlock.bundle.signing import key_id, verify_signature
from airlock.errors import VerificationError
from airlock.trust import check_expiry

__all__ = ["BundleSummary", "FileSummary", "ImageSummary", "inspect_bundle"]


@dataclass(frozen=True)
class ImageSummary:
    reference: str
    digest: str
    media_type: str
    platforms: tuple[str, ...]
    size: int  # all blobs of the image (shared layers counted in each image)
    blob_count: int
    carried_size: int  # of the blobs actually in this bundle (delta bundles omit some)


@dataclass(frozen=True)
class FileSummary:
    name: str
    kind: str
    url: str
    digest: str
    size: int
    version: str
    platform: str
    checksum: ChecksumEntry | None
    carried: bool
    signature_key: str | None = None  # the key that verified the upstream's signature
    stored_size: int | None = None  # bytes in the bundle when stored compressed
    compression: str | None = None


@dataclass(frozen=True)
class BundleSummary:
    path: Path
    name: str
    channel: str
    sequence: int
    expires: str | None  # YYYY-MM-DD: load and verify refuse the bundle after it
    expired: bool
    tool_version: str
    spec_digest: str
    resolved: dict[str, object]
    images: tuple[ImageSummary, ...]
    files: tuple[FileSummary, ...]
    archive_size: int  # bytes of the tar (all volumes)
    volumes: int
    total_size: int  # images + files as listed, shared blobs counted each time
    unique_size: int  # blobs carried, each once
    blob_count: int
    omitted_count: int
    sbom_components: int
    signed: bool
    signature_valid: bool | None  # None: no key given
    key_id: str | None
    base_inventory: str | None
    format_version: str = "1.0"
    recovery: dict[str, int] | None = None  # the recovery layout (format 1.2)
    files_size: int = 0  # the files carried, as fetched
    files_stored_size: int = 0  # the same files as the bundle stores them

    @property
    def compression_ratio(self) -> float:
        """How many times smaller the carried files are in the bundle (1.0: stored raw)."""
        return self.files_size / self.files_stored_size if self.files_stored_size else 1.0


def inspect_bundle(path: Path, *, keys: Sequence[Path] = ()) -> BundleSummary:
    """Summarize the bundle at `path`; a bad signature is reported, not raised."""
    with open_bundle(Path(path)) as reader:
        m = reader.manifest
        sizes = {b.digest: b.size for b in m.blobs}
        images = tuple(
            ImageSummary(
                reference=i.reference,
                digest=i.digest,
                media_type=i.media_type,
                platforms=i.platforms,
                size=i.content_size,
                blob_count=len(i.blobs),
                carried_size=sum(sizes.get(d, 0) for d in set(i.blobs)),
            )
            for i in m.images
        )
        files = tuple(
            FileSummary(
                name=f.name,
                kind=f.kind,
                url=f.url,
                digest=f.digest,
                size=f.size,
                version=f.version,
                platform=f.platform,
                checksum=f.checksum,
                carried=f.blob_digest in sizes,
                signature_key=f.annotations.get("io.airlock.signature.key"),
                stored_size=f.stored.size if f.stored else None,
                compression=f.stored.compression if f.stored else None,
            )
            for f in m.files
        )
        carried = [f for f in files if f.carried]
        components = 0
        if reader.has_blob(m.sbom):
            components = _component_count(
                reader.read_member(blob_member(m.sbom), limit=MAX_JSON_BLOB_BYTES)
            )
        valid: bool | None = None
        kid: str | None = None
        if keys and reader.signature is not None:
            try:
                kid = key_id(verify_signature(reader.manifest_bytes, reader.signature, keys))
                valid = True
            except VerificationError:
                valid = False
        elif keys:
            valid = False
        return BundleSummary(
            path=Path(path),
            name=m.name,
            channel=m.channel,
            sequence=m.sequence,
            expires=m.expires,
            expired=_expired(m.expires),
            tool_version=m.tool.version,
            spec_digest=m.created_from,
            resolved=dict(m.resolved),
            images=images,
            files=files,
            archive_size=reader.size,
            volumes=len(reader.volumes.paths),
            total_size=sum(i.size for i in images) + sum(f.size for f in files),
            unique_size=sum(sizes.values()),
            blob_count=len(m.blobs),
            omitted_count=len(m.omitted),
            sbom_components=components,
            signed=reader.signature is not None,
            signature_valid=valid,
            key_id=kid,
            base_inventory=m.base.inventory if m.base else None,
            format_version=m.format_version,
            recovery=(
                m.recovery.model_dump(by_alias=True, exclude={"scheme"}) if m.recovery else None
            ),
            files_size=sum(f.size for f in carried),
            files_stored_size=sum(f.stored_size or f.size for f in carried),
        )


def _expired(expires: str | None) -> bool:
    try:
        check_expiry(expires)
    except VerificationError:
        return True
    return False


def _component_count(data: bytes) -> int:
    """Components in a CycloneDX JSON document (read as JSON: no SBOM library needed)."""
    doc = json.loads(data)
    return len(doc.get("components", [])) if isinstance(doc, dict) else 0
