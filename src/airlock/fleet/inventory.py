"""An Ansible inventory, read by ansible-core's own parser (`ansible-inventory --list`), then
checked for what airlock needs: a `control_plane` group with at least one host, an optional
`workers` group, no host in both, an address for every host (`ansible_host`, else its name),
only the `airlock_*` host variables airlock knows, and with two or more control planes one
`airlock_control_plane_endpoint` (HOST:PORT of the load balancer in front of every control
plane's API server: kubeadm's controlPlaneEndpoint), the same on every host that sets it.

Parsing is ansible's (INI, YAML, directories, group_vars/host_vars beside the file), so an
inventory that works with `ansible-playbook` works here; `check_inventory` is pure over the
JSON that `ansible-inventory --list` prints.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.errors import SystemCommandError, UsageError
from airlock.system import run

__all__ = [
    "CONTROL_PLANE",
    "ENDPOINT_VAR",
    "HOST_VARS",
    "WORKERS",
    "FleetHost",
    "FleetInventory",
    "ansible_tool",
    "check_inventory",
    "load_inventory",
]

CONTROL_PLANE = "control_plane"
WORKERS = "workers"
# host variables airlock reads (each a default in the playbook); any other airlock_* is a typo
HOST_VARS = {
    "airlock_root": "apply into this sysroot instead of / (tests, image builds)",
    "airlock_venv": "where the bootstrap installs airlock (default /opt/airlock/venv)",
    "airlock_store": "the node's store (default /var/lib/airlock/store)",
    "airlock_incoming": "where files sent to the node land (default /var/lib/airlock/incoming)",
    "airlock_advertise_address": "the address kubeadm advertises (default: ansible_host)",
    "airlock_registry_port": "the first node's registry port (default 5000)",
    "airlock_share_port": "the first node's share port, for the other nodes (default 5001)",
    "airlock_control_plane_endpoint": (
        "HOST:PORT of a load balancer in front of every control plane's API server (port 6443);"
        " needed with two or more control planes (e.g. in all:vars)"
    ),
}
ENDPOINT_VAR = "airlock_control_plane_endpoint"
_ENDPOINT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")
_PARSE_FAILED = re.compile(r"Failed to parse inventory with '(?P<plugin>\w+)' plugin: (?P<msg>.+)")


@dataclass(frozen=True)
class FleetHost:
    name: str
    address: str
    role: str  # "control-plane" | "worker"
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetInventory:
    source: Path
    control_planes: tuple[FleetHost, ...]
    workers: tuple[FleetHost, ...]
    control_plane_endpoint: str | None = None  # HA: the load balancer every node dials

    @property
    def hosts(self) -> tuple[FleetHost, ...]:
        return self.control_planes + self.workers

    @property
    def first(self) -> FleetHost:
        return self.control_planes[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "firstControlPlane": self.first.name,
            "controlPlaneEndpoint": self.control_plane_endpoint,
            "hosts": [{"name": h.name, "address": h.address, "role": h.role} for h in self.hosts],
        }


def ansible_tool(name: str) -> str:
    """An ansible-core console script installed beside the running Python (airlock's venv)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise UsageError(
            f"{name} is not installed beside airlock ({path})",
            "install airlock with its dependencies (the bundle's wheelhouse carries ansible-core)",
        )
    return str(path)


def _parse_failure(source: Path, stderr: str) -> str:
    """ansible's own reason, from the plugin that should have read this file."""
    wanted = "yaml" if source.suffix in (".yml", ".yaml") else "ini"
    found = {m["plugin"]: m["msg"].strip() for m in _PARSE_FAILED.finditer(stderr)}
    reason = found.get(wanted) or next(iter(found.values()), "")
    if not reason:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        reason = lines[-1] if lines else "ansible-inventory failed"
    return reason.removeprefix("[ERROR]: ")


def load_inventory(source: Path) -> FleetInventory:
    """Parse with ansible-core, then check (errors name the file and the host)."""
    if not source.exists():
        raise UsageError(f"inventory {source} does not exist", "give an INI or YAML inventory")
    env = {
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
        "ANSIBLE_INVENTORY_ENABLED": "yaml,ini",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    try:
        out = run(
            [ansible_tool("ansible-inventory"), "-i", str(source), "--list"],
            env=env,
            check=False,
            timeout=120,
        )
    except SystemCommandError as exc:
        raise UsageError(f"cannot read inventory {source}: {exc.message}") from exc
    if out.returncode != 0:
        raise UsageError(
            f"inventory {source}: {_parse_failure(source, out.stderr)}",
            "fix the inventory (INI or YAML, as ansible-inventory -i FILE --list reads it)",
        )
    try:
        data = json.loads(out.stdout)
    except ValueError as exc:
        raise UsageError(f"inventory {source}: ansible-inventory printed no JSON") from exc
    return check_inventory(source, data)


def _group_hosts(data: dict[str, Any], group: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """The hosts of a group and of its children, in inventory order, each once."""
    entry = data.get(group) or {}
    hosts = list(entry.get("hosts") or [])
    for child in entry.get("children") or []:
        if child not in seen:
            hosts += _group_hosts(data, child, seen | {group})
    return list(dict.fromkeys(hosts))


def _address(source: Path, name: str, hostvars: dict[str, Any]) -> str:
    address = str(hostvars.get("ansible_host") or name)
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    if not _HOSTNAME.match(address):
        raise UsageError(
            f"inventory {source}: host {name}: {address!r} is neither an IP address nor a host name",
            "set ansible_host to the node's address",
        )
    return address


def _check_vars(source: Path, name: str, hostvars: dict[str, Any]) -> None:
    for key in sorted(hostvars):
        if key.startswith("airlock_") and key not in HOST_VARS:
            known = ", ".join(sorted(HOST_VARS))
            raise UsageError(
                f"inventory {source}: host {name}: unknown variable {key}",
                f"airlock reads: {known}",
            )
    advertise = hostvars.get("airlock_advertise_address")
    if advertise is not None:
        try:
            ipaddress.ip_address(str(advertise))
        except ValueError as exc:
            raise UsageError(
                f"inventory {source}: host {name}: airlock_advertise_address {advertise!r} "
                "is not an IP address"
            ) from exc
    root = hostvars.get("airlock_root")
    if root is not None and not str(root).startswith("/"):
        raise UsageError(f"inventory {source}: host {name}: airlock_root {root!r} is not absolute")


def check_inventory(source: Path, data: dict[str, Any]) -> FleetInventory:
    """The roles airlock needs, from `ansible-inventory --list` JSON."""
    hostvars: dict[str, dict[str, Any]] = (data.get("_meta") or {}).get("hostvars") or {}
    control = _group_hosts(data, CONTROL_PLANE)
    workers = _group_hosts(data, WORKERS)
    if not control:
        raise UsageError(
            f"inventory {source}: no host in group {CONTROL_PLANE}",
            f"list the control-plane nodes under [{CONTROL_PLANE}] and the rest under [{WORKERS}]",
        )
    both = sorted(set(control) & set(workers))
    if both:
        raise UsageError(
            f"inventory {source}: host {both[0]} is in both {CONTROL_PLANE} and {WORKERS}",
            "a node is a control plane or a worker, not both",
        )

    def host(name: str, role: str) -> FleetHost:
        hv = hostvars.get(name) or {}
        _check_vars(source, name, hv)
        return FleetHost(name, _address(source, name, hv), role, dict(hv))

    cps = tuple(host(n, "control-plane") for n in control)
    ws = tuple(host(n, "worker") for n in workers)
    addresses: dict[str, str] = {}
    for h in cps + ws:
        if h.address in addresses:
            raise UsageError(
                f"inventory {source}: hosts {addresses[h.address]} and {h.name} share the "
                f"address {h.address}",
                "give each host its own ansible_host",
            )
        addresses[h.address] = h.name
    return FleetInventory(source, cps, ws, _endpoint(source, cps, cps + ws))


def _endpoint(
    source: Path, control_planes: tuple[FleetHost, ...], hosts: tuple[FleetHost, ...]
) -> str | None:
    """The one control-plane endpoint (kubeadm joins a second control plane only through one)."""
    given = {h.name: str(h.vars[ENDPOINT_VAR]) for h in hosts if h.vars.get(ENDPOINT_VAR)}
    values = sorted(set(given.values()))
    if len(values) > 1:
        names = ", ".join(f"{n}: {v}" for n, v in sorted(given.items()))
        raise UsageError(
            f"inventory {source}: {ENDPOINT_VAR} differs between hosts ({names})",
            "the cluster has one endpoint: set it once, in all:vars",
        )
    if not values:
        if len(control_planes) > 1:
            raise UsageError(
                f"inventory {source}: {len(control_planes)} control planes and no {ENDPOINT_VAR}",
                "several control planes need one address in front of them all: a load balancer "
                "that forwards HOST:PORT to port 6443 of every control plane; set "
                f"{ENDPOINT_VAR}=HOST:PORT in all:vars",
            )
        return None
    endpoint = values[0]
    m = _ENDPOINT.match(endpoint)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise UsageError(
            f"inventory {source}: {ENDPOINT_VAR} {endpoint!r} is not HOST:PORT",
            "e.g. k8s-api.example:6443, the load balancer in front of the control planes",
        )
    return endpoint
