"""`airlock node prepare`: the blog's node preparation as resources, aware of the OS family.

Kernel modules (overlay, br_netfilter), the bridge/forwarding sysctls, swap off, the control
plane's ports opened in the firewall the family uses (firewalld on rpm, ufw on deb), SELinux
permissive only when asked, and report-only checks (iptables backend, resolv.conf).

Firewall rules are written the way the tools store them (a firewalld zone file, ufw's
user.rules), which is what `firewall-offline-cmd` and `ufw allow` do; a live reload follows.
So the same plan works on a running node and in a sysroot, and a second run changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from airlock import system
from airlock.errors import NodeError, UsageError
from airlock.node.engine import Context, Resource
from airlock.node.osinfo import OsInfo
from airlock.node.resources import (
    File,
    KernelModule,
    ManagedFile,
    Probe,
    ServiceDisabled,
    Swap,
    Sysctl,
)

__all__ = [
    "DEFAULT_PORTS",
    "MODULES",
    "MODULES_FILE",
    "SYSCTLS",
    "SYSCTL_FILE",
    "PrepareOptions",
    "firewalld_add_ports",
    "parse_port",
    "prepare_resources",
    "ufw_add_ports",
]

SYSCTL_FILE = "/etc/sysctl.d/99-k8s-cri.conf"
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}
MODULES_FILE = "/etc/modules-load.d/k8s.conf"
MODULES = ("overlay", "br_netfilter")
# API server, etcd, kubelet, controller-manager, scheduler, the local registry, flannel VXLAN.
DEFAULT_PORTS = (
    "6443/tcp",
    "2379-2380/tcp",
    "10250/tcp",
    "10257/tcp",
    "10259/tcp",
    "5000/tcp",
    "8472/udp",
)

FirewallMode = Literal["open", "disable", "skip"]


@dataclass(frozen=True)
class PrepareOptions:
    """`firewall`: open the ports (default), disable the firewall (only when asked), or leave
    it alone; `selinux_permissive` only when asked (the plan warns)."""

    firewall: FirewallMode = "open"
    ports: tuple[str, ...] = DEFAULT_PORTS
    selinux_permissive: bool = False
    swap_off: bool = True


def parse_port(spec: str) -> tuple[int, int, str]:
    """`6443/tcp`, `2379-2380/tcp`, `8472/udp` -> (first, last, protocol)."""
    m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?/(tcp|udp)", spec.strip())
    if not m:
        raise UsageError(f"invalid port {spec!r}", "use PORT/tcp, FIRST-LAST/tcp or PORT/udp")
    first = int(m.group(1))
    last = int(m.group(2) or first)
    if not 0 < first <= last <= 65535:
        raise UsageError(f"invalid port range {spec!r}")
    return first, last, m.group(3)


# --- firewalld ---------------------------------------------------------------------------


def _port_text(first: int, last: int, sep: str) -> str:
    return str(first) if first == last else f"{first}{sep}{last}"


def firewalld_add_ports(zone_xml: str, ports: Sequence[str]) -> str:
    """A firewalld zone file with every port present (existing text kept as it is)."""
    try:
        zone = ET.fromstring(zone_xml)
    except ET.ParseError as exc:
        raise NodeError(f"the firewalld zone file is not valid XML: {exc}") from exc
    have = {(p.get("port"), p.get("protocol")) for p in zone.findall("port")}
    missing = []
    for spec in ports:
        first, last, proto = parse_port(spec)
        port = _port_text(first, last, "-")
        if (port, proto) not in have:
            missing.append(f'  <port protocol="{proto}" port="{port}"/>\n')
            have.add((port, proto))
    if not missing:
        return zone_xml
    end = zone_xml.rfind("</zone>")
    if end < 0:  # a self-closing <zone/>: rewrite it whole
        ET.indent(zone)
        for line in missing:
            ET.SubElement(zone, "port", dict(re.findall(r'(\w+)="([^"]*)"', line)))
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(zone, "unicode") + "\n"
    return zone_xml[:end] + "".join(missing) + zone_xml[end:]


def _firewalld_zone(root: Path) -> str:
    conf = system.host_path("/etc/firewalld/firewalld.conf", root)
    if conf.is_file():
        for line in conf.read_text(errors="replace").splitlines():
            if line.startswith("DefaultZone="):
                return line.split("=", 1)[1].strip() or "public"
    return "public"


def _firewalld_resources(root: Path, options: PrepareOptions) -> list[Resource]:
    installed = any(
        system.host_path(p, root).exists() for p in ("/usr/lib/firewalld", "/etc/firewalld")
    )
    if not installed:
        return [_note("firewall", "firewalld is not installed: no ports opened")]
    if options.firewall == "disable":
        return [ServiceDisabled("firewalld.service")]
    zone = _firewalld_zone(root)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", zone):
        raise NodeError(f"firewalld default zone {zone!r} is not a plain name")
    etc = f"/etc/firewalld/zones/{zone}.xml"
    usr = system.host_path(f"/usr/lib/firewalld/zones/{zone}.xml", root)
    base = (
        usr.read_text()
        if usr.is_file()
        else '<?xml version="1.0" encoding="utf-8"?>\n<zone>\n</zone>\n'
    )
    ports = options.ports

    def edit(text: str) -> str:
        return firewalld_add_ports(text or base, ports)

    return [
        ManagedFile(
            File(etc, transform=edit, mode=None),
            then=[["firewall-cmd", "--reload"]],
            kind="firewalld",
        )
    ]


# --- ufw ---------------------------------------------------------------------------------

_UFW_RULES = (("/etc/ufw/user.rules", "0.0.0.0/0", "ufw"), ("/etc/ufw/user6.rules", "::/0", "ufw6"))


def ufw_add_ports(rules: str, ports: Sequence[str], *, any_addr: str, chain: str) -> str:
    """ufw's user rules file with an allow rule per port, in the format `ufw allow` writes."""
    if "### END RULES ###" not in rules:
        raise NodeError("the ufw rules file has no '### END RULES ###' marker", "is it ufw's?")
    added = []
    for spec in ports:
        first, last, proto = parse_port(spec)
        port = _port_text(first, last, ":")
        tuple_line = f"### tuple ### allow {proto} {port} {any_addr} any {any_addr} in"
        if tuple_line in rules:
            continue
        match = "--dport" if first == last else "-m multiport --dports"
        added.append(f"{tuple_line}\n-A {chain}-user-input -p {proto} {match} {port} -j ACCEPT\n\n")
    if not added:
        return rules
    end = rules.index("### END RULES ###")
    return rules[:end] + "".join(added) + rules[end:]


def _ufw_resources(root: Path, options: PrepareOptions) -> list[Resource]:
    conf = system.host_path("/etc/ufw/ufw.conf", root)
    if not conf.exists():
        return [_note("firewall", "ufw is not installed: no ports opened")]
    enabled = re.search(r"^ENABLED=yes\s*$", conf.read_text(errors="replace"), re.M) is not None
    if options.firewall == "disable":

        def disable(text: str) -> str:
            return re.sub(r"^ENABLED=.*$", "ENABLED=no", text, flags=re.M)

        return [
            ManagedFile(
                File("/etc/ufw/ufw.conf", transform=disable, mode=None),
                then=[["ufw", "disable"]],
                kind="ufw",
            )
        ]
    out: list[Resource] = []
    for path, any_addr, chain in _UFW_RULES:
        if not system.host_path(path, root).is_file():
            out.append(_note(f"ufw {path}", f"{path} is missing: ports not opened there"))
            continue

        def edit(
            text: str,
            any_addr: str = any_addr,
            chain: str = chain,
            ports: Sequence[str] = options.ports,
        ) -> str:
            return ufw_add_ports(text, ports, any_addr=any_addr, chain=chain)

        then = [["ufw", "reload"]] if enabled else []
        out.append(ManagedFile(File(path, transform=edit, mode=None), then=then, kind="ufw"))
    return out


# --- SELinux and report-only checks ------------------------------------------------------


def _selinux_resources(root: Path) -> list[Resource]:
    config = "/etc/selinux/config"
    if not system.host_path(config, root).is_file():
        return [_note("selinux", "SELinux permissive was asked, but /etc/selinux/config is absent")]

    def permissive(text: str) -> str:
        return re.sub(r"^SELINUX=(enforcing|disabled)\s*$", "SELINUX=permissive", text, flags=re.M)

    warning = (
        "SELinux is set to permissive as asked: containers run unconfined; prefer "
        "container-selinux policies in production"
    )
    return [
        ManagedFile(
            File(config, transform=permissive, mode=None),
            then=[["setenforce", "0"]],
            kind="selinux",
        ),
        _note("selinux permissive", warning),
    ]


def _note(label: str, message: str) -> Probe:
    return Probe(label, lambda ctx: [message])


def _resolve_in_root(root: Path, node_path: str, *, limit: int = 16) -> str | None:
    """Follow symlinks of an on-node path inside the sysroot; the final on-node path."""
    current = node_path
    for _ in range(limit):
        host = system.host_path(current, root)
        if host.is_symlink():
            target = os.readlink(host)
            current = target if target.startswith("/") else str(Path(current).parent / target)
            continue
        return current if host.exists() else None
    return None


def iptables_backend(ctx: Context) -> list[str]:
    for candidate in ("/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"):
        final = _resolve_in_root(ctx.root, candidate)
        if final is None:
            continue
        name = Path(final).name
        backend = "nft" if "nft" in name else "legacy" if "legacy" in name else f"unknown ({name})"
        return [
            f"iptables backend: {backend} ({candidate} -> {final}); kube-proxy and flannel "
            "detect it, keep every node on the same backend"
        ]
    return [
        "iptables is not installed: kube-proxy and flannel need it (airlock node install"
        " installs it from the bundle when the spec names it in packages)"
    ]


def resolv_conf(ctx: Context) -> list[str]:
    final = _resolve_in_root(ctx.root, "/etc/resolv.conf")
    if final is None:
        return [
            "/etc/resolv.conf is missing: kubelet passes it to pods and fails without it; "
            "create it (an empty file is enough in an air gap)"
        ]
    return []


def default_route_problems(route_json: str) -> list[str]:
    """What `ip -j route show default` says about a node's default route (pure)."""
    try:
        routes = json.loads(route_json or "[]")
    except ValueError:
        return []
    if any(r.get("dev") and r.get("type", "unicast") == "unicast" for r in routes):
        return []
    what = "a blackhole" if any(r.get("type") == "blackhole" for r in routes) else "missing"
    return [
        f"the default route is {what}: Flannel picks its interface from the default route, and a"
        " Service's cluster IP is routed before kube-proxy rewrites it; give the node a default"
        " route through its cluster interface (policy rules can still drop what is not local)"
        " and a route for the service subnet"
    ]


def default_route(ctx: Context) -> list[str]:
    if not ctx.live:
        return []
    result = system.run(["ip", "-j", "route", "show", "default"], check=False, timeout=30)
    return default_route_problems(result.stdout) if result.returncode == 0 else []


def prepare_resources(
    *, root: Path, os_info: OsInfo, options: PrepareOptions | None = None
) -> list[Resource]:
    """The resources that prepare a node for kubeadm, in the order they apply."""
    opts = options or PrepareOptions()
    for spec in opts.ports:
        parse_port(spec)
    resources: list[Resource] = [
        KernelModule(MODULES_FILE, MODULES),
        Sysctl(SYSCTL_FILE, SYSCTLS),
    ]
    if opts.swap_off:
        resources.append(Swap())
    if opts.firewall != "skip":
        if os_info.family == "rpm":
            resources += _firewalld_resources(root, opts)
        else:
            resources += _ufw_resources(root, opts)
    if opts.selinux_permissive:
        resources += _selinux_resources(root)
    resources.append(Probe("iptables backend", iptables_backend))
    resources.append(Probe("resolv.conf", resolv_conf))
    resources.append(Probe("default route", default_route))
    return resources
