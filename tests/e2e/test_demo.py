"""The demo's whole journey, with assertions at each stage (what `make demo` shows)."""

from __future__ import annotations

import os
from pathlib import Path

from airlock_lab.demo import run_demo
from airlock_lab.gap import GAP_NETNS
from airlock_lab.netns import netns_exists

CACHE = Path(os.environ.get("AIRLOCK_TEST_CACHE", "/tmp/airlock-test-cache"))


def test_demo_journey(tmp_path: Path) -> None:
    summary = run_demo(tmp_path / "demo", cache=CACHE)
    assert len(summary.images) == 11
    assert summary.images_pulled == summary.images  # every image, by its original name
    assert summary.podinfo_answer["version"] == "6.4.0"
    assert summary.bundle_volumes >= 3  # --split 32M of a ~90 MiB bundle (files zstd-compressed)
    assert summary.blog_method_bytes > 0
    # the gap held: the blackhole answers for the outside, the host veth is reachable
    probes = list(summary.gap_probes.values())
    assert probes[0] == "refused"
    assert probes[1].startswith("unreachable")
    assert all(p != "open" for p in probes[1:])
    assert summary.upstream_requests_from_gap == 0
    assert not netns_exists(GAP_NETNS)  # everything torn down
    assert sum(summary.stages.values()) < 600
