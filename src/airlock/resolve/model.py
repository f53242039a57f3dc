"""The plan: every artifact a bundle will carry, and where each one was found."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from airlock.naming import camel_name

__all__ = ["Artifact", "Plan"]


@dataclass(frozen=True)
class Artifact:
    kind: str  # binary | archive | systemd | manifest | chart | image | package
    name: str
    version: str
    source: str  # upstream URL, or the full image reference
    fetch_url: str = ""  # where it is actually fetched from (a mirror from `sources`), files only
    checksum_url: str | None = None  # upstream checksum file, files only
    sha256: str | None = None  # pinned in the spec or in the plan
    platform: str = ""
    found_in: tuple[str, ...] = ()  # how it was discovered: "kubeadm table v1.27.3", ...
    size: int | None = None  # when the metadata says (OS packages; plan: HEAD, manifests)
    digest: str | None = None  # plan: sha256 from the checksum file; an image's manifest digest
    signature_url: str | None = None  # an upstream detached signature to check (spec `verify`)
    signature_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """camelCase keys, as every --json document has."""
        return {camel_name(k): list(v) if k == "found_in" else v for k, v in asdict(self).items()}


@dataclass
class Plan:
    name: str
    kubernetes_version: str
    artifacts: list[Artifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    image_list_source: str = ""  # which authority gave kubeadm's image list
    total_size: int | None = None  # measured plans: bytes of every unique blob known
    unknown_sizes: int = 0  # blobs whose size is not known before download
    wheelhouse: dict[str, int] = field(default_factory=dict)  # bytes: airlock, then per target

    def images(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind == "image"]

    def files(self) -> list[Artifact]:
        """Everything fetched as a file: binaries, archives, manifests, charts, OS packages
        resolved to files (a package known by name only is not a file)."""
        return [
            a
            for a in self.artifacts
            if a.kind != "image" and not (a.kind == "package" and not a.fetch_url)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kubernetesVersion": self.kubernetes_version,
            "imageListSource": self.image_list_source,
            "warnings": self.warnings,
            "totalSize": self.total_size,
            "unknownSizes": self.unknown_sizes,
            "artifacts": [a.to_json() for a in self.artifacts],
        }
