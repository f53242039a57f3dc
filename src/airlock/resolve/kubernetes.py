"""kubeadm's image list for an exact Kubernetes version (pure).

The list depends on the exact patch release: etcd and CoreDNS were bumped within minor lines.
Authorities, best first: the fetched kubeadm binary (`kubeadm config images list`), kubeadm's
`constants.go` at the tag, then this built-in table keyed by exact version. A version missing
from the table falls back to the nearest lower patch of the same minor, with a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airlock.errors import UsageError

__all__ = ["CONTROL_PLANE", "KubeadmImages", "images_from_constants", "kubeadm_images"]

REGISTRY = "registry.k8s.io"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")

# exact version -> (pause, etcd, coredns), from kubeadm's constants.go at each tag
_TABLE: dict[str, tuple[str, str, str]] = {
    "v1.27.0": ("3.9", "3.5.7-0", "v1.10.1"),
    "v1.27.3": ("3.9", "3.5.7-0", "v1.10.1"),
    "v1.27.4": ("3.9", "3.5.7-0", "v1.10.1"),
    "v1.28.0": ("3.9", "3.5.9-0", "v1.10.1"),
    "v1.29.0": ("3.9", "3.5.10-0", "v1.11.1"),
    "v1.30.0": ("3.9", "3.5.12-0", "v1.11.1"),
    "v1.31.0": ("3.10", "3.5.15-0", "v1.11.3"),
    "v1.32.0": ("3.10", "3.5.16-0", "v1.11.3"),
    "v1.33.0": ("3.10", "3.5.21-0", "v1.12.0"),
    "v1.34.0": ("3.10.1", "3.6.4-0", "v1.12.1"),
    "v1.34.1": ("3.10.1", "3.6.4-0", "v1.12.1"),
}


@dataclass(frozen=True)
class KubeadmImages:
    images: tuple[str, ...]
    source: str  # "kubeadm table v1.27.3", or "... (nearest: v1.27.0)"
    exact: bool


def _parse(version: str) -> tuple[int, int, int]:
    m = re.match(r"^v(\d+)\.(\d+)\.(\d+)$", version)
    if not m:
        raise UsageError(f"not an exact Kubernetes version: {version!r}", "e.g. v1.27.3")
    return int(m[1]), int(m[2]), int(m[3])


def _assemble(version: str, pause: str, etcd: str, coredns: str) -> tuple[str, ...]:
    return (
        *(f"{REGISTRY}/{name}:{version}" for name in CONTROL_PLANE),
        f"{REGISTRY}/pause:{pause}",
        f"{REGISTRY}/etcd:{etcd}",
        f"{REGISTRY}/coredns/coredns:{coredns}",
    )


def kubeadm_images(version: str) -> KubeadmImages:
    """The seven images `kubeadm config images list --kubernetes-version VERSION` prints."""
    major, minor, patch = _parse(version)
    if version in _TABLE:
        return KubeadmImages(_assemble(version, *_TABLE[version]), f"kubeadm table {version}", True)
    same_minor = sorted(
        (v for v in _TABLE if _parse(v)[:2] == (major, minor) and _parse(v)[2] <= patch),
        key=_parse,
    )
    if not same_minor:
        known = sorted({f"v{_parse(v)[0]}.{_parse(v)[1]}" for v in _TABLE}, key=lambda s: s)
        raise UsageError(
            f"no kubeadm image table for {version}",
            hint=f"known minors: {', '.join(known)}; the fetched kubeadm binary can list them",
        )
    nearest = same_minor[-1]
    return KubeadmImages(
        _assemble(version, *_TABLE[nearest]), f"kubeadm table {version} (nearest: {nearest})", False
    )


_CONST_RE = {
    "pause": re.compile(r'PauseVersion\s*=\s*"([^"]+)"'),
    "etcd": re.compile(r'DefaultEtcdVersion\s*=\s*"([^"]+)"'),
    "coredns": re.compile(r'CoreDNSVersion\s*=\s*"([^"]+)"'),
}


def images_from_constants(version: str, constants_go: str) -> KubeadmImages:
    """Read pause/etcd/CoreDNS from kubeadm's constants.go at the version's tag."""
    found = {}
    for key, rx in _CONST_RE.items():
        m = rx.search(constants_go)
        if not m:
            raise UsageError(f"constants.go for {version} has no {key} version")
        found[key] = m[1]
    etcd = found["etcd"] if "-" in found["etcd"] else found["etcd"] + "-0"
    images = _assemble(version, found["pause"], etcd, found["coredns"])
    return KubeadmImages(images, f"kubeadm constants.go {version}", True)
