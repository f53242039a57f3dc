"""The demo's whole journey, with assertions at each stage (what `make demo` shows)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airlock_lab.cluster import LAB_NODE_PACKAGES
from airlock_lab.demo import DEMO_CGROUP_ROOT, packages_ok, run_demo
from airlock_lab.gap import GAP_NETNS
from airlock_lab.netns import netns_exists
from airlock_lab.node import CGROUP_FS

CACHE = Path(os.environ.get("AIRLOCK_TEST_CACHE", "/tmp/airlock-test-cache"))


KERNEL_KEYS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "vm.panic_on_oom")


def _kernel() -> dict[str, str]:
    return {k: Path("/proc/sys", k.replace(".", "/")).read_text().strip() for k in KERNEL_KEYS}


@pytest.mark.timeout(1800)  # its own bound below; the cluster takes most of it
def test_demo_journey(tmp_path: Path) -> None:
    kernel_before = _kernel()
    host_packages = Path("/var/lib/dpkg/status").read_bytes()
    summary = run_demo(tmp_path / "demo", cache=CACHE)
    assert len(summary.images) == 11
    assert summary.images_pulled == summary.images  # every image, by its original name
    assert summary.podinfo_answer["version"] == "6.4.0"  # through its Service, in the cluster
    assert summary.bundle_volumes >= 3  # --split 32M of a ~90 MiB bundle (files zstd-compressed)
    assert summary.blog_method_bytes > 0
    # the gap held: the blackhole answers for the outside, the host veth is reachable
    probes = list(summary.gap_probes.values())
    assert probes[0] == "refused"
    assert probes[1].startswith("unreachable")
    assert all(p != "open" for p in probes[1:])
    assert summary.upstream_requests_from_gap == 0
    # ... and that can fail: the same GETs reached the upstream from the control namespace
    assert summary.gap_proof["controlReached"] and summary.gap_proof["gapBlocked"]
    assert summary.upstream_requests_from_control >= 4
    assert not netns_exists(GAP_NETNS)  # everything torn down
    # a real cluster ran: the node was Ready, every container ran the bundle's digest
    assert all(c["Ready"] == "True" for c in summary.node_conditions.values())
    assert summary.node_conditions
    assert summary.digests_match
    assert any("/coredns-" in c for c in summary.pod_images)
    assert any("/kube-flannel-" in c for c in summary.pod_images)
    # the node's OS packages: dpkg installed the bundle's (removed from the node first, in its
    # overlays only), at the bundle's versions, every file as the .deb has it; node check ok
    assert packages_ok(summary), (summary.os_packages, summary.node_check)
    carried = {p["name"] for p in summary.os_packages}
    assert set(LAB_NODE_PACKAGES) < carried  # and their libraries: the closure
    assert Path("/var/lib/dpkg/status").read_bytes() == host_packages
    # and left nothing behind: no mount, cgroup or kubelet setting of the node
    assert not [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if "airlock-node1" in line
    ]
    assert not list(CGROUP_FS.glob(f"*{DEMO_CGROUP_ROOT}"))
    assert _kernel() == kernel_before
    # bounded: the cluster takes most of it on 2 shared cores
    assert sum(summary.stages.values()) < 1800
