"""kubeadm config generation and the exact `--dry-run` plans of init and join (pure)."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from airlock.cluster.init import InitOptions, init_cluster, plan_init
from airlock.cluster.join import JoinOptions, plan_join
from airlock.cluster.joinfile import JoinFile
from airlock.cluster.kubeadm_config import (
    V1BETA3,
    V1BETA4,
    InitConfigOptions,
    NodeFacts,
    kubeadm_api_version,
    node_facts_from_ip,
    render_init_config,
)
from airlock.cluster.runner import SystemRunner
from airlock.errors import NodeError, UsageError
from airlock.presets import preset_text
from airlock.spec import Spec, parse_spec

TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4
CP = NodeFacts("CP-1", (("lo", "127.0.0.1/8"), ("eth0", "198.18.2.2/24")), "eth0", "198.18.2.2")
WORKER = NodeFacts("worker-1", (("eth0", "198.18.2.3/24"),), "eth0", "198.18.2.3")


def seed(**network: str) -> Spec:
    text = preset_text("seed")
    for key, value in network.items():
        text = text.replace(
            "  podSubnet: 10.244.0.0/16\n", f"  podSubnet: 10.244.0.0/16\n  {key}: {value}\n"
        )
    return parse_spec(text)


def options(tmp_path: Path, **kw: Any) -> InitOptions:
    base: dict[str, Any] = {
        "cni_manifest": "/var/lib/airlock/files/kube-flannel.yml",
        "root": tmp_path,
        "token": TOKEN,
        "certificate_key": KEY,
        "registries": ("198.18.2.2:5000",),
    }
    return InitOptions(**{**base, **kw})


@pytest.mark.parametrize(
    ("version", "api"),
    [
        ("v1.27.3", V1BETA3),
        ("v1.30.14", V1BETA3),
        ("v1.31.0", V1BETA4),
        ("v1.34.1", V1BETA4),
        ("v2.0.0", V1BETA4),
        ("v1.9.0", V1BETA3),
    ],
)
def test_api_version_rule(version: str, api: str) -> None:
    assert kubeadm_api_version(version) == api


@given(st.integers(0, 60), st.integers(0, 40))
def test_api_version_rule_follows_the_minor(minor: int, patch: int) -> None:
    want = V1BETA4 if minor >= 31 else V1BETA3
    assert kubeadm_api_version(f"v1.{minor}.{patch}") == want


SEED_INIT_PLAN = """\
airlock cluster init: Kubernetes v1.27.3, kubeadm config kubeadm.k8s.io/v1beta3
node cp-1: advertise address 198.18.2.2 (eth0), API endpoint 198.18.2.2:6443
 1. check: no cluster on this node yet (/etc/kubernetes/admin.conf, /etc/kubernetes/manifests/*.yaml)
 2. preflight: airlock's node checks
 3. record vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops, kernel.keys.root_maxkeys, kernel.keys.root_maxbytes in /etc/airlock/kernel-settings-before-cluster.json (reset restores them)
 4. write /etc/airlock/kubeadm-init.yaml (mode 0600):
      apiVersion: kubeadm.k8s.io/v1beta3
      kind: InitConfiguration
      bootstrapTokens:
      - token: abcdef.0123456789abcdef
        ttl: 24h0m0s
        groups:
        - system:bootstrappers:kubeadm:default-node-token
        usages:
        - signing
        - authentication
      certificateKey: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      localAPIEndpoint:
        advertiseAddress: 198.18.2.2
        bindPort: 6443
      nodeRegistration:
        name: cp-1
        criSocket: unix:///var/run/containerd/containerd.sock
        imagePullPolicy: IfNotPresent
        kubeletExtraArgs:
          node-ip: 198.18.2.2
        taints: []
      ---
      apiVersion: kubeadm.k8s.io/v1beta3
      kind: ClusterConfiguration
      clusterName: seed
      kubernetesVersion: v1.27.3
      networking:
        podSubnet: 10.244.0.0/16
        serviceSubnet: 10.96.0.0/12
        dnsDomain: cluster.local
      apiServer:
        timeoutForControlPlane: 4m0s
      ---
      apiVersion: kubelet.config.k8s.io/v1beta1
      kind: KubeletConfiguration
      cgroupDriver: systemd
 5. run: kubeadm init --config /etc/airlock/kubeadm-init.yaml --upload-certs  # output to /var/log/airlock/kubeadm-init.log
 6. wait: the API server (kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz), up to 300s
 7. run: kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f /var/lib/airlock/files/kube-flannel.yml  # the flannel manifest from the bundle, unchanged; output to /var/log/airlock/cni-apply.log
 8. wait: node cp-1 Ready, up to 300s
 9. wait: CoreDNS available (kube-system/coredns), up to 300s
10. write /etc/airlock/join.json (mode 0600): the join file
      api_endpoint: 198.18.2.2:6443
      token: abcdef.0123456789abcdef
      ca_cert_hash: sha256 of the SubjectPublicKeyInfo of /etc/kubernetes/pki/ca.crt
      certificate_key: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      kubernetes_version: v1.27.3
      registries: 198.18.2.2:5000
      token_expires: 24h after this step
"""


def test_seed_init_dry_run_is_exact(tmp_path: Path) -> None:
    plan = plan_init(seed(), node=CP, options=options(tmp_path, show_secrets=True))
    assert plan.render() == SEED_INIT_PLAN
    assert plan.config.api_version == V1BETA3


CURRENT_HA_INIT_PLAN = """\
airlock cluster init: Kubernetes v1.34.1, kubeadm config kubeadm.k8s.io/v1beta4
node cp-1: advertise address 198.18.2.2 (eth0), API endpoint k8s-api.lab:6443
 1. check: no cluster on this node yet (/etc/kubernetes/admin.conf, /etc/kubernetes/manifests/*.yaml)
 2. preflight: airlock's node checks
 3. record vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops, kernel.keys.root_maxkeys, kernel.keys.root_maxbytes in /etc/airlock/kernel-settings-before-cluster.json (reset restores them)
 4. write /etc/airlock/kubeadm-init.yaml (mode 0600):
      apiVersion: kubeadm.k8s.io/v1beta4
      kind: InitConfiguration
      bootstrapTokens:
      - token: abcdef.0123456789abcdef
        ttl: 24h0m0s
        groups:
        - system:bootstrappers:kubeadm:default-node-token
        usages:
        - signing
        - authentication
      certificateKey: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      localAPIEndpoint:
        advertiseAddress: 198.18.2.2
        bindPort: 6443
      nodeRegistration:
        name: cp-1
        criSocket: unix:///var/run/containerd/containerd.sock
        imagePullPolicy: IfNotPresent
        kubeletExtraArgs:
        - name: node-ip
          value: 198.18.2.2
      timeouts:
        controlPlaneComponentHealthCheck: 4m0s
      ---
      apiVersion: kubeadm.k8s.io/v1beta4
      kind: ClusterConfiguration
      clusterName: current
      kubernetesVersion: v1.34.1
      controlPlaneEndpoint: k8s-api.lab:6443
      networking:
        podSubnet: 10.244.0.0/16
        serviceSubnet: 10.96.0.0/12
        dnsDomain: cluster.local
      ---
      apiVersion: kubelet.config.k8s.io/v1beta1
      kind: KubeletConfiguration
      cgroupDriver: systemd
 5. run: kubeadm init --config /etc/airlock/kubeadm-init.yaml --upload-certs  # output to /var/log/airlock/kubeadm-init.log
 6. wait: the API server (kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz), up to 300s
 7. run: kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f /var/lib/airlock/files/kube-flannel.yml  # the flannel manifest from the bundle, unchanged; output to /var/log/airlock/cni-apply.log
      first checking that /var/lib/airlock/files/kube-flannel.yml has sha256 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
 8. wait: node cp-1 Ready, up to 300s
 9. wait: CoreDNS available (kube-system/coredns), up to 300s
10. write /etc/airlock/join.json (mode 0600): the join file
      api_endpoint: k8s-api.lab:6443
      token: abcdef.0123456789abcdef
      ca_cert_hash: sha256 of the SubjectPublicKeyInfo of /etc/kubernetes/pki/ca.crt
      certificate_key: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      kubernetes_version: v1.34.1
      registries: 198.18.2.2:5000
      token_expires: 24h after this step
"""


def test_v1_31_plus_ha_init_dry_run_is_exact(tmp_path: Path) -> None:
    spec = parse_spec(preset_text("current"))
    plan = plan_init(
        spec,
        node=CP,
        options=options(
            tmp_path,
            single_node=False,
            control_plane_endpoint="k8s-api.lab:6443",
            cni_manifest_sha256="b" * 64,
            show_secrets=True,
        ),
    )
    assert plan.render() == CURRENT_HA_INIT_PLAN


SEED_JOIN_PLAN = """\
airlock cluster join as a worker: Kubernetes v1.27.3, kubeadm config kubeadm.k8s.io/v1beta3
node worker-1: address 198.18.2.3 (eth0), API endpoint 198.18.2.2:6443
registries for this node's mirrors: 198.18.2.2:5000
 1. check: this node has not joined a cluster (/etc/kubernetes/kubelet.conf)
 2. preflight: airlock's node checks
 3. record vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops, kernel.keys.root_maxkeys, kernel.keys.root_maxbytes in /etc/airlock/kernel-settings-before-cluster.json (reset restores them)
 4. write /etc/airlock/kubeadm-join.yaml (mode 0600):
      apiVersion: kubeadm.k8s.io/v1beta3
      kind: JoinConfiguration
      discovery:
        bootstrapToken:
          apiServerEndpoint: 198.18.2.2:6443
          token: abcdef.0123456789abcdef
          caCertHashes:
          - sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
        timeout: 5m0s
      nodeRegistration:
        name: worker-1
        criSocket: unix:///var/run/containerd/containerd.sock
        imagePullPolicy: IfNotPresent
        kubeletExtraArgs:
          node-ip: 198.18.2.3
 5. run: kubeadm join --config /etc/airlock/kubeadm-join.yaml  # output to /var/log/airlock/kubeadm-join.log
"""

CURRENT_CP_JOIN_PLAN = """\
airlock cluster join as a control-plane node: Kubernetes v1.34.1, kubeadm config kubeadm.k8s.io/v1beta4
node worker-1: address 198.18.2.3 (eth0), API endpoint 198.18.2.2:6443
registries for this node's mirrors: 198.18.2.2:5000
 1. check: this node has not joined a cluster (/etc/kubernetes/kubelet.conf)
 2. preflight: airlock's node checks
 3. record vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops, kernel.keys.root_maxkeys, kernel.keys.root_maxbytes in /etc/airlock/kernel-settings-before-cluster.json (reset restores them)
 4. write /etc/airlock/kubeadm-join.yaml (mode 0600):
      apiVersion: kubeadm.k8s.io/v1beta4
      kind: JoinConfiguration
      discovery:
        bootstrapToken:
          apiServerEndpoint: 198.18.2.2:6443
          token: abcdef.0123456789abcdef
          caCertHashes:
          - sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
      timeouts:
        discovery: 5m0s
      nodeRegistration:
        name: worker-1
        criSocket: unix:///var/run/containerd/containerd.sock
        imagePullPolicy: IfNotPresent
        kubeletExtraArgs:
        - name: node-ip
          value: 198.18.2.3
      controlPlane:
        localAPIEndpoint:
          advertiseAddress: 198.18.2.3
          bindPort: 6443
        certificateKey: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
 5. run: kubeadm join --config /etc/airlock/kubeadm-join.yaml  # output to /var/log/airlock/kubeadm-join.log
"""


def joinfile(version: str) -> JoinFile:
    return JoinFile(
        api_endpoint="198.18.2.2:6443",
        token=TOKEN,
        ca_cert_hash="sha256:" + "c" * 64,
        token_expires="2030-01-01T00:00:00Z",
        kubernetes_version=version,
        certificate_key=KEY,
        registries=("198.18.2.2:5000",),
    )


def test_seed_worker_join_dry_run_is_exact(tmp_path: Path) -> None:
    plan = plan_join(
        joinfile("v1.27.3"),
        control_plane=False,
        node=WORKER,
        options=JoinOptions(root=tmp_path, show_secrets=True),
    )
    assert plan.render() == SEED_JOIN_PLAN
    assert KEY not in plan.render()  # a worker never gets the certificate key


def test_v1_31_plus_control_plane_join_dry_run_is_exact(tmp_path: Path) -> None:
    plan = plan_join(
        joinfile("v1.34.1"),
        control_plane=True,
        node=WORKER,
        options=JoinOptions(root=tmp_path, show_secrets=True),
    )
    assert plan.render() == CURRENT_CP_JOIN_PLAN


def test_plans_and_results_hide_the_token_and_certificate_key(tmp_path: Path) -> None:
    hidden = "<bootstrap token hidden: --show-secrets prints it>"
    init = plan_init(seed(), node=CP, options=options(tmp_path))
    text = init.render()
    assert TOKEN not in text and KEY not in text
    assert f"token: {hidden}" in text
    assert "certificateKey: <certificate key hidden: --show-secrets prints it>" in text
    # what is hidden is only the secrets: the rest is the exact plan
    assert text == SEED_INIT_PLAN.replace(TOKEN, hidden).replace(
        KEY, "<certificate key hidden: --show-secrets prints it>"
    )
    result = init_cluster(seed(), options=options(tmp_path, dry_run=True), node=CP)
    dumped = json.dumps(dataclasses.asdict(result))
    assert TOKEN not in dumped and KEY not in dumped
    shown = init_cluster(
        seed(), options=options(tmp_path, dry_run=True, show_secrets=True), node=CP
    )
    assert TOKEN in shown.plan_text and KEY in shown.plan_text
    join = plan_join(
        joinfile("v1.34.1"), control_plane=True, node=WORKER, options=JoinOptions(root=tmp_path)
    )
    assert TOKEN not in join.render() and KEY not in join.render()


def test_kubeadm_log_is_private(tmp_path: Path) -> None:
    log = tmp_path / "log" / "kubeadm-init.log"
    SystemRunner().run(["echo", f"kubeadm join --token {TOKEN}"], log=log)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert TOKEN in log.read_text()


def test_control_plane_join_needs_the_certificate_key(tmp_path: Path) -> None:
    jf = joinfile("v1.27.3")
    no_key = JoinFile(**{**jf.__dict__, "certificate_key": None})
    with pytest.raises(UsageError, match="certificate key"):
        plan_join(no_key, control_plane=True, node=WORKER, options=JoinOptions(root=tmp_path))


def test_generated_configs_parse_as_yaml_with_the_expected_shape() -> None:
    for text, api in (("seed", V1BETA3), ("current", V1BETA4)):
        spec = parse_spec(preset_text(text))  # type: ignore[arg-type]
        cfg = render_init_config(
            spec, node=CP, options=InitConfigOptions(token=TOKEN, certificate_key=KEY)
        )
        docs = list(YAML(typ="safe").load_all(cfg.text))
        assert [d["kind"] for d in docs] == [
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration",
        ]
        assert {d["apiVersion"] for d in docs[:2]} == {api}
        assert (
            docs[0]["nodeRegistration"]["criSocket"] == "unix:///var/run/containerd/containerd.sock"
        )
        assert "imageRepository" not in docs[1]
        assert docs[2] == {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "systemd",
        }


def test_extra_args_map_in_v1beta3_list_in_v1beta4() -> None:
    args = {"audit-log-path": "/var/log/audit.log", "v": "2"}
    out = {}
    for text in ("seed", "current"):
        cfg = render_init_config(
            parse_spec(preset_text(text)),
            node=CP,
            options=InitConfigOptions(token=TOKEN, certificate_key=KEY, api_server_extra_args=args),
        )
        out[text] = list(YAML(typ="safe").load_all(cfg.text))[1]["apiServer"]["extraArgs"]
    assert out["seed"] == args
    assert out["current"] == [{"name": k, "value": v} for k, v in args.items()]


def test_image_repository_only_when_asked() -> None:
    cfg = render_init_config(
        seed(),
        node=CP,
        options=InitConfigOptions(
            token=TOKEN, certificate_key=KEY, image_repository="reg.lab:5000"
        ),
    )
    assert list(YAML(typ="safe").load_all(cfg.text))[1]["imageRepository"] == "reg.lab:5000"


# --- validation -------------------------------------------------------------------------------


def test_pod_subnet_overlapping_service_subnet_is_refused(tmp_path: Path) -> None:
    spec = seed(serviceSubnet="10.244.128.0/20")
    with pytest.raises(UsageError) as err:
        plan_init(spec, node=CP, options=options(tmp_path))
    assert "network.podSubnet 10.244.0.0/16 overlaps network.serviceSubnet 10.244.128.0/20" in str(
        err.value
    )
    assert err.value.hint and "serviceSubnet" in err.value.hint


def test_pod_subnet_overlapping_the_nodes_network_is_refused(tmp_path: Path) -> None:
    node = NodeFacts("cp-1", (("eth0", "10.244.7.10/24"),), "eth0", "10.244.7.10")
    with pytest.raises(UsageError, match=r"overlaps this node's network 10\.244\.7\.0/24 on eth0"):
        plan_init(seed(), node=node, options=options(tmp_path))


def test_advertise_address_not_on_the_node_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        plan_init(seed(), node=CP, options=options(tmp_path, advertise_address="198.18.2.99"))
    assert "198.18.2.99 is not an address of this node" in err.value.message
    assert "198.18.2.2 on eth0" in err.value.message


def test_given_advertise_address_on_another_interface_is_used(tmp_path: Path) -> None:
    node = NodeFacts(
        "cp-1", (("eth0", "198.18.2.2/24"), ("eth1", "198.18.0.5/24")), "eth0", "198.18.2.2"
    )
    plan = plan_init(seed(), node=node, options=options(tmp_path, advertise_address="198.18.0.5"))
    assert plan.config.advertise_address == "198.18.0.5"
    assert "advertise address 198.18.0.5 (eth1)" in plan.render()


def test_no_default_route_and_no_address_is_refused(tmp_path: Path) -> None:
    node = NodeFacts("cp-1", (("eth0", "198.18.2.2/24"),), None, None)
    with pytest.raises(NodeError, match="no default route"):
        plan_init(seed(), node=node, options=options(tmp_path))


def test_bad_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="bootstrap token"):
        plan_init(seed(), node=CP, options=options(tmp_path, token="ABCDEF.0123456789abcdef"))


def test_fresh_token_and_key_when_none_given(tmp_path: Path) -> None:
    plan = plan_init(seed(), node=CP, options=options(tmp_path, token=None, certificate_key=None))
    docs = list(YAML(typ="safe").load_all(plan.config.text))
    token = docs[0]["bootstrapTokens"][0]["token"]
    assert token != TOKEN and plan.options.token == token
    assert len(docs[0]["certificateKey"]) == 64


def test_stale_cluster_is_refused_without_force(tmp_path: Path) -> None:
    manifests = tmp_path / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    plan_init(seed(), node=CP, options=options(tmp_path))  # an empty manifests dir is no cluster
    (manifests / "kube-apiserver.yaml").write_text("x")
    with pytest.raises(NodeError) as err:
        plan_init(seed(), node=CP, options=options(tmp_path))
    assert "/etc/kubernetes/manifests/*.yaml" in err.value.message
    assert err.value.hint and "--force" in err.value.hint and "resets" in err.value.hint
    forced = plan_init(seed(), node=CP, options=options(tmp_path, force=True))
    text = forced.render()
    assert forced.reset_first
    assert " 1. run: kubeadm reset -f" in text
    assert text.index("kubeadm reset -f") < text.index("kubeadm init --config")


# --- node facts -------------------------------------------------------------------------------

ROUTES = json.dumps(
    [
        {"dst": "default", "gateway": "198.18.2.1", "dev": "eth0", "flags": []},
        {"dst": "198.18.2.0/24", "dev": "eth0", "prefsrc": "198.18.2.2", "flags": []},
    ]
)
ADDRS = json.dumps(
    [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"family": "inet6", "local": "fe80::1", "prefixlen": 64},
                {"family": "inet", "local": "198.18.2.2", "prefixlen": 24},
            ],
        },
        {
            "ifname": "eth1",
            "addr_info": [{"family": "inet", "local": "198.18.0.5", "prefixlen": 15}],
        },
    ]
)


def test_node_facts_from_ip_json() -> None:
    facts = node_facts_from_ip(hostname="Node-A", route_json=ROUTES, addr_json=ADDRS)
    assert facts.default_interface == "eth0"
    assert facts.default_address == "198.18.2.2"
    assert facts.node_name == "node-a"
    assert facts.interface_of("198.18.0.5") == "eth1"
    assert [str(n) for _, n in facts.networks()] == ["198.18.2.0/24", "198.18.0.0/15"]


def test_node_facts_without_default_route() -> None:
    facts = node_facts_from_ip(hostname="n", route_json="[]", addr_json=ADDRS)
    assert facts.default_address is None and facts.default_interface is None
