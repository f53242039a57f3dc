"""Lab nodes that are sshd and nothing else: for `airlock cluster plan|up -i` against many hosts.

    fl-TAG-hub   a bridge; every other namespace has a veth into it (198.19.21.0/24 by default)
    fl-TAG-adm   the admin side (.1): runs `airlock cluster ...`, i.e. ansible-playbook and ssh
    fl-TAG-nI    node I (.10+I): Debian's sshd, its own host key, root login by the test's key

    fl-TAG-lb    (`load_balancer()`) Debian's haproxy at .2: TCP to port 6443 of every control
                 plane, each health-checked (the operator's load balancer of an HA cluster)

Each sshd runs in its own mount namespace; a node made `readonly` sees its sysroot (its
`airlock_root`) mounted read-only there, as a node whose disk went read-only would. Every node
shares this host's files otherwise (python3, /usr), which the playbook never writes: it applies
into the node's sysroot. Cut a node's link with `cut(i)`. Everything is removed by `stop()`.

With `lab_nodes=True` each node is a real lab node instead (`airlock_lab.node.LabNode`: its own
mount and UTS namespaces, the daemonless systemctl first on its PATH): sshd runs inside it, the
inventory names no sysroot, and the playbook installs airlock, containerd and the kubelet on the
node's own root; its routes are the gap's (`airlock_lab.cluster.gap_routes`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ruamel.yaml import YAML

from airlock import system
from airlock.errors import SystemCommandError, UsageError
from airlock_lab.cluster import ADMIN_CONF, LAB_NODE_SETTINGS, gap_routes
from airlock_lab.netns import check_lab_address, create_netns, delete_netns, netns_exists
from airlock_lab.node import LabNode
from airlock_lab.upstream import Upstream

__all__ = ["HAPROXY", "SSHD", "SshFleet", "SshNode", "fleet_bundle", "haproxy_config"]

SSHD = "/usr/sbin/sshd"
HAPROXY = "/usr/sbin/haproxy"
API_PORT = 6443
_SUBNET = "198.19.21.0/24"


@dataclass
class SshNode:
    index: int
    name: str  # inventory host name
    netns: str
    address: str
    root: Path  # the node's sysroot (airlock_root)
    readonly: bool = False
    process: system.Process | None = None


@dataclass
class SshFleet:
    work: Path
    count: int
    tag: str = "t"
    subnet: str = _SUBNET
    readonly: frozenset[int] = frozenset()
    lab_nodes: bool = False
    nodes: list[SshNode] = field(default_factory=list)
    labs: list[LabNode] = field(default_factory=list)
    balancer: system.Process | None = None
    _started: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (1 <= len(self.tag) <= 6 and self.tag.isalnum()):
            raise UsageError(f"fleet tag {self.tag!r}: 1-6 letters or digits")
        net = ipaddress.IPv4Network(self.subnet)
        check_lab_address(f"{net.network_address + 1}/{net.prefixlen}")
        if not 1 <= self.count <= 200:
            raise UsageError(f"{self.count} nodes: 1 to 200")

    # --- names -----------------------------------------------------------------------------

    @property
    def hub(self) -> str:
        return f"fl-{self.tag}-hub"

    @property
    def admin(self) -> str:
        return f"fl-{self.tag}-adm"

    @property
    def key(self) -> Path:
        return self.work / "admin_key"

    @property
    def known_hosts(self) -> Path:
        return self.work / "known_hosts"

    def _iface(self, offset: int) -> str:
        return f"{ipaddress.IPv4Network(self.subnet).network_address + offset}"

    def _prefix(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    # --- up --------------------------------------------------------------------------------

    def start(self) -> SshFleet:
        if not Path(SSHD).is_file():
            raise SystemCommandError(f"{SSHD} is missing: install openssh-server (scripts/deps.sh)")
        self.work.mkdir(parents=True, exist_ok=True)
        self._keys()
        self._netns(self.hub)
        system.run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"], timeout=30)
        system.run(["ip", "-n", self.hub, "link", "set", "br0", "up"], timeout=30)
        self._attach(self.admin, f"fl{self.tag}a", self._iface(1))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        hosts: list[str] = []
        for i in range(1, self.count + 1):
            name = f"fl-{self.tag}-n{i}" if self.lab_nodes else f"node{i}"
            node = SshNode(
                i, name, f"fl-{self.tag}-n{i}", self._iface(9 + i),
                self.work / f"node{i}" / "root", readonly=i in self.readonly,
            )  # fmt: skip
            (self.work / node.name).mkdir(parents=True, exist_ok=True)
            self._sysroot(node.root)
            self._attach(node.netns, f"fl{self.tag}{i}", node.address)
            node.process = self._lab_sshd(node) if self.lab_nodes else self._sshd(node)
            self.nodes.append(node)
            hosts.append(f"{node.address} {(self.work / 'host_key.pub').read_text().strip()}")
        self.known_hosts.write_text("\n".join(hosts) + "\n")
        for node in self.nodes:
            self._wait(node)
        return self

    @staticmethod
    def _sysroot(root: Path) -> None:
        """What a Debian node's root has that airlock reads: os-release, resolv.conf."""
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "os-release").write_bytes(Path("/etc/os-release").read_bytes())
        (root / "etc" / "resolv.conf").touch()

    def _netns(self, name: str) -> None:
        if netns_exists(name):
            raise UsageError(f"namespace {name} exists already (a run that did not clean up?)")
        create_netns(name)
        self._started.append(name)

    def _keys(self) -> None:
        for path in (self.key, self.work / "host_key"):
            if not path.exists():
                system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)])
        (self.work / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())

    def _attach(self, netns: str, link: str, address: str) -> None:
        self._netns(netns)
        system.run(
            ["ip", "-n", self.hub, "link", "add", link, "type", "veth",
             "peer", "name", "eth0", "netns", netns],
            timeout=30,
        )  # fmt: skip
        system.run(["ip", "-n", self.hub, "link", "set", link, "master", "br0", "up"], timeout=30)
        system.run(["ip", "-n", netns, "addr", "add", f"{address}/{self._prefix()}", "dev", "eth0"])
        system.run(["ip", "-n", netns, "link", "set", "eth0", "up"], timeout=30)

    def _sshd_config(self, node: SshNode, *, extra: list[str] | None = None) -> Path:
        directory = self.work / node.name
        config = directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    *(extra or []),
                    f"ListenAddress {node.address}",
                    f"HostKey {self.work / 'host_key'}",
                    f"AuthorizedKeysFile {self.work / 'authorized_keys'}",
                    f"PidFile {directory / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        return config

    def _sshd(self, node: SshNode) -> system.Process:
        directory = self.work / node.name
        config = self._sshd_config(node)
        sshd = f"exec {SSHD} -D -e -f {shlex.quote(str(config))}"
        script = sshd
        if node.readonly:
            root = shlex.quote(str(node.root))
            script = f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && {sshd}"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        return system.spawn(argv, log=directory / "sshd.log", netns=node.netns)

    def _lab_sshd(self, node: SshNode) -> system.Process:
        """sshd inside a LabNode: sessions see the node's root, host name and PATH."""
        lab = LabNode(
            node.name, netns=node.netns, hostname=node.name, cgroup_root=f"/airlock-{node.name}"
        ).up()
        self.labs.append(lab)
        lab.run(["mkdir", "-p", "/run/sshd"], timeout=30)  # the node's /run is its own tmpfs
        gap_routes(node.netns, "eth0")
        config = self._sshd_config(node, extra=[f"SetEnv PATH={lab.env()['PATH']}"])
        return lab.spawn([SSHD, "-D", "-e", "-f", str(config)], log=config.with_name("sshd.log"))

    def load_balancer(self, control_planes: Iterable[int], *, port: int = API_PORT) -> str:
        """haproxy in its own namespace (.2), forwarding TCP `port` to port 6443 of each control
        plane (health-checked every second); returns ADDRESS:PORT (the inventory's
        airlock_control_plane_endpoint)."""
        if not Path(HAPROXY).is_file():
            raise SystemCommandError(
                f"{HAPROXY} is missing: install haproxy (AIRLOCK_DEPS_FULL=1 scripts/deps.sh)"
            )
        address = self._iface(2)
        self._attach(f"fl-{self.tag}-lb", f"fl{self.tag}lb", address)
        backends = [(n.name, n.address) for n in self.nodes if n.index in set(control_planes)]
        config = self.work / "haproxy.cfg"
        config.write_text(haproxy_config(f"{address}:{port}", backends))
        system.run([HAPROXY, "-c", "-q", "-f", str(config)], timeout=30)
        self.balancer = system.spawn(
            [HAPROXY, "-db", "-f", str(config)], log=self.work / "haproxy.log",
            netns=f"fl-{self.tag}-lb",
        )  # fmt: skip
        return f"{address}:{port}"

    def ssh_argv(self, node: SshNode, *command: str, key: Path | None = None) -> list[str]:
        return [
            "ssh", "-i", str(key or self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            f"root@{node.address}", *command,
        ]  # fmt: skip

    def _wait(self, node: SshNode, attempts: int = 100) -> None:
        for _ in range(attempts):  # bounded: 100 x 0.1 s plus the ssh attempts
            if node.process is not None and not node.process.alive():
                log = (self.work / node.name / "sshd.log").read_text(errors="replace")
                raise SystemCommandError(f"sshd of {node.name} exited: {log.strip()[-800:]}")
            probe = system.run(self.ssh_argv(node, "true"), check=False, netns=self.admin)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise SystemCommandError(f"sshd of {node.name} at {node.address} did not answer")

    # --- what tests use --------------------------------------------------------------------

    def host_vars(self, node: SshNode, key: Path | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ansible_host": node.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key or self.key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes"
            ),
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        if not self.lab_nodes:  # a lab node's own root is the node's
            out["airlock_root"] = str(node.root)
        return out

    def inventory(
        self,
        path: Path,
        *,
        control_planes: Iterable[int] = (1,),
        fmt: str = "yaml",
        overrides: Mapping[int, Mapping[str, Any]] | None = None,
        all_vars: Mapping[str, Any] | None = None,
    ) -> Path:
        """An inventory of these nodes (YAML by ruamel, or INI), control planes by index."""
        cps = set(control_planes)
        overrides = overrides or {}
        groups: dict[str, dict[str, dict[str, Any]]] = {"control_plane": {}, "workers": {}}
        for node in self.nodes:
            group = "control_plane" if node.index in cps else "workers"
            groups[group][node.name] = {**self.host_vars(node), **overrides.get(node.index, {})}
        if fmt == "yaml":
            doc: dict[str, Any] = {
                "all": {"children": {g: {"hosts": h} for g, h in groups.items()}}
            }
            if all_vars:
                doc["all"]["vars"] = dict(all_vars)
            with path.open("w") as fh:
                YAML().dump(doc, fh)
            return path
        lines: list[str] = []
        for group, hosts in groups.items():
            lines.append(f"[{group}]")
            for name, hv in hosts.items():
                pairs = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in hv.items())
                lines.append(f"{name} {pairs}")
            lines.append("")
        if all_vars:
            lines += [
                "[all:vars]",
                *(f"{k}={shlex.quote(str(v))}" for k, v in all_vars.items()),
                "",
            ]
        path.write_text("\n".join(lines))
        return path

    def ready(self) -> dict[str, str]:
        """Each Kubernetes node's Ready condition, as node 1 (a lab node with admin.conf) sees it."""
        out = self.labs[0].run(
            ["kubectl", "--kubeconfig", ADMIN_CONF, "--request-timeout=10s", "get", "nodes",
             "-o", "json"], timeout=60,
        )  # fmt: skip
        return {
            n["metadata"]["name"]: next(
                c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"
            )
            for n in json.loads(out.stdout)["items"]
        }

    def cut(self, index: int) -> None:
        """Cut node `index`'s link (its sshd keeps running, unreachable)."""
        system.run(["ip", "-n", self.hub, "link", "set", f"fl{self.tag}{index}", "down"])

    def mend(self, index: int) -> None:
        """Bring node `index`'s link back (after `cut`)."""
        system.run(["ip", "-n", self.hub, "link", "set", f"fl{self.tag}{index}", "up"])

    def run_admin(self, argv: list[str], *, timeout: float = 1800) -> system.CommandResult:
        """A command on the admin side (airlock cluster ...)."""
        return system.run(argv, check=False, netns=self.admin, timeout=timeout)

    # --- down ------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for node in self.nodes:
            if node.process is not None:
                node.process.stop()
        for lab in self.labs:  # every process of the node, its namespaces, its cgroups
            lab.down()
        self.labs.clear()
        for name in self._started:  # what ran inside (a share the playbook started)
            self._kill_inside(name)
        for name in reversed(self._started):
            delete_netns(name)
        self._started.clear()

    @staticmethod
    def _kill_inside(netns: str) -> None:
        out = system.run(["ip", "netns", "pids", netns], check=False, timeout=30)
        for pid in out.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def __enter__(self) -> SshFleet:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def haproxy_config(frontend: str, backends: Iterable[tuple[str, str]]) -> str:
    """TCP passthrough (the API servers' own TLS) to every backend's port 6443, each checked
    every second: one that stops answering is out after two checks, back after one."""
    lines = [
        "global",
        "    maxconn 512",
        "defaults",
        "    mode tcp",
        "    timeout connect 3s",
        "    timeout client 1h",
        "    timeout server 1h",
        "frontend kube_api",
        f"    bind {frontend}",
        "    default_backend control_planes",
        "backend control_planes",
        "    balance roundrobin",
        *(f"    server {name} {address}:{API_PORT} check inter 1s fall 2 rise 1"
          for name, address in backends),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def fleet_bundle(upstream: Upstream, work: Path) -> tuple[Path, Path]:
    """The seed bundle from `upstream`, with the lab nodes' settings in its spec, signed with
    a key made here: (the bundle, the public key)."""
    airlock = str(Path(sys.executable).with_name("airlock"))

    def run(*args: str) -> str:
        return system.run([airlock, *args], timeout=1800).stdout

    sources = work / "sources.yaml"
    with sources.open("w") as fh:
        YAML().dump({"sources": upstream.sources()}, fh)
    spec = work / "airlock.yaml"
    run("init", "--sources", str(sources), "-o", str(spec))
    yaml = YAML()
    doc = yaml.load(spec.read_text())
    doc["node"] = LAB_NODE_SETTINGS
    with spec.open("w") as fh:
        yaml.dump(doc, fh)
    run("keys", "generate", "-o", str(work / "site"))
    created = json.loads(
        run("bundle", "create", "-f", str(spec), "--cache", str(work / "cache"),
            "--sign", str(work / "site.key"), "-o", str(work / "out"), "--json")
    )  # fmt: skip
    return Path(created["bundle"]), work / "site.pub"
