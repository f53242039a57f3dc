"""Resolution: kubeadm's image list, CNI manifest images, chart images, the whole plan."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.errors import FetchError, UsageError
from airlock.presets import preset_text
from airlock.resolve.charts import chart_images, find_chart
from airlock.resolve.kubernetes import images_from_constants, kubeadm_images
from airlock.resolve.manifests import images_in_manifest
from airlock.resolve.plan import resolve_plan_with
from airlock.resolve.urls import apply_mirror
from airlock.spec import parse_spec

V1273 = [
    "registry.k8s.io/kube-apiserver:v1.27.3",
    "registry.k8s.io/kube-controller-manager:v1.27.3",
    "registry.k8s.io/kube-scheduler:v1.27.3",
    "registry.k8s.io/kube-proxy:v1.27.3",
    "registry.k8s.io/pause:3.9",
    "registry.k8s.io/etcd:3.5.7-0",
    "registry.k8s.io/coredns/coredns:v1.10.1",
]

FLANNEL = """\
apiVersion: v1
kind: Namespace
metadata: {name: kube-flannel}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-flannel-ds, namespace: kube-flannel}
spec:
  template:
    spec:
      initContainers:
      - name: install-cni-plugin
        image: docker.io/flannel/flannel-cni-plugin:v1.1.2
      - name: install-cni
        image: docker.io/flannel/flannel:v0.22.0
      containers:
      - name: kube-flannel
        image: docker.io/flannel/flannel:v0.22.0
"""


def make_chart(values: str, chart_yaml: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("podinfo/Chart.yaml", chart_yaml), ("podinfo/values.yaml", values)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


PODINFO = make_chart(
    "image:\n  repository: ghcr.io/stefanprodan/podinfo\n  tag: 6.4.0\n",
    "name: podinfo\nversion: 6.4.0\nappVersion: 6.4.0\nannotations:\n"
    "  artifacthub.io/images: |\n    - name: podinfo\n      image: ghcr.io/stefanprodan/podinfo:6.4.0\n",
)
INDEX = "apiVersion: v1\nentries:\n  podinfo:\n  - version: 6.4.0\n    appVersion: 6.4.0\n    urls: [podinfo-6.4.0.tgz]\n"


def test_kubeadm_table_v1_27_3_exact() -> None:
    listed = kubeadm_images("v1.27.3")
    assert list(listed.images) == V1273
    assert listed.exact and listed.source == "kubeadm table v1.27.3"


def test_kubeadm_table_patch_guess_is_marked() -> None:
    listed = kubeadm_images("v1.27.9")
    assert not listed.exact and "nearest: v1.27.4" in listed.source


def test_kubeadm_unknown_minor_refused() -> None:
    with pytest.raises(UsageError, match="no kubeadm image table for v1.12.0"):
        kubeadm_images("v1.12.0")


def test_constants_go() -> None:
    text = 'PauseVersion = "3.9"\nDefaultEtcdVersion = "3.5.7-0"\nCoreDNSVersion = "v1.10.1"\n'
    assert list(images_from_constants("v1.27.3", text).images) == V1273


def test_manifest_images_include_init_containers() -> None:
    found = images_in_manifest(FLANNEL, source="kube-flannel.yml")
    assert [i for i, _ in found] == [
        "docker.io/flannel/flannel-cni-plugin:v1.1.2",
        "docker.io/flannel/flannel:v0.22.0",
        "docker.io/flannel/flannel:v0.22.0",
    ]
    assert "initContainers[install-cni-plugin]" in found[0][1]


def test_chart_images_from_values_and_annotation() -> None:
    found = chart_images(PODINFO, chart="podinfo-6.4.0")
    assert {i for i, _ in found} == {"ghcr.io/stefanprodan/podinfo:6.4.0"}
    assert any("artifacthub.io/images" in w for _, w in found)
    assert any("values.yaml image" in w for _, w in found)


def test_chart_values_shapes() -> None:
    values = (
        "a:\n  image: {registry: quay.io, repository: x/y, tag: '1'}\n"
        "b:\n  image: docker.io/z:2\n"
        "c:\n  image: {repository: w}\n"
    )
    found = {
        i for i, _ in chart_images(make_chart(values, "name: c\nappVersion: '9'\n"), chart="c")
    }
    assert found == {"quay.io/x/y:1", "docker.io/z:2", "w:9"}


def test_find_chart_missing_version_lists_available() -> None:
    with pytest.raises(UsageError, match="available: 6.4.0"):
        find_chart(INDEX, repo="https://charts.example", name="podinfo", version="9.9.9")


@given(
    st.dictionaries(
        st.sampled_from(["https://a/", "https://a/b/", "https://c/"]),
        st.sampled_from(["http://127.0.0.1:1/a/", "http://127.0.0.1:2/"]),
        max_size=3,
    ),
    st.sampled_from(["https://a/b/c", "https://c/d", "https://e/f"]),
)
def test_apply_mirror_longest_prefix(mirrors: dict[str, str], url: str) -> None:
    out = apply_mirror(url, mirrors)
    matches = [p for p in mirrors if url.startswith(p)]
    if not matches:
        assert out == url
    else:
        best = max(matches, key=len)
        assert out == mirrors[best] + url[len(best) :]


class FakeFetcher:
    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    def get(self, url: str) -> bytes:
        self.asked.append(url)
        if url not in self.pages:
            raise FetchError(f"{url}: HTTP 404")
        return self.pages[url]


def test_plan_seed() -> None:
    fetcher = FakeFetcher(
        {
            "https://github.com/flannel-io/flannel/releases/download/v0.22.0/kube-flannel.yml": FLANNEL.encode(),
            "https://stefanprodan.github.io/podinfo/index.yaml": INDEX.encode(),
            "https://stefanprodan.github.io/podinfo/podinfo-6.4.0.tgz": PODINFO,
        }
    )
    plan = resolve_plan_with(parse_spec(preset_text("seed")), fetcher)
    images = {a.source: a for a in plan.images()}
    assert set(images) == {
        *V1273,
        "docker.io/flannel/flannel-cni-plugin:v1.1.2",
        "docker.io/flannel/flannel:v0.22.0",
        "docker.io/library/registry:2.8.2",
        "ghcr.io/stefanprodan/podinfo:6.4.0",
    }
    assert plan.image_list_source == "kubeadm table v1.27.3"
    assert any(
        "chart podinfo-6.4.0" in w for w in images["ghcr.io/stefanprodan/podinfo:6.4.0"].found_in
    )
    assert any("spec images[1]" in w for w in images["ghcr.io/stefanprodan/podinfo:6.4.0"].found_in)
    names = {(a.kind, a.name) for a in plan.files()}
    assert {
        ("binary", "kubeadm"),
        ("binary", "kubelet"),
        ("binary", "kubectl"),
        ("archive", "cni-plugins"),
        ("archive", "crictl"),
        ("archive", "containerd"),
        ("binary", "runc"),
        ("archive", "helm"),
        ("archive", "k9s"),
        ("systemd", "kubelet.service"),
        ("systemd", "10-kubeadm.conf"),
        ("manifest", "kube-flannel.yml"),
        ("chart", "podinfo"),
    } == names
    kubeadm = next(a for a in plan.files() if a.name == "kubeadm")
    assert kubeadm.source == "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm"
    assert kubeadm.checksum_url == kubeadm.source + ".sha256"
    assert [a.name for a in plan.artifacts if a.kind == "package"] == [
        "socat",
        "conntrack-tools",
        "libcgroup",
    ]


def test_plan_missing_cni_manifest_names_url() -> None:
    with pytest.raises(FetchError, match="kube-flannel.yml"):
        resolve_plan_with(parse_spec(preset_text("seed")), FakeFetcher({}))


def test_plan_adds_images_only_helm_template_shows() -> None:
    fetcher = FakeFetcher(
        {
            "https://github.com/flannel-io/flannel/releases/download/v0.22.0/kube-flannel.yml": FLANNEL.encode(),
            "https://stefanprodan.github.io/podinfo/index.yaml": INDEX.encode(),
            "https://stefanprodan.github.io/podinfo/podinfo-6.4.0.tgz": PODINFO,
        }
    )
    rendered = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo}\nspec:\n  template:\n"
        "    spec:\n      containers:\n      - {name: podinfo, image: ghcr.io/stefanprodan/podinfo:6.4.0}\n"
        "      - {name: redis, image: docker.io/library/redis:7.0.7}\n"
    )
    seen: list[str] = []

    def render(chart: bytes, label: str) -> str:
        seen.append(label)
        assert chart == PODINFO
        return rendered

    plan = resolve_plan_with(parse_spec(preset_text("seed")), fetcher, render=render)
    images = {a.source: a for a in plan.images()}
    assert seen == ["podinfo-6.4.0"]
    assert images["docker.io/library/redis:7.0.7"].found_in == (
        "helm template podinfo: Deployment default/podinfo containers[redis]",
    )


def test_helm_template_without_helm_is_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airlock.resolve.plan import helm_template

    monkeypatch.setenv("PATH", str(tmp_path))
    assert helm_template(PODINFO, "podinfo-6.4.0") is None
