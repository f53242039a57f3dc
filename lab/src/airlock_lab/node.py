"""A lab node: a network namespace plus a mount and a UTS namespace of its own.

Several Kubernetes nodes on one Linux host must not see each other's (or the host's)
`/etc/kubernetes`, `/var/lib/kubelet`, containerd, units or binaries. A `LabNode` gives each
node its own view of the host's file system, kept in a per-node directory the lab creates and
removes:

- overlays (lower: the host's directory, upper: the node's) on `/etc`, `/usr`, `/opt`, `/root`,
  `/var/lib` and `/var/cache`: the node sees the host's programs and libraries, and everything
  it writes (`airlock node install` into `/usr/local/bin`, units in `/etc/systemd/system`,
  packages in `/var/lib/dpkg`, dpkg's triggers in `/var/cache`) stays the node's;
- plain directories bound over `/var/lib/kubelet`, `/var/lib/etcd`, `/var/lib/containerd`,
  `/var/lib/cni`, `/var/lib/airlock` and `/var/log` (containerd's overlay snapshots cannot
  live on an overlay);
- a fresh tmpfs on `/run` (containerd's and the service manager's state, sockets);
- its own host name (kubeadm and the kubelet name the Node after it).

The namespaces persist bound to files (`unshare --mount=FILE --uts=FILE`), so every command
"on the node" is `nsenter` into them (through `airlock.system`). A daemonless service manager
(PyPI's docker-systemctl-replacement) is first on the PATH of the node's commands only, so real
kubeadm's own `systemctl` calls start the units `airlock node install` wrote.

`down` kills every process of the node (by its mount or network namespace, or by the
kubelet's cgroup root), unbinds the namespaces (their mounts go with them), removes the node's
cgroups and its directory: the host is left as it was.

The node starts as a copy of the host's packages. `withhold_packages(names)` removes packages
from the node (dpkg inside its mount namespace, so only its overlays change; the host keeps its
own), so that what a bundle carries is what the node really gets from `airlock node install`.

Small API for other lab parts: `LabNode(name, netns=..., cgroup_root=...)`, `up()`,
`down()`, `run(argv)`, `spawn(argv, log=...)`, `read_text(path)`, `processes()`,
`installed_packages()`, `withhold_packages(names)`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from airlock import system
from airlock.errors import SystemCommandError, UsageError

__all__ = [
    "CGROUP_FS",
    "DEFAULT_BASE",
    "NODE_OVERLAYS",
    "NODE_PRIVATE_DIRS",
    "DpkgEntry",
    "LabNode",
    "parse_dpkg_query",
    "removable_packages",
]

DEFAULT_BASE = Path("/var/tmp/airlock-lab-nodes")
CGROUP_FS = Path("/sys/fs/cgroup")
NODE_OVERLAYS = ("/etc", "/usr", "/opt", "/root", "/var/lib", "/var/cache")
NODE_PRIVATE_DIRS = (
    "/var/lib/kubelet",
    "/var/lib/etcd",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/var/lib/airlock",
    "/var/log",
)
_NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


_DPKG_FORMAT = "${Package}\t${db:Status-Abbrev}\t${Version}\t${Essential}\t${Pre-Depends}, ${Depends}\t${Provides}\n"


@dataclass(frozen=True)
class DpkgEntry:
    """An installed Debian package, as far as removing packages needs to know it."""

    version: str
    depends: frozenset[str]  # every name in Pre-Depends and Depends (each alternative)
    provides: frozenset[str]
    essential: bool = False


def _names(field: str) -> frozenset[str]:
    out = set()
    for alternative in field.replace("|", ",").split(","):
        name = alternative.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0]
        if name:
            out.add(name)
    return frozenset(out)


def parse_dpkg_query(text: str) -> dict[str, DpkgEntry]:
    """`dpkg-query -W -f _DPKG_FORMAT` -> the installed packages (status `ii`)."""
    out: dict[str, DpkgEntry] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 6 or not parts[1].startswith("ii"):
            continue
        name, _, version, essential, depends, provides = parts
        out[name] = DpkgEntry(version, _names(depends), _names(provides), essential == "yes")
    return out


def removable_packages(
    candidates: Iterable[str],
    installed: Mapping[str, DpkgEntry],
    *,
    always: Iterable[str] = (),
) -> list[str]:
    """Those `candidates` installed that may go: every one of `always` (the packages asked
    for), and each other one nothing else needs: no installed package outside the candidates
    depends on it (directly, through a virtual package, or through a candidate kept for that
    reason). Essential packages always stay."""
    wanted = {c for c in candidates if c in installed}
    forced = {a for a in always if a in installed}
    providers: dict[str, set[str]] = {}
    for name, entry in installed.items():
        for provided in (name, *entry.provides):
            providers.setdefault(provided, set()).add(name)

    def needed_by(names: Iterable[str]) -> set[str]:
        deps = {d for n in names for d in installed[n].depends}
        return {p for d in deps for p in providers.get(d, ()) if p in wanted} - forced

    keep = {n for n in wanted | forced if installed[n].essential}
    keep |= needed_by(n for n in installed if n not in wanted | forced)
    frontier = set(keep)
    while frontier:
        frontier = needed_by(frontier) - keep
        keep |= frontier
    return sorted((wanted | forced) - keep)


def _slug(path: str) -> str:
    return path.strip("/").replace("/", "-")


class LabNode:
    """One lab node (see the module doc). `netns` must exist; `cgroup_root` is the kubelet's
    cgroupRoot for this node (its cgroups are removed on `down`)."""

    def __init__(
        self,
        name: str,
        *,
        netns: str,
        hostname: str | None = None,
        cgroup_root: str | None = None,
        base: Path = DEFAULT_BASE,
    ) -> None:
        if not name.replace("-", "").isalnum():
            raise UsageError(f"invalid lab node name {name!r}", "letters, digits and '-'")
        self.name = name
        self.netns = netns
        self.hostname = hostname or name
        self.cgroup_root = cgroup_root
        self.dir = base / name
        self.mnt = self.dir / "ns-mnt"
        self.uts = self.dir / "ns-uts"
        self.bin = self.dir / "bin"

    # --- running things on the node -------------------------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"PATH": f"{self.bin}:{_NODE_PATH}", "HOME": "/root", **(extra or {})}

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 600,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> system.CommandResult:
        """Run a command on the node (its network, mount and UTS namespaces, its PATH)."""
        return system.run(
            argv,
            check=check,
            timeout=timeout,
            input=input,
            env=self.env(env),
            netns=self.netns,
            mountns=self.mnt,
            utsns=self.uts,
        )

    def spawn(
        self, argv: Sequence[str], *, log: Path | None = None, env: Mapping[str, str] | None = None
    ) -> system.Process:
        return system.spawn(
            argv, log=log, env=self.env(env), netns=self.netns, mountns=self.mnt, utsns=self.uts
        )

    def read_text(self, path: str) -> str:
        """A file as the node sees it."""
        return self.run(["cat", path], timeout=30).stdout

    # --- its packages -------------------------------------------------------------------

    def installed_packages(self) -> dict[str, DpkgEntry]:
        """The Debian packages installed on the node (its own dpkg database)."""
        result = self.run(["dpkg-query", "-W", "-f", _DPKG_FORMAT], timeout=60)
        return parse_dpkg_query(result.stdout)

    def _require_private_views(self) -> None:
        """Refuse to change packages unless every directory dpkg writes is the node's own."""
        mounts = self.run(["findmnt", "-rn", "-o", "TARGET,FSTYPE"], timeout=30).stdout
        kinds = dict(line.split(" ", 1) for line in mounts.splitlines() if " " in line)
        shared = [p for p in NODE_OVERLAYS if kinds.get(p) != "overlay"]
        if shared or not self.is_up:
            raise SystemCommandError(
                f"lab node {self.name}: {', '.join(shared) or 'its mount namespace'} is not the"
                " node's own: its packages are not removed (the host's would go with them)"
            )

    def withhold_packages(self, names: Iterable[str], *, always: Iterable[str] = ()) -> list[str]:
        """Remove from the node every one of `always` and those of `names` that no other
        package on it needs (`removable_packages`), with dpkg inside the node's mount namespace:
        only its overlays change, the host keeps its packages. Returns what was removed."""
        self._require_private_views()
        remove = removable_packages(names, self.installed_packages(), always=always)
        if remove:
            self.run(
                ["dpkg", "--purge", "--force-depends", *remove],
                env={"DEBIAN_FRONTEND": "noninteractive"},
                timeout=600,
            )
        return remove

    # --- up -----------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self.mnt.exists() and _ns_id(self.mnt) is not None

    def up(self) -> LabNode:
        if not (Path("/run/netns") / self.netns).exists():
            raise UsageError(f"network namespace {self.netns} does not exist", "create it first")
        if self.is_up:
            return self
        try:
            self._make_dirs()
            self._write_shims()
            # the namespace files must sit on a private mount to be bound to
            system.run(["mount", "--bind", str(self.dir), str(self.dir)], timeout=30)
            system.run(["mount", "--make-private", str(self.dir)], timeout=30)
            self.mnt.touch()
            self.uts.touch()
            system.run(
                [
                    "unshare",
                    f"--mount={self.mnt}",
                    f"--uts={self.uts}",
                    "--propagation",
                    "private",
                    "hostname",
                    self.hostname,
                ],
                timeout=30,
            )
            self._mount_views()
            self._make_cgroup_root()
        except BaseException:
            self.down()
            raise
        return self

    def _make_dirs(self) -> None:
        for path in NODE_OVERLAYS:
            (self.dir / "upper" / _slug(path)).mkdir(parents=True, exist_ok=True)
            (self.dir / "work" / _slug(path)).mkdir(parents=True, exist_ok=True)
        for path in NODE_PRIVATE_DIRS:
            (self.dir / "private" / _slug(path)).mkdir(parents=True, exist_ok=True)
        # kube-proxy's DaemonSet mounts /lib/modules (a hostPath of no type: it must exist)
        (self.dir / "upper" / "usr" / "lib" / "modules").mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(parents=True, exist_ok=True)

    def _write_shims(self) -> None:
        """`systemctl` and `journalctl` for the node's processes: the daemonless ones."""
        venv_bin = Path(sys.executable).parent
        for name, target in (("systemctl", "systemctl3"), ("journalctl", "journalctl3")):
            real = venv_bin / target
            if not real.exists():
                raise SystemCommandError(
                    f"{real} is missing: the lab node's service manager",
                    hint="make deps installs docker-systemctl-replacement (lab dependency)",
                )
            shim = self.bin / name
            shim.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
            shim.chmod(0o755)

    def _mount_views(self) -> None:
        def inside(*argv: str) -> None:
            system.run(argv, mountns=self.mnt, timeout=30)

        for path in NODE_OVERLAYS:
            upper, work = self.dir / "upper" / _slug(path), self.dir / "work" / _slug(path)
            opts = f"lowerdir={path},upperdir={upper},workdir={work}"
            inside("mount", "-t", "overlay", f"airlock-{self.name}", "-o", opts, path)
        for path in NODE_PRIVATE_DIRS:
            inside("mkdir", "-p", path)
            inside("mount", "--bind", str(self.dir / "private" / _slug(path)), path)
        inside("mount", "-t", "tmpfs", "-o", "mode=0755,size=1g", f"airlock-{self.name}", "/run")
        inside("mkdir", "-p", "/run/lock")

    def _make_cgroup_root(self) -> None:
        """The kubelet's cgroupRoot must exist in every hierarchy before it starts."""
        for hierarchy in _hierarchies():
            if self.cgroup_root:
                (hierarchy / self.cgroup_root.strip("/")).mkdir(exist_ok=True)

    # --- down ---------------------------------------------------------------------------

    def processes(self) -> list[int]:
        """Every process of the node: in its mount or network namespace, or in its cgroups."""
        mnt = _ns_id(self.mnt)
        net = _ns_id(Path("/run/netns") / self.netns)
        pids: set[int] = set()
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            with contextlib.suppress(OSError):
                ids = {os.stat(entry / "ns" / kind).st_ino for kind in ("mnt", "net")}
                if (mnt is not None and mnt in ids) or (net is not None and net in ids):
                    pids.add(int(entry.name))
        pids.update(self._cgroup_pids())
        pids.discard(me)
        return sorted(pids)

    def _cgroup_pids(self) -> set[int]:
        out: set[int] = set()
        if not self.cgroup_root:
            return out
        for hierarchy in _hierarchies():
            top = hierarchy / self.cgroup_root.strip("/")
            if not top.is_dir():
                continue
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    out.update(int(p) for p in procs.read_text().split())
        return out

    def kill_all(self, *, timeout: float = 30) -> int:
        """SIGKILL every process of the node until none is left; returns how many."""
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while pids := self.processes():
            if time.monotonic() > deadline:
                raise SystemCommandError(f"lab node {self.name}: processes {pids} survive")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.2)
        return len(killed)

    def remove_cgroups(self) -> None:
        if not self.cgroup_root:
            return
        for hierarchy in _hierarchies():
            _rmdir_tree(hierarchy / self.cgroup_root.strip("/"))

    def down(self) -> None:
        """Kill the node's processes, drop its namespaces and mounts, cgroups and directory."""
        if self.dir.exists():
            self.kill_all()
        for ns in (self.mnt, self.uts):
            if _ns_id(ns) is not None:
                system.run(["umount", str(ns)], timeout=30)
        if _is_mountpoint(self.dir):
            system.run(["umount", str(self.dir)], timeout=30)
        self.remove_cgroups()
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def __enter__(self) -> LabNode:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


def _ns_id(path: Path) -> int | None:
    """The inode of the namespace bound at `path` (None when nothing is bound there)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    # a bound namespace lives on nsfs; an unbound placeholder is a file of the directory's fs
    return st.st_ino if st.st_dev != os.stat(path.parent).st_dev else None


def _is_mountpoint(path: Path) -> bool:
    text = Path("/proc/self/mountinfo").read_text()
    return any(line.split()[4] == str(path) for line in text.splitlines())


def _hierarchies() -> list[Path]:
    if not CGROUP_FS.is_dir():
        return []
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink())


def _rmdir_tree(top: Path) -> None:
    """Remove a cgroup and its children, deepest first (cgroup dirs go with rmdir only)."""
    if not top.is_dir():
        return
    for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(FileNotFoundError):
            sub.rmdir()
    with contextlib.suppress(FileNotFoundError):
        top.rmdir()
