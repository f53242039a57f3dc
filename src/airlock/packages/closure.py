"""The exact set of OS package files a target needs: `resolve_closure` and its uses.

    load_repositories(spec.packages, platform=..., keys=...)   -> [RepoMetadata] (verified)
    resolve_closure(spec.packages, installed=..., repos=...)   -> Closure
    closure_to_plan_rows(closure)                              -> rows for `airlock plan`
    closure_file_requests(closure, mirrors=...)                -> FileRequests for the downloader

Nothing already installed is carried; each file says which requested package pulled it in.
Bad input is named: a package no repository has (PackageNotFound, with the repositories
searched), a dependency that cannot be met (UnsatisfiableDependencies, with libsolv's chain),
metadata whose checksum or signature is wrong (DigestMismatch / SignatureError, from
`airlock.packages.repos`), and at download time a file that differs from its metadata
(`verify_package_file`, DigestMismatch).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.content import UpstreamChecksum
from airlock.errors import DigestMismatch, UsageError, VerificationError
from airlock.fetch.downloader import FileRequest
from airlock.packages.debian import required_base_status, solve_debian
from airlock.packages.repos import (
    Fetch,
    PackageFormat,
    RepoMetadata,
    debian_arch,
    load_debian_repository,
    load_rpm_repository,
    rpm_arch,
    url_reader,
)
from airlock.packages.rpm import InstalledPackage, installed_primary, named_base, solve_rpm
from airlock.resolve.urls import apply_mirror
from airlock.spec import Packages

__all__ = [
    "Checksum",
    "Closure",
    "Installed",
    "InstalledPackage",
    "PackageFile",
    "PackageNotFound",
    "UnsatisfiableDependencies",
    "closure_downloads",
    "closure_file_requests",
    "closure_to_plan_rows",
    "load_repositories",
    "package_format",
    "resolve_closure",
    "verify_package_file",
]

_DEB_OS = ("debian", "ubuntu", "raspbian", "devuan")
_RPM_OS = (
    "fedora",
    "rhel",
    "centos",
    "rocky",
    "alma",
    "almalinux",
    "ol",
    "oracle",
    "amzn",
    "opensuse",
    "sles",
)


class PackageNotFound(UsageError):
    """A requested package is in none of the repositories."""


class UnsatisfiableDependencies(UsageError):
    """The requested packages cannot all be installed together."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # "sha256" (Debian); rpm-md's own type ("sha256", "sha512", ...)
    value: str  # hex


@dataclass(frozen=True)
class PackageFile:
    name: str
    version: str
    arch: str
    url: str
    checksum: Checksum
    size: int
    reason: str  # "requested" or "socat -> libwrap0 (Depends: libnsl2 (>= 1.0))"
    chain: tuple[str, ...] = ()  # requested package first, then each parent
    repository: str = ""
    replaces: str | None = None  # the installed version this upgrades, if any

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Closure:
    format: PackageFormat
    packages: tuple[PackageFile, ...]
    already_installed: tuple[str, ...] = ()

    @property
    def total_size(self) -> int:
        return sum(p.size for p in self.packages)


@dataclass(frozen=True)
class Installed:
    """What the target already has: a dpkg status file, a named base, or an inventory list.

    `base`: "minimal" (Debian: every Priority: required package and its dependencies, as
    debootstrap minbase; rpm: the distribution's minimal set, see `rpm.NAMED_BASES`), or a name
    from `rpm.NAMED_BASES`.
    """

    dpkg_status: Path | None = None
    base: str | None = None
    packages: tuple[InstalledPackage, ...] = field(default_factory=tuple)


def package_format(os_name: str) -> PackageFormat:
    """`debian-12` / `ubuntu-22.04` -> deb; `fedora-37`, `rocky-9`, ... -> rpm."""
    family = os_name.lower().split("-")[0].rstrip("0123456789.")
    if family in _DEB_OS:
        return "deb"
    if family in _RPM_OS:
        return "rpm"
    raise UsageError(
        f"packages.os: unknown OS family {os_name!r}",
        hint="use e.g. debian-12, ubuntu-22.04, fedora-37, rocky-9",
    )


def load_repositories(
    packages_spec: Packages,
    *,
    workdir: Path,
    platform: str = "linux/amd64",
    keys: Sequence[Path | bytes] = (),
    mirrors: Mapping[str, str] | None = None,
    fetch: Fetch | None = None,
    opener: Any = None,  # a urllib opener (airlock.fetch.network), used when `fetch` is None
) -> list[RepoMetadata]:
    """Fetch and verify the metadata of every repository in `packages.repositories`."""
    fmt = package_format(packages_spec.os)
    if not packages_spec.repositories:
        raise UsageError(
            "packages.repositories is empty: there is nowhere to resolve packages from",
            hint="add the distribution's repository URL(s) to the spec",
        )
    reader = fetch or url_reader(mirrors, opener=opener)
    out: list[RepoMetadata] = []
    for i, url in enumerate(packages_spec.repositories):
        where = workdir / f"repo-{i}"
        if fmt == "deb":
            out += load_debian_repository(
                url, arch=debian_arch(platform), workdir=where, keys=keys, fetch=reader
            )
        else:
            out.append(load_rpm_repository(url, workdir=where, keys=keys, fetch=reader))
    return out


def _installed_path(
    fmt: PackageFormat, installed: Installed, repos: Sequence[RepoMetadata], arch: str, tmp: Path
) -> Path | None:
    if fmt == "deb":
        if installed.dpkg_status is not None:
            return installed.dpkg_status
        if installed.base is not None:
            return required_base_status(repos, arch=arch, dest=tmp / "status")
        if installed.packages:
            lines = [
                f"Package: {p.name}\nStatus: install ok installed\nVersion: {p.version}\n"
                f"Architecture: {p.arch or arch}\n"
                for p in installed.packages
            ]
            (tmp / "status").write_text("\n".join(lines))
            return tmp / "status"
        return None
    names = named_base(installed.base) if installed.base else ()
    if not names and not installed.packages:
        return None
    return installed_primary(
        repos, dest=tmp / "installed-primary.xml", names=names, packages=installed.packages
    )


def _reason(p: dict[str, Any]) -> str:
    chain = list(p.get("chain") or [])
    if not chain:
        return "requested"
    return " -> ".join(chain) + f" ({p.get('dep', '')})"


def resolve_closure(
    packages_spec: Packages,
    *,
    installed: Installed,
    repos: Sequence[RepoMetadata],
    platform: str = "linux/amd64",
    recommends: bool = False,
) -> Closure:
    """The package files to carry so `packages_spec.names` install on a target with `installed`.

    Raises PackageNotFound or UnsatisfiableDependencies (UsageError) for bad input.
    """
    fmt = package_format(packages_spec.os)
    wrong = [r.name for r in repos if r.format != fmt]
    if wrong:
        raise UsageError(f"packages.os is {packages_spec.os} ({fmt}) but {wrong} are not {fmt}")
    if not packages_spec.names:
        return Closure(fmt, ())
    arch = debian_arch(platform) if fmt == "deb" else rpm_arch(platform)
    with tempfile.TemporaryDirectory(prefix="airlock-closure-") as tmp:
        status = _installed_path(fmt, installed, repos, arch, Path(tmp))
        try:
            if fmt == "deb":
                answer = solve_debian(
                    packages_spec.names,
                    repos=repos,
                    arch=arch,
                    installed_status=status,
                    recommends=recommends,
                )
            else:
                answer = solve_rpm(
                    packages_spec.names,
                    repos=repos,
                    arch=arch,
                    installed_primary_path=status,
                    recommends=recommends,
                )
        except (OSError, ValueError) as exc:
            raise VerificationError(f"package metadata could not be read: {exc}") from None
    searched = "\n  ".join(r.name for r in repos)
    if answer["missing"]:
        missing = ", ".join(answer["missing"])
        raise PackageNotFound(
            f"no package or provider named {missing} (for {arch}) in the repositories searched:"
            f"\n  {searched}",
            hint="check the name (Debian and Fedora names differ, e.g. conntrack vs "
            "conntrack-tools) and the repositories/components in the spec",
        )
    if answer["problems"]:
        raise UnsatisfiableDependencies(
            "the requested packages cannot be installed together:\n  "
            + "\n  ".join(t.replace("\n", "\n    ") for t in answer["problems"]),
            hint="a dependency is missing from the repositories given (add the repository "
            "that has it, e.g. updates/security) or two packages conflict",
        )
    files = []
    for p in answer["packages"]:
        repo = repos[int(p["repo"])]
        chk = p.get("checksum")
        if not chk or not p.get("location"):
            raise VerificationError(
                f"{p['name']} {p['version']}: the metadata of {repo.name} gives no "
                "location or checksum for it",
                hint="airlock only carries files it can verify",
            )
        files.append(
            PackageFile(
                name=p["name"],
                version=p["version"],
                arch=p["arch"],
                url=repo.base_url + p["location"].lstrip("/"),
                checksum=Checksum(chk["algorithm"], chk["value"]),
                size=int(p.get("size") or 0),
                reason=_reason(p),
                chain=tuple(p.get("chain") or ()),
                repository=repo.name,
                replaces=p.get("replaces"),
            )
        )
    return Closure(fmt, tuple(files), tuple(answer.get("already_installed") or ()))


def closure_to_plan_rows(closure: Closure) -> list[dict[str, Any]]:
    """One row per package file for `airlock plan` (sorted by name)."""
    return [
        {
            "kind": f"os-package/{closure.format}",
            "name": p.name,
            "version": p.version,
            "arch": p.arch,
            "size": p.size,
            "reason": p.reason,
            "url": p.url,
            "checksum": f"{p.checksum.algorithm}:{p.checksum.value}",
            "repository": p.repository,
        }
        for p in sorted(closure.packages, key=lambda x: (x.name, x.arch))
    ]


def closure_downloads(closure: Closure) -> list[tuple[str, str]]:
    """(url, "sha256:<hex>" or "<algorithm>:<hex>") per package file."""
    return [(p.url, f"{p.checksum.algorithm}:{p.checksum.value}") for p in closure.packages]


def closure_file_requests(
    closure: Closure, *, mirrors: Mapping[str, str] | None = None
) -> list[FileRequest]:
    """FileRequests for `airlock.fetch.downloader.fetch_files`: each verified while streaming
    against its metadata checksum (sha256 or sha512; other rpm-md types are refused).
    """
    out = []
    for p in closure.packages:
        if p.checksum.algorithm not in ("sha256", "sha512"):
            raise VerificationError(
                f"{p.name}: the repository gives only a {p.checksum.algorithm} checksum",
                hint="airlock verifies package files with sha256 or sha512",
            )
        out.append(
            FileRequest(
                url=p.url,
                fetch_url=apply_mirror(p.url, mirrors or {}),
                checksum=UpstreamChecksum(p.checksum.algorithm, p.checksum.value, p.repository),
            )
        )
    return out


def verify_package_file(package: PackageFile, path: Path) -> None:
    """Raise DigestMismatch when a downloaded file is not the one the metadata names."""
    h = hashlib.new(package.checksum.algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != package.checksum.value:
        raise DigestMismatch(
            f"{package.name} {package.version} ({package.url})",
            f"{package.checksum.algorithm}:{package.checksum.value}",
            f"{package.checksum.algorithm}:{h.hexdigest()}",
            hint="the package file differs from the repository metadata; fetch it again",
        )
