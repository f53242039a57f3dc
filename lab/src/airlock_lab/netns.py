"""Network namespaces and veth pairs for the lab's air-gap topology (test hosts on one Linux).

Every address comes from 198.18.0.0/15 (the benchmarking range, never routed on the internet)
and is checked before use. The gap namespace's default route is a blackhole, the blog post's
trick, so anything not on a directly connected /30 fails at once and no packet leaves.

Commands run through `airlock.system.run` with `ip -n NAME ...`. To run a program inside a
namespace use `system.run(..., netns=NAME)` / `system.spawn(..., netns=NAME)`, which wrap it in
`nsenter --net=/run/netns/NAME --`: `ip netns exec` would remount /sys and runc then finds no
cgroup mount.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from airlock import system
from airlock.errors import SystemCommandError, UsageError

__all__ = [
    "LAB_NETWORK",
    "NETNS_DIR",
    "NetnsLab",
    "VethPair",
    "add_address",
    "add_blackhole_default",
    "add_route",
    "bound_socket",
    "check_lab_address",
    "create_netns",
    "create_veth",
    "delete_link",
    "delete_netns",
    "disable_forwarding",
    "enable_forwarding",
    "link_exists",
    "netns_exists",
    "netns_pids",
    "veth_addresses",
]

LAB_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
NETNS_DIR = Path("/run/netns")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")  # IFNAMSIZ is 16 with the NUL


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid {what} name {name!r}",
            "1-15 characters: letters, digits, '_', '.', '-'",
        )


def check_lab_address(address: str | ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
    """`address` as an interface (`198.18.0.1/30`), refused unless it lies in 198.18.0.0/15."""
    try:
        iface = ipaddress.IPv4Interface(address)
    except ValueError as exc:
        raise UsageError(f"invalid lab address {address!r}", "e.g. 198.18.0.1/30") from exc
    if iface.network.prefixlen < LAB_NETWORK.prefixlen or iface.ip not in LAB_NETWORK:
        raise UsageError(
            f"lab address {address} is outside {LAB_NETWORK}",
            "lab networks use only 198.18.0.0/15, which nothing on the internet uses",
        )
    return iface


def veth_addresses(index: int) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """The /30 number `index` of the lab range: (host side .1, namespace side .2)."""
    if not 0 <= index < LAB_NETWORK.num_addresses // 4:
        raise UsageError(f"lab link index {index} is out of range")
    base = int(LAB_NETWORK.network_address) + 4 * index
    return (
        ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 1)}/30"),
        ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 2)}/30"),
    )


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def link_exists(name: str, *, netns: str | None = None) -> bool:
    argv = ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name]
    return system.run(argv, check=False, timeout=30).returncode == 0


def create_netns(name: str) -> bool:
    """Create the namespace (loopback up); returns False when it already existed."""
    _check_name(name, "namespace")
    created = False
    if not netns_exists(name):
        system.run(["ip", "netns", "add", name], timeout=30)
        created = True
    # Daemons inside (containerd's CRI stream server, a registry) listen on loopback.
    system.run(["ip", "-n", name, "link", "set", "lo", "up"], timeout=30)
    return created


def delete_netns(name: str) -> bool:
    """Delete the namespace (its veth ends go with it); returns False when it did not exist."""
    _check_name(name, "namespace")
    if not netns_exists(name):
        return False
    system.run(["ip", "netns", "delete", name], timeout=30)
    return True


def delete_link(name: str) -> bool:
    """Delete a host-side link (a veth's peer goes with it, and its forwarding rules);
    False when it did not exist."""
    _check_name(name, "interface")
    disable_forwarding(name)
    if not link_exists(name):
        return False
    result = system.run(["ip", "link", "delete", "dev", name], check=False, timeout=30)
    # The kernel removes a veth whose peer's namespace was just deleted on its own, so the
    # link may vanish between the check and the delete; only a link that stays is an error.
    if result.returncode != 0 and link_exists(name):
        raise SystemCommandError(f"cannot delete link {name}: {result.stderr.strip()}")
    return True


@dataclass(frozen=True)
class VethPair:
    """A veth pair between the host and a namespace, with its /30 addresses."""

    netns: str
    host_if: str
    ns_if: str
    host_address: ipaddress.IPv4Interface
    ns_address: ipaddress.IPv4Interface

    @property
    def host_ip(self) -> str:
        return str(self.host_address.ip)

    @property
    def ns_ip(self) -> str:
        return str(self.ns_address.ip)


def create_veth(
    netns: str,
    *,
    host_if: str,
    ns_if: str,
    host_address: str | ipaddress.IPv4Interface,
    ns_address: str | ipaddress.IPv4Interface,
) -> VethPair:
    """Link the host to `netns` with a veth pair, addressed and up (idempotent)."""
    _check_name(host_if, "interface")
    _check_name(ns_if, "interface")
    host_a = check_lab_address(host_address)
    ns_a = check_lab_address(ns_address)
    if host_a.network != ns_a.network or host_a.ip == ns_a.ip:
        raise UsageError(f"{host_a} and {ns_a} must be two addresses of one subnet")
    if not netns_exists(netns):
        raise UsageError(f"network namespace {netns} does not exist", "create it first")
    if not link_exists(host_if):
        system.run(
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", netns],
            timeout=30,
        )
    # `replace` makes a rerun a no-op instead of "File exists".
    system.run(["ip", "addr", "replace", str(host_a), "dev", host_if], timeout=30)
    system.run(["ip", "link", "set", host_if, "up"], timeout=30)
    system.run(["ip", "-n", netns, "addr", "replace", str(ns_a), "dev", ns_if], timeout=30)
    system.run(["ip", "-n", netns, "link", "set", ns_if, "up"], timeout=30)
    return VethPair(netns, host_if, ns_if, host_a, ns_a)


def add_blackhole_default(netns: str) -> None:
    """Make the namespace's default route a blackhole: only connected subnets are reachable."""
    system.run(["ip", "-n", netns, "route", "replace", "blackhole", "default"], timeout=30)


def add_address(netns: str, link: str, address: str | ipaddress.IPv4Interface) -> None:
    """One more lab address on a namespace's link (idempotent)."""
    iface = check_lab_address(address)
    system.run(["ip", "-n", netns, "addr", "replace", str(iface), "dev", link], timeout=30)


def add_route(netns: str, network: str, gateway: str) -> None:
    """A route to a lab network (never a default route) through a lab gateway."""
    net = ipaddress.IPv4Network(network)
    if not net.subnet_of(LAB_NETWORK):
        raise UsageError(f"lab route {network} is outside {LAB_NETWORK}")
    check_lab_address(f"{gateway}/32")
    system.run(["ip", "-n", netns, "route", "replace", str(net), "via", gateway], timeout=30)


_GUARD_PREFS = ("900", "901")


def enable_forwarding(link: str) -> None:
    """Forward IPv4 packets that arrive on this host-side lab link, to lab addresses only.

    The setting is the link's own and goes with it (the host's global ip_forward is not
    touched); two policy rules keyed on the link send what it brings to 198.18.0.0/15 through
    the main table and blackhole everything else, so even a namespace whose routes sent the
    internet to the host would get no packet off the machine. `disable_forwarding` (or
    `delete_link`) removes the rules."""
    _check_name(link, "interface")
    disable_forwarding(link)
    to_lab, rest = _GUARD_PREFS
    system.run(
        [
            "ip",
            "rule",
            "add",
            "pref",
            to_lab,
            "iif",
            link,
            "to",
            str(LAB_NETWORK),
            "lookup",
            "main",
        ],
        timeout=30,
    )
    system.run(["ip", "rule", "add", "pref", rest, "iif", link, "blackhole"], timeout=30)
    system.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{link}.forwarding=1"], timeout=30)


def disable_forwarding(link: str) -> None:
    """Remove `enable_forwarding`'s policy rules for `link` (the link's own setting goes with
    the link)."""
    _check_name(link, "interface")
    to_lab, rest = _GUARD_PREFS
    for argv in (
        ["pref", to_lab, "iif", link, "to", str(LAB_NETWORK)],
        ["pref", rest, "iif", link],
    ):
        system.run(["ip", "rule", "del", *argv], check=False, timeout=30)


def netns_pids(name: str) -> list[int]:
    """The processes whose network namespace is `name` (to stop a crashed run's leftovers)."""
    _check_name(name, "namespace")
    if not netns_exists(name):
        return []
    out = system.run(["ip", "netns", "pids", name], check=False, timeout=30).stdout
    return [int(p) for p in out.split() if p.isdigit()]


_CLONE_NEWNET = 0x40000000


def bound_socket(netns: str, address: str, port: int) -> socket.socket:
    """A TCP socket bound to `address:port` inside `netns`, for a server of this process.

    A short-lived thread enters the namespace (setns acts on the calling thread only), binds
    the socket and leaves; the socket keeps its namespace, the rest of the process never
    changes namespace.
    """
    _check_name(netns, "namespace")
    check_lab_address(f"{address}/32")
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def bind() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(str(NETNS_DIR / netns), os.O_RDONLY)
            try:
                if libc.setns(target, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((address, port))
                    result.append(sock)
                finally:
                    if libc.setns(own, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns back")
            finally:
                os.close(target)
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
        finally:
            os.close(own)

    thread = threading.Thread(target=bind, name=f"bind-in-{netns}")
    thread.start()
    thread.join()
    if failure or not result:
        raise SystemCommandError(
            f"cannot listen on {address}:{port} in network namespace {netns}: "
            f"{failure[0] if failure else 'no socket'}"
        )
    return result[0]


class NetnsLab:
    """A namespace linked to the host by one veth pair; removed on exit (a test fixture).

    With `gap=True` (the default) its default route is a blackhole, like an air-gapped node
    that sees only the host over the veth. Names must be unique among concurrent labs, and so
    must `index` (it picks the /30 in 198.18.0.0/15).
    """

    def __init__(self, name: str, *, index: int = 0, gap: bool = True) -> None:
        _check_name(name, "namespace")
        self.name = name
        self.index = index
        self.gap = gap
        # Interface names carry the index, so two labs never collide on the host side.
        self.host_if = f"alh{index}"
        self.ns_if = f"aln{index}"
        self._veth: VethPair | None = None

    @property
    def veth(self) -> VethPair:
        if self._veth is None:
            raise UsageError(f"lab {self.name} is not up")
        return self._veth

    def up(self) -> VethPair:
        host_a, ns_a = veth_addresses(self.index)
        create_netns(self.name)
        try:
            self._veth = create_veth(
                self.name,
                host_if=self.host_if,
                ns_if=self.ns_if,
                host_address=host_a,
                ns_address=ns_a,
            )
            if self.gap:
                add_blackhole_default(self.name)
        except BaseException:
            self.down()
            raise
        return self._veth

    def down(self) -> None:
        delete_netns(self.name)
        delete_link(self.host_if)
        self._veth = None

    def __enter__(self) -> NetnsLab:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()
