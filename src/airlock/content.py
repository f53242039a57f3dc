"""What a bundle carries, as plain values shared by the fetcher, the OCI client and the writer.

The fetch side produces these (every blob already verified and present in a BlobStore); the
bundle writer consumes them; the reader gives them back from `airlock.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from airlock.blobrole import BlobRole  # re-exported: the rest of airlock takes it from here

__all__ = ["Blob", "BlobRole", "FileArtifact", "ImageArtifact", "StoredForm", "UpstreamChecksum"]


@dataclass(frozen=True)
class UpstreamChecksum:
    """The checksum published upstream and where it came from (a `.sha256` URL, the spec...)."""

    algorithm: str  # "sha256" | "sha512"
    value: str  # hex
    source: str  # URL of the checksum file, or "spec"


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:<hex> of the bytes stored
    size: int
    media_type: str
    role: BlobRole
    source: str = ""  # upstream URL or image reference it came from


@dataclass(frozen=True)
class ImageArtifact:
    """One image reference, resolved to a digest, with every blob it needs (deduplicated)."""

    reference: str  # full upstream reference with tag: registry.k8s.io/pause:3.9
    digest: str  # digest of the top-level manifest or index
    media_type: str
    size: int
    blobs: tuple[Blob, ...]  # top-level manifest/index first, then everything below it
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredForm:
    """How a file's bytes are stored in the bundle when not as fetched (zstd): its own blob."""

    compression: str  # "zstd"
    digest: str  # sha256 of the stored bytes: the blob in the bundle
    size: int


@dataclass(frozen=True)
class FileArtifact:
    """A file carried in the bundle: kubeadm, a CNI tgz, a chart, kube-flannel.yml, a wheel."""

    name: str  # stable title, e.g. "kubeadm" or "cni-plugins-linux-amd64-v1.3.0.tgz"
    kind: str  # "binary" | "archive" | "manifest" | "chart" | "systemd" | "package" | "wheel"
    url: str  # upstream URL (never the mirror)
    digest: str  # sha256 of the bytes as fetched
    size: int
    media_type: str = "application/octet-stream"
    platform: str = ""  # linux/amd64 when the file is platform specific
    version: str = ""
    checksum: UpstreamChecksum | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    stored: StoredForm | None = None  # None: the blob is the file as fetched

    @property
    def blob_digest(self) -> str:
        """The digest of the blob the bundle carries for this file."""
        return self.stored.digest if self.stored else self.digest
