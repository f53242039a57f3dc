"""`airlock lab up|down|status`: the blog's air-gap topology on one Linux host.

    host (connected side: the simulated upstream on 127.0.0.1)
      │ veth alh0 198.18.0.1/30  <->  aln0 198.18.0.2/30
      ▼
    netns airlock-gap (node 1; default route: blackhole)
      └ bridge algbr 198.18.1.1/24 ── veth ── netns airlock-node2 198.18.1.2/24 (blackhole)
                                     └─ veth ── netns airlock-node3 198.18.1.3/24 (blackhole)

Only 198.18.0.0/15 is used. What `up` made is written to a state file first, so `down`
removes it even after a crash, and both are idempotent.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airlock import system
from airlock.atomic import write_atomic
from airlock_lab.netns import (
    add_blackhole_default,
    create_netns,
    create_veth,
    delete_link,
    delete_netns,
    netns_exists,
    veth_addresses,
)

__all__ = [
    "GAP_NETNS",
    "LabState",
    "lab_down",
    "lab_status",
    "lab_up",
    "node_netns",
]

GAP_NETNS = "airlock-gap"
STATE_FILE = Path("/run/airlock/lab.json")
BRIDGE = "algbr"
BRIDGE_NET = "198.18.1"
_HOST_IF, _NS_IF = "alh0", "aln0"


def node_netns(n: int) -> str:
    return GAP_NETNS if n == 1 else f"airlock-node{n}"


@dataclass
class LabState:
    nodes: int = 1
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)
    host_ip: str = ""
    gap_ip: str = ""
    node_ips: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _save(state: LabState, path: Path) -> None:
    write_atomic(path, json.dumps(state.to_json(), indent=2, sort_keys=True).encode())


def _load(path: Path) -> LabState | None:
    try:
        return LabState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def lab_up(*, nodes: int = 1, state_file: Path = STATE_FILE) -> LabState:
    """Create the gap (and node2..N on a bridge inside it); a second `up` changes nothing."""
    host_a, ns_a = veth_addresses(0)
    names = [node_netns(n) for n in range(1, nodes + 1)]
    state = LabState(
        nodes=nodes,
        namespaces=names,
        host_links=[_HOST_IF],
        host_ip=str(host_a.ip),
        gap_ip=str(ns_a.ip),
        node_ips={node_netns(n): f"{BRIDGE_NET}.{n}" for n in range(1, nodes + 1)}
        if nodes > 1
        else {},
    )
    previous = _load(state_file)
    if previous:  # keep what an earlier `up` made on record until `down`
        state.namespaces = sorted(set(state.namespaces) | set(previous.namespaces))
    _save(state, state_file)
    create_netns(GAP_NETNS)
    create_veth(GAP_NETNS, host_if=_HOST_IF, ns_if=_NS_IF, host_address=host_a, ns_address=ns_a)
    add_blackhole_default(GAP_NETNS)
    if nodes > 1:
        _bridge_up(nodes)
    return state


def _bridge_up(nodes: int) -> None:
    gap = GAP_NETNS
    if system.run(["ip", "-n", gap, "link", "show", BRIDGE], check=False).returncode != 0:
        system.run(["ip", "-n", gap, "link", "add", BRIDGE, "type", "bridge"])
    system.run(["ip", "-n", gap, "addr", "replace", f"{BRIDGE_NET}.1/24", "dev", BRIDGE])
    system.run(["ip", "-n", gap, "link", "set", BRIDGE, "up"])
    for n in range(2, nodes + 1):
        ns = node_netns(n)
        create_netns(ns)
        inner, outer = f"aln{n}", f"alb{n}"
        if system.run(["ip", "-n", gap, "link", "show", outer], check=False).returncode != 0:
            system.run(
                [
                    "ip",
                    "-n",
                    gap,
                    "link",
                    "add",
                    outer,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    inner,
                    "netns",
                    ns,
                ]
            )
        system.run(["ip", "-n", gap, "link", "set", outer, "master", BRIDGE, "up"])
        system.run(["ip", "-n", ns, "addr", "replace", f"{BRIDGE_NET}.{n}/24", "dev", inner])
        system.run(["ip", "-n", ns, "link", "set", inner, "up"])
        add_blackhole_default(ns)


def lab_down(*, state_file: Path = STATE_FILE) -> list[str]:
    """Remove everything `up` made (from the state file, and by name after a crash)."""
    state = _load(state_file) or LabState()
    known = {GAP_NETNS, *(node_netns(n) for n in range(2, 10)), *state.namespaces}
    removed = [ns for ns in sorted(known) if delete_netns(ns)]
    for link in {_HOST_IF, *state.host_links}:
        if delete_link(link):
            removed.append(link)
    state_file.unlink(missing_ok=True)
    return removed


_PROBE = textwrap.dedent(
    """
    import socket, sys
    out = []
    for spec in sys.argv[1:]:
        host, port = spec.rsplit(":", 1)
        s = socket.socket(); s.settimeout(2)
        try:
            s.connect((host, int(port))); out.append("open")
        except ConnectionRefusedError:
            out.append("refused")
        except OSError as e:
            out.append("unreachable:" + (e.strerror or type(e).__name__))
        finally:
            s.close()
    print(",".join(out))
    """
)


def probe(netns: str, targets: list[str]) -> list[str]:
    """TCP connect from inside `netns` to each `host:port`: open, refused or unreachable."""
    result = system.run(["python3", "-c", _PROBE, *targets], netns=netns, timeout=30)
    return result.stdout.strip().split(",")


def lab_status(
    *, state_file: Path = STATE_FILE, upstream_ports: list[int] | None = None
) -> dict[str, Any]:
    """Prove the gap: the host veth answers (refused = reachable, nothing listening) while an
    outside address and the upstream's loopback ports are not reachable from inside."""
    state = _load(state_file)
    if state is None or not netns_exists(GAP_NETNS):
        return {"up": False}
    outside = "198.19.255.254:443"  # in the lab range, routed nowhere: the blackhole answers
    targets = [f"{state.host_ip}:9", outside, *(f"127.0.0.1:{p}" for p in upstream_ports or [])]
    answers = probe(GAP_NETNS, targets)
    checks = dict(zip(targets, answers, strict=True))
    host_ok = answers[0] in ("open", "refused")
    gap_ok = all(a != "open" for a in answers[1:])
    return {
        "up": True,
        "state": state.to_json(),
        "probes": checks,
        "hostReachable": host_ok,
        "gapHolds": gap_ok,
    }
