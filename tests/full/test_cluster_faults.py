"""Failure paths of the real cluster (make test-full: minutes each on 2 shared cores).

- the kubelet killed as kubeadm starts it: `airlock cluster init` fails naming kubeadm's log
  and `--force`; `cluster init --force` (reset first) then converges to a Ready node;
- an image the registry does not hold: the kubelet's real ErrImagePull/ImagePullBackOff, its
  message naming the node's registry mirror.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock_lab.cluster import (
    NODE_AIRLOCK,
    ClusterBundle,
    ClusterNode,
    build_cluster_bundle,
)
from airlock_lab.node import LabNode
from airlock_lab.upstream import Upstream
from lone_node import lone_node

AIRLOCK = Path(sys.executable).with_name("airlock")
NODE, PEER, ADDRESS = "cl-f1", "cl-fsw", "198.18.78.1"

pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def cluster_bundle(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> ClusterBundle:
    return build_cluster_bundle(
        upstream.sources(), tmp_path_factory.mktemp("faults-bundle"), airlock=AIRLOCK
    )


@pytest.fixture
def node() -> Iterator[LabNode]:
    with lone_node(NODE, ADDRESS, peer=PEER, port="clf0") as lab:
        yield lab


def _kubelet_pids(node: LabNode) -> list[int]:
    out = []
    for pid in node.processes():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "kubelet":
            out.append(pid)
    return out


def test_kubelet_killed_mid_init_then_init_force_converges(
    cluster_bundle: ClusterBundle, node: LabNode, tmp_path: Path
) -> None:
    b = cluster_bundle
    registry = f"{ADDRESS}:5000"
    cn = ClusterNode(node, address=ADDRESS, say=print, log_dir=tmp_path / "logs")
    cn.install_from_bundle(b.bundle, key=b.key, bootstrap=b.bootstrap)
    cn.prepare_and_install(registries=[registry])

    init = node.spawn(
        [NODE_AIRLOCK, "cluster", "init", "--advertise-address", ADDRESS, "--registry", registry],
        log=tmp_path / "init-1.log",
    )
    try:
        deadline = time.monotonic() + 300
        killed = False
        while time.monotonic() < deadline and init.alive():
            for pid in _kubelet_pids(node):  # kubeadm's kubelet-start phase just started it
                os.kill(pid, signal.SIGKILL)
                killed = True
            if killed:
                break
            time.sleep(0.2)
        assert killed, "the kubelet never started"
        init.popen.wait(900)
    finally:
        init.kill()
    first = (tmp_path / "init-1.log").read_text()
    assert init.popen.returncode != 0, first
    assert "--force" in first  # the hint: a rerun with --force resets first

    result = cn.airlock(
        "cluster", "init", "--force", "--advertise-address", ADDRESS, "--registry", registry,
        timeout=1500,
    )  # fmt: skip
    assert "resets it first" in result.stdout or "reset" in result.stdout
    assert cn.node_conditions()[NODE]["Ready"] == "True"
    # init waited for one available CoreDNS replica; both become ready soon after
    cn.wait_for("CoreDNS", lambda: cn.pods_running("kube-system", "k8s-app=kube-dns"), timeout=300)

    # an image the registry does not hold: the kubelet's own ImagePullBackOff
    missing = "ghcr.io/stefanprodan/podinfo:0.0.0-not-in-the-bundle"
    cn.kubectl("run", "missing", f"--image={missing}", "--restart=Never")

    def backoff() -> bool:
        pod = cn.kubectl_json("get", "pod", "missing")
        waiting = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {})
        reason = waiting.get("waiting", {}).get("reason", "")
        return reason in ("ErrImagePull", "ImagePullBackOff")

    cn.wait_for("ImagePullBackOff", backoff, timeout=300)
    events = json.loads(
        cn.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=missing", "-o", "json"
        ).stdout
    )
    messages = " ".join(e.get("message", "") for e in events.get("items", []))
    assert "0.0.0-not-in-the-bundle" in messages
    print(f"ImagePullBackOff, as the kubelet says it: {messages[:400]}")
    cn.reset()
