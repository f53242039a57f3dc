"""`cluster upgrade` run for real against airlock's kubeadm stand-ins in temp sysroots.

The v1.27.3 stand-in initialises (or joins) the node; the upgrade installs the v1.27.4 kubeadm,
kubelet and kubectl from a store and runs kubeadm's upgrade commands with the NEW kubeadm (the
old one refuses a target above its own version). kubectl drain/uncordon are recorded by the
test's runner (there is no API server); the kubelet restart is recorded under a sysroot.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_cluster_upgrade import PLATFORM, fake_store

from airlock.cluster.kubeadm_config import (
    InitConfigOptions,
    NodeFacts,
    render_init_config,
    render_join_config,
)
from airlock.cluster.runner import SystemRunner
from airlock.cluster.upgrade import UpgradeOptions, upgrade_cluster
from airlock.errors import NodeError
from airlock.presets import preset_text
from airlock.spec import parse_spec
from airlock.system import CommandResult
from airlock_lab import standins

CP = NodeFacts("cp-1", (("eth0", "198.18.2.2/24"),), "eth0", "198.18.2.2")
WORKER = NodeFacts("worker-1", (("eth0", "198.18.2.3/24"),), "eth0", "198.18.2.3")
TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4
KUBECTL_427 = b"#!/bin/sh\n# kubectl v1.27.4 (test stand-in)\necho 'Client Version: v1.27.4'\n"


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("python3", "openssl", "sh"):
        assert shutil.which(tool), f"{tool} is needed by the kubeadm stand-in: apt-get install it"


@dataclass
class Runner:
    """The stand-ins run for real; kubectl calls are recorded (no API server here)."""

    root: Path
    kubectl_calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(
        self, argv: Sequence[str], *, log: Path | None = None, input: str | None = None
    ) -> CommandResult:
        if argv[0] == "kubectl":
            self.kubectl_calls.append(tuple(argv))
            return CommandResult(tuple(argv), 0, "recorded by the test\n", "")
        system = SystemRunner(
            binaries={"/usr/local/bin/kubeadm": str(self.root / "usr/local/bin/kubeadm")},
            env={standins.KUBEADM_STANDIN_ROOT: str(self.root)},
        )
        return system.run(argv, log=log, input=input)


def standin(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755)
    return path


def kubeadm(tmp: Path, root: Path, *args: str) -> None:
    exe = standin(tmp / "kubeadm-v1.27.3", standins.kubeadm_script("v1.27.3"))
    res = subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", standins.KUBEADM_STANDIN_ROOT: str(root)},
        check=False,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr


def write(root: Path, path: str, text: str) -> str:
    (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / path.lstrip("/")).write_text(text)
    return path


def store_427(tmp: Path) -> Path:
    store = tmp / "store"
    fake_store(
        store,
        "v1.27.4",
        contents={
            "kubeadm": standins.kubeadm_script("v1.27.4"),
            "kubelet": standins.kubelet_script("v1.27.4"),
            "kubectl": KUBECTL_427,
        },
    )
    return store


def options(root: Path, store: Path, **kw: object) -> UpgradeOptions:
    return UpgradeOptions(
        target="v1.27.4",
        root=root,
        store=store,
        platform=PLATFORM,
        **kw,  # type: ignore[arg-type]
    )


def test_first_control_plane_upgrade_against_the_standin(tmp_path: Path) -> None:
    root = tmp_path / "cp"
    spec = parse_spec(preset_text("seed"))
    cfg = render_init_config(spec, node=CP, options=InitConfigOptions(TOKEN, KEY))
    kubeadm(tmp_path, root, "init", "--config", write(root, "/etc/airlock/init.yaml", cfg.text))
    standin(root / "usr/local/bin/kubelet", standins.kubelet_script("v1.27.3"))
    apiserver = root / "etc/kubernetes/manifests/kube-apiserver.yaml"
    assert "kube-apiserver:v1.27.3" in apiserver.read_text()

    runner = Runner(root)
    result = upgrade_cluster(
        options=options(root, store_427(tmp_path), node_name="cp-1"), runner=runner
    )
    assert (result.current, result.role) == ("v1.27.3", "first-control-plane")  # detected
    assert result.message == "node cp-1 upgraded v1.27.3 -> v1.27.4"
    assert "kube-apiserver:v1.27.4" in apiserver.read_text()  # `upgrade apply` rewrote it
    for tool, data in (
        ("kubeadm", standins.kubeadm_script("v1.27.4")),
        ("kubelet", standins.kubelet_script("v1.27.4")),
        ("kubectl", KUBECTL_427),
    ):
        assert (root / "usr/local/bin" / tool).read_bytes() == data
        assert (root / "usr/local/bin" / tool).stat().st_mode & 0o777 == 0o755
    assert runner.kubectl_calls == [
        (
            "kubectl",
            "--kubeconfig",
            "/etc/kubernetes/admin.conf",
            "drain",
            "cp-1",
            "--ignore-daemonsets",
        ),
        ("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "uncordon", "cp-1"),
    ]
    assert result.recorded == (f"kubelet restart recorded, not run: {root} is a sysroot",)
    logs = root / "var/log/airlock"
    assert (
        "[upgrade/versions] Target version: v1.27.4"
        in (logs / "kubeadm-upgrade-plan.log").read_text()
    )
    assert (
        'change the cluster version to "v1.27.4"'
        in (logs / "kubeadm-upgrade-apply.log").read_text()
    )

    # a rerun (e.g. after an interruption) is accepted and changes no binary
    again = upgrade_cluster(
        options=options(root, store_427(tmp_path), node_name="cp-1"), runner=Runner(root)
    )
    assert again.current == "v1.27.4"
    assert "/usr/local/bin/kubelet: already kubelet v1.27.4" in again.steps_done


def test_worker_upgrade_runs_upgrade_node(tmp_path: Path) -> None:
    root = tmp_path / "w"
    cfg = render_join_config(
        kubernetes_version="v1.27.3",
        api_endpoint="198.18.2.2:6443",
        token=TOKEN,
        ca_cert_hash="sha256:" + "c" * 64,
        node=WORKER,
    )
    kubeadm(tmp_path, root, "join", "--config", write(root, "/etc/airlock/join.yaml", cfg.text))
    standin(root / "usr/local/bin/kubelet", standins.kubelet_script("v1.27.3"))
    runner = Runner(root)
    result = upgrade_cluster(
        options=options(root, store_427(tmp_path), node_name="worker-1"), runner=runner
    )
    assert (result.current, result.role) == ("v1.27.3", "worker")  # from `kubelet --version`
    log = (root / "var/log/airlock/kubeadm-upgrade-node.log").read_text()
    assert "$ /usr/local/bin/kubeadm upgrade node" in log and "kubeadm-standin:" in log
    assert [c[3] for c in runner.kubectl_calls] == ["drain", "uncordon"]
    assert (root / "usr/local/bin/kubelet").read_bytes() == standins.kubelet_script("v1.27.4")


def test_upgrade_node_before_join_fails_with_the_log(tmp_path: Path) -> None:
    root = tmp_path / "never-joined"
    runner = Runner(root)
    with pytest.raises(NodeError) as err:
        upgrade_cluster(
            options=options(
                root, store_427(tmp_path), node_name="n", role="worker", current="v1.27.3"
            ),
            runner=runner,
        )
    assert "kubeadm upgrade node" in err.value.message and "kubeadm-upgrade" in err.value.message
    assert runner.kubectl_calls == []  # nothing drained when kubeadm failed
    assert not (root / "usr/local/bin/kubelet").exists()
