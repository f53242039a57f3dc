"""Plans as lists of steps, and the seams that run them: commands, readiness probes, waits.

A plan (init, join, reset) is a tuple of steps. Every step can describe itself exactly (what
`--dry-run` prints: every command and the full content of every file) and execute itself against
a `StepContext`. The context carries the two seams tests replace:

- `CommandRunner`: runs `kubeadm`, `kubectl`, `helm`, `iptables-restore`; `SystemRunner` is the
  real one (airlock.system.run, binaries mapped by name, output appended to a log file).
- `ClusterProbe`: "is the API server ready / the node Ready / CoreDNS available?";
  `KubectlProbe` asks kubectl, tests inject a fake that turns ready after N polls.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from airlock import system
from airlock.atomic import write_atomic
from airlock.errors import NodeError, SystemCommandError, VerificationError

__all__ = [
    "ADMIN_CONF",
    "ClusterProbe",
    "CommandRunner",
    "Guard",
    "Hook",
    "KubectlProbe",
    "Progress",
    "RemovePath",
    "RunCommand",
    "Step",
    "StepContext",
    "SystemRunner",
    "Wait",
    "WaitTarget",
    "WriteFile",
    "execute_steps",
    "hide_secrets",
    "render_steps",
    "wait_until",
]

ADMIN_CONF = "/etc/kubernetes/admin.conf"

Progress = Callable[[str], None]
WaitTarget = Literal["api-server", "node-ready", "coredns"]


# --- seams ------------------------------------------------------------------------------------


class CommandRunner(Protocol):
    def run(
        self, argv: Sequence[str], *, log: Path | None = None, input: str | None = None
    ) -> system.CommandResult: ...


@dataclass
class SystemRunner:
    """Runs commands with airlock.system.run; `binaries` maps a plan's names to real paths."""

    binaries: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 1800

    def run(
        self, argv: Sequence[str], *, log: Path | None = None, input: str | None = None
    ) -> system.CommandResult:
        full = [self.binaries.get(argv[0], argv[0]), *argv[1:]]
        result = system.run(full, check=False, env=self.env, timeout=self.timeout, input=input)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            # 0600: kubeadm prints the join command, bootstrap token and certificate key included
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(f"$ {' '.join(argv)}\n{result.stdout}")
                if result.stderr:
                    fh.write(result.stderr)
                fh.write(f"[exit {result.returncode}]\n")
        return result


class ClusterProbe(Protocol):
    def api_server_ready(self) -> bool: ...

    def node_ready(self, node: str) -> bool: ...

    def coredns_ready(self) -> bool: ...


@dataclass
class KubectlProbe:
    """Readiness through kubectl and the admin kubeconfig (each call bounded by a timeout)."""

    kubeconfig: Path
    kubectl: str = "kubectl"
    timeout: float = 15

    def _get(self, *args: str) -> str | None:
        argv = [self.kubectl, "--kubeconfig", str(self.kubeconfig), *args]
        try:
            res = system.run(argv, check=False, timeout=self.timeout)
        except SystemCommandError:  # a missing kubectl or a timeout: "not ready yet"
            return None
        return res.stdout if res.returncode == 0 else None

    def api_server_ready(self) -> bool:
        return (self._get("get", "--raw", "/readyz") or "").strip() == "ok"

    def node_ready(self, node: str) -> bool:
        out = self._get("get", "node", node, "-o", "json")
        if out is None:
            return False
        try:
            conditions = json.loads(out).get("status", {}).get("conditions", [])
        except ValueError:
            return False
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def coredns_ready(self) -> bool:
        out = self._get("-n", "kube-system", "get", "deployment", "coredns", "-o", "json")
        if out is None:
            return False
        try:
            status = json.loads(out).get("status", {})
        except ValueError:
            return False
        return int(status.get("availableReplicas") or 0) >= 1


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 2.0,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll `check` until it is true or `timeout` seconds pass; returns how many polls it took."""
    start = clock()
    polls = 0
    while True:
        polls += 1
        if check():
            return polls
        elapsed = clock() - start
        if elapsed >= timeout:
            raise NodeError(
                f"timed out after {timeout:.0f}s waiting for {what}",
                hint="look at `crictl ps -a` and `journalctl -u kubelet` on the node",
            )
        if progress:
            progress(f"waiting for {what} ({elapsed:.0f}s of {timeout:.0f}s)")
        sleep(interval)


# --- steps ------------------------------------------------------------------------------------


@dataclass
class StepContext:
    root: Path
    runner: CommandRunner
    log_dir: Path
    probe: ClusterProbe | None = None
    preflight: Callable[[], None] | None = None
    progress: Progress | None = None
    poll_interval: float = 2.0
    done: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # what was recorded instead of run

    def host(self, path: str) -> Path:
        return system.host_path(path, self.root)

    @property
    def in_sysroot(self) -> bool:
        return self.root != Path("/")

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)


class Step(Protocol):
    def describe(self) -> list[str]: ...

    def execute(self, ctx: StepContext) -> str: ...


def _mode(mode: int) -> str:
    return f"{mode:04o}"


@dataclass(frozen=True)
class Hook:
    """A callable another part plugs in (the node preflight)."""

    name: str
    detail: str

    def describe(self) -> list[str]:
        return [f"{self.name}: {self.detail}"]

    def execute(self, ctx: StepContext) -> str:
        if ctx.preflight is None:
            return f"{self.name}: no hook given, skipped"
        ctx.preflight()
        return f"{self.name}: passed"


@dataclass(frozen=True)
class Guard:
    """Refuse when any of `paths` shows an existing cluster (a glob on the last part)."""

    paths: tuple[str, ...]
    detail: str
    hint: str

    def describe(self) -> list[str]:
        return [f"check: {self.detail} ({', '.join(self.paths)})"]

    def found(self, root: Path) -> list[str]:
        hits: list[str] = []
        for p in self.paths:
            path = system.host_path(p, root)
            if any(c in path.name for c in "*?["):
                if any(path.parent.glob(path.name)):
                    hits.append(p)
            elif path.exists():
                hits.append(p)
        return hits

    def execute(self, ctx: StepContext) -> str:
        hits = self.found(ctx.root)
        if hits:
            raise NodeError(f"{self.detail}: found {', '.join(hits)}", hint=self.hint)
        return f"check: {self.detail}: ok"


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str
    mode: int = 0o644

    def describe(self) -> list[str]:
        body = [f"      {line}" if line else "" for line in self.content.splitlines()]
        return [f"write {self.path} (mode {_mode(self.mode)}):", *body]

    def execute(self, ctx: StepContext) -> str:
        write_atomic(ctx.host(self.path), self.content.encode(), mode=self.mode)
        return f"wrote {self.path}"


@dataclass(frozen=True)
class RunCommand:
    argv: tuple[str, ...]
    log_name: str
    purpose: str = ""
    failure_hint: str | None = None
    verify_sha256: tuple[str, str] | None = None  # (path, hex): the file must be these bytes

    def describe(self) -> list[str]:
        why = f"  # {self.purpose}" if self.purpose else ""
        out = [f"run: {' '.join(self.argv)}{why}"]
        if self.verify_sha256:
            path, hexd = self.verify_sha256
            out.append(f"      first checking that {path} has sha256 {hexd}")
        return out

    def execute(self, ctx: StepContext) -> str:
        if self.verify_sha256:
            path, want = self.verify_sha256
            try:
                got = hashlib.sha256(ctx.host(path).read_bytes()).hexdigest()
            except OSError as exc:
                raise NodeError(f"cannot read {path}: {exc.strerror}") from None
            if got != want:
                raise VerificationError(
                    f"{path} is not the file the bundle carries (sha256 {got}, expected {want})",
                    hint="it was edited after `airlock node install`; install it again",
                )
        log = ctx.log_dir / self.log_name
        result = ctx.runner.run(self.argv, log=log)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise NodeError(
                f"`{' '.join(self.argv)}` failed with exit code {result.returncode}; its full"
                f" output is in {log}" + (f" (last lines: {' | '.join(tail)})" if tail else ""),
                hint=self.failure_hint,
            )
        return f"ran {' '.join(self.argv[:2])} (log: {log})"


@dataclass(frozen=True)
class Wait:
    target: WaitTarget
    timeout: float
    detail: str
    node: str = ""

    def describe(self) -> list[str]:
        return [f"wait: {self.detail}, up to {self.timeout:.0f}s"]

    def execute(self, ctx: StepContext) -> str:
        probe = ctx.probe
        if probe is None:
            raise NodeError(f"no readiness probe to wait for {self.detail}")
        checks: dict[str, Callable[[], bool]] = {
            "api-server": probe.api_server_ready,
            "node-ready": lambda: probe.node_ready(self.node),
            "coredns": probe.coredns_ready,
        }
        polls = wait_until(
            checks[self.target],
            what=self.detail,
            timeout=self.timeout,
            interval=ctx.poll_interval,
            progress=ctx.progress,
        )
        return f"{self.detail}: ready after {polls} poll(s)"


@dataclass(frozen=True)
class RemovePath:
    """Remove a directory or file (reset); never one that holds `keep`. With `contents_only`
    (or when the directory is a mount point) it is emptied and kept: containerd watches
    /etc/cni/net.d, and a watched directory removed and made again is never seen again."""

    path: str
    keep: tuple[str, ...] = ()
    contents_only: bool = False

    def describe(self) -> list[str]:
        if self.contents_only:
            return [f"empty: {self.path} (the directory stays: containerd watches it)"]
        return [f"remove: {self.path}"]

    def execute(self, ctx: StepContext) -> str:
        target = Path(self.path)
        for k in self.keep:
            if Path(k) == target or target in Path(k).parents:
                raise NodeError(f"refusing to remove {self.path}: it holds {k}")
        real = ctx.host(self.path)
        if real.is_dir() and not real.is_symlink():
            try:
                if self.contents_only or os.path.ismount(real):
                    # its own file system (a volume of its own), or watched: empty it, keep it
                    for child in real.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
                    return f"emptied {self.path}"
                shutil.rmtree(real)
            except OSError as exc:
                raise NodeError(
                    f"cannot remove {self.path}: {exc.strerror}",
                    hint="a pod volume may still be mounted there; unmount it and rerun",
                ) from None
        elif real.exists() or real.is_symlink():
            real.unlink()
        else:
            return f"remove: {self.path} (absent)"
        return f"removed {self.path}"


def hide_secrets(text: str, secrets: Mapping[str, str | None], *, show: bool) -> str:
    """`text` with each secret value replaced by a marker naming it (unless `show`): plans and
    results are printed and logged, and a bootstrap token or certificate key must not be."""
    if show:
        return text
    for name, value in secrets.items():
        if value:
            text = text.replace(value, f"<{name} hidden: --show-secrets prints it>")
    return text


def render_steps(steps: Sequence[Step]) -> list[str]:
    lines: list[str] = []
    for n, step in enumerate(steps, 1):
        first, *rest = step.describe()
        lines.append(f"{n:2d}. {first}")
        lines.extend(rest)
    return lines


def execute_steps(steps: Sequence[Step], ctx: StepContext) -> list[str]:
    """Run the steps in order; the first failure stops them (its error names the step)."""
    for n, step in enumerate(steps, 1):
        ctx.say(f"[{n}/{len(steps)}] {step.describe()[0]}")
        ctx.done.append(step.execute(ctx))
    return ctx.done
