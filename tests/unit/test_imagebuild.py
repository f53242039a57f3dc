"""The simulated upstream's image writer: deterministic bytes, real OCI structure."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.oci.layout import OciLayout
from airlock.oci.media import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from airlock_lab import standins
from airlock_lab.imagebuild import (
    ARCH_NOTE_LABEL,
    ImageBuilder,
    ImageConfig,
    Layer,
    Platform,
    TarEntry,
    build_seed_images,
    gzip_bytes,
    seed_image_refs,
    tar_bytes,
)

VERSIONS = ("v1.27.3", "v1.27.4")


def _json(layout: OciLayout, digest: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(layout.read(digest))
    return data


def _platform_manifests(layout: OciLayout, ref: str) -> dict[str, dict[str, Any]]:
    """`os/arch` -> manifest, for a plain manifest or an index."""
    top_desc = layout.images()[ref]
    top = _json(layout, top_desc["digest"])
    if top["mediaType"] in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        out = {}
        for d in top["manifests"]:
            out[f"{d['platform']['os']}/{d['platform']['architecture']}"] = _json(
                layout, d["digest"]
            )
        return out
    config = _json(layout, top["config"]["digest"])
    return {f"{config['os']}/{config['architecture']}": top}


@pytest.fixture(scope="module")
def seed_layout(tmp_path_factory: pytest.TempPathFactory) -> OciLayout:
    layout = OciLayout(tmp_path_factory.mktemp("seed") / "oci")
    build_seed_images(layout, kubernetes_versions=VERSIONS)
    return layout


def test_building_twice_gives_the_same_digests(seed_layout: OciLayout, tmp_path: Path) -> None:
    again = OciLayout(tmp_path / "again")
    build_seed_images(again, kubernetes_versions=VERSIONS)
    assert again.index_path.read_bytes() == seed_layout.index_path.read_bytes()
    assert again.digests() == seed_layout.digests()
    for digest in again.digests():
        again.verify(digest)


def test_index_names_every_seed_image(seed_layout: OciLayout) -> None:
    assert sorted(seed_layout.images()) == sorted(seed_image_refs(VERSIONS))
    assert "registry.k8s.io/kube-apiserver:v1.27.3" in seed_layout.images()
    assert "ghcr.io/stefanprodan/podinfo:6.4.0" in seed_layout.images()


def test_diff_ids_are_the_sha256_of_the_uncompressed_tars(seed_layout: OciLayout) -> None:
    for ref in seed_layout.images():
        for manifest in _platform_manifests(seed_layout, ref).values():
            config = _json(seed_layout, manifest["config"]["digest"])
            diff_ids = [
                "sha256:"
                + hashlib.sha256(gzip.decompress(seed_layout.read(d["digest"]))).hexdigest()
                for d in manifest["layers"]
            ]
            assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}, ref
            assert all(d["mediaType"] == OCI_LAYER_GZIP for d in manifest["layers"])
            assert manifest["mediaType"] == OCI_MANIFEST


def test_busybox_base_layer_is_shared_by_every_image(seed_layout: OciLayout) -> None:
    firsts = {
        manifest["layers"][0]["digest"]
        for ref in seed_layout.images()
        for manifest in _platform_manifests(seed_layout, ref).values()
    }
    assert len(firsts) == 1
    base = seed_layout.read(firsts.pop())
    with tarfile.open(fileobj=io.BytesIO(base), mode="r:gz") as tar:
        busybox = tar.getmember("bin/busybox")
        sh = tar.getmember("bin/sh")
        assert busybox.size == Path("/usr/bin/busybox").stat().st_size
        assert sh.issym() and sh.linkname == "busybox"
        assert tar.getmember("bin/httpd").issym()


def test_kube_images_share_the_kube_base_layer_but_not_the_top(seed_layout: OciLayout) -> None:
    layout = seed_layout
    old = _platform_manifests(layout, "registry.k8s.io/kube-apiserver:v1.27.3")["linux/amd64"]
    new = _platform_manifests(layout, "registry.k8s.io/kube-apiserver:v1.27.4")["linux/amd64"]
    proxy = _platform_manifests(layout, "registry.k8s.io/kube-proxy:v1.27.3")["linux/amd64"]
    digests = [[d["digest"] for d in m["layers"]] for m in (old, new, proxy)]
    assert digests[0][:2] == digests[1][:2] == digests[2][:2]
    assert len({d[2] for d in digests}) == 3
    sizes = [d["size"] for d in old["layers"]]
    assert 2 * 2**20 < sizes[2] < 5 * 2**20  # the pseudo-random weight of kube-apiserver


def test_multi_arch_seeds_are_indexes_with_a_labelled_arm64(seed_layout: OciLayout) -> None:
    for ref in ("registry.k8s.io/pause:3.9", "docker.io/flannel/flannel:v0.22.0"):
        top = _json(seed_layout, seed_layout.images()[ref]["digest"])
        assert top["mediaType"] == OCI_INDEX
        platforms = {
            (d["platform"]["architecture"], d["platform"].get("variant")) for d in top["manifests"]
        }
        assert platforms == {("amd64", None), ("arm64", "v8")}
        per_arch = _platform_manifests(seed_layout, ref)
        arm = _json(seed_layout, per_arch["linux/arm64"]["config"]["digest"])
        amd = _json(seed_layout, per_arch["linux/amd64"]["config"]["digest"])
        assert arm["architecture"] == "arm64" and amd["architecture"] == "amd64"
        assert "amd64 busybox" in arm["config"]["Labels"][ARCH_NOTE_LABEL]
        assert ARCH_NOTE_LABEL not in amd["config"]["Labels"]


def test_seed_size_stays_small(seed_layout: OciLayout) -> None:
    total = sum(seed_layout.size(d) for d in seed_layout.digests())
    assert 15 * 2**20 < total < 40 * 2**20


def test_podinfo_and_pause_entrypoints(seed_layout: OciLayout) -> None:
    podinfo = _platform_manifests(seed_layout, "ghcr.io/stefanprodan/podinfo:6.4.0")["linux/amd64"]
    config = _json(seed_layout, podinfo["config"]["digest"])["config"]
    assert config["ExposedPorts"] == {"9898/tcp": {}}
    top = seed_layout.read(podinfo["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(top), mode="r:gz") as tar:
        member = tar.extractfile(config["Entrypoint"][0].lstrip("/"))
        assert member is not None
        script = member.read()
    assert script.startswith(b"#!/bin/sh\n")
    assert standins.STANDIN_MARKER.encode() in script
    assert b"httpd -f -p" in script and b"podinfo stand-in" in script
    pause = _platform_manifests(seed_layout, "registry.k8s.io/pause:3.9")["linux/amd64"]
    assert _json(seed_layout, pause["config"]["digest"])["config"]["Entrypoint"] == ["/pause"]


def test_docker_flavour_writes_docker_media_types(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "oci")
    builder = ImageBuilder(layout)
    layer = Layer((TarEntry("hello", data=b"hi\n"),), "COPY hello /hello")
    built = builder.add_image(
        "docker.io/library/hello:1",
        [
            (Platform("amd64"), [layer], ImageConfig(cmd=("/hello",))),
            (Platform("arm64", variant="v8"), [layer], ImageConfig(cmd=("/hello",))),
        ],
        flavor="docker",
    )
    index = _json(layout, built.descriptor.digest)
    assert index["mediaType"] == DOCKER_MANIFEST_LIST == built.descriptor.media_type
    manifest = _json(layout, index["manifests"][0]["digest"])
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert manifest["layers"][0]["mediaType"] == DOCKER_LAYER
    assert built.layer_digests == (manifest["layers"][0]["digest"],)  # one layer, stored once


def test_gzip_header_carries_no_time_or_name() -> None:
    data = gzip_bytes(b"x" * 1000)
    assert data[4:8] == b"\0\0\0\0"  # MTIME
    assert data[3] & 0x08 == 0  # FNAME flag unset
    assert gzip.decompress(data) == b"x" * 1000


_names = st.lists(
    st.text(alphabet="abcdefgh", min_size=1, max_size=6), min_size=1, max_size=8, unique=True
)


@settings(max_examples=50, deadline=None)
@given(names=_names, data=st.data())
def test_tar_is_independent_of_entry_order(names: list[str], data: st.DataObject) -> None:
    entries = [TarEntry(f"d/{n}", data=n.encode() * 3, mode=0o755) for n in names]
    shuffled = data.draw(st.permutations(entries))
    raw = tar_bytes(entries)
    assert raw == tar_bytes(shuffled)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert members[0].isdir() and members[0].name == "d"


def test_tar_refuses_escaping_and_duplicate_paths() -> None:
    from airlock.errors import UsageError

    with pytest.raises(UsageError):
        tar_bytes([TarEntry("../etc/passwd", data=b"x")])
    with pytest.raises(UsageError):
        tar_bytes([TarEntry("a", data=b"x"), TarEntry("/a", data=b"y")])


def test_standin_executable_is_deterministic_and_weighted() -> None:
    one = standins.standin_executable(
        "registry.k8s.io/etcd:3.5.7-0", platform="linux/amd64", payload_size=4096
    )
    two = standins.standin_executable(
        "registry.k8s.io/etcd:3.5.7-0", platform="linux/amd64", payload_size=4096
    )
    arm = standins.standin_executable(
        "registry.k8s.io/etcd:3.5.7-0", platform="linux/arm64/v8", payload_size=4096
    )
    assert one == two != arm
    assert len(one) > 4096
    assert b"STAND-IN" in one.split(b"\n", 2)[1]


@pytest.mark.parametrize("version", sorted(standins.KUBEADM_IMAGES))
def test_kubeadm_standin_answers_like_kubeadm(tmp_path: Path, version: str) -> None:
    script = tmp_path / "kubeadm"
    script.write_bytes(standins.kubeadm_script(version))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(script), *args], capture_output=True, text=True, check=False
        )

    assert run("version", "-o", "short").stdout == f"{version}\n"
    listed = run("config", "images", "list", "--kubernetes-version", version)
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == standins.kubeadm_images(version)
    assert f"registry.k8s.io/kube-proxy:{version}" in listed.stdout
    custom = run(
        "config", "images", "list", "--image-repository=reg.local:5000"
    ).stdout.splitlines()
    assert custom == standins.kubeadm_images(version, repository="reg.local:5000")
    assert "reg.local:5000/coredns:v1.10.1" in custom  # kubeadm drops coredns/ off the default repo
    refused = run("init")
    assert refused.returncode != 0 and "stand-in" in refused.stderr
    unknown = run("config", "images", "list", "--kubernetes-version", "v9.9.9")
    assert unknown.returncode != 0 and "v9.9.9" in unknown.stderr
