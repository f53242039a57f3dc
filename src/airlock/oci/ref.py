"""Image references: parse and normalise the way containerd and docker do (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from airlock.errors import UsageError

__all__ = ["DOCKER_HUB", "Reference", "parse_reference"]

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}\Z")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?\Z")


@dataclass(frozen=True, order=True)
class Reference:
    """A fully qualified reference: `registry/repository[:tag][@digest]`."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`registry/repository`, the repository name airlock's registry serves."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str) -> Reference:
    """Parse `nginx`, `flannel/flannel:v0.22.0`, `registry.k8s.io/pause:3.9`, `x@sha256:...`.

    Docker Hub names are normalised (`nginx` -> `docker.io/library/nginx:latest`).
    """
    raw = text.strip()
    if not raw or raw != text or any(c.isspace() for c in raw):
        raise UsageError(
            f"invalid image reference {text!r}", "no spaces; e.g. registry.k8s.io/pause:3.9"
        )
    name, digest = raw, None
    if "@" in raw:
        name, digest = raw.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise UsageError(
                f"invalid digest in image reference {text!r}", "digests look like sha256:<64 hex>"
            )
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid tag {tag!r} in image reference {text!r}")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
        if not _HOST_RE.match(registry):
            raise UsageError(f"invalid registry host {registry!r} in image reference {text!r}")
    else:
        registry, repository = DOCKER_HUB, name
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPO_RE.match(repository):
        raise UsageError(
            f"invalid repository {repository!r} in image reference {text!r}",
            "repository names are lowercase letters, digits and separators . _ - /",
        )
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)
