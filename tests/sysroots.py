"""Debian sysroots for the bootstrap tests: debootstrap minbase + python3 (no python3-venv).

Built once per (suite, architecture) with debootstrap from the Debian archive this machine's own
apt sources name (read at run time), and cached as a tarball under
`${XDG_CACHE_HOME:-$HOME/.cache}/airlock/sysroots`, outside the work tree. A foreign
architecture (arm64 on x86_64) runs under qemu-user-static through binfmt_misc, which
`ensure_binfmt` mounts and enables. Concurrent builders of one sysroot wait on a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CARRY",
    "Node",
    "apt_archive",
    "cache_dir",
    "ensure_binfmt",
    "offline_node",
    "sysroot_tar",
    "unpack",
]

CARRY = "/root/carry"  # where the medium's files land on a node
PACKAGES = ("python3",)  # what a minimal node has; python3-venv (ensurepip) deliberately not
BUILD_TIMEOUT = 1800  # seconds; a foreign architecture (qemu-user) gets three times that


class SysrootError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airlock" / "sysroots"


def apt_archive() -> str:
    """The Debian archive URI this machine's apt sources use (not the security archive)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for p in files:
        if not p.is_file():
            continue
        text = p.read_text(errors="replace")
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.M)
        uris += [m.group(1) for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)]
        for uri in uris:
            if "security" not in uri and "://" in uri:
                return uri.rstrip("/")
    raise SysrootError("no Debian archive in /etc/apt/sources.list(.d): cannot debootstrap")


def _host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def ensure_binfmt(arch: str) -> None:
    """Foreign binaries run through qemu-user-static: binfmt_misc mounted, the handler enabled."""
    if arch == _host_arch():
        return
    qemu = {"arm64": "aarch64"}[arch]
    if not shutil.which(f"qemu-{qemu}-static"):
        raise SysrootError(f"qemu-{qemu}-static is missing (apt-get install qemu-user-static)")
    mnt = Path("/proc/sys/fs/binfmt_misc")
    if not (mnt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(mnt)], check=True)
    if not (mnt / f"qemu-{qemu}").exists():
        subprocess.run(["update-binfmts", "--enable", f"qemu-{qemu}"], check=True)
    if not (mnt / f"qemu-{qemu}").exists():
        raise SysrootError(f"binfmt_misc has no qemu-{qemu} handler after update-binfmts")


def sysroot_tar(suite: str, arch: str) -> Path:
    """The cached tarball of a minbase + python3 sysroot, built when missing."""
    ensure_binfmt(arch)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"{suite}-{arch}-minbase-{'-'.join(PACKAGES)}.tar"
    with (cache / f".{tar.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tar.is_file():
            return tar
        build = cache / f".build-{suite}-{arch}-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        cmd = ["debootstrap", "--variant=minbase", f"--arch={arch}"]
        cmd += [f"--include={','.join(PACKAGES)}", suite, str(build), apt_archive()]
        try:
            limit = BUILD_TIMEOUT if arch == _host_arch() else 3 * BUILD_TIMEOUT
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL
            )
            if proc.returncode != 0:
                log = build / "debootstrap/debootstrap.log"
                tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
                raise SysrootError(
                    f"debootstrap {suite} {arch} failed: {proc.stderr[-1500:]}\n{tail}"
                )
            tmp = tar.with_name(f".{tar.name}.{os.getpid()}")
            subprocess.run(
                ["tar", "--numeric-owner", "-C", str(build), "-cf", str(tmp), "."], check=True
            )
            os.replace(tmp, tar)
        finally:
            for mount in ("proc", "sys", "dev/pts", "dev"):  # a killed debootstrap leaves them
                subprocess.run(["umount", "-l", str(build / mount)], capture_output=True)
            shutil.rmtree(build, ignore_errors=True)
    return tar


def unpack(tar: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--numeric-owner", "-C", str(dest), "-xf", str(tar)], check=True)
    return dest


@dataclass
class Node:
    """An unpacked sysroot used as an offline node: commands run chrooted into it, in a new
    mount and PID namespace (its own /proc), inside an empty network namespace."""

    root: Path
    netns: str

    def run(self, *cmd: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        wrap = ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--pid"]
        wrap += ["--fork", f"--mount-proc={self.root / 'proc'}", "chroot", str(self.root)]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env["LANG"] = "C.UTF-8"
        return subprocess.run(
            [*wrap, *cmd], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )

    def carry(self, medium: Path) -> str:
        """Copy the medium's files to CARRY on the node; returns the parts file's name."""
        dest = self.root / CARRY.lstrip("/")
        shutil.copytree(medium, dest)
        return next(p.name for p in dest.iterdir() if p.name.endswith(".parts.json"))

    def bootstrap(self, parts: str, *extra: str) -> tuple[float, str, str, int]:
        """Run the carried airlock-bootstrap.py: (seconds, stdout, stderr, exit code)."""
        start = time.monotonic()
        proc = self.run("python3", f"{CARRY}/airlock-bootstrap.py", f"{CARRY}/{parts}", *extra)
        return time.monotonic() - start, proc.stdout, proc.stderr, proc.returncode

    def links(self) -> list[str]:
        out = subprocess.run(
            ["ip", "-n", self.netns, "-o", "link"], capture_output=True, text=True, check=True
        ).stdout
        return [line.split(":")[1].strip() for line in out.splitlines()]


@contextlib.contextmanager
def offline_node(tar: Path, workdir: Path, name: str) -> Iterator[Node]:
    """`tar` unpacked under `workdir`, with an empty network namespace `name` (removed after)."""
    root = unpack(tar, workdir / "root")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield Node(root, name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
