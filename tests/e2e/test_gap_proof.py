"""The gap proof can fail: the upstream lives in a namespace of its own that the host routes to;
a control namespace that routes the lab range to the host gets answers, the gap (blackhole
default route) does not, and the upstream counts requests by source: none from the gap."""

from __future__ import annotations

from airlock import system
from airlock_lab.gap import CONTROL_NETNS, LabState, prove_gap
from airlock_lab.netns import link_exists, netns_exists
from airlock_lab.upstream import Upstream


def _urls(upstream: Upstream) -> list[str]:
    return [f"{upstream.files_url}dl.k8s.io/release/stable-1.27.txt"] + [
        f"{url}/v2/" for _, url in sorted(upstream.registries.items())
    ]


def test_control_reaches_the_upstream_and_the_gap_does_not(
    upstream: Upstream, gap: LabState
) -> None:
    assert not any(a.startswith("127.") for a in upstream.addresses)
    before = upstream.requests_by_source()
    proof = prove_gap(_urls(upstream))
    after = upstream.requests_by_source()
    assert proof.control == {url: "200" for url in _urls(upstream)}, proof
    assert proof.control_reached and proof.gap_blocked, proof
    assert all(a.startswith("unreachable:") for a in proof.gap.values()), proof
    # Counted by source: one request per URL from the control, none from the gap's address.
    assert after.get(proof.control_ip, 0) - before.get(proof.control_ip, 0) == len(_urls(upstream))
    assert after.get(gap.gap_ip, 0) == 0
    assert not netns_exists(CONTROL_NETNS) and not link_exists("alc0")  # the control is gone
    # The host forwards what the gap's link brings only to lab addresses; the rest is dropped.
    rules = system.run(["ip", "rule", "show", "iif", "alh0"]).stdout
    assert "to 198.18.0.0/15 iif alh0 lookup main" in rules and "blackhole" in rules
    assert "alc0" not in system.run(["ip", "rule", "show"]).stdout


def test_the_proof_fails_when_the_gap_routes_to_the_host(upstream: Upstream, gap: LabState) -> None:
    """Drop the blackhole and route the lab range to the host: the same probe then reaches the
    upstream from the gap, and the counter sees the gap's address (the check can fail)."""
    system.run(["ip", "-n", "airlock-gap", "route", "replace", "198.18.0.0/15", "via", gap.host_ip])
    proof = prove_gap(_urls(upstream))
    assert proof.control_reached and not proof.gap_blocked, proof
    assert upstream.requests_by_source().get(gap.gap_ip, 0) == len(_urls(upstream))
