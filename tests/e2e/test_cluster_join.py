"""Two lab nodes, for real: node1 runs `airlock cluster init` (real kubeadm, Flannel, CoreDNS,
podinfo through Helm), node2 joins with the join file; a pod on node2 pulls from node1's
registry and answers node1 over Flannel's VXLAN across the lab bridge; `airlock cluster reset`
on both, then the lab nodes going down, leave the host as it was.

Names of its own (cl-e1, cl-e2, cl-sw; 198.18.77.0/24), so it holds none of the shared lab
names. Measured warm on 2 shared cores: about 4 minutes for both nodes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock import system
from airlock_lab.cluster import (
    LAB_NODE_PACKAGES,
    ClusterBundle,
    ClusterNode,
    gap_routes,
)
from airlock_lab.netns import create_netns, delete_netns
from airlock_lab.node import CGROUP_FS, LabNode

AIRLOCK = Path(sys.executable).with_name("airlock")
SWITCH, BRIDGE, NET = "cl-sw", "br0", "198.18.77"
NODES = ("cl-e1", "cl-e2")
PODINFO = "ghcr.io/stefanprodan/podinfo:6.4.0"
KERNEL_KEYS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)

pytestmark = pytest.mark.timeout(3600)


def _kernel() -> dict[str, str]:
    return {k: Path("/proc/sys", k.replace(".", "/")).read_text().strip() for k in KERNEL_KEYS}


def _traces() -> dict[str, object]:
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    netns = system.run(["ip", "netns", "list"], timeout=30).stdout
    return {
        "mounts": [m for m in mounts if any(n in m for n in NODES)],
        "cgroups": [str(p) for n in NODES for p in CGROUP_FS.glob(f"*/airlock-{n}")],
        "netns": [n for n in (*NODES, SWITCH) if n in netns.split()],
        "kube chains on the host": [
            r for r in system.run(["iptables-save"], timeout=30).stdout.splitlines() if "KUBE-" in r
        ],
    }


@pytest.fixture(scope="module")
def cluster_bundle(node_bundle: ClusterBundle) -> ClusterBundle:
    """The seed bundle for lab nodes (node settings, and the node's OS packages as .debs)."""
    return node_bundle


def _packages_from_the_bundle(node: ClusterNode) -> None:
    """The node's OS packages were absent from it (removed first, or never on the host) and
    dpkg installed the bundle's."""
    evidence = {e.name: e for e in node.package_evidence()}
    asked = [evidence[n] for n in LAB_NODE_PACKAGES]
    assert all(e.before is None and e.from_bundle and e.matches for e in asked), asked
    assert all(e.matches for e in evidence.values())  # the rest: already there, same version
    verify = node.verify_packages()
    assert verify.returncode == 0 and not verify.stdout.strip(), verify.stdout


def _teardown(nodes: list[LabNode]) -> None:
    for node in nodes:
        node.down()
    for name in (*NODES, SWITCH):
        delete_netns(name)


@pytest.fixture
def two_nodes() -> Iterator[list[tuple[LabNode, str]]]:
    nodes = [LabNode(n, netns=n, cgroup_root=f"/airlock-{n}") for n in NODES]
    _teardown(nodes)
    try:
        create_netns(SWITCH)
        system.run(["ip", "-n", SWITCH, "link", "add", BRIDGE, "type", "bridge"], timeout=30)
        system.run(["ip", "-n", SWITCH, "link", "set", BRIDGE, "up"], timeout=30)
        out = []
        for i, (name, node) in enumerate(zip(NODES, nodes, strict=True), 1):
            create_netns(name)
            port = f"clsw{i}"
            system.run(
                ["ip", "-n", SWITCH, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", name],
                timeout=30,
            )  # fmt: skip
            system.run(["ip", "-n", SWITCH, "link", "set", port, "master", BRIDGE, "up"])
            system.run(["ip", "-n", name, "addr", "add", f"{NET}.{i}/24", "dev", "eth0"])
            system.run(["ip", "-n", name, "link", "set", "eth0", "up"])
            gap_routes(name, "eth0")
            out.append((node.up(), f"{NET}.{i}"))
        yield out
    finally:
        _teardown(nodes)


def test_node2_joins_and_serves_over_flannel(
    cluster_bundle: ClusterBundle, two_nodes: list[tuple[LabNode, str]], tmp_path: Path
) -> None:
    (node1, addr1), (node2, addr2) = two_nodes
    kernel_before = _kernel()
    host_packages = Path("/var/lib/dpkg/status").read_bytes()
    registry1 = f"{addr1}:5000"
    b = cluster_bundle
    cp = ClusterNode(node1, address=addr1, say=print, log_dir=tmp_path / "logs")
    worker = ClusterNode(node2, address=addr2, say=print, log_dir=tmp_path / "logs")

    t0 = time.monotonic()
    cp.install_from_bundle(b.bundle, key=b.key, bootstrap=b.bootstrap)
    cp.prepare_and_install(registries=[registry1])
    _packages_from_the_bundle(cp)
    cp.init(registries=[registry1])
    ready = time.monotonic() - t0
    assert cp.node_conditions()[NODES[0]]["Ready"] == "True"
    # init waited for one available CoreDNS replica; both become ready soon after
    cp.wait_for("CoreDNS", lambda: cp.pods_running("kube-system", "k8s-app=kube-dns"), timeout=300)

    cp.deploy("podinfo")
    cp.wait_for(
        "podinfo", lambda: cp.pods_running("default", "app.kubernetes.io/name=podinfo"), timeout=300
    )
    answer = json.loads(cp.service_answer("default", "app.kubernetes.io/name=podinfo", 9898))
    answering = time.monotonic() - t0
    assert answer["version"] == "6.4.0"
    print(f"medium to a Ready node: {ready:.0f}s; to podinfo answering: {answering:.0f}s")

    # node2: its own airlock and store, mirrors pointing at node1's registry; the join file
    worker.install_from_bundle(b.bundle, key=b.key, bootstrap=b.bootstrap)
    worker.prepare_and_install(registries=[registry1])
    _packages_from_the_bundle(worker)
    join_file = node2.dir / "join.json"
    join_file.write_text(node1.read_text("/etc/airlock/join.json"))
    join_file.chmod(0o600)
    worker.join(join_file)
    cp.wait_for(
        "node2 Ready",
        lambda: cp.node_conditions().get(NODES[1], {}).get("Ready") == "True",
        timeout=600,
    )

    overrides = json.dumps({"apiVersion": "v1", "spec": {"nodeName": NODES[1]}})
    cp.kubectl("run", "pi2", f"--image={PODINFO}", "--restart=Never", f"--overrides={overrides}")
    cp.wait_for("pi2 on node2", lambda: cp.pods_running("default", "run=pi2"), timeout=600)
    pod = cp.kubectl_json("get", "pod", "pi2")
    assert pod["spec"]["nodeName"] == NODES[1]
    pod_ip = pod["status"]["podIP"]
    assert pod_ip.startswith("10.244.") and not pod_ip.startswith("10.244.0.")
    # from node1 to a pod on node2: Flannel's VXLAN across the lab bridge
    reply = node1.run(["curl", "-fsS", "--max-time", "5", f"http://{pod_ip}:9898/"], timeout=20)
    assert json.loads(reply.stdout)["version"] == "6.4.0"

    # every container on both nodes runs the digest the bundle carries
    for container, image_id in cp.pod_images().items():
        repo, _, digest = image_id.partition("@")
        assert b.digests.get(repo) == digest, (container, image_id)
    # node2 pulls through its mirror: node1's registry
    hosts = node2.read_text("/etc/containerd/certs.d/ghcr.io/hosts.toml")
    assert registry1 in hosts

    memory = {k: f"{v / 2**20:.0f} MiB" for k, v in cp.memory_figures().items()}
    print(f"control plane node memory: {memory}")
    worker.reset()  # the joined node first: its record holds the kubelet's values
    cp.reset()
    assert _kernel() == kernel_before
    # the nodes' package changes stayed in their overlays
    assert Path("/var/lib/dpkg/status").read_bytes() == host_packages
    for node in (node1, node2):
        assert not node.run(["ctr", "-n", "k8s.io", "tasks", "ls", "-q"]).stdout.strip()
        assert "KUBE-" not in node.run(["iptables-save"]).stdout
    assert not [str(p) for n in NODES for p in CGROUP_FS.glob(f"*/airlock-{n}")]


def test_the_nodes_left_nothing_behind() -> None:
    assert _traces() == {"mounts": [], "cgroups": [], "netns": [], "kube chains on the host": []}
