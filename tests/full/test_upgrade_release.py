"""The upgrade target (make test-full): Kubernetes v1.28.15 and etcd 3.5.15, built from their Go
modules, served by the simulated upstream as the real release and images, beside the seed's
v1.27.3: every image v1.28.15's own kubeadm lists is there, and the binaries run."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock_lab.containerd import ContainerdDaemon
from airlock_lab.realimages import BUILT_FROM_LABEL
from airlock_lab.upstream import Upstream

TARGET = "v1.28.15"
RELEASE = f"https://dl.k8s.io/release/{TARGET}/bin/linux/amd64"
CACHE = Path(os.environ.get("AIRLOCK_TEST_CACHE", "/tmp/airlock-test-cache")) / "upstream"


@pytest.fixture(scope="module")
def upgrade_upstream() -> Iterator[Upstream]:
    with Upstream.start(CACHE, kubernetes_versions=("v1.27.3", TARGET)) as up:
        yield up


def _out(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (argv, proc.stderr[-1500:])
    return proc.stdout + proc.stderr


def test_the_release_binaries_are_the_target_version(upgrade_upstream: Upstream) -> None:
    up = upgrade_upstream
    kubeadm = up.local_path(f"{RELEASE}/kubeadm")
    assert _out([str(kubeadm), "version", "-o", "short"]).strip() == TARGET
    kubelet = up.local_path(f"{RELEASE}/kubelet")
    assert _out([str(kubelet), "--version"]).strip() == f"Kubernetes {TARGET}"
    stable = up.local_path("https://dl.k8s.io/release/stable-1.28.txt")
    assert stable.read_text().strip() == TARGET
    # Every image the target's own kubeadm needs is served, the new ones built for real.
    wanted = _out([str(kubeadm), "config", "images", "list", "--kubernetes-version", TARGET])
    images = set(up.images)
    missing = [ref for ref in wanted.split() if ref not in images]
    assert not missing, missing
    assert "registry.k8s.io/etcd:3.5.15-0" in wanted.split()
    layout = up.layout
    for ref in (f"registry.k8s.io/kube-apiserver:{TARGET}", "registry.k8s.io/etcd:3.5.15-0"):
        manifest = json.loads(layout.read(layout.images()[ref]["digest"]))
        if "manifests" in manifest:  # an index: its first platform
            manifest = json.loads(layout.read(manifest["manifests"][0]["digest"]))
        config = json.loads(layout.read(manifest["config"]["digest"]))
        assert BUILT_FROM_LABEL in config["config"]["Labels"], ref  # built, not a stand-in


@pytest.fixture(scope="module")
def daemon(
    upgrade_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerdDaemon]:
    ctd = ContainerdDaemon(tmp_path_factory.mktemp("ctd"))
    for host, url in upgrade_upstream.registries.items():
        hosts = ctd.hosts_dir / host / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(
            f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
    try:
        ctd.start()
        yield ctd
    finally:
        ctd.stop()


@pytest.mark.parametrize(
    ("ref", "argv", "expected"),
    [
        (f"registry.k8s.io/kube-apiserver:{TARGET}", ["kube-apiserver", "--version"], TARGET),
        (f"registry.k8s.io/kube-proxy:{TARGET}", ["iptables", "--version"], "nf_tables"),
        ("registry.k8s.io/etcd:3.5.15-0", ["etcd", "--version"], "etcd Version: 3.5.15"),
    ],
)
def test_the_target_images_run(
    daemon: ContainerdDaemon, ref: str, argv: list[str], expected: str, tmp_path: Path
) -> None:
    daemon.pull(ref)
    labels = daemon.ctr(["images", "list", f"name=={ref}"]).stdout
    assert ref in labels
    name = "up-" + ref.rsplit("/", 1)[-1].replace(":", "-").replace(".", "-")
    result = daemon.ctr(["run", "--rm", ref, name, *argv], check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-1500:]
    assert expected in result.stdout + result.stderr
