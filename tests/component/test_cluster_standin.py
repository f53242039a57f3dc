"""Cluster bring-up against airlock's kubeadm and helm stand-ins, run for real in temp sysroots.

The stand-ins check what they are given (the kubeadm config's API version and field names, the
join discovery, the chart and --set values) and write what kubeadm writes (a real openssl CA,
kubeconfigs, static Pod manifests). No cluster runs: readiness comes from a fake probe, and
every result must say "stand-in".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest

from airlock.cluster.apps import AppDeployOptions, deploy_app
from airlock.cluster.init import InitOptions, init_cluster, plan_init
from airlock.cluster.join import JoinOptions, join_cluster
from airlock.cluster.joinfile import ca_cert_hash, read_join_file
from airlock.cluster.kubeadm_config import (
    InitConfigOptions,
    NodeFacts,
    render_init_config,
    render_join_config,
)
from airlock.cluster.reset import ResetOptions, reset_cluster
from airlock.cluster.runner import SystemRunner
from airlock.errors import NodeError, VerificationError
from airlock.presets import preset_text
from airlock.resolve.kubernetes import kubeadm_images
from airlock.spec import Spec, parse_spec
from airlock.system import CommandResult
from airlock_lab import standins

pytestmark = pytest.mark.component

TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4
CP = NodeFacts("cp-1", (("lo", "127.0.0.1/8"), ("eth0", "198.18.2.2/24")), "eth0", "198.18.2.2")
WORKER = NodeFacts("worker-1", (("eth0", "198.18.2.3/24"),), "eth0", "198.18.2.3")
FLANNEL = "/var/lib/airlock/files/kube-flannel.yml"


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("python3", "openssl", "tar", "sh"):
        assert shutil.which(tool), f"{tool} is needed by the stand-ins: apt-get install it"


def spec_for(version: str) -> Spec:
    if version == "v1.27.3":
        return parse_spec(preset_text("seed"))
    return parse_spec(preset_text("current").replace("v1.34.1", version))


def kubeadm_standin(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"kubeadm-{version}"
    if version in standins.KUBEADM_IMAGES:
        body = standins.kubeadm_script(version)
    else:
        names = [i.removeprefix("registry.k8s.io/") for i in kubeadm_images(version).images]
        body = standins.kubeadm_script(version, images=names)
    path.write_bytes(body)
    path.chmod(0o755)
    return path


def run(argv: Sequence[str | Path], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=120,
    )


def openssl_hash(ca: Path) -> str:
    pub = subprocess.run(
        ["openssl", "x509", "-in", str(ca), "-pubkey", "-noout"], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True, check=True
    ).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def write_config(root: Path, text: str, name: str = "kubeadm.yaml") -> str:
    path = root / "etc/airlock" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"/etc/airlock/{name}"


# --- the stand-in checks the generated configs ------------------------------------------------


@pytest.mark.parametrize(
    ("version", "api"), [("v1.27.3", "v1beta3"), ("v1.31.0", "v1beta4"), ("v1.34.1", "v1beta4")]
)
def test_generated_init_config_passes_the_standin(tmp_path: Path, version: str, api: str) -> None:
    kubeadm = kubeadm_standin(tmp_path, version)
    cfg = render_init_config(
        spec_for(version),
        node=CP,
        options=InitConfigOptions(
            token=TOKEN,
            certificate_key=KEY,
            control_plane_endpoint="k8s-api.lab:6443",
            api_server_extra_args={"audit-log-maxage": "7"},
        ),
    )
    root = tmp_path / "root"
    conf = write_config(root, cfg.text)
    res = run([kubeadm, "init", "--config", conf, "--upload-certs"], KUBEADM_STANDIN_ROOT=str(root))
    assert res.returncode == 0, res.stderr
    assert f"is a valid kubeadm.k8s.io/{api} config" in res.stdout
    assert "NO control plane is running" in res.stdout
    ca = root / "etc/kubernetes/pki/ca.crt"
    assert ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert openssl_hash(ca) in res.stdout and openssl_hash(ca) == ca_cert_hash(ca.read_bytes())
    apiserver = (root / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
    assert f"image: registry.k8s.io/kube-apiserver:{version}" in apiserver
    assert "server: https://k8s-api.lab:6443" in (root / "etc/kubernetes/admin.conf").read_text()


@pytest.mark.parametrize("version", ["v1.27.3", "v1.34.1"])
@pytest.mark.parametrize("control_plane", [False, True])
def test_generated_join_config_passes_the_standin(
    tmp_path: Path, version: str, control_plane: bool
) -> None:
    kubeadm = kubeadm_standin(tmp_path, version)
    cfg = render_join_config(
        kubernetes_version=version,
        api_endpoint="198.18.2.2:6443",
        token=TOKEN,
        ca_cert_hash="sha256:" + "c" * 64,
        node=WORKER,
        certificate_key=KEY if control_plane else None,
        control_plane=control_plane,
    )
    root = tmp_path / "root"
    conf = write_config(root, cfg.text)
    res = run([kubeadm, "join", "--config", conf], KUBEADM_STANDIN_ROOT=str(root))
    assert res.returncode == 0, res.stderr
    assert "joined NOTHING" in res.stdout
    assert (root / "etc/kubernetes/kubelet.conf").exists()
    assert (root / "etc/kubernetes/manifests/etcd.yaml").exists() == control_plane


def seed_config() -> str:
    return render_init_config(
        spec_for("v1.27.3"), node=CP, options=InitConfigOptions(token=TOKEN, certificate_key=KEY)
    ).text


def current_config() -> str:
    return render_init_config(
        spec_for("v1.34.1"), node=CP, options=InitConfigOptions(token=TOKEN, certificate_key=KEY)
    ).text


def refused(tmp_path: Path, version: str, text: str) -> str:
    kubeadm = kubeadm_standin(tmp_path, version)
    root = tmp_path / "root"
    conf = write_config(root, text)
    res = run([kubeadm, "init", "--config", conf], KUBEADM_STANDIN_ROOT=str(root))
    assert res.returncode == 1, res.stdout
    assert "kubeadm-standin: init failed (airlock stand-in" in res.stderr
    assert not (root / "etc/kubernetes").exists()  # nothing written on bad input
    return res.stderr


def test_v1beta4_field_in_a_v1beta3_config_is_refused(tmp_path: Path) -> None:
    text = seed_config().replace(
        "kind: InitConfiguration\n",
        "kind: InitConfiguration\ntimeouts:\n  controlPlaneComponentHealthCheck: 4m0s\n",
    )
    err = refused(tmp_path, "v1.27.3", text)
    assert 'strict decoding error: unknown field "timeouts" in kubeadm.k8s.io/v1beta3' in err
    assert '"timeouts" is a kubeadm.k8s.io/v1beta4 field' in err


def test_v1beta3_field_in_a_v1beta4_config_is_refused(tmp_path: Path) -> None:
    text = current_config().replace(
        "kind: ClusterConfiguration\n",
        "kind: ClusterConfiguration\napiServer:\n  timeoutForControlPlane: 4m0s\n",
    )
    err = refused(tmp_path, "v1.34.1", text)
    assert 'unknown field "apiServer.timeoutForControlPlane" in kubeadm.k8s.io/v1beta4' in err
    assert "is a kubeadm.k8s.io/v1beta3 field" in err


def test_extra_args_map_in_v1beta4_is_refused(tmp_path: Path) -> None:
    text = current_config().replace(
        "  kubeletExtraArgs:\n  - name: node-ip\n    value: 198.18.2.2\n",
        "  kubeletExtraArgs:\n    node-ip: 198.18.2.2\n",
    )
    assert "node-ip: 198.18.2.2" in text
    err = refused(tmp_path, "v1.34.1", text)
    assert "nodeRegistration.kubeletExtraArgs" in err and "list of {name, value}" in err


def test_api_version_not_matching_the_kubernetes_version_is_refused(tmp_path: Path) -> None:
    text = seed_config().replace("v1.27.3", "v1.34.1")  # v1beta3 config, v1.34 cluster
    err = refused(tmp_path, "v1.34.1", text)
    assert "kubeadm.k8s.io/v1beta3 is not the config API for Kubernetes v1.34.1" in err


def test_missing_kubernetes_version_and_bad_subnets_are_refused(tmp_path: Path) -> None:
    err = refused(tmp_path, "v1.27.3", seed_config().replace("kubernetesVersion: v1.27.3\n", ""))
    assert "kubernetesVersion is required" in err
    bad = seed_config().replace("serviceSubnet: 10.96.0.0/12", "serviceSubnet: 10.244.0.0/24")
    err = refused(tmp_path / "b", "v1.27.3", bad)
    assert "podSubnet 10.244.0.0/16 overlaps serviceSubnet 10.244.0.0/24" in err


# --- init end to end --------------------------------------------------------------------------


@dataclass
class FakeProbe:
    """Reports ready after `after` polls of each kind; counts the polls."""

    after: int = 3
    polls: dict[str, int] = field(default_factory=dict)

    def _poll(self, what: str) -> bool:
        self.polls[what] = self.polls.get(what, 0) + 1
        return self.polls[what] >= self.after

    def api_server_ready(self) -> bool:
        return self._poll("api")

    def node_ready(self, node: str) -> bool:
        return self._poll(f"node:{node}")

    def coredns_ready(self) -> bool:
        return self._poll("coredns")


@dataclass
class StandinRunner:
    """kubeadm and helm run for real (the stand-ins); kubectl calls are recorded and checked."""

    root: Path
    system: SystemRunner
    kubectl_calls: list[tuple[str, ...]] = field(default_factory=list)
    applied: list[bytes] = field(default_factory=list)

    def run(
        self, argv: Sequence[str], *, log: Path | None = None, input: str | None = None
    ) -> CommandResult:
        if argv[0] == "kubectl":
            self.kubectl_calls.append(tuple(argv))
            assert argv[1:3] == ["--kubeconfig", "/etc/kubernetes/admin.conf"] or argv[1:3] == (
                "--kubeconfig",
                "/etc/kubernetes/admin.conf",
            )
            assert (self.root / "etc/kubernetes/admin.conf").exists()
            self.applied.append((self.root / argv[-1].lstrip("/")).read_bytes())
            return CommandResult(tuple(argv), 0, "recorded by the test\n", "")
        return self.system.run(argv, log=log, input=input)


def flannel_manifest(root: Path) -> tuple[bytes, str]:
    data = (resources.files("airlock_lab") / "data" / "upstream-kube-flannel.yml").read_bytes()
    path = root / FLANNEL.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data, hashlib.sha256(data).hexdigest()


def init_options(root: Path, sha: str, **kw: object) -> InitOptions:
    return InitOptions(
        cni_manifest=FLANNEL,
        cni_manifest_sha256=sha,
        root=root,
        token=TOKEN,
        certificate_key=KEY,
        registries=("198.18.2.2:5000",),
        poll_interval=0.0,
        **kw,  # type: ignore[arg-type]
    )


def runner_for(root: Path, kubeadm: Path, **env: str) -> StandinRunner:
    return StandinRunner(
        root,
        SystemRunner(
            binaries={"kubeadm": str(kubeadm)},
            env={standins.KUBEADM_STANDIN_ROOT: str(root), **env},
        ),
    )


def test_init_end_to_end_against_the_standin(tmp_path: Path) -> None:
    root = tmp_path / "cp"
    kubeadm = kubeadm_standin(tmp_path, "v1.27.3")
    manifest, sha = flannel_manifest(root)
    runner = runner_for(root, kubeadm)
    probe = FakeProbe(after=3)
    seen: list[str] = []
    preflight_saw_ca: list[bool] = []
    result = init_cluster(
        spec_for("v1.27.3"),
        options=init_options(root, sha),
        node=CP,
        runner=runner,
        probe=probe,
        preflight=lambda: preflight_saw_ca.append((root / "etc/kubernetes/pki/ca.crt").exists()),
        progress=seen.append,
    )
    # production code does not know stand-ins: the stand-in's files and the probe's readiness
    assert result.message.startswith("cluster initialised: Kubernetes v1.27.3, node cp-1 Ready")
    assert preflight_saw_ca == [False]  # the hook ran once, before kubeadm
    assert probe.polls == {"api": 3, "node:cp-1": 3, "coredns": 3}
    assert any("waiting for the API server" in s for s in seen)
    assert runner.kubectl_calls == [
        ("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "apply", "-f", FLANNEL)
    ]
    assert runner.applied == [manifest]  # the bundle's bytes, unchanged
    config = root / "etc/airlock/kubeadm-init.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    log = (root / "var/log/airlock/kubeadm-init.log").read_text()
    assert "$ kubeadm init --config /etc/airlock/kubeadm-init.yaml --upload-certs" in log
    assert "kubeadm-standin: [init] Using Kubernetes version: v1.27.3" in log
    join_path = root / "etc/airlock/join.json"
    ca = (root / "etc/kubernetes/pki/ca.crt").read_bytes()
    join = read_join_file(join_path, ca_pem=ca)
    assert join.ca_cert_hash == openssl_hash(root / "etc/kubernetes/pki/ca.crt")
    assert (join.token, join.certificate_key, join.api_endpoint) == (TOKEN, KEY, "198.18.2.2:6443")
    assert join.registries == ("198.18.2.2:5000",)


def test_edited_cni_manifest_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cp"
    _, sha = flannel_manifest(root)
    (root / FLANNEL.lstrip("/")).write_text("# edited\n")
    runner = runner_for(root, kubeadm_standin(tmp_path, "v1.27.3"))
    with pytest.raises(VerificationError, match="not the file the bundle carries"):
        init_cluster(
            spec_for("v1.27.3"),
            options=init_options(root, sha),
            node=CP,
            runner=runner,
            probe=FakeProbe(1),
        )
    assert runner.kubectl_calls == []


def test_mid_init_failure_keeps_the_log_and_force_resets_first(tmp_path: Path) -> None:
    root = tmp_path / "cp"
    kubeadm = kubeadm_standin(tmp_path, "v1.27.3")
    _, sha = flannel_manifest(root)
    failing = runner_for(root, kubeadm, **{standins.KUBEADM_STANDIN_FAIL: "init-phase-wait"})
    log = root / "var/log/airlock/kubeadm-init.log"
    with pytest.raises(NodeError) as err:
        init_cluster(
            spec_for("v1.27.3"),
            options=init_options(root, sha),
            node=CP,
            runner=failing,
            probe=FakeProbe(1),
        )
    assert str(log) in err.value.message
    assert "kubeadm init --config" in err.value.message and "exit code 1" in err.value.message
    assert (
        err.value.hint
        and "--force" in err.value.hint
        and "resets this node first" in err.value.hint
    )
    assert "error execution phase wait-control-plane" in log.read_text()
    assert not (root / "etc/airlock/join.json").exists()
    assert failing.kubectl_calls == []

    # the half-made cluster is detected: a plain rerun is refused, naming what is there
    with pytest.raises(NodeError, match="a cluster already exists") as again:
        plan_init(spec_for("v1.27.3"), node=CP, options=init_options(root, sha))
    assert "/etc/kubernetes/admin.conf" in again.value.message

    # --force resets first, then initialises
    (root / "etc/cni/net.d").mkdir(parents=True)
    (root / "etc/cni/net.d/10-flannel.conflist").write_text("{}")
    store_blob = root / "var/lib/airlock/store/blobs/sha256/ab"
    store_blob.parent.mkdir(parents=True)
    store_blob.write_bytes(b"keep me")
    result = init_cluster(
        spec_for("v1.27.3"),
        options=init_options(root, sha, force=True),
        node=CP,
        runner=runner_for(root, kubeadm),
        probe=FakeProbe(1),
    )
    assert result.reset_first
    assert result.steps_done[0].startswith("ran kubeadm reset")
    assert (
        "kubeadm-standin: [reset] Deleting files"
        in (root / "var/log/airlock/kubeadm-reset.log").read_text()
    )
    # emptied, kept: containerd watches it
    assert list((root / "etc/cni/net.d").iterdir()) == []
    assert store_blob.read_bytes() == b"keep me"
    assert (root / "etc/airlock/join.json").exists()


# --- join -------------------------------------------------------------------------------------


def make_other_ca(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(directory / "ca.key"),
            "-out",
            str(directory / "ca.crt"),
            "-days",
            "1",
            "-subj",
            "/CN=impostor",
        ],
        capture_output=True,
        check=True,
    )
    return directory / "ca.crt"


def initialised(tmp_path: Path, version: str = "v1.27.3") -> tuple[Path, Path]:
    root = tmp_path / "cp"
    kubeadm = kubeadm_standin(tmp_path, version)
    _, sha = flannel_manifest(root)
    init_cluster(
        spec_for("v1.27.3"),
        options=init_options(root, sha),
        node=CP,
        runner=runner_for(root, kubeadm),
        probe=FakeProbe(1),
    )
    return root, kubeadm


def test_join_end_to_end_against_the_standin(tmp_path: Path) -> None:
    cp, kubeadm = initialised(tmp_path)
    ca = cp / "etc/kubernetes/pki/ca.crt"
    worker = tmp_path / "worker"
    runner = SystemRunner(
        binaries={"kubeadm": str(kubeadm)},
        env={
            standins.KUBEADM_STANDIN_ROOT: str(worker),
            standins.KUBEADM_STANDIN_CLUSTER_CA: str(ca),
        },
    )
    result = join_cluster(
        cp / "etc/airlock/join.json",
        options=JoinOptions(root=worker, ca_file=ca),
        node=WORKER,
        runner=runner,
    )
    assert result.message == "joined 198.18.2.2:6443 as a worker (node worker-1)"
    assert result.registries == ("198.18.2.2:5000",)
    assert (worker / "etc/kubernetes/pki/ca.crt").read_bytes() == ca.read_bytes()
    log = (worker / "var/log/airlock/kubeadm-join.log").read_text()
    assert "matches the pinned hash" in log
    with pytest.raises(NodeError, match="already part of a cluster"):
        join_cluster(
            cp / "etc/airlock/join.json",
            options=JoinOptions(root=worker, ca_file=ca),
            node=WORKER,
            runner=runner,
        )


def test_join_with_a_foreign_ca_is_refused(tmp_path: Path) -> None:
    cp, kubeadm = initialised(tmp_path)
    other = make_other_ca(tmp_path / "other")
    worker = tmp_path / "worker"
    with pytest.raises(VerificationError, match="does not match the join file"):
        join_cluster(
            cp / "etc/airlock/join.json",
            options=JoinOptions(root=worker, ca_file=other),
            node=WORKER,
            runner=SystemRunner(binaries={"kubeadm": str(kubeadm)}),
        )
    assert not worker.exists()
    # the stand-in itself refuses the same mismatch, as kubeadm's discovery does
    cfg = render_join_config(
        kubernetes_version="v1.27.3",
        api_endpoint="198.18.2.2:6443",
        token=TOKEN,
        ca_cert_hash=ca_cert_hash((cp / "etc/kubernetes/pki/ca.crt").read_bytes()),
        node=WORKER,
    )
    conf = write_config(worker, cfg.text)
    res = run(
        [kubeadm, "join", "--config", conf],
        KUBEADM_STANDIN_ROOT=str(worker),
        KUBEADM_STANDIN_CLUSTER_CA=str(other),
    )
    assert res.returncode == 1 and "none of the public keys" in res.stderr
    assert not (worker / "etc/kubernetes/kubelet.conf").exists()


# --- reset, tokens, upgrade -------------------------------------------------------------------


def test_reset_keeps_the_store(tmp_path: Path) -> None:
    cp, kubeadm = initialised(tmp_path)
    for d in ("etc/cni/net.d", "var/lib/cni/networks/cbr0", "var/lib/kubelet/pods/x"):
        (cp / d).mkdir(parents=True, exist_ok=True)
    store = cp / "var/lib/airlock/store"
    (store / "blobs/sha256").mkdir(parents=True)
    (store / "index.json").write_text("{}")
    result = reset_cluster(
        options=ResetOptions(root=cp),
        runner=SystemRunner(
            binaries={"kubeadm": str(kubeadm)}, env={standins.KUBEADM_STANDIN_ROOT: str(cp)}
        ),
    )
    assert result.message.startswith("node reset with kubeadm")
    for gone in ("var/lib/cni", "var/lib/kubelet", "etc/kubernetes/admin.conf"):
        assert not (cp / gone).exists(), gone
    assert list((cp / "etc/cni/net.d").iterdir()) == []  # emptied, kept: containerd watches it
    assert list((cp / "etc/kubernetes/manifests").iterdir()) == []
    assert (store / "index.json").read_text() == "{}"
    # under a sysroot nothing of the host is touched: pods, iptables, links, kernel settings
    assert all("recorded, not run" in r for r in result.recorded)
    assert any("KUBE-*, FLANNEL*" in r for r in result.recorded)
    assert any(r.startswith("kernel settings") for r in result.recorded)


def test_token_create_and_upgrade_against_the_standin(tmp_path: Path) -> None:
    cp, kubeadm = initialised(tmp_path, version="v1.27.4")  # kubeadm v1.27.4, cluster v1.27.3
    env = {standins.KUBEADM_STANDIN_ROOT: str(cp)}
    res = run([kubeadm, "token", "create", "--print-join-command"], **env)
    assert res.returncode == 0, res.stderr
    words = res.stdout.split()
    assert words[:3] == ["kubeadm", "join", "198.18.2.2:6443"]
    assert words[words.index("--discovery-token-ca-cert-hash") + 1] == ca_cert_hash(
        (cp / "etc/kubernetes/pki/ca.crt").read_bytes()
    )
    plan = run([kubeadm, "upgrade", "plan"], **env)
    assert plan.returncode == 0 and "Cluster version: v1.27.3" in plan.stdout
    too_high = run([kubeadm, "upgrade", "apply", "v1.29.0", "-y"], **env)
    assert too_high.returncode == 1 and "higher than the kubeadm version" in too_high.stderr
    applied = run([kubeadm, "upgrade", "apply", "v1.27.4", "-y"], **env)
    assert applied.returncode == 0, applied.stderr
    assert "nothing was upgraded" in applied.stdout
    manifest = (cp / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
    assert "registry.k8s.io/kube-apiserver:v1.27.4" in manifest
    node = run([kubeadm, "upgrade", "node"], **env)
    assert node.returncode == 0 and "kubeadm-standin:" in node.stdout
    reset_without_force = run([kubeadm, "reset"], **env)
    assert reset_without_force.returncode == 1 and "pass -f" in reset_without_force.stderr


# --- helm -------------------------------------------------------------------------------------


def packaged_chart(path: Path, *, with_chart_yaml: bool = True) -> Path:
    src = path.parent / "src" / "podinfo"
    src.mkdir(parents=True)
    if with_chart_yaml:
        (src / "Chart.yaml").write_text("apiVersion: v2\nname: podinfo\nversion: 6.4.0\n")
    (src / "values.yaml").write_text(
        "image:\n  repository: ghcr.io/stefanprodan/podinfo\n  tag: 6.4.0\n"
    )
    subprocess.run(["tar", "-czf", str(path), "-C", str(src.parent), "podinfo"], check=True)
    return path


def helm_standin(directory: Path) -> Path:
    path = directory / "helm"
    path.write_bytes(standins.helm_script())
    path.chmod(0o755)
    return path


def test_app_deploy_against_the_helm_standin(tmp_path: Path) -> None:
    helm = helm_standin(tmp_path)
    chart = packaged_chart(tmp_path / "podinfo-6.4.0.tgz")
    result = deploy_app(
        "podinfo",
        options=AppDeployOptions(
            charts={"podinfo": chart},
            registry_images={"ghcr.io/stefanprodan/podinfo:6.4.0"},
            sets=("replicaCount=2",),
            log_dir=tmp_path / "logs",
        ),
        runner=SystemRunner(binaries={"helm": str(helm)}),
    )
    assert result.message == "deployed podinfo: chart podinfo 6.4.0"
    log = (tmp_path / "logs/helm-podinfo.log").read_text()
    assert "chart podinfo 6.4.0" in log and "replicaCount=2" in log


def test_helm_standin_checks_its_input(tmp_path: Path) -> None:
    helm = helm_standin(tmp_path)
    chart = packaged_chart(tmp_path / "ok" / "podinfo.tgz")
    broken = packaged_chart(tmp_path / "broken" / "podinfo.tgz", with_chart_yaml=False)
    ok = run([helm, "upgrade", "--install", "podinfo", chart, "--wait", "--set", "a.b=1,c=2"])
    assert ok.returncode == 0, ok.stderr
    bad_set = run([helm, "upgrade", "--install", "podinfo", chart, "--set", "a.b=1,novalue"])
    assert bad_set.returncode == 1 and 'key "novalue" has no value' in bad_set.stderr
    no_meta = run([helm, "upgrade", "--install", "podinfo", broken])
    assert no_meta.returncode == 1 and "Chart.yaml file is missing" in no_meta.stderr
    missing = run([helm, "upgrade", "--install", "podinfo", tmp_path / "nope.tgz"])
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert run([helm, "version", "--short"]).stdout.startswith(standins.HELM_VERSION)
