"""`airlock cluster upgrade` v1.27.3 -> v1.28.15 on a real single-node cluster (make test-full).

node1 is brought up from the seed bundle; a second bundle (same key, the spec at v1.28.15)
is loaded into the node's store; `airlock cluster upgrade --to v1.28.15` runs kubeadm's
procedure with the binaries and images from the store; the node reports v1.28.15, Ready."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock_lab.cluster import ClusterNode, build_cluster_bundle
from airlock_lab.node import LabNode
from airlock_lab.upstream import Upstream
from lone_node import lone_node

AIRLOCK = Path(sys.executable).with_name("airlock")
NODE, PEER, ADDRESS = "cl-u1", "cl-usw", "198.18.79.1"
TARGET = "v1.28.15"
CACHE = Path("/tmp/airlock-test-cache") / "upstream"

pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def upgrade_upstream() -> Iterator[Upstream]:
    with Upstream.start(CACHE, kubernetes_versions=("v1.27.3", TARGET)) as up:
        yield up


@pytest.fixture
def node() -> Iterator[LabNode]:
    with lone_node(NODE, ADDRESS, peer=PEER, port="clu0") as lab:
        yield lab


def test_upgrade_v1_27_3_to_v1_28(
    upgrade_upstream: Upstream, node: LabNode, tmp_path: Path
) -> None:
    sources = upgrade_upstream.sources()
    seed = build_cluster_bundle(sources, tmp_path / "seed", airlock=AIRLOCK)
    target = build_cluster_bundle(
        sources,
        tmp_path / "target",
        airlock=AIRLOCK,
        kubernetes_version=TARGET,
        key=tmp_path / "seed" / "site.key",
        sequence=2,  # the store's rollback guard: a newer bundle on the channel
    )
    registry = f"{ADDRESS}:5000"
    cn = ClusterNode(node, address=ADDRESS, say=print, log_dir=tmp_path / "logs")
    cn.install_from_bundle(seed.bundle, key=seed.key, bootstrap=seed.bootstrap)
    cn.prepare_and_install(registries=[registry])
    cn.init(registries=[registry])
    cn.airlock("load", str(target.bundle), "--key", str(target.key))
    result = cn.airlock("cluster", "upgrade", "--to", TARGET, timeout=1800)
    print(result.stdout[-2000:])
    cn.wait_for(
        "the node at the target version, Ready",
        lambda: (
            cn.kubectl_json("get", "node", NODE)["status"]["nodeInfo"]["kubeletVersion"] == TARGET
            and cn.node_conditions()[NODE]["Ready"] == "True"
        ),
        timeout=600,
    )
    want = target.digests["registry.k8s.io/kube-apiserver"]

    def apiserver_image() -> str:
        # the restarted static pod's status carries an imageID only once its container runs
        return next((v for k, v in cn.pod_images().items() if "/kube-apiserver-" in k), "")

    cn.wait_for(
        "kube-apiserver's pod reporting the image it runs",
        lambda: "@" in apiserver_image(),
        timeout=300,
    )
    assert apiserver_image().split("@")[1] == want
    cn.reset()
