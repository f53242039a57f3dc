"""The release layout table: every row evidenced, ranges sound, and the URLs it gives."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict

import pytest

from airlock.errors import UsageError
from airlock.resolve.layouts import LAYOUTS, LayoutRow, layout_for, version_key
from airlock.resolve.urls import cni_manifest_url, release_files

GH = "https://github.com"


def test_every_row_cites_a_file_at_a_commit() -> None:
    assert len(LAYOUTS) >= 20
    for row in LAYOUTS:
        assert row.evidence, row.component
        for ev in row.evidence:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", ev.repo), ev
            assert ev.path and not ev.path.startswith("/"), ev
            assert re.fullmatch(r"[0-9a-f]{40}", ev.commit), ev
            assert ev.tag and ev.shows, ev


def test_ranges_of_a_component_are_ordered_and_disjoint() -> None:
    by: dict[str, list[LayoutRow]] = defaultdict(list)
    for row in LAYOUTS:
        by[row.component].append(row)
    for component, rows in by.items():
        for row in rows:
            assert row.until is None or version_key(row.since) < version_key(row.until), row
        for a, b in itertools.pairwise(rows):
            assert a.until is not None and version_key(a.until) <= version_key(b.since), component
        assert rows[-1].until is None, f"{component}: the newest row must reach up to now"


def _urls(**kw: str) -> dict[str, tuple[str, str | None]]:
    args = dict(
        kubernetes="v1.27.3", release_tools="v0.15.1", containerd="1.7.2", runc="v1.1.7",
        crictl="v1.27.0", cni_plugins="v1.3.0", helm="v3.12.2", k9s="v0.27.4",
    )  # fmt: skip
    args.update(kw)
    files = release_files(platforms=["linux/amd64"], **args)  # type: ignore[arg-type]
    return {f.name: (f.url, f.checksum_url) for f in files}


def test_seed_urls() -> None:
    u = _urls()
    assert u["kubeadm"] == (
        "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm",
        "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm.sha256",
    )
    assert u["containerd"][0] == (
        f"{GH}/containerd/containerd/releases/download/v1.7.2/containerd-1.7.2-linux-amd64.tar.gz"
    )
    assert u["runc"] == (
        f"{GH}/opencontainers/runc/releases/download/v1.1.7/runc.amd64",
        f"{GH}/opencontainers/runc/releases/download/v1.1.7/runc.sha256sum",
    )
    assert u["k9s"][1] == f"{GH}/derailed/k9s/releases/download/v0.27.4/checksums.txt"
    assert u["kubelet.service"] == (
        "https://raw.githubusercontent.com/kubernetes/release/v0.15.1/cmd/kubepkg/templates/"
        "latest/deb/kubelet/lib/systemd/system/kubelet.service",
        None,
    )
    assert u["10-kubeadm.conf"][0].endswith(
        "/v0.15.1/cmd/kubepkg/templates/latest/deb/kubeadm/10-kubeadm.conf"
    )
    assert cni_manifest_url("flannel", "v0.22.0") == (
        f"{GH}/flannel-io/flannel/releases/download/v0.22.0/kube-flannel.yml"
    )


def test_layouts_that_moved() -> None:
    u = _urls(release_tools="v0.18.0", k9s="v0.50.9", containerd="1.5.18", crictl="v1.22.0")
    assert u["kubelet.service"][0].endswith(
        "/v0.18.0/cmd/krel/templates/latest/kubelet/kubelet.service"
    )
    assert u["10-kubeadm.conf"][0].endswith(
        "/v0.18.0/cmd/krel/templates/latest/kubeadm/10-kubeadm.conf"
    )
    assert u["k9s"] == (
        f"{GH}/derailed/k9s/releases/download/v0.50.9/k9s_Linux_amd64.tar.gz",
        f"{GH}/derailed/k9s/releases/download/v0.50.9/checksums.sha256",
    )
    assert u["containerd"][0].endswith("/v1.5.18/containerd-1.5.18.linux-amd64.tar.gz")
    assert u["crictl"][1] is None  # no checksum file before v1.23.0
    assert _urls(k9s="v0.24.10")["k9s"][0].endswith("/v0.24.10/k9s_v0.24.10_Linux_amd64.tar.gz")
    assert _urls(helm="v3.0.3")["helm"][1] == (
        "https://get.helm.sh/helm-v3.0.3-linux-amd64.tar.gz.sha256"
    )
    assert _urls(release_tools="v0.16.0")["kubelet.service"][0].endswith(
        "/cmd/krel/templates/latest/kubelet/kubelet.service"
    )


def test_version_outside_every_row_is_an_error_naming_the_ranges() -> None:
    with pytest.raises(UsageError) as exc:
        layout_for("containerd", "1.2.13")
    assert "1.3.0..1.6.0" in str(exc.value) and "1.6.0..now" in str(exc.value)
    assert layout_for("release-tools", "v0.15.1").until == "v0.16.0"
