"""What the real-cluster tests of make test-full share: one lab node behind one veth."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airlock import system
from airlock_lab.cluster import gap_routes
from airlock_lab.netns import create_netns, delete_netns
from airlock_lab.node import LabNode


@contextmanager
def lone_node(name: str, address: str, *, peer: str, port: str) -> Iterator[LabNode]:
    """A lab node `name` in its own namespace at `address`/24, its veth's other end `port` in
    the namespace `peer`, with the gap's routes; everything removed afterwards."""
    lab = LabNode(name, netns=name, cgroup_root=f"/airlock-{name}")
    lab.down()
    for ns in (name, peer):
        delete_netns(ns)
    try:
        create_netns(name)
        create_netns(peer)
        system.run(
            ["ip", "-n", peer, "link", "add", port, "type", "veth", "peer", "name", "eth0",
             "netns", name],
            timeout=30,
        )  # fmt: skip
        system.run(["ip", "-n", peer, "link", "set", port, "up"], timeout=30)
        system.run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"], timeout=30)
        system.run(["ip", "-n", name, "link", "set", "eth0", "up"], timeout=30)
        gap_routes(name, "eth0")
        yield lab.up()
    finally:
        lab.down()
        for ns in (name, peer):
            delete_netns(ns)
