"""The spec's node settings reach kubeadm's, the kubelet's, kube-proxy's and containerd's
configuration alike; reset undoes the host state init records."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from airlock.cluster import hoststate
from airlock.cluster.hoststate import (
    EnsureCgroupRoot,
    RecordKernelSettings,
    RemoveCgroupRoot,
    RestoreKernelSettings,
)
from airlock.cluster.init import InitOptions, plan_init
from airlock.cluster.join import JoinOptions, plan_join
from airlock.cluster.joinfile import JoinFile
from airlock.cluster.kubeadm_config import NodeFacts
from airlock.cluster.runner import StepContext, SystemRunner
from airlock.errors import SpecError
from airlock.node.mirrors import render_containerd_config
from airlock.node.preflight import check_kubelet_cgroup_v1
from airlock.node.prepare import default_route_problems
from airlock.presets import preset_text
from airlock.spec import Spec, parse_spec

CP = NodeFacts("CP-1", (("eth0", "198.18.2.2/24"),), "eth0", "198.18.2.2")
TOKEN, KEY = "abcdef.0123456789abcdef", "0123456789abcdef" * 4
LAB_NODE = """
node:
  cgroupDriver: cgroupfs
  cgroupRoot: /airlock-{node}
  restrictOOMScoreAdj: true
  evictionHard: {nodefs.available: 2Gi, imagefs.available: 2Gi}
  kubeProxy: {conntrackMaxPerCore: 0}
  ignorePreflightErrors:
  - {name: CRI, reason: the lab's crictl is a stand-in}
"""


def spec_with(node: str) -> Spec:
    return parse_spec(preset_text("seed") + node)


def documents(text: str) -> dict[str, dict[str, object]]:
    return {d["kind"]: d for d in YAML(typ="safe").load_all(text)}


def test_defaults_are_a_systemd_host() -> None:
    docs = documents(
        plan_init(
            spec_with(""),
            node=CP,
            options=InitOptions(cni_manifest="/m.yml", token=TOKEN, certificate_key=KEY),
        ).config.text
    )
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert "KubeProxyConfiguration" not in docs
    assert "ignorePreflightErrors" not in docs["InitConfiguration"]["nodeRegistration"]  # type: ignore[operator]


def test_lab_settings_reach_kubeadm_kubelet_and_kube_proxy(tmp_path: Path) -> None:
    plan = plan_init(
        spec_with(LAB_NODE),
        node=CP,
        options=InitOptions(cni_manifest="/m.yml", root=tmp_path, token=TOKEN, certificate_key=KEY),
    )
    docs = documents(plan.config.text)
    registration = docs["InitConfiguration"]["nodeRegistration"]
    assert registration["kubeletExtraArgs"] == {  # type: ignore[index]
        "node-ip": "198.18.2.2",
        "cgroup-root": "/airlock-cp-1",  # per node: a flag, the KubeletConfiguration is shared
    }
    assert registration["ignorePreflightErrors"] == ["CRI"]  # type: ignore[index]
    kubelet = docs["KubeletConfiguration"]
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["evictionHard"] == {"nodefs.available": "2Gi", "imagefs.available": "2Gi"}
    assert docs["KubeProxyConfiguration"]["conntrack"] == {"maxPerCore": 0}
    described = plan.render()
    assert "create the kubelet's cgroup root /airlock-cp-1" in described
    assert described.index("cgroup root") < described.index("kubeadm init")


def test_join_carries_the_per_node_settings() -> None:
    join = JoinFile(
        api_endpoint="198.18.2.2:6443",
        token=TOKEN,
        ca_cert_hash="sha256:" + "a" * 64,
        token_expires="2099-01-01T00:00:00Z",
        kubernetes_version="v1.27.3",
    )
    worker = NodeFacts("node2", (("eth0", "198.18.2.3/24"),), "eth0", "198.18.2.3")
    plan = plan_join(
        join,
        control_plane=False,
        node=worker,
        options=JoinOptions(settings=spec_with(LAB_NODE).node),
    )
    registration = documents(plan.config.text)["JoinConfiguration"]["nodeRegistration"]
    assert registration["kubeletExtraArgs"]["cgroup-root"] == "/airlock-node2"  # type: ignore[index]
    assert registration["ignorePreflightErrors"] == ["CRI"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("node", "field"),
    [
        ("node:\n  ignorePreflightErrors: [{name: CRI}]\n", "reason"),
        ("node:\n  ignorePreflightErrors: [{name: all, reason: lazy}]\n", "name"),
        ("node:\n  cgroupDriver: openrc\n", "cgroupDriver"),
        ("node:\n  cgroupRoot: 'kubelet root'\n", "cgroupRoot"),
        ("node:\n  kubeProxy: {conntrackMaxPerCore: -1}\n", "conntrackMaxPerCore"),
    ],
)
def test_bad_node_settings_name_the_field(node: str, field: str) -> None:
    with pytest.raises(SpecError) as err:
        spec_with(node)
    assert field in str(err.value)


@pytest.mark.parametrize("version", ["1.6.20", "2.0.0"])
def test_containerd_follows_the_cgroup_driver_and_installs_cni_where_airlock_does(
    version: str,
) -> None:
    existing = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\nbin_dir = "/usr/lib/cni"\n'
    text = render_containerd_config(
        containerd_version=version,
        sandbox_image="registry.k8s.io/pause:3.9",
        existing=existing if version.startswith("1.") else "",
        cgroup_driver="cgroupfs",
        restrict_oom_score_adj=True,
        cni_bin_dir="/opt/cni/bin",
    )
    doc = tomllib.loads(text)
    cri = doc["plugins"][
        "io.containerd.grpc.v1.cri" if version.startswith("1.") else "io.containerd.cri.v1.runtime"
    ]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["bin_dir"] == "/opt/cni/bin"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    default = tomllib.loads(
        render_containerd_config(containerd_version=version, sandbox_image="p:1", existing=text)
    )
    cri = default["plugins"][
        "io.containerd.grpc.v1.cri" if version.startswith("1.") else "io.containerd.cri.v1.runtime"
    ]
    assert "restrict_oom_score_adj" not in cri
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True


def _ctx(root: Path) -> StepContext:
    return StepContext(root=root, runner=SystemRunner(), log_dir=root / "log")


def test_host_state_steps_only_record_in_a_sysroot(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    for step in (
        EnsureCgroupRoot("/airlock-x"),
        RecordKernelSettings(),
        RemoveCgroupRoot("/airlock-x"),
        RestoreKernelSettings(),
    ):
        step.execute(ctx)
    assert len(ctx.recorded) == 4
    assert not (tmp_path / "etc").exists()


def test_cgroup_root_made_then_removed_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "cgroup"
    for h in ("cpu", "memory"):
        (fake / h).mkdir(parents=True)
    monkeypatch.setattr(hoststate, "CGROUP_FS", fake)
    ctx = _ctx(Path("/"))
    EnsureCgroupRoot("/airlock-n1").execute(ctx)
    assert (fake / "memory" / "airlock-n1").is_dir()
    (fake / "memory" / "airlock-n1" / "kubepods" / "burstable").mkdir(parents=True)
    RemoveCgroupRoot("/airlock-n1").execute(ctx)
    assert not list(fake.glob("*/airlock-n1"))


def test_kernel_settings_recorded_once_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = tmp_path / "proc"
    (proc / "vm").mkdir(parents=True)
    (proc / "vm" / "overcommit_memory").write_text("0\n")
    monkeypatch.setattr(hoststate, "_proc_path", lambda key: proc / key.replace(".", "/"))
    record = str(tmp_path / "record.json")
    ctx = _ctx(Path("/"))
    RecordKernelSettings(keys=("vm.overcommit_memory",), record=record).execute(ctx)
    (proc / "vm" / "overcommit_memory").write_text("1\n")  # what the kubelet does
    # a second init (after a crash) keeps the first record: the kubelet's value is not "before"
    RecordKernelSettings(keys=("vm.overcommit_memory",), record=record).execute(ctx)
    assert json.loads(Path(record).read_text()) == {"vm.overcommit_memory": "0"}
    RestoreKernelSettings(record=record).execute(ctx)
    assert (proc / "vm" / "overcommit_memory").read_text().strip() == "0"
    assert not os.path.exists(record)


@pytest.mark.parametrize(
    ("version", "v2", "setting", "status"),
    [
        ("v1.27.3", False, None, "ok"),
        ("v1.35.0", True, None, "ok"),
        ("v1.35.0", False, None, "fail"),
        ("v1.36.1", False, False, "warn"),
    ],
)
def test_node_check_names_cgroup_v1_with_a_new_kubelet(
    version: str, v2: bool, setting: bool | None, status: str
) -> None:
    result = check_kubelet_cgroup_v1(version, cgroup_v2=v2, fail_cgroup_v1=setting)
    assert result.status == status
    if status == "fail":
        assert "failCgroupV1: false" in result.fix


@pytest.mark.parametrize(
    ("routes", "warned"),
    [
        ('[{"dst": "default", "gateway": "198.18.0.1", "dev": "eth0"}]', False),
        ('[{"dst": "default", "dev": "eth0", "scope": "link"}]', False),
        ('[{"type": "blackhole", "dst": "default"}]', True),
        ("[]", True),
    ],
)
def test_node_prepare_names_a_default_route_flannel_cannot_use(routes: str, warned: bool) -> None:
    problems = default_route_problems(routes)
    assert bool(problems) == warned
    if warned:
        assert "Flannel" in problems[0] and "service subnet" in problems[0]
