"""Upstream URLs of every release artifact, built from the layout table, and the spec's
mirrors applied to them (pure).

Nothing here knows a URL shape: each comes from the row of `airlock.resolve.layouts` that
covers the version asked for (with its evidence), so a layout that changed between releases
(release-tools' templates moving from kubepkg to krel, k9s' checksum file, containerd's file
name) is a new row, not a new branch in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from airlock.resolve.layouts import LayoutRow, layout_for

__all__ = ["FileSpec", "apply_mirror", "cni_manifest_url", "release_files"]


@dataclass(frozen=True)
class FileSpec:
    kind: str
    name: str
    version: str
    url: str
    checksum_url: str | None
    platform: str = ""


def apply_mirror(url: str, mirrors: Mapping[str, str]) -> str:
    """Replace the longest matching prefix (the spec's `sources.files`)."""
    best = max((p for p in mirrors if url.startswith(p)), key=len, default=None)
    return url if best is None else mirrors[best] + url[len(best) :]


def _arch(platform: str) -> str:
    return platform.split("/")[1]


def _file(
    kind: str, name: str, row: LayoutRow, version: str, *, platform: str = "", binary: str = ""
) -> FileSpec:
    arch = _arch(platform) if platform else ""
    url = row.format(row.url, version=version, arch=arch, name=binary)
    checksum = (
        row.format(row.checksum, version=version, arch=arch, name=binary) if row.checksum else None
    )
    return FileSpec(kind, name, version, url, checksum, platform)


def release_files(
    *,
    kubernetes: str,
    release_tools: str,
    containerd: str,
    runc: str,
    crictl: str,
    cni_plugins: str,
    platforms: list[str],
    helm: str | None,
    k9s: str | None,
) -> list[FileSpec]:
    """Every binary, archive and systemd file of the blog's list, per platform."""
    out: list[FileSpec] = []
    k8s = layout_for("kubernetes", kubernetes)
    per_platform = [
        ("archive", "cni-plugins", layout_for("cni-plugins", cni_plugins), cni_plugins),
        ("archive", "crictl", layout_for("crictl", crictl), crictl),
        ("archive", "containerd", layout_for("containerd", containerd), containerd),
        ("binary", "runc", layout_for("runc", runc), runc),
    ]
    if helm:
        per_platform.append(("archive", "helm", layout_for("helm", helm), helm))
    if k9s:
        per_platform.append(("archive", "k9s", layout_for("k9s", k9s), k9s))
    for platform in platforms:
        for b in k8s.names:
            out.append(_file("binary", b, k8s, kubernetes, platform=platform, binary=b))
        for kind, name, row, version in per_platform:
            out.append(_file(kind, name, row, version, platform=platform))
    tools = layout_for("release-tools", release_tools)
    for template in tools.names:
        out.append(
            _file("systemd", template.rsplit("/", 1)[1], tools, release_tools, binary=template)
        )
    return out


def cni_manifest_url(cni: str, version: str) -> str:
    row = layout_for(cni, version)
    return row.format(row.url, version=version)
