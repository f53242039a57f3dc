"""The real components, built from their Go modules: every binary reports the version it is served
under; real kubeadm and helm agree with airlock's plan and accept airlock's kubeadm configs."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from airlock.cluster.kubeadm_config import (
    InitConfigOptions,
    NodeFacts,
    render_init_config,
    render_join_config,
)
from airlock.presets import preset_text
from airlock.spec import parse_spec
from airlock_lab.components import Built, build
from airlock_lab.upstream import Upstream

pytestmark = pytest.mark.component

AIRLOCK = str(Path(__file__).parents[2] / ".venv/bin/airlock")
TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4
NODE = NodeFacts("cp-1", (("eth0", "198.18.2.2/24"),), "eth0", "198.18.2.2")
SEED_IMAGES = [
    "registry.k8s.io/kube-apiserver:v1.27.3",
    "registry.k8s.io/kube-controller-manager:v1.27.3",
    "registry.k8s.io/kube-scheduler:v1.27.3",
    "registry.k8s.io/kube-proxy:v1.27.3",
    "registry.k8s.io/pause:3.9",
    "registry.k8s.io/etcd:3.5.7-0",
    "registry.k8s.io/coredns/coredns:v1.10.1",
]


@pytest.fixture(scope="module")
def seed() -> dict[str, Built]:
    """The seed's builds (`make components` made them; here they come from the cache)."""
    return {b.recipe.name: b for b in build(("seed",))}


def run(argv: list[str], *, check: bool = False) -> str:
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    if check:
        assert out.returncode == 0, (argv, out.stderr[-2000:])
    return out.stdout + out.stderr


# (component, command, arguments, what the output holds; {v} = version, {n} = without the v)
VERSION_PROBES = [
    ("kubernetes", "kubeadm", ["version", "-o", "short"], "{v}"),
    ("kubernetes", "kubelet", ["--version"], "Kubernetes {v}"),
    ("kubernetes", "kubectl", ["version", "--client", "-o", "json"], '"gitVersion": "{v}"'),
    ("kubernetes", "kube-apiserver", ["--version"], "Kubernetes {v}"),
    ("kubernetes", "kube-controller-manager", ["--version"], "Kubernetes {v}"),
    ("kubernetes", "kube-scheduler", ["--version"], "Kubernetes {v}"),
    ("kubernetes", "kube-proxy", ["--version"], "Kubernetes {v}"),
    ("etcd", "etcd", ["--version"], "etcd Version: {n}"),
    ("etcd", "etcdctl", ["version"], "etcdctl version: {n}"),
    ("etcd", "etcdutl", ["version"], "etcdutl version: {n}"),
    ("coredns", "coredns", ["-version"], "CoreDNS-{n}"),
    ("pause", "pause", ["-v"], "pause.c v{n}"),
    ("flannel", "flanneld", ["--version"], "{v}"),
    ("flannel-cni-plugin", "flannel", [], "CNI flannel plugin {v}"),
    ("cni-plugins", "bridge", [], "CNI bridge plugin {v}"),
    ("cni-plugins", "host-local", [], "CNI host-local plugin {v}"),
    ("cni-plugins", "portmap", [], "CNI portmap plugin {v}"),
    ("helm", "helm", ["version", "--short"], "{v}"),
    ("k9s", "k9s", ["version", "--short"], "{v}"),
]


@pytest.mark.parametrize(("component", "command", "args", "expect"), VERSION_PROBES)
def test_every_binary_reports_its_version(
    seed: dict[str, Built], component: str, command: str, args: list[str], expect: str
) -> None:
    recipe = seed[component].recipe
    version = recipe.built_version or recipe.version
    out = run([str(seed[component].path(command)), *args])
    assert expect.format(v=version, n=version.lstrip("v")) in out, (command, out[-800:])


def test_every_command_of_every_recipe_is_probed(seed: dict[str, Built]) -> None:
    probed = {(c, cmd) for c, cmd, _, _ in VERSION_PROBES}
    for name, built in seed.items():
        for command in built.recipe.commands:
            if name == "cni-plugins":
                continue  # three of its eighteen stand for the rest (one build, one version)
            assert (name, command.name) in probed


def test_served_binaries_report_the_version_in_their_url(upstream: Upstream) -> None:
    for command in ("kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-proxy"):
        url = f"https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/{command}"
        args = ["version", "--client", "-o", "json"] if command == "kubectl" else ["--version"]
        if command == "kubeadm":
            args = ["version", "-o", "short"]
        assert "v1.27.3" in run([str(upstream.local_path(url)), *args]), url


def test_plan_names_exactly_what_real_kubeadm_flannel_and_helm_name(
    upstream: Upstream, seed: dict[str, Built], tmp_path: Path
) -> None:
    kubeadm = seed["kubernetes"].path("kubeadm")
    listed = run([str(kubeadm), "config", "images", "list", "--kubernetes-version", "v1.27.3"])
    assert [line for line in listed.splitlines() if line.strip()] == SEED_IMAGES
    # Flannel's images from the manifest the upstream serves (the release's own file)
    manifest = upstream.local_path(
        "https://github.com/flannel-io/flannel/releases/download/v0.22.0/kube-flannel.yml"
    )
    docs = [d for d in YAML(typ="safe").load_all(manifest.read_text()) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    flannel = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    # podinfo's image from what the real helm renders of the served chart
    chart = upstream.local_path("https://stefanprodan.github.io/podinfo/podinfo-6.4.0.tgz")
    with tarfile.open(chart) as tar:
        tar.extractall(tmp_path, filter="data")
    rendered = run([str(seed["helm"].path("helm")), "template", "demo", str(tmp_path / "podinfo")])
    helm_images = {
        c["image"]
        for d in YAML(typ="safe").load_all(rendered)
        if d and d.get("kind") == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert helm_images == {"ghcr.io/stefanprodan/podinfo:6.4.0"}
    spec = tmp_path / "airlock.yaml"
    doc: Any = YAML().load(preset_text("seed"))
    doc["sources"] = upstream.sources()
    with spec.open("w") as fh:
        YAML().dump(doc, fh)
    plan = json.loads(
        subprocess.run(
            [AIRLOCK, "plan", "-f", str(spec), "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
    )["artifacts"]
    planned = {a["source"] for a in plan if a["kind"] == "image"}
    listed_in_spec = {str(i) for i in doc.get("images", [])}  # the blog's registry image
    assert planned == set(SEED_IMAGES) | flannel | helm_images | listed_in_spec
    assert "docker.io/flannel/flannel:v0.22.0" in flannel and len(flannel) == 2


def _validate(kubeadm: Path, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """kubeadm v1.27 has no `config validate` (v1.28 adds it); `config migrate` reads the file
    the way `init` and `join` do: strict decoding (an unknown field is reported), defaulting and
    validation (a bad value fails)."""
    config = tmp_path / "kubeadm.yaml"
    config.write_text(text)
    out = str(tmp_path / "migrated.yaml")
    return subprocess.run(
        [str(kubeadm), "config", "migrate", "--old-config", str(config), "--new-config", out],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _seed_init_text() -> str:
    spec = parse_spec(preset_text("seed"))
    return render_init_config(
        spec, node=NODE, options=InitConfigOptions(token=TOKEN, certificate_key=KEY)
    ).text


def test_real_kubeadm_accepts_airlocks_init_and_join_configs(
    seed: dict[str, Built], tmp_path: Path
) -> None:
    kubeadm = seed["kubernetes"].path("kubeadm")
    join = render_join_config(
        kubernetes_version="v1.27.3",
        api_endpoint="198.18.2.2:6443",
        token=TOKEN,
        ca_cert_hash="sha256:" + "ab" * 32,
        node=NODE,
    )
    for text in (_seed_init_text(), join.text):
        result = _validate(kubeadm, text, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "error" not in result.stderr.lower(), result.stderr  # not even a strict warning
        kinds = [
            d["kind"] for d in YAML(typ="safe").load_all((tmp_path / "migrated.yaml").read_text())
        ]
        assert kinds[0] in ("InitConfiguration", "JoinConfiguration")


def test_real_kubeadm_rejects_a_wrong_field(seed: dict[str, Built], tmp_path: Path) -> None:
    kubeadm = seed["kubernetes"].path("kubeadm")
    text = _seed_init_text()
    unknown = _validate(kubeadm, text.replace("podSubnet:", "podSubnets:", 1), tmp_path)
    assert 'strict decoding error: unknown field "networking.podSubnets"' in unknown.stderr
    bad = _validate(kubeadm, text.replace("podSubnet: 10.244.0.0/16", "podSubnet: x", 1), tmp_path)
    assert bad.returncode != 0
    assert 'networking.podSubnet: Invalid value: "x"' in bad.stderr
