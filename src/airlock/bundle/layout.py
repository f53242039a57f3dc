"""Every path, media type and annotation of the bundle format v1, named in one place.

A bundle is one uncompressed tar whose root is an OCI image layout, with `airlock.json` (and its
signature) first:

    airlock.json            the bundle manifest (schema "airlock.bundle/v1"), signed
    airlock.json.sig        raw ed25519 signature over the bytes of airlock.json (optional)
    oci-layout              {"imageLayoutVersion":"1.0.0"}
    index.json              one descriptor per image + one for the files artifact manifest
    blobs/  blobs/sha256/   every blob once, sorted by digest

Files (binaries, charts, wheels, the SBOM...) are the layers of one OCI artifact manifest
(artifactType FILES_ARTIFACT_TYPE, config = the OCI empty descriptor), each layer titled with
`org.opencontainers.image.title`. Its index.json entry carries no reference name (only
`io.airlock.bundle.name` and `.sequence`): `ctr images import` names an image after any
`org.opencontainers.image.ref.name` and would then fail to unpack the files as layers.

Format versions (airlock.json `formatVersion`, absent in 1.0; a minor version only adds what
older readers can refuse by name, and is written only when a bundle uses it):

    1.0  the layout above
    1.1  files stored zstd-compressed: the files manifest's layer is the compressed blob
         (media type + "+zstd", the file's own digest in `io.airlock.file.content.digest`),
         and airlock.json's file entry keeps the file's digest with `stored` {compression,
         digest, size}; image blobs are never compressed
    1.2  recovery volumes: airlock.json `recovery` {scheme "zfec", dataVolumes, recoveryVolumes,
         volumeSize, chunkSize, bootCopies}; beside the volumes NAME.airlock.recovery.NNN, the
         recovery index NAME.airlock.recovery.json (every chunk's sha256) and the boot copies
         NAME.airlock.boot.N.tar (see bundle/recovery.py and bundle/bootvol.py)
"""

from __future__ import annotations

import re
from typing import Final

from airlock.oci.digest import digest_hex
from airlock.oci.media import OCI_EMPTY
from airlock.standalone.volumes import VOLUME_DIGITS, parts_name

__all__ = [
    "AIRLOCK_JSON",
    "ANNOTATION_BUNDLE_NAME",
    "ANNOTATION_FILE_KIND",
    "ANNOTATION_FILE_PLATFORM",
    "ANNOTATION_FILE_URL",
    "ANNOTATION_FILE_VERSION",
    "BLOBS_DIR",
    "BLOB_DIR",
    "BUNDLE_NAME_RE",
    "BUNDLE_SCHEMA",
    "BUNDLE_SUFFIX",
    "EMPTY_CONFIG_DATA",
    "EMPTY_CONFIG_DESCRIPTOR",
    "EMPTY_CONFIG_DIGEST",
    "FILES_ARTIFACT_TYPE",
    "FILE_KIND_MEDIA_TYPES",
    "FILE_NAME_RE",
    "FORMAT_COMPRESSED",
    "FORMAT_RECOVERY",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "INDEX_JSON",
    "MAX_AIRLOCK_JSON_BYTES",
    "MAX_JSON_BLOB_BYTES",
    "MAX_MEMBERS",
    "MIN_VOLUME_SIZE",
    "OCI_LAYOUT",
    "PARTS_SCHEMA",
    "PARTS_SUFFIX",
    "SBOM_MEDIA_TYPE",
    "SBOM_TITLE",
    "SIGNATURE",
    "VOLUME_DIGITS",
    "blob_member",
    "bundle_filename",
    "file_media_type",
    "parts_path_for",
    "recovery_index_name",
    "recovery_volume_name",
    "volume_name",
]

BUNDLE_SCHEMA = "airlock.bundle/v1"
FORMAT_VERSIONS = ("1.0", "1.1", "1.2")  # every minor version this airlock reads
FORMAT_VERSION = FORMAT_VERSIONS[-1]
FORMAT_COMPRESSED: Final = "1.1"  # files stored zstd-compressed
FORMAT_RECOVERY: Final = "1.2"  # recovery volumes
PARTS_SCHEMA = "airlock.parts/v1"

# Tar members, in the order the writer emits them.
AIRLOCK_JSON = "airlock.json"
SIGNATURE = "airlock.json.sig"
OCI_LAYOUT = "oci-layout"
INDEX_JSON = "index.json"
BLOBS_DIR = "blobs"
BLOB_DIR = "blobs/sha256"

BUNDLE_SUFFIX = ".airlock.tar"  # lab.airlock.tar
PARTS_SUFFIX = ".airlock.parts.json"  # lab.airlock.parts.json (beside lab.airlock.tar.000 ...)
MIN_VOLUME_SIZE = 1 << 20

# Bounds a reader enforces before trusting anything (hostile archives).
MAX_AIRLOCK_JSON_BYTES = 64 << 20
MAX_JSON_BLOB_BYTES = 16 << 20  # manifests, indexes and configs walked by verify
MAX_MEMBERS = 1_000_000

FILES_ARTIFACT_TYPE = "application/vnd.airlock.files.v1"
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
SBOM_TITLE = "sbom.cdx.json"

ANNOTATION_BUNDLE_NAME = "io.airlock.bundle.name"
ANNOTATION_BUNDLE_SEQUENCE = "io.airlock.bundle.sequence"
ANNOTATION_FILE_KIND = "io.airlock.file.kind"
ANNOTATION_FILE_URL = "io.airlock.file.url"
ANNOTATION_FILE_VERSION = "io.airlock.file.version"
ANNOTATION_FILE_PLATFORM = "io.airlock.file.platform"

# The OCI empty descriptor (image-spec 1.1): the config of an artifact manifest.
EMPTY_CONFIG_DATA = b"{}"
EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_CONFIG_DESCRIPTOR: dict[str, object] = {
    "mediaType": OCI_EMPTY,
    "digest": EMPTY_CONFIG_DIGEST,
    "size": 2,
    "data": "e30=",
}

# A file layer's media type when the fetcher left the generic octet-stream: one per kind, so a
# reader (or `oras pull --media-type`) can select binaries, charts, wheels...
FILE_KIND_MEDIA_TYPES: dict[str, str] = {
    "binary": "application/vnd.airlock.file.binary.v1",
    "archive": "application/vnd.airlock.file.archive.v1",
    "manifest": "application/vnd.airlock.file.manifest.v1+yaml",
    "chart": "application/vnd.airlock.file.chart.v1.tar+gzip",
    "systemd": "application/vnd.airlock.file.systemd.v1",
    "package": "application/vnd.airlock.file.package.v1",
    "wheel": "application/vnd.airlock.file.wheel.v1+zip",
}

BUNDLE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")  # also a valid OCI tag
# A file title is a plain file name: ORAS-style tools write it as a path when pulling.
FILE_NAME_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.+@=,~-]{1,255}\Z")


def file_media_type(kind: str, media_type: str) -> str:
    if media_type and media_type != "application/octet-stream":
        return media_type
    return FILE_KIND_MEDIA_TYPES.get(kind, "application/octet-stream")


def blob_member(digest: str) -> str:
    """The tar member name of a blob (`blobs/sha256/<hex>`); the digest must be valid."""
    return f"{BLOB_DIR}/{digest_hex(digest)}"


def bundle_filename(name: str) -> str:
    return f"{name}{BUNDLE_SUFFIX}"


def volume_name(tar_name: str, number: int) -> str:
    return f"{tar_name}.{number:0{VOLUME_DIGITS}d}"


def recovery_volume_name(tar_name: str, number: int) -> str:
    """`lab.airlock.tar` -> `lab.airlock.recovery.000` (never taken for a data volume)."""
    return f"{tar_name.removesuffix('.tar')}.recovery.{number:0{VOLUME_DIGITS}d}"


def recovery_index_name(tar_name: str) -> str:
    """`lab.airlock.tar` -> `lab.airlock.recovery.json`."""
    return f"{tar_name.removesuffix('.tar')}.recovery.json"


def parts_path_for(tar_name: str) -> str:
    """`lab.airlock.tar` -> `lab.airlock.parts.json`; any other name gets `.parts.json` added."""
    return parts_name(tar_name)  # the bootstrap script embeds the same rule
