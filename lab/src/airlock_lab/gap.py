"""`airlock lab up|down|status`: the blog's air-gap topology on one Linux host.

    netns alinet<k> (the simulated upstream, 198.19.128.0/29 ...: see `internet`)
      │ routed by the host
    host (connected side; forwards what arrives on its lab links, to lab addresses only)
      │ veth alh0 198.18.0.1/30  <->  aln0 198.18.0.2/30
      ▼
    netns airlock-gap (node 1; default route: blackhole)
      └ bridge algbr 198.18.1.1/24 ── veth ── netns airlock-node2 198.18.1.2/24 (blackhole)
                                     └─ veth ── netns airlock-node3 198.18.1.3/24 (blackhole)

    netns airlock-ctl (the gap proof's positive control, only while `prove_gap` runs)
      veth alc0 198.18.0.5/30 <-> alcn0 198.18.0.6/30; route 198.18.0.0/15 via the host

The gap could reach the upstream but for its routes: the host forwards for it as it does for
the control. `prove_gap` sends the same HTTP probe from the control (it must answer) and from
the gap (it must fail). Only 198.18.0.0/15 is used. What `up` made is written to a state file
first, so `down` removes it even after a crash, and both are idempotent.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airlock import system
from airlock.atomic import write_atomic
from airlock.errors import UsageError
from airlock_lab.netns import (
    LAB_NETWORK,
    add_blackhole_default,
    add_route,
    create_netns,
    create_veth,
    delete_link,
    delete_netns,
    enable_forwarding,
    netns_exists,
    veth_addresses,
)

__all__ = [
    "CONTROL_NETNS",
    "GAP_NETNS",
    "GapProof",
    "LabState",
    "lab_down",
    "lab_status",
    "lab_up",
    "node_netns",
    "prove_gap",
]

GAP_NETNS = "airlock-gap"
STATE_FILE = Path("/run/airlock/lab.json")
BRIDGE = "algbr"
BRIDGE_NET = "198.18.1"
_HOST_IF, _NS_IF = "alh0", "aln0"
CONTROL_NETNS = "airlock-ctl"
_CONTROL_HOST_IF, _CONTROL_NS_IF = "alc0", "alcn0"


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
    enable_forwarding(_HOST_IF)  # the host would route for the gap: only its routes stop it
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
    known = {GAP_NETNS, CONTROL_NETNS, *(node_netns(n) for n in range(2, 10)), *state.namespaces}
    # host links first: deleting a namespace takes its veth pair down with it later, in the
    # kernel's own time, so a link looked for after its namespace was gone sometimes not
    removed = [
        link
        for link in sorted({_HOST_IF, _CONTROL_HOST_IF, *state.host_links})
        if delete_link(link)
    ]
    removed += [ns for ns in sorted(known) if delete_netns(ns)]
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


_HTTP_PROBE = textwrap.dedent(
    """
    import sys, urllib.error, urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    out = []
    for url in sys.argv[1:]:
        try:
            with opener.open(url, timeout=3) as resp:
                out.append(str(resp.status))
        except urllib.error.HTTPError as e:
            out.append(str(e.code))
        except OSError as e:
            reason = getattr(e, "reason", e)
            out.append("unreachable:" + str(getattr(reason, "strerror", None) or reason))
    print(",".join(out))
    """
)


def http_probe(netns: str, urls: list[str]) -> dict[str, str]:
    """One HTTP GET per URL from inside `netns`: the status code, or `unreachable:why`."""
    result = system.run(["python3", "-c", _HTTP_PROBE, *urls], netns=netns, timeout=60)
    return dict(zip(urls, result.stdout.strip().split(","), strict=True))


@dataclass
class GapProof:
    """The same probe from the control and from the gap, and whether each did as it must."""

    control_ip: str
    gap_ip: str
    control: dict[str, str]  # url -> answer
    gap: dict[str, str]

    @property
    def control_reached(self) -> bool:
        return all(answer.isdigit() for answer in self.control.values())

    @property
    def gap_blocked(self) -> bool:
        return all(answer.startswith("unreachable") for answer in self.gap.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "controlIp": self.control_ip,
            "gapIp": self.gap_ip,
            "control": self.control,
            "gap": self.gap,
            "controlReached": self.control_reached,
            "gapBlocked": self.gap_blocked,
        }


def prove_gap(urls: list[str], *, state_file: Path = STATE_FILE) -> GapProof:
    """Probe `urls` (the upstream's) from a control namespace that routes the lab range to the
    host, and from the gap. The control must get HTTP answers, the gap must not."""
    state = _load(state_file)
    if state is None or not netns_exists(GAP_NETNS):
        raise UsageError("the lab is not up", "run `airlock lab up` first")
    host_a, ns_a = veth_addresses(1)
    create_netns(CONTROL_NETNS)
    try:
        create_veth(
            CONTROL_NETNS,
            host_if=_CONTROL_HOST_IF,
            ns_if=_CONTROL_NS_IF,
            host_address=host_a,
            ns_address=ns_a,
        )
        add_route(CONTROL_NETNS, str(LAB_NETWORK), str(host_a.ip))
        enable_forwarding(_CONTROL_HOST_IF)
        control = http_probe(CONTROL_NETNS, urls)
        gap = http_probe(GAP_NETNS, urls)
    finally:
        delete_netns(CONTROL_NETNS)
        delete_link(_CONTROL_HOST_IF)
    return GapProof(str(ns_a.ip), state.gap_ip, control, gap)


def lab_status(
    *, state_file: Path = STATE_FILE, upstream: list[str] | None = None
) -> dict[str, Any]:
    """Prove the gap: the host veth answers (refused = reachable, nothing listening) while an
    outside address and the upstream's `host:port` targets are not reachable from inside."""
    state = _load(state_file)
    if state is None or not netns_exists(GAP_NETNS):
        return {"up": False}
    outside = "198.19.255.254:443"  # in the lab range, routed nowhere: the blackhole answers
    targets = [f"{state.host_ip}:9", outside, *(upstream or [])]
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
