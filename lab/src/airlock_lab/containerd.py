"""A real containerd for tests and the lab: its own root, state, socket and config.

`ContainerdDaemon` starts `containerd` with a config airlock renders (CRI on, registry
`config_path` pointing at a hosts directory), optionally inside a network namespace, waits
for its socket, and drives it with `ctr --address SOCK`. Stopping it removes every task it
started, stops the daemon and kills any shim left behind, so no process outlives the test.

`ctr images pull` resolves and fetches in the ctr process itself (not in the daemon), so ctr
runs in the daemon's namespace too, and `--hosts-dir` makes it read the same hosts.toml files
that the CRI reads through `config_path`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from airlock import system
from airlock.errors import SystemCommandError, UsageError
from airlock.node.mirrors import dump_toml, render_containerd_config

__all__ = ["DEFAULT_SANDBOX_IMAGE", "ContainerdDaemon", "installed_containerd_version"]

DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.9"
_SOCKET_MAX = 100  # sun_path holds 108 bytes; keep a margin

# Lab guard: any registry request that is not for loopback or the lab range goes to a dead
# proxy on loopback, so a misread hosts.toml (containerd then falls back to the upstream)
# fails at once instead of resolving the upstream's name through the host's DNS server.
_DEAD_PROXY = "http://127.0.0.1:9"
_GUARD_ENV = {
    "HTTP_PROXY": _DEAD_PROXY,
    "HTTPS_PROXY": _DEAD_PROXY,
    "http_proxy": _DEAD_PROXY,
    "https_proxy": _DEAD_PROXY,
    "NO_PROXY": "localhost,127.0.0.0/8,198.18.0.0/15",
    "no_proxy": "localhost,127.0.0.0/8,198.18.0.0/15",
}


def installed_containerd_version() -> str:
    """The version of the `containerd` on PATH, e.g. `1.6.20`."""
    out = system.run(["containerd", "--version"], timeout=30).stdout
    match = re.search(r"\sv?(\d+\.\d+\.\d+)", out)
    if not match:
        raise SystemCommandError(f"cannot read the containerd version from {out.strip()!r}")
    return match.group(1)


class ContainerdDaemon:
    """One containerd under `workdir` (root/, state/, config.toml, containerd.log, socket).

    `hosts_dir` is the registry `config_path` (default `workdir/certs.d`). `config` is an
    existing config.toml text to start from (airlock's keys are set in it, then root, state
    and socket are pointed at `workdir`). `namespace` is the containerd namespace ctr uses
    (`k8s.io` is the one the kubelet's CRI sees). With `guard_upstream` (the default),
    registry traffic to anything but loopback and 198.18.0.0/15 is sent to a dead proxy.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        netns: str | None = None,
        hosts_dir: Path | None = None,
        sandbox_image: str = DEFAULT_SANDBOX_IMAGE,
        config: str = "",
        namespace: str = "k8s.io",
        start_timeout: float = 30.0,
        guard_upstream: bool = True,
    ) -> None:
        self.workdir = workdir
        self.netns = netns
        self.hosts_dir = hosts_dir or workdir / "certs.d"
        self.sandbox_image = sandbox_image
        self.base_config = config
        self.namespace = namespace
        self.start_timeout = start_timeout
        self.env = dict(_GUARD_ENV) if guard_upstream else {}
        self.root = workdir / "root"
        self.state = workdir / "state"
        self.config_file = workdir / "config.toml"
        self.log = workdir / "containerd.log"
        self._socket_dir: Path | None = None
        self.socket = workdir / "containerd.sock"
        self._process: system.Process | None = None
        self._containers: list[str] = []

    # --- lifecycle ---------------------------------------------------------------------

    def render_config(self) -> str:
        """The config.toml this daemon runs with (airlock's keys plus private paths)."""
        text = render_containerd_config(
            containerd_version=installed_containerd_version(),
            sandbox_image=self.sandbox_image,
            existing=self.base_config,
            config_path=str(self.hosts_dir),
        )
        doc: dict[str, Any] = tomllib.loads(text)
        doc["root"] = str(self.root)
        doc["state"] = str(self.state)
        grpc = doc.setdefault("grpc", {})
        grpc["address"] = str(self.socket)
        # Plugins that default to shared host paths get private ones.
        opt = doc.setdefault("plugins", {}).setdefault("io.containerd.internal.v1.opt", {})
        opt["path"] = str(self.workdir / "opt")
        return dump_toml(doc)

    def start(self) -> None:
        if self._process and self._process.alive():
            return
        if system.which("containerd") is None:
            raise SystemCommandError(
                "containerd is not installed", "install it: apt-get install containerd"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket)) > _SOCKET_MAX:
            # A unix socket path is limited to 108 bytes; deep temp dirs exceed it.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="airlock-ctd-"))
            self.socket = self._socket_dir / "containerd.sock"
        self.config_file.write_text(self.render_config())
        self._process = system.spawn(
            ["containerd", "--config", str(self.config_file)],
            log=self.log,
            env=self.env,
            netns=self.netns,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is None or not self._process.alive():
                break
            if self.socket.exists():
                probe = self.ctr(["version"], check=False, timeout=5)
                if probe.returncode == 0:
                    return
            time.sleep(0.1)
        alive = self._process is not None and self._process.alive()
        self.stop()
        raise SystemCommandError(
            "containerd did not come up"
            + (f" within {self.start_timeout:.0f}s" if alive else " (it exited)")
            + f"; log tail:\n{self._log_tail()}",
            hint=f"full log: {self.log}",
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Remove every task and container, stop the daemon, kill shims left behind."""
        if self._process is not None and self._process.alive():
            with contextlib.suppress(SystemCommandError):
                self._remove_all_tasks()
        if self._process is not None:
            self._process.stop(timeout=15)
        self._kill_stray_shims()
        self._unmount_under(self.workdir)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self.socket = self.workdir / "containerd.sock"

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    def __enter__(self) -> ContainerdDaemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- ctr -----------------------------------------------------------------------------

    def ctr(
        self,
        args: Sequence[str],
        *,
        namespace: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> system.CommandResult:
        """`ctr --address SOCK --namespace NS ARGS`, in the daemon's network namespace."""
        argv = [
            "ctr",
            "--address",
            str(self.socket),
            "--namespace",
            namespace or self.namespace,
            *args,
        ]
        return system.run(argv, check=check, timeout=timeout, env=self.env, netns=self.netns)

    def pull(self, ref: str, *, hosts_dir: Path | None = None, timeout: float = 300) -> None:
        """Pull `ref` by its original name, resolved through `hosts_dir`'s hosts.toml files."""
        hosts = hosts_dir or self.hosts_dir
        self.ctr(["images", "pull", "--hosts-dir", str(hosts), ref], timeout=timeout)

    def import_archive(self, archive: Path, *, timeout: float = 300) -> None:
        """`ctr images import` of an image tar (docker-archive or OCI layout)."""
        self.ctr(["images", "import", str(archive)], timeout=timeout)

    def images(self) -> list[str]:
        """Names of the images this daemon holds in its namespace, sorted."""
        out = self.ctr(["images", "list", "--quiet"]).stdout
        return sorted(line.strip() for line in out.splitlines() if line.strip())

    def run(
        self,
        ref: str,
        name: str,
        *,
        args: Sequence[str] = (),
        net_host: bool = True,
    ) -> None:
        """Start a detached container `name` from a pulled image.

        `args`, when given, is the whole process argv (ctr replaces entrypoint and command).
        """
        _check_container_name(name)
        argv = ["run", "--detach"]
        if net_host:
            argv.append("--net-host")
        self.ctr([*argv, ref, name, *args], timeout=60)
        self._containers.append(name)

    def tasks(self) -> dict[str, str]:
        """Task id -> status (RUNNING, STOPPED...) in this daemon's namespace."""
        out = self.ctr(["tasks", "list"]).stdout.splitlines()[1:]
        result = {}
        for line in out:
            fields = line.split()
            if len(fields) >= 3:
                result[fields[0]] = fields[2]
        return result

    def kill(self, name: str, *, sig: str = "SIGKILL") -> None:
        self.ctr(["tasks", "kill", "--signal", sig, name], timeout=30)

    def delete(self, name: str) -> None:
        """Delete the container's task (killing it) and the container itself."""
        self.ctr(["tasks", "delete", "--force", name], check=False, timeout=60)
        self.ctr(["containers", "delete", name], check=False, timeout=60)
        with contextlib.suppress(ValueError):
            self._containers.remove(name)

    # --- cleanup -------------------------------------------------------------------------

    def _remove_all_tasks(self) -> None:
        namespaces = self.ctr(["namespaces", "list", "--quiet"], timeout=30).stdout.split()
        for ns in namespaces:
            for task in self.ctr(["tasks", "list", "--quiet"], namespace=ns).stdout.split():
                self.ctr(["tasks", "delete", "--force", task], namespace=ns, check=False)
            for cid in self.ctr(["containers", "list", "--quiet"], namespace=ns).stdout.split():
                self.ctr(["containers", "delete", cid], namespace=ns, check=False)
        self._containers.clear()

    def shim_pids(self) -> list[int]:
        """PIDs of containerd shims started by this daemon (found by its socket address)."""
        address = str(self.socket).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not argv or not os.path.basename(argv[0]).startswith(b"containerd-shim"):
                continue
            with contextlib.suppress(ValueError, IndexError):
                if argv[argv.index(b"-address") + 1] == address:
                    pids.append(int(entry.name))
        return pids

    def _kill_stray_shims(self) -> None:
        # A shim whose tasks are all deleted exits by itself; one that does not is killed,
        # by pid, only if its command line names this daemon's socket.
        self._wait_shims_gone(5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.shim_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            self._wait_shims_gone(3)

    def _wait_shims_gone(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.shim_pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    @staticmethod
    def _unmount_under(path: Path) -> None:
        # Rootfs and snapshot mounts of a task that did not exit cleanly would keep the
        # temp dir from being removed; unmount them deepest first.
        prefix = str(path.resolve()) + "/"
        mounts = []
        try:
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    mounts.append(point)
        except OSError:
            return
        for point in sorted(mounts, key=len, reverse=True):
            system.run(["umount", "--lazy", point], check=False, timeout=30)


def _check_container_name(name: str) -> None:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$", name):
        raise UsageError(f"invalid container name {name!r}", "letters, digits, '_', '.', '-'")
