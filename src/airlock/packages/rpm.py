"""RPM resolution: libsolv on rpm-md primary data, in-process with PyPI's `solv`.

PyPI's `solv` wheel is built for rpm (no Debian support), which is what is needed here; when it
is not installed, the same solver runs under the system python with Debian's python3-solv
(built with multi-semantics, it reads rpm-md too). Rich dependencies, provides, obsoletes and
file dependencies are libsolv's.

The installed set is itself rpm-md primary data: for a named base (a list of package names, the
versions taken from the repositories, as a fresh install from them would have) or an inventory
(name, version, arch), the matching `<package>` entries are copied out of the repositories'
primary.xml; an inventory entry not found there becomes a bare package that provides itself.
"""

from __future__ import annotations

import html
import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.errors import UsageError
from airlock.packages.debian import run_solver
from airlock.packages.repos import RepoMetadata
from airlock.packages.solve_deb import solve

__all__ = [
    "NAMED_BASES",
    "InstalledPackage",
    "installed_primary",
    "load_solv",
    "named_base",
    "solve_rpm",
]

# The packages of the fedora:37 container image (dnf, rpm, python3 and their libraries): what
# every Fedora 37 install has at least. Versions are not pinned here: they are taken from the
# repositories, as a fresh install from them would have.
_FEDORA_MINIMAL = [
    "alternatives",
    "audit-libs",
    "basesystem",
    "bash",
    "bzip2-libs",
    "ca-certificates",
    "coreutils",
    "coreutils-common",
    "crypto-policies",
    "curl",
    "cyrus-sasl-lib",
    "dnf",
    "dnf-data",
    "elfutils-default-yama-scope",
    "elfutils-libelf",
    "elfutils-libs",
    "expat",
    "fedora-gpg-keys",
    "fedora-release",
    "fedora-release-common",
    "fedora-release-container",
    "fedora-repos",
    "file-libs",
    "filesystem",
    "findutils",
    "gawk",
    "gdbm-libs",
    "glib2",
    "glibc",
    "glibc-common",
    "glibc-minimal-langpack",
    "gmp",
    "gnupg2",
    "gnutls",
    "gpgme",
    "grep",
    "gzip",
    "ima-evm-utils",
    "json-c",
    "keyutils-libs",
    "krb5-libs",
    "libacl",
    "libarchive",
    "libassuan",
    "libattr",
    "libb2",
    "libblkid",
    "libbrotli",
    "libcap",
    "libcap-ng",
    "libcom_err",
    "libcomps",
    "libcurl",
    "libdnf",
    "libeconf",
    "libevent",
    "libffi",
    "libfsverity",
    "libgcc",
    "libgcrypt",
    "libgomp",
    "libgpg-error",
    "libidn2",
    "libksba",
    "libmodulemd",
    "libmount",
    "libnghttp2",
    "libnsl2",
    "libpsl",
    "librepo",
    "libreport-filesystem",
    "libselinux",
    "libsemanage",
    "libsepol",
    "libsigsegv",
    "libsmartcols",
    "libsolv",
    "libssh",
    "libssh-config",
    "libstdc++",
    "libtasn1",
    "libtirpc",
    "libunistring",
    "libuuid",
    "libverto",
    "libxcrypt",
    "libxml2",
    "libyaml",
    "libzstd",
    "lua-libs",
    "lz4-libs",
    "mpdecimal",
    "mpfr",
    "ncurses-base",
    "ncurses-libs",
    "nettle",
    "npth",
    "openldap",
    "openssl-libs",
    "p11-kit",
    "p11-kit-trust",
    "pam",
    "pcre2",
    "pcre2-syntax",
    "popt",
    "publicsuffix-list-dafsa",
    "python-pip-wheel",
    "python-setuptools-wheel",
    "python3",
    "python3-dnf",
    "python3-gpg",
    "python3-hawkey",
    "python3-libcomps",
    "python3-libdnf",
    "python3-libs",
    "python3-rpm",
    "readline",
    "rootfiles",
    "rpm",
    "rpm-build-libs",
    "rpm-libs",
    "rpm-sequoia",
    "rpm-sign-libs",
    "sed",
    "setup",
    "shadow-utils",
    "sqlite-libs",
    "sudo",
    "systemd-libs",
    "tar",
    "tzdata",
    "util-linux-core",
    "vim-minimal",
    "xz-libs",
    "yum",
    "zchunk-libs",
    "zlib",
]

NAMED_BASES: dict[str, tuple[str, ...]] = {"fedora-minimal": tuple(_FEDORA_MINIMAL)}

_PRIMARY_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<metadata xmlns="http://linux.duke.edu/metadata/common" '
    'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{n}">\n'
)
_PACKAGE_RE = re.compile(r"<package\b[^>]*>.*?</package>", re.S)
_NAME_RE = re.compile(r"<name>([^<]*)</name>")
_ARCH_RE = re.compile(r"<arch>([^<]*)</arch>")
_VERSION_RE = re.compile(r"<version\b([^>]*)/>")


@dataclass(frozen=True)
class InstalledPackage:
    name: str
    version: str  # [epoch:]version[-release] for rpm, the dpkg Version for Debian
    arch: str = ""


def named_base(name: str) -> tuple[str, ...]:
    """The package names of a named installed base (`fedora-37` -> Fedora's minimal set)."""
    key = "fedora-minimal" if name.startswith(("fedora", "minimal-fedora")) else name
    if key not in NAMED_BASES:
        raise UsageError(
            f"unknown installed base {name!r}",
            hint=f"known: {', '.join(sorted(NAMED_BASES))}, or give an inventory",
        )
    return NAMED_BASES[key]


def load_solv() -> Any | None:
    """PyPI's `solv` module, or None when it is not installed in this environment."""
    try:
        return importlib.import_module("solv")
    except ImportError:
        return None


def _evr(attrs: str) -> str:
    fields = dict(re.findall(r'(\w+)="([^"]*)"', attrs))
    epoch = fields.get("epoch", "0")
    evr = fields.get("ver", "")
    if fields.get("rel"):
        evr += "-" + fields["rel"]
    return evr if epoch in ("", "0") else f"{epoch}:{evr}"


def _split_evr(evr: str) -> tuple[str, str, str]:
    epoch, _, rest = evr.rpartition(":")
    ver, _, rel = rest.partition("-")
    return epoch or "0", ver, rel


def _bare_package(pkg: InstalledPackage) -> str:
    e, v, r = (html.escape(x, quote=True) for x in _split_evr(pkg.version))
    n = html.escape(pkg.name)
    a = html.escape(pkg.arch or "noarch")
    return (
        f'<package type="rpm"><name>{n}</name><arch>{a}</arch>'
        f'<version epoch="{e}" ver="{v}" rel="{r}"/><format><rpm:provides>'
        f'<rpm:entry name="{n}" flags="EQ" epoch="{e}" ver="{v}" rel="{r}"/>'
        "</rpm:provides></format></package>"
    )


def installed_primary(
    repos: Sequence[RepoMetadata],
    *,
    dest: Path,
    names: Sequence[str] = (),
    packages: Sequence[InstalledPackage] = (),
) -> Path:
    """Primary data of the installed set: `names` at the repositories' best version (libsolv's
    version order), and `packages` exactly as given.
    """
    wanted_names = set(names)
    exact = {(p.name, p.version) for p in packages}
    solv = load_solv()
    pool = solv.Pool() if solv is not None else None
    best: dict[tuple[str, str], tuple[str, str]] = {}  # (name, arch) -> (evr, xml)
    found_exact: set[tuple[str, str]] = set()
    chosen_exact: list[str] = []
    for repo in repos:
        text = repo.index_path.read_text(encoding="utf-8", errors="replace")
        for m in _PACKAGE_RE.finditer(text):
            block = m.group(0)
            nm, am, vm = _NAME_RE.search(block), _ARCH_RE.search(block), _VERSION_RE.search(block)
            if nm is None or am is None or vm is None or am.group(1) == "src":
                continue
            name, arch, evr = html.unescape(nm.group(1)), am.group(1), _evr(vm.group(1))
            if (name, evr) in exact and (name, evr) not in found_exact:
                found_exact.add((name, evr))
                chosen_exact.append(block)
            if name in wanted_names:
                key = (name, arch)
                old = best.get(key)
                newer = old is None or (
                    pool.evrcmp(evr, old[0]) > 0 if pool is not None else evr > old[0]
                )
                if newer:
                    best[key] = (evr, block)
    blocks = [xml for _evr_, xml in best.values()] + chosen_exact
    blocks += [_bare_package(p) for p in packages if (p.name, p.version) not in found_exact]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(_PRIMARY_HEAD.format(n=len(blocks)) + "\n".join(blocks) + "\n</metadata>\n")
    return dest


def solve_rpm(
    requested: Sequence[str],
    *,
    repos: Sequence[RepoMetadata],
    arch: str,
    installed_primary_path: Path | None = None,
    recommends: bool = False,
) -> dict[str, Any]:
    """Resolve rpm packages (answer as solve_deb.py's); in-process when PyPI `solv` exists."""
    request = {
        "format": "rpm",
        "arch": arch,
        "repos": [{"name": str(i), "path": str(r.index_path)} for i, r in enumerate(repos)],
        "installed": str(installed_primary_path) if installed_primary_path else None,
        "requested": list(requested),
        "recommends": recommends,
    }
    solv = load_solv()
    if solv is None:
        return run_solver(request)
    return solve(solv, request)
