"""The lab nodes' spec: the `node:` settings and the node's OS packages, whose repositories are
this machine's apt sources (read when the spec is written); and the demo's verdict on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airlock.spec import load_spec
from airlock_lab.cluster import LAB_NODE_PACKAGES, add_node_settings
from airlock_lab.debroot import debian_repositories
from airlock_lab.demo import DemoSummary, packages_ok

AIRLOCK = Path(sys.executable).with_name("airlock")


def test_the_spec_carries_the_nodes_packages_from_this_machines_repositories(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "airlock.yaml"
    subprocess.run([AIRLOCK, "init", "-o", str(spec)], check=True, capture_output=True)
    add_node_settings(spec)
    loaded = load_spec(spec)  # a valid spec
    machine = debian_repositories()
    assert loaded.packages is not None
    assert loaded.packages.os == machine.os
    assert loaded.packages.names == list(LAB_NODE_PACKAGES)
    assert loaded.packages.repositories == list(machine.repositories)
    assert loaded.packages.keys == list(machine.keys) and loaded.packages.keys
    assert loaded.packages.installed == "minimal"
    assert loaded.node.cgroup_driver == "cgroupfs"
    add_node_settings(spec, packages=False)
    assert load_spec(spec).packages == loaded.packages  # left as it was


def _summary(**over: object) -> DemoSummary:
    s = DemoSummary()
    s.os_packages = [
        {"name": n, "bundle": "1.0-1", "installed": "1:1.0-1", "fromBundle": True, "before": None}
        for n in LAB_NODE_PACKAGES
    ] + [
        {"name": "libssl3", "bundle": "3.0", "installed": "3.0", "fromBundle": False,
         "before": "3.0"}
    ]  # fmt: skip
    s.os_packages_verified = True
    s.node_check = {"binaries": "ok", "packages": "ok", "hostname": "warn"}
    for k, v in over.items():
        setattr(s, k, v)
    return s


def test_the_demo_needs_the_packages_installed_from_the_bundle() -> None:
    assert packages_ok(_summary())  # an epoch in dpkg's version, none in the file name
    kept = _summary()
    kept.os_packages[0].update(fromBundle=False, before="1:1.0-1")  # the node kept the host's
    assert not packages_ok(kept)
    upgraded = _summary()
    upgraded.os_packages[0]["before"] = "1:0.9-1"  # installed from the bundle, over the host's
    assert not packages_ok(upgraded)
    other = _summary()
    other.os_packages[1]["installed"] = "0.9-1"
    assert not packages_ok(other)
    library = _summary()
    library.os_packages[-1]["installed"] = "2.9"  # a library the node kept, not the bundle's
    assert not packages_ok(library)
    assert not packages_ok(_summary(os_packages_verified=False))
    assert not packages_ok(_summary(node_check={"packages": "fail"}))
    assert not packages_ok(_summary(node_check={}))
