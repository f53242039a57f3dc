"""The model of `airlock.json`, the signed manifest of a bundle (schema "airlock.bundle/v1").

It pins everything: `index.json` by digest and size, and every blob carried in the bundle
(digest, size, media type, role, upstream source and upstream checksum). The signature covers
its exact bytes, so it is serialized deterministically (canonical JSON, blobs sorted by digest)
and carries no wall-clock time.

Parsing is strict (`extra="forbid"`, typed fields, digests checked by pattern) because a reader
trusts nothing in a bundle before this model has accepted it.

Minor versions of the format (`formatVersion`, absent in 1.0; see layout.py) add optional
fields. They are written only when a bundle uses them, so a bundle that uses none of them keeps
the exact bytes of a 1.0 manifest; a reader refuses a newer minor version by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from airlock.bundle.layout import (
    BUNDLE_NAME_RE,
    BUNDLE_SCHEMA,
    FILE_NAME_RE,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
)
from airlock.content import BlobRole
from airlock.errors import VerificationError
from airlock.oci.layout import canonical_json

__all__ = [
    "BaseRef",
    "BlobEntry",
    "BundleManifest",
    "ChecksumEntry",
    "Digest",
    "FileEntry",
    "ImageEntry",
    "IndexRef",
    "RecoveryEntry",
    "StoredEntry",
    "ToolInfo",
    "parse_manifest",
]

Digest = Annotated[str, Field(pattern=r"^sha256:[a-f0-9]{64}$")]
Size = Annotated[int, Field(ge=0)]
Role = Literal[
    "image-index",
    "image-manifest",
    "image-config",
    "image-layer",
    "file",
    "files-manifest",
    "sbom",
    "meta",
]
FormatVersion = Literal["1.0", "1.1", "1.2"]
assert get_args(FormatVersion) == FORMAT_VERSIONS
# The wire names are BlobRole's values; keep the two in step.
assert set(get_args(Role)) == {r.value for r in BlobRole}


class _Model(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class ToolInfo(_Model):
    name: str
    version: str


class IndexRef(_Model):
    digest: Digest
    size: Size


class ChecksumEntry(_Model):
    """A checksum published upstream (e.g. `kubeadm.sha256`) and where it came from."""

    algorithm: Literal["sha256", "sha512"]
    value: Annotated[str, Field(pattern=r"^[a-f0-9]{64}([a-f0-9]{64})?$")]
    source: str


class BlobEntry(_Model):
    digest: Digest
    size: Size
    media_type: str
    role: Role
    source: str = ""
    checksum: ChecksumEntry | None = None


class ImageEntry(_Model):
    reference: str
    digest: Digest
    media_type: str
    size: Size  # of the top-level manifest or index
    platforms: tuple[str, ...] = ()
    blobs: tuple[Digest, ...] = ()  # every blob of the image, top-level first
    content_size: Size = 0  # sum of the sizes of `blobs` (omitted ones included)


class StoredEntry(_Model):
    """A file stored compressed (format 1.1): the blob the bundle carries for it."""

    compression: Literal["zstd"]
    digest: Digest  # of the stored bytes (the blob); the entry's own digest is the file's
    size: Size


class FileEntry(_Model):
    name: str
    kind: str
    url: str
    digest: Digest
    size: Size
    media_type: str
    platform: str = ""
    version: str = ""
    checksum: ChecksumEntry | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    stored: StoredEntry | None = None  # None: the blob is the file itself

    @property
    def blob_digest(self) -> str:
        return self.stored.digest if self.stored else self.digest

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not FILE_NAME_RE.match(v):
            raise ValueError(f"file name {v!r} must be a plain file name (no '/', not '..')")
        return v


class RecoveryEntry(_Model):
    """Recovery volumes (format 1.2): the layout of the erasure code over the volumes.

    The tar is cut into `data_volumes` volumes of `volume_size` bytes; each volume is read as
    chunks of `chunk_size` bytes, and `recovery_volumes` volumes hold zfec's Reed-Solomon
    shares of every stripe of chunks. `boot_copies` copies of the boot volume carry
    airlock.json, the parts file, the recovery index and the wheelhouse.
    """

    scheme: Literal["zfec"]
    data_volumes: Annotated[int, Field(ge=1, le=255)]
    recovery_volumes: Annotated[int, Field(ge=1, le=255)]
    volume_size: Annotated[int, Field(ge=1)]
    chunk_size: Annotated[int, Field(ge=1)]
    boot_copies: Annotated[int, Field(ge=1, le=999)]


class BaseRef(_Model):
    """The inventory a delta bundle was built against (`bundle create --since`)."""

    inventory: Digest


class BundleManifest(_Model):
    schema_: Literal["airlock.bundle/v1"] = Field(alias="schema")
    format_version: FormatVersion = "1.0"
    tool: ToolInfo
    name: str
    channel: str
    sequence: Annotated[int, Field(ge=0)]
    created_from: Digest  # sha256 of the canonical JSON of `spec`
    spec: dict[str, Any]
    resolved: dict[str, Any]
    index: IndexRef
    blobs: tuple[BlobEntry, ...]
    images: tuple[ImageEntry, ...]
    files: tuple[FileEntry, ...]
    files_manifest: Digest
    sbom: Digest
    base: BaseRef | None = None
    omitted: tuple[Digest, ...] = ()
    expires: str | None = None  # ISO date (YYYY-MM-DD); loading refuses the bundle after it
    recovery: RecoveryEntry | None = None

    @field_validator("expires")
    @classmethod
    def _iso_date(cls, v: str | None) -> str | None:
        if v is not None:
            import datetime

            datetime.date.fromisoformat(v)
        return v

    @field_validator("name")
    @classmethod
    def _bundle_name(cls, v: str) -> str:
        if not BUNDLE_NAME_RE.match(v):
            raise ValueError(f"bundle name {v!r} must match {BUNDLE_NAME_RE.pattern}")
        return v

    @field_validator("blobs")
    @classmethod
    def _sorted_unique(cls, v: tuple[BlobEntry, ...]) -> tuple[BlobEntry, ...]:
        digests = [b.digest for b in v]
        if digests != sorted(set(digests)):
            raise ValueError("blobs must be sorted by digest and unique")
        return v

    def blob_map(self) -> dict[str, BlobEntry]:
        return {b.digest: b for b in self.blobs}

    def to_bytes(self) -> bytes:
        """The exact bytes of airlock.json (what the signature covers)."""
        doc = self.model_dump(mode="json", by_alias=True)
        # Fields of later minor versions appear only when used (1.0 bytes stay 1.0 bytes).
        if doc["formatVersion"] == "1.0":
            del doc["formatVersion"]
        if doc["recovery"] is None:
            del doc["recovery"]
        for f in doc["files"]:
            if f["stored"] is None:
                del f["stored"]
        return canonical_json(doc)


def parse_manifest(data: bytes, *, what: str = "airlock.json") -> BundleManifest:
    """Parse and validate airlock.json; any problem is a VerificationError naming the field."""
    if not data.startswith(b"{"):
        raise VerificationError(f"{what} is not a JSON object", "is this an airlock bundle?")
    try:
        return BundleManifest.model_validate_json(data)
    except ValidationError as exc:
        _refuse_newer(data, what, exc)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise VerificationError(
            f"{what} is not a valid {BUNDLE_SCHEMA} manifest: {problems}",
            "the bundle is damaged or was written by an incompatible airlock version",
        ) from exc


def _refuse_newer(data: bytes, what: str, exc: ValidationError) -> None:
    """A manifest of a newer minor version is named as such, not as a schema error."""
    import json

    try:
        version = json.loads(data).get("formatVersion")
    except (ValueError, AttributeError):
        return
    if isinstance(version, str) and version not in FORMAT_VERSIONS:
        raise VerificationError(
            f"{what} is bundle format {version}; this airlock reads up to {FORMAT_VERSION}",
            "load it with the airlock version that wrote it (its wheelhouse is in the bundle)",
        ) from exc
