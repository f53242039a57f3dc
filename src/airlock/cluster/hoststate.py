"""Steps for the host state a cluster changes outside kubeadm's files, and their undo.

- the kubelet's cgroup root (`node.cgroupRoot`): it must exist in every cgroup hierarchy
  before the kubelet starts (the kubelet checks, it does not create it), and `reset` removes
  it with everything the kubelet and containerd made beneath it;
- the kernel settings the kubelet and kube-proxy set for the whole machine (the kubelet's
  `vm.overcommit_memory`, `kernel.panic*`, ...): `init`/`join` record their values first
  (once: a record is never overwritten) and `reset` writes them back;
- the pods `kubeadm reset` leaves running when it cannot reach the runtime through crictl:
  `reset` kills every task of containerd's `k8s.io` namespace with containerd's own `ctr`;
- the CNI's interfaces (`cni0`, `flannel.1`), which `kubeadm reset` says it leaves.

Under a sysroot (`--root`, tests) each step records what it would do, never touching the host.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from airlock import system
from airlock.atomic import write_atomic
from airlock.cluster.runner import StepContext
from airlock.errors import NodeError

__all__ = [
    "CGROUP_FS",
    "CNI_LINKS",
    "KERNEL_RECORD",
    "KERNEL_SETTINGS",
    "DeleteLinks",
    "EnsureCgroupRoot",
    "RecordKernelSettings",
    "RemoveCgroupRoot",
    "RestoreKernelSettings",
    "StopPods",
]

CGROUP_FS = Path("/sys/fs/cgroup")
KERNEL_RECORD = "/etc/airlock/kernel-settings-before-cluster.json"
# what the kubelet (setupKernelTunables) and kube-proxy (conntrack) set machine-wide
KERNEL_SETTINGS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
CNI_LINKS = ("cni0", "flannel.1")
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"


def _proc_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def _hierarchies() -> list[Path]:
    if not CGROUP_FS.is_dir():
        return []
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink())


@dataclass(frozen=True)
class EnsureCgroupRoot:
    path: str  # e.g. /kubelet-node1

    def describe(self) -> list[str]:
        return [f"create the kubelet's cgroup root {self.path} in every cgroup hierarchy"]

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = f"cgroup root {self.path}: recorded, not created ({ctx.root} is a sysroot)"
            ctx.recorded.append(note)
            return note
        made = 0
        for hierarchy in _hierarchies():
            target = hierarchy / self.path.strip("/")
            if not target.is_dir():
                try:
                    target.mkdir()
                except OSError as exc:
                    raise NodeError(
                        f"cannot create the cgroup {target}: {exc.strerror}",
                        hint="node.cgroupRoot must be creatable by root in every hierarchy",
                    ) from None
                made += 1
        return f"cgroup root {self.path}: {made} hierarchies created"


@dataclass(frozen=True)
class RemoveCgroupRoot:
    path: str

    def describe(self) -> list[str]:
        return [f"remove the kubelet's cgroup root {self.path} and every cgroup beneath it"]

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = f"cgroup root {self.path}: removal recorded, not run"
            ctx.recorded.append(note)
            return note
        left: list[str] = []
        removed = 0
        for hierarchy in _hierarchies():
            top = hierarchy / self.path.strip("/")
            if not top.is_dir():
                continue
            subs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for cg in [*subs, top]:
                try:
                    cg.rmdir()
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(str(cg))
        if left:
            raise NodeError(
                f"cgroups still in use: {', '.join(left[:3])}",
                hint="a pod process is still running; stop containerd's tasks and rerun reset",
            )
        return f"cgroup root {self.path}: {removed} cgroups removed"


@dataclass(frozen=True)
class RecordKernelSettings:
    keys: tuple[str, ...] = KERNEL_SETTINGS
    record: str = KERNEL_RECORD

    def describe(self) -> list[str]:
        return [f"record {', '.join(self.keys)} in {self.record} (reset restores them)"]

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = "kernel settings: recording skipped in a sysroot"
            ctx.recorded.append(note)
            return note
        target = ctx.host(self.record)
        if target.exists():
            return f"kernel settings: kept the earlier record {self.record}"
        values = {}
        for key in self.keys:
            with contextlib.suppress(OSError):
                values[key] = _proc_path(key).read_text().strip()
        write_atomic(target, (json.dumps(values, indent=2, sort_keys=True) + "\n").encode())
        return f"kernel settings recorded in {self.record}"


@dataclass(frozen=True)
class RestoreKernelSettings:
    record: str = KERNEL_RECORD

    def describe(self) -> list[str]:
        return [f"restore the kernel settings recorded in {self.record}, then remove it"]

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = f"kernel settings from {self.record}: restore recorded, not run"
            ctx.recorded.append(note)
            return note
        source = ctx.host(self.record)
        try:
            values = json.loads(source.read_text())
        except FileNotFoundError:
            return f"kernel settings: no record at {self.record}"
        except (OSError, ValueError) as exc:
            raise NodeError(f"cannot read {self.record}: {exc}") from None
        changed = []
        for key, value in sorted(values.items()):
            path = _proc_path(key)
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value + "\n")
                    changed.append(f"{key}={value}")
        source.unlink()
        return "kernel settings restored: " + (", ".join(changed) or "all unchanged")


@dataclass(frozen=True)
class StopPods:
    """Kill every container task the kubelet started (containerd's k8s.io namespace)."""

    ctr: str = "ctr"
    socket: str = CONTAINERD_SOCKET

    def describe(self) -> list[str]:
        return [f"kill every pod container left running ({self.ctr} -n k8s.io tasks)"]

    def _ctr(self, ctx: StepContext, *args: str) -> system.CommandResult:
        return ctx.runner.run([self.ctr, "--address", self.socket, "-n", "k8s.io", *args])

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = "pods: stopping recorded, not run"
            ctx.recorded.append(note)
            return note
        if not ctx.host(self.socket).exists():
            return "pods: containerd is not running"
        listed = self._ctr(ctx, "tasks", "ls", "-q")
        if listed.returncode != 0:
            return f"pods: cannot list containerd's tasks ({listed.stderr.strip()[:200]})"
        tasks = listed.stdout.split()
        for task in tasks:
            self._ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", task)
        for task in tasks:
            self._ctr(ctx, "tasks", "delete", "--force", task)
        containers = self._ctr(ctx, "containers", "ls", "-q").stdout.split()
        for container in containers:
            self._ctr(ctx, "containers", "delete", container)
        return f"pods: {len(tasks)} tasks killed, {len(containers)} containers removed"


@dataclass(frozen=True)
class DeleteLinks:
    names: tuple[str, ...] = CNI_LINKS

    def describe(self) -> list[str]:
        return [f"delete the CNI's interfaces {', '.join(self.names)} (where present)"]

    def execute(self, ctx: StepContext) -> str:
        if ctx.in_sysroot:
            note = f"interfaces {', '.join(self.names)}: removal recorded, not run"
            ctx.recorded.append(note)
            return note
        gone = []
        for name in self.names:
            shown = ctx.runner.run(["ip", "link", "show", "dev", name])
            if shown.returncode == 0:
                ctx.runner.run(["ip", "link", "delete", "dev", name])
                gone.append(name)
        return f"interfaces removed: {', '.join(gone) or 'none present'}"
