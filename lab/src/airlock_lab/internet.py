"""The simulated upstream's "internet": a network namespace of its own, routed by the host.

    host (connected side) ── veth alih<k> 198.19.128.<8k+1>/29
      │  (forwards what arrives on its lab links; routes 198.18.0.0/15 only)
      ▼
    netns alinet<k>: the upstream's addresses .2 (files), .3 .4 .5 (one per registry host);
                     its only route beyond the /29: 198.18.0.0/15 via the host

The host reaches the upstream over the connected /29, as a workstation reaches the internet; a
lab namespace whose routes send 198.18.0.0/15 to the host reaches it too (the positive control
of the gap proof, `gap.prove_gap`); the gap namespace, whose default route is a blackhole,
does not. Each started upstream takes its own slot k (tests run several at once), claimed under
a lock with the owner's pid, so a crashed run's namespace is reclaimed by the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock import system
from airlock.errors import UsageError
from airlock_lab.netns import (
    LAB_NETWORK,
    add_address,
    add_route,
    create_netns,
    create_veth,
    delete_link,
    delete_netns,
    enable_forwarding,
    netns_exists,
    netns_pids,
)

__all__ = ["INTERNET_BASE", "INTERNET_RANGE", "SLOTS", "Internet", "internet_down", "internet_up"]

INTERNET_BASE = ipaddress.IPv4Address("198.19.128.0")
SLOTS = 256  # a /29 each: 198.19.128.0 - 198.19.135.255
INTERNET_RANGE = ipaddress.IPv4Network("198.19.128.0/21")
_RUN_DIR = Path("/run/airlock/internet")


@dataclass(frozen=True)
class Internet:
    """One claimed slot: the namespace, the host's link and the upstream's addresses."""

    slot: int
    netns: str
    host_link: str
    host_ip: str
    addresses: dict[str, str]  # name ("files", "registry.k8s.io", ...) -> address


def _slot_addresses(slot: int) -> list[ipaddress.IPv4Address]:
    base = int(INTERNET_BASE) + 8 * slot
    return [ipaddress.IPv4Address(base + i) for i in range(8)]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    _RUN_DIR.mkdir(parents=True, exist_ok=True)
    with (_RUN_DIR / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(slot: int) -> int | None:
    try:
        return int((_RUN_DIR / f"{slot}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _names(slot: int) -> tuple[str, str, str]:
    return f"alinet{slot}", f"alih{slot}", f"alin{slot}"


def _remove(slot: int) -> None:
    netns, host_link, _ = _names(slot)
    for pid in netns_pids(netns):  # a crashed run's registries: only those in our namespace
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    delete_netns(netns)
    delete_link(host_link)
    (_RUN_DIR / f"{slot}.pid").unlink(missing_ok=True)


def _guard(*, on: bool) -> None:
    """A blackhole route for the whole range on the host while any slot is in use: a packet for
    a slot that is gone (a late retry, a probe after `stop`) ends here instead of following the
    host's default route off the machine. Each slot's connected /29 is more specific."""
    if on:
        system.run(["ip", "route", "replace", "blackhole", str(INTERNET_RANGE)], timeout=30)
    else:
        system.run(
            ["ip", "route", "del", "blackhole", str(INTERNET_RANGE)], check=False, timeout=30
        )


def _in_use() -> bool:
    return any((owner := _owner(slot)) is not None and _alive(owner) for slot in range(SLOTS))


def _claim() -> int:
    for slot in range(SLOTS):
        netns = _names(slot)[0]
        owner = _owner(slot)
        if owner is not None and _alive(owner):
            continue
        if owner is not None or netns_exists(netns):
            _remove(slot)  # left by a run that died
        (_RUN_DIR / f"{slot}.pid").write_text(f"{os.getpid()}\n")
        return slot
    raise UsageError(
        f"all {SLOTS} upstream network slots are taken",
        "stop other simulated upstreams (`ip netns` lists alinet* namespaces)",
    )


def internet_up(names: Sequence[str]) -> Internet:
    """Claim a slot and build its namespace: one address per name (at most 5)."""
    if len(names) > 5:
        raise UsageError("the upstream's /29 holds 5 addresses")
    with _locked():
        slot = _claim()
        _guard(on=True)
    netns, host_link, ns_link = _names(slot)
    addrs = _slot_addresses(slot)
    try:
        create_netns(netns)
        veth = create_veth(
            netns,
            host_if=host_link,
            ns_if=ns_link,
            host_address=f"{addrs[1]}/29",
            ns_address=f"{addrs[2]}/29",
        )
        for addr in addrs[3 : 2 + len(names)]:
            add_address(netns, ns_link, f"{addr}/29")
        add_route(netns, str(LAB_NETWORK), veth.host_ip)
        enable_forwarding(host_link)
    except BaseException:
        with _locked():
            _remove(slot)
            if not _in_use():
                _guard(on=False)
        raise
    return Internet(
        slot,
        netns,
        host_link,
        veth.host_ip,
        {name: str(addrs[2 + i]) for i, name in enumerate(names)},
    )


def internet_down(net: Internet) -> None:
    """Remove the namespace (its link goes with it) and free the slot."""
    with _locked():
        if _owner(net.slot) == os.getpid():
            _remove(net.slot)
        if not _in_use():
            _guard(on=False)
