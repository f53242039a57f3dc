"""Debian's packages, unpacked into an image layer: the run-time base some upstream images bring.

Flannel's image (alpine plus iptables, ip6tables, iproute2) and kube-proxy's (distroless-iptables:
Debian's iptables, conntrack, ipset and their libraries on a distroless base) need real tools
that a Go build does not make. The lab takes them from Debian: the packages are resolved and
downloaded by `apt-get` with a private state directory (so the host's dpkg state is neither read
nor changed), from the Debian entries of this machine's own apt sources (read at run time: no
archive is named here), for the image's architecture. Each .deb is unpacked with `dpkg-deb -x`;
only the wanted programs, their symlinks and the shared-library closure their ELF headers name
(DT_NEEDED, the PT_INTERP loader, plus dlopen'ed xtables extensions) go into the layer.

Unpacked roots are cached under the user's cache directory, keyed by the package list, the
sources and this module, so a warm run reads a directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from airlock import system
from airlock.errors import SystemCommandError, UsageError
from airlock_lab.components import cache_root
from airlock_lab.imagebuild import Layer, TarEntry

__all__ = [
    "NET_TOOLS",
    "DebianRepositories",
    "DebianRoot",
    "ElfInfo",
    "debian_repositories",
    "debian_sources",
    "elf_info",
    "net_tools_layer",
    "unpacked_root",
]

_FORMAT = "airlock-debroot-1"
_DONE = "debroot.json"
_TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}


@dataclass(frozen=True)
class NetTools:
    """What an image's network tools need: the packages and the programs taken from them."""

    packages: tuple[str, ...]
    programs: tuple[str, ...]  # paths in the unpacked root (their symlinks are followed)
    # Debian's alternatives are set by maintainer scripts, which are not run: the links
    # update-alternatives makes by default (the nft backend has the higher priority).
    alternatives: tuple[tuple[str, str], ...]
    data: tuple[str, ...]  # plain files taken as they are (protocols, services, iproute2's)


_IPTABLES_NAMES = ("iptables", "iptables-save", "iptables-restore")
NET_TOOLS = NetTools(
    packages=("iptables", "iproute2", "conntrack", "ipset"),
    programs=(
        "usr/sbin/conntrack",
        "usr/sbin/ipset",
        "bin/ip",
        "sbin/ip",
        "sbin/bridge",
        "sbin/tc",
    ),
    alternatives=tuple(
        (f"usr/sbin/{name.replace('iptables', fam)}", name.replace("iptables", f"{fam}-nft"))
        for fam in ("iptables", "ip6tables")
        for name in _IPTABLES_NAMES
    ),
    data=("etc/protocols", "etc/services", "etc/ethertypes", "etc/iproute2"),
)


# --- ELF: what a program needs to run ----------------------------------------------------------


@dataclass(frozen=True)
class ElfInfo:
    interpreter: str  # "" for a static executable
    needed: tuple[str, ...]  # DT_NEEDED sonames


_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5


def elf_info(data: bytes) -> ElfInfo | None:
    """The loader and the DT_NEEDED sonames of a 64-bit little-endian ELF; None if not ELF."""
    if data[:4] != b"\x7fELF":
        return None
    if data[4] != 2 or data[5] != 1:
        raise UsageError("only 64-bit little-endian ELF files are read (amd64, arm64)")
    phoff, = struct.unpack_from("<Q", data, 0x20)  # fmt: skip
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    interpreter = ""
    for i in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == _PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == _PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif p_type == _PT_INTERP:
            interpreter = data[offset : offset + filesz].rstrip(b"\0").decode()
    if dynamic is None:
        return ElfInfo(interpreter, ())
    needed: list[int] = []
    strtab = 0
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            needed.append(value)
        elif tag == _DT_STRTAB:
            strtab = value
    base = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size), None)
    if base is None:
        raise UsageError("ELF dynamic string table lies outside every loaded segment")
    names = tuple(data[base + n : data.index(b"\0", base + n)].decode() for n in needed)
    return ElfInfo(interpreter, names)


# --- apt: the packages, from this machine's own sources ----------------------------------------


def _codename() -> str:
    text = Path("/etc/os-release").read_text(errors="replace")
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    if not match:
        raise UsageError("/etc/os-release names no VERSION_CODENAME: cannot pick Debian's suites")
    return match.group(1)


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str], list[str], str]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
        if (
            fields.get("Enabled", "yes").lower() == "no"
            or "deb" not in fields.get("Types", "").split()
        ):
            continue
        for uri in fields.get("URIs", "").split():
            yield (
                uri,
                fields.get("Suites", "").split(),
                fields.get("Components", "").split(),
                (fields.get("Signed-By", "")),
            )


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str], list[str], str]]:
    pattern = r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$"
    for options, uri, suite, comps in re.findall(pattern, text, re.M):
        signed = re.search(r"signed-by=(\S+)", options)
        yield uri, [suite], comps.split(), signed.group(1) if signed else ""


def _main_entries(etc: Path, codename: str) -> list[tuple[str, str, str]]:
    """(uri, suite, signed-by) of every enabled `deb` entry of this release with `main`."""
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    out: list[tuple[str, str, str]] = []
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        parse = _deb822_entries if path.suffix == ".sources" else _one_line_entries
        for uri, suites, comps, signed_by in parse(text):
            for suite in suites:
                if suite.split("-")[0] == codename and "main" in comps:
                    out.append((uri, suite, signed_by))
    if not out:
        raise UsageError(
            f"no Debian {codename} entry in {etc}/sources.list(.d)",
            "the lab takes Debian's packages (its images' iptables and iproute2, its nodes' "
            "socat, conntrack, ...) from this machine's release; configure apt's sources",
        )
    return out


def debian_sources(etc: Path = Path("/etc/apt"), *, codename: str | None = None) -> list[str]:
    """The one-line `deb` entries of this machine's sources for its Debian release's suites
    (main component), e.g. the release, its -updates and its -security suites."""
    lines = []
    for uri, suite, signed_by in _main_entries(etc, codename or _codename()):
        option = f"[signed-by={signed_by}] " if signed_by.startswith("/") else ""
        lines.append(f"deb {option}{uri} {suite} main")
    return lines


@dataclass(frozen=True)
class DebianRepositories:
    """This machine's Debian release and repositories, in the spec's `packages:` terms."""

    os: str  # debian-12
    repositories: tuple[str, ...]  # <archive>/dists/<suite>#main
    keys: tuple[str, ...]  # the keyrings apt checks them with


def _trusted_keys(etc: Path) -> list[str]:
    """apt's keyrings for entries without Signed-By (trusted.gpg and trusted.gpg.d)."""
    found = [etc / "trusted.gpg", *sorted((etc / "trusted.gpg.d").glob("*"))]
    return [str(p) for p in found if p.is_file() and p.suffix in (".gpg", ".asc")]


def debian_repositories(
    etc: Path = Path("/etc/apt"), *, os_release: Path = Path("/etc/os-release")
) -> DebianRepositories:
    """The repositories this machine's apt is configured with, read now (no archive is named
    in code): every enabled `deb` entry of its release's suites with `main`, and the keys apt
    verifies them with (Signed-By, else apt's trusted keyrings)."""
    text = os_release.read_text(errors="replace")
    fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.M))
    if fields.get("ID") != "debian" or not fields.get("VERSION_ID"):
        raise UsageError(
            f"{os_release}: not a Debian release with a VERSION_ID",
            "the lab node's OS packages are Debian's, resolved against this machine's release",
        )
    entries = _main_entries(etc, fields.get("VERSION_CODENAME") or _codename())
    repositories = tuple(
        dict.fromkeys(f"{uri.rstrip('/')}/dists/{suite}#main" for uri, suite, _ in entries)
    )
    keys = [k for _, _, k in entries if k.startswith("/")]
    if len(keys) < len(entries):  # some entry trusts apt's keyrings
        keys += _trusted_keys(etc)
    return DebianRepositories(
        f"debian-{fields['VERSION_ID']}", repositories, tuple(dict.fromkeys(keys))
    )


def _apt(state: Path, arch: str, args: Sequence[str]) -> str:
    options = {
        "Dir::Etc::sourcelist": state / "sources.list",
        "Dir::Etc::sourceparts": state / "sources.list.d",
        "Dir::State": state / "state",
        "Dir::State::status": state / "status",
        "Dir::Cache": state / "cache",
        "Dir::Cache::archives": state / "debs",
        "APT::Architecture": arch,
        "APT::Architectures": arch,
        "Acquire::Languages": "none",
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled": "false",
        "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled": "false",
        "APT::Install-Recommends": "false",
    }
    argv = ["apt-get", "-q", "-y"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    return system.run([*argv, *args], timeout=900).stdout


def _download(state: Path, arch: str, packages: Sequence[str], sources: Sequence[str]) -> None:
    for sub in ("state/lists/partial", "cache/archives/partial", "debs/partial", "sources.list.d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text("\n".join(sources) + "\n")
    (state / "status").write_text("")
    _apt(state, arch, ["update"])
    _apt(state, arch, ["--download-only", "install", *packages])


# --- the unpacked root -------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianRoot:
    """Packages unpacked side by side (`root`), and which versions they were."""

    arch: str
    root: Path
    versions: dict[str, str]  # package -> version

    @property
    def triplet(self) -> str:
        return _TRIPLETS[self.arch]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _key(arch: str, packages: Sequence[str], sources: Sequence[str]) -> str:
    h = hashlib.sha256(_FORMAT.encode())
    h.update(json.dumps([arch, sorted(packages), list(sources)]).encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:12]


def unpacked_root(arch: str, packages: Sequence[str] = NET_TOOLS.packages) -> DebianRoot:
    """`packages` and their dependencies for `arch`, unpacked (cached)."""
    if arch not in _TRIPLETS:
        raise UsageError(f"no Debian layer for {arch}", f"one of: {', '.join(_TRIPLETS)}")
    sources = debian_sources()
    out = cache_root() / "debroot" / f"{arch}-{_key(arch, packages, sources)}"
    with _locked(out.with_name(out.name + ".lock")):
        done = out / _DONE
        if done.is_file():
            record = json.loads(done.read_text())
            return DebianRoot(arch, out / "root", dict(record["versions"]))
        shutil.rmtree(out, ignore_errors=True)
        try:
            _download(out / "apt", arch, packages, sources)
        except SystemCommandError as exc:
            raise SystemCommandError(
                f"fetching Debian's {', '.join(packages)} for {arch} failed: {exc.message}",
                hint="the packages come from this machine's apt sources; check that "
                "`apt-get update` works",
            ) from exc
        versions: dict[str, str] = {}
        for deb in sorted((out / "apt" / "debs").glob("*.deb")):
            system.run(["dpkg-deb", "-x", str(deb), str(out / "root")], timeout=300)
            name, version = deb.name.split("_")[:2]
            versions[name] = version.replace("%3a", ":")
        shutil.rmtree(out / "apt")
        record = {"format": _FORMAT, "arch": arch, "sources": list(sources), "versions": versions}
        done.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return DebianRoot(arch, out / "root", versions)


# --- the layer ---------------------------------------------------------------------------------


class _Selection:
    """Files taken from an unpacked root: symlinks kept, every ELF's libraries followed."""

    def __init__(self, root: DebianRoot) -> None:
        self.root = root
        self.entries: dict[str, TarEntry] = {}
        self._lib_dirs = [
            f"lib/{root.triplet}",
            f"usr/lib/{root.triplet}",
            "lib",
            "usr/lib",
        ]

    def _host(self, rel: str) -> Path:
        return self.root.root / rel

    def _resolve_link(self, rel: str, target: str) -> str:
        if target.startswith("/"):
            return target.lstrip("/")
        return str(PurePosixPath(rel).parent / target)

    def add(self, rel: str) -> None:
        """Add `rel` (a file, a symlink chain, or a directory's files), and what it needs."""
        rel = str(PurePosixPath(rel))
        if rel in self.entries:
            return
        path = self._host(rel)
        if path.is_symlink():
            target = str(path.readlink())
            self.entries[rel] = TarEntry(rel, "symlink", target=target)
            resolved = self._resolve_link(rel, target)
            # /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...: normalise "a/../b"
            self.add(str(PurePosixPath(*_normalised_parts(resolved))))
        elif path.is_dir():
            for child in sorted(path.iterdir()):
                self.add(f"{rel}/{child.name}")
        elif path.is_file():
            mode = path.stat().st_mode & 0o7777
            self.entries[rel] = TarEntry(rel, source=path, mode=mode)
            self._follow_elf(path)
        else:
            raise UsageError(
                f"{rel} is not in Debian's packages {', '.join(sorted(self.root.versions))}"
                f" ({self.root.arch})",
                "the package layout changed: update NET_TOOLS in airlock_lab/debroot.py",
            )

    def _follow_elf(self, path: Path) -> None:
        with path.open("rb") as fh:
            if fh.read(4) != b"\x7fELF":
                return
        info = elf_info(path.read_bytes())
        if info is None:
            return
        if info.interpreter:
            self.add(info.interpreter.lstrip("/"))
        for soname in info.needed:
            self.add(self._find_library(soname, path))

    def _find_library(self, soname: str, needed_by: Path) -> str:
        for lib_dir in self._lib_dirs:
            rel = f"{lib_dir}/{soname}"
            if self._host(rel).exists() or self._host(rel).is_symlink():
                return rel
        raise UsageError(
            f"{needed_by.name} needs {soname}, which no unpacked package provides",
            "add the package that ships it to NET_TOOLS in airlock_lab/debroot.py",
        )


def _normalised_parts(path: str) -> list[str]:
    parts: list[str] = []
    for part in PurePosixPath(path).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", "/"):
            parts.append(part)
    return parts


def _iptables_programs(root: DebianRoot) -> list[str]:
    """Every name Debian's iptables ships for its legacy and nft programs, and its extensions."""
    sbin = root.root / "usr/sbin"
    names = [
        f"usr/sbin/{p.name}"
        for p in sorted(sbin.iterdir())
        if p.name.startswith("xtables-")
        or (p.is_symlink() and str(p.readlink()).startswith("xtables-"))
    ]
    return [*names, f"usr/lib/{root.triplet}/xtables"]


def net_tools_layer(root: DebianRoot, tools: NetTools = NET_TOOLS) -> Layer:
    """The layer: iptables (legacy and nft), ip6tables, iproute2, conntrack, ipset, libraries."""
    selection = _Selection(root)
    for rel in (*_iptables_programs(root), *tools.programs):
        selection.add(rel)
    for rel in tools.data:
        if (root.root / rel).exists():
            selection.add(rel)
    for link, target in tools.alternatives:
        if link not in selection.entries:
            selection.entries[link] = TarEntry(link, "symlink", target=target)
    versions = " ".join(f"{n}={v}" for n, v in sorted(root.versions.items()))
    return Layer(
        tuple(selection.entries[p] for p in sorted(selection.entries)),
        f"Debian packages for {root.arch}, unpacked: {' '.join(tools.packages)} "
        f"(and what their programs load) from {versions}",
    )
