"""The one place that runs commands and touches the host.

Everything that changes or reads the machine outside airlock's own data directories goes through
here, with a `root=` prefix so tests (and `--root`) can aim it at a sysroot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import SystemCommandError

__all__ = [
    "CommandResult",
    "Process",
    "host_path",
    "missing_command_hint",
    "run",
    "spawn",
    "which",
]


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).is_file()), None
    )


def host_path(path: str | Path, root: Path | None = None) -> Path:
    """`/etc/x` under `root` (a sysroot), or the real path when root is None or `/`."""
    p = Path(path)
    if root is None or Path(root) == Path("/"):
        return p
    return Path(root) / p.relative_to("/") if p.is_absolute() else Path(root) / p


# tools `airlock node install` puts on a node from the bundle (helm when the spec has charts)
_CARRIED_TOOLS = frozenset(
    {"kubeadm", "kubelet", "kubectl", "crictl", "containerd", "runc", "helm"}
)


def missing_command_hint(command: str) -> str:
    """What an operator does about a command that is not on this machine."""
    name = Path(command).name
    if name in _CARRIED_TOOLS:
        return (
            f"{name} travels in the bundle: run `airlock node install` on this node first (it "
            f"puts {name} in /usr/local/bin)"
            + ("; the bundle carries helm when the spec lists charts" if name == "helm" else "")
        )
    return (
        f"install {name} with the distribution's package manager (offline: list it under the "
        "spec's packages so the bundle carries it)"
    )


def _in_namespaces(
    argv: Sequence[str], *, netns: str | None, mountns: Path | None, utsns: Path | None = None
) -> list[str]:
    """`argv` wrapped in nsenter for a network, mount and/or UTS namespace (`ip netns exec`
    would remount /sys, and runc then finds no cgroup mount)."""
    enter = [f"--net=/run/netns/{netns}"] if netns else []
    if mountns is not None:
        enter.append(f"--mount={mountns}")
    if utsns is not None:
        enter.append(f"--uts={utsns}")
    return ["nsenter", *enter, "--", *argv] if enter else list(argv)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = 600,
    netns: str | None = None,
    mountns: Path | None = None,
    utsns: Path | None = None,
) -> CommandResult:
    """Run a command to completion; on failure raise SystemCommandError with its output.

    `netns` (a name under /run/netns) and `mountns` (a file a mount namespace is bound to)
    run it inside those namespaces with nsenter."""
    full = _in_namespaces(argv, netns=netns, mountns=mountns, utsns=utsns)
    merged_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            full,
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            env=merged_env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SystemCommandError(
            f"command not found: {full[0]}", hint=missing_command_hint(full[0])
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise SystemCommandError(f"command timed out after {timeout}s: {' '.join(full)}") from exc
    result = CommandResult(
        tuple(full),
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and proc.returncode != 0:
        out = (result.stderr or result.stdout).strip()[-2000:]
        raise SystemCommandError(f"`{' '.join(full)}` exited with {proc.returncode}: {out}")
    return result


class Process:
    """A background process (a daemon) that is always stopped: its whole process group."""

    def __init__(
        self, popen: subprocess.Popen[bytes], argv: Sequence[str], log: Path | None
    ) -> None:
        self.popen = popen
        self.argv = tuple(argv)
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def spawn(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    netns: str | None = None,
    mountns: Path | None = None,
    utsns: Path | None = None,
) -> Process:
    """Start a daemon in its own process group, output to `log` (or discarded)."""
    full = _in_namespaces(argv, netns=netns, mountns=mountns, utsns=utsns)
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        popen = subprocess.Popen(
            full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise SystemCommandError(f"command not found: {full[0]}") from exc
    finally:
        if log and not isinstance(out, int):
            out.close()
    return Process(popen, full, log)
