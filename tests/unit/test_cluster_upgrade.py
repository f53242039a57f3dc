"""`cluster upgrade`: the version rules, the store lookup and the exact plans (dry run)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.bundle.layout import (
    ANNOTATION_FILE_KIND,
    ANNOTATION_FILE_PLATFORM,
    ANNOTATION_FILE_URL,
    ANNOTATION_FILE_VERSION,
    FILES_ARTIFACT_TYPE,
)
from airlock.cluster.upgrade import (
    UpgradeOptions,
    check_upgrade_path,
    parse_version,
    store_release_files,
    upgrade_cluster,
)
from airlock.errors import NodeError, UsageError
from airlock.oci.digest import sha256_digest
from airlock.oci.layout import OciLayout, canonical_json, image_descriptor
from airlock.oci.media import ANNOTATION_TITLE, OCI_MANIFEST
from airlock.resolve.kubernetes import kubeadm_images
from airlock.system import CommandResult

PLATFORM = "linux/amd64"


def binary(tool: str, version: str, platform: str = PLATFORM) -> bytes:
    return f"#!/bin/sh\n# {tool} {version} {platform}\n".encode()


def fake_store(
    store: Path,
    version: str,
    *,
    tools: Sequence[str] = ("kubeadm", "kubelet", "kubectl"),
    platform: str = PLATFORM,
    images: bool = True,
    bundle: str = "lab",
    contents: dict[str, bytes] | None = None,
) -> None:
    """A store as `airlock load` leaves it: a files artifact manifest and image index entries."""
    layout = OciLayout(store)
    layout.init()
    layers = []
    for tool in tools:
        data = (contents or {}).get(tool) or binary(tool, version, platform)
        digest = layout.put_bytes(data)
        layers.append(
            {
                "mediaType": "application/octet-stream",
                "digest": digest,
                "size": len(data),
                "annotations": {
                    ANNOTATION_TITLE: tool,
                    ANNOTATION_FILE_KIND: "binary",
                    ANNOTATION_FILE_URL: f"https://dl.k8s.io/release/{version}/bin/"
                    f"{platform}/{tool}",
                    ANNOTATION_FILE_VERSION: version,
                    ANNOTATION_FILE_PLATFORM: platform,
                },
            }
        )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": FILES_ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "x", "size": 2},
            "layers": layers,
        }
    )
    digest = layout.put_bytes(manifest)
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "artifactType": FILES_ARTIFACT_TYPE,
            "digest": digest,
            "size": len(manifest),
            "annotations": {"io.airlock.bundle.name": bundle},
        }
    ]
    if images:
        for ref in kubeadm_images(version).images:
            entries.append(image_descriptor(ref, OCI_MANIFEST, sha256_digest(ref.encode()), 1))
    layout.merge_index(entries)


class NoRunner:
    def run(
        self, argv: Sequence[str], *, log: Path | None = None, input: str | None = None
    ) -> CommandResult:
        raise AssertionError(f"a dry run ran {argv}")


def dry(tmp: Path, target: str, current: str, role: str, **kw: object) -> str:
    options = UpgradeOptions(
        target=target,
        current=current,
        role=role,  # type: ignore[arg-type]
        node_name="cp-1",
        root=tmp / "root",
        store=tmp / "store",
        platform=PLATFORM,
        dry_run=True,
        **kw,  # type: ignore[arg-type]
    )
    result = upgrade_cluster(options=options, runner=NoRunner())
    assert result.dry_run and not result.steps_done
    return result.plan_text


def digest_of(tool: str, version: str) -> str:
    return sha256_digest(binary(tool, version))


def test_seed_patch_upgrade_plan_first_control_plane(tmp_path: Path) -> None:
    fake_store(tmp_path / "store", "v1.27.4")
    d = {t: digest_of(t, "v1.27.4") for t in ("kubeadm", "kubelet", "kubectl")}
    images = ", ".join(kubeadm_images("v1.27.4").images)
    assert dry(tmp_path, "v1.27.4", "v1.27.3", "first-control-plane") == (
        "airlock cluster upgrade: v1.27.3 -> v1.27.4 on node cp-1 (first-control-plane)\n"
        f" 1. check: the store {tmp_path / 'store'} holds {images}\n"
        f" 2. install /usr/local/bin/kubeadm: kubeadm v1.27.4 from the store ({d['kubeadm']})\n"
        " 3. run: /usr/local/bin/kubeadm upgrade plan v1.27.4"
        "  # output to /var/log/airlock/kubeadm-upgrade-plan.log\n"
        " 4. run: /usr/local/bin/kubeadm upgrade apply v1.27.4 -y"
        "  # output to /var/log/airlock/kubeadm-upgrade-apply.log\n"
        " 5. run: kubectl --kubeconfig /etc/kubernetes/admin.conf drain cp-1 --ignore-daemonsets"
        "  # move workloads away before the kubelet changes\n"
        f" 6. install /usr/local/bin/kubelet: kubelet v1.27.4 from the store ({d['kubelet']})\n"
        f" 7. install /usr/local/bin/kubectl: kubectl v1.27.4 from the store ({d['kubectl']})\n"
        " 8. restart kubelet: systemctl daemon-reload; systemctl restart kubelet"
        " (recorded, not run, under a sysroot)\n"
        " 9. run: kubectl --kubeconfig /etc/kubernetes/admin.conf uncordon cp-1"
        "  # let workloads come back\n"
    )


def test_minor_upgrade_plan_other_control_plane_and_worker(tmp_path: Path) -> None:
    fake_store(tmp_path / "store", "v1.28.0")
    d = {t: digest_of(t, "v1.28.0") for t in ("kubeadm", "kubelet", "kubectl")}
    images = ", ".join(kubeadm_images("v1.28.0").images)
    assert "registry.k8s.io/etcd:3.5.9-0" in images  # etcd moved with the minor
    common = [
        " run: kubectl --kubeconfig /etc/kubernetes/admin.conf drain cp-1 --ignore-daemonsets"
        "  # move workloads away before the kubelet changes",
        f" install /usr/local/bin/kubelet: kubelet v1.28.0 from the store ({d['kubelet']})",
        f" install /usr/local/bin/kubectl: kubectl v1.28.0 from the store ({d['kubectl']})",
        " restart kubelet: systemctl daemon-reload; systemctl restart kubelet"
        " (recorded, not run, under a sysroot)",
        " run: kubectl --kubeconfig /etc/kubernetes/admin.conf uncordon cp-1"
        "  # let workloads come back",
    ]
    node = (
        " run: /usr/local/bin/kubeadm upgrade node  # output to"
        " /var/log/airlock/kubeadm-upgrade-node.log"
    )
    kubeadm = f" install /usr/local/bin/kubeadm: kubeadm v1.28.0 from the store ({d['kubeadm']})"

    def numbered(lines: list[str]) -> str:
        return "".join(f"{n:2d}.{line}\n" for n, line in enumerate(lines, 1))

    cp = dry(tmp_path, "v1.28.0", "v1.27.4", "control-plane")
    assert cp == (
        "airlock cluster upgrade: v1.27.4 -> v1.28.0 on node cp-1 (control-plane)\n"
        + numbered(
            [f" check: the store {tmp_path / 'store'} holds {images}", kubeadm, node, *common]
        )
    )
    worker = dry(tmp_path, "v1.28.0", "v1.27.3", "worker")
    assert worker == (
        "airlock cluster upgrade: v1.27.3 -> v1.28.0 on node cp-1 (worker)\n"
        + numbered([kubeadm, node, *common])
    )
    first = dry(tmp_path, "v1.28.0", "v1.27.3", "first-control-plane")
    assert "upgrade plan v1.28.0" in first and "upgrade apply v1.28.0 -y" in first


@pytest.mark.parametrize(
    ("current", "target", "message"),
    [
        ("v1.27.3", "v1.29.0", "skips a minor version"),
        ("v1.27.3", "v1.30.2", "skips a minor version"),
        ("v1.28.0", "v1.27.4", "downgrades are not supported"),
        ("v1.27.4", "v1.27.3", "downgrades are not supported"),
        ("v1.27.3", "v2.0.0", "across major versions"),
        ("v1.27.3", "1.28.0", "is not a Kubernetes version"),
    ],
)
def test_refused_paths(tmp_path: Path, current: str, target: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        dry(tmp_path, target, current, "first-control-plane")
    if "skips" in message:
        assert err.value.hint and "v1.28.x" in err.value.hint  # names the path to take


def test_skip_hint_names_each_step() -> None:
    with pytest.raises(UsageError) as err:
        check_upgrade_path("v1.27.3", "v1.30.0")
    assert err.value.hint == (
        "upgrade in steps: v1.27.3 -> v1.28.x -> v1.29.x -> v1.30.x, each with a bundle for that"
        " version"
    )


versions = st.tuples(st.just(1), st.integers(0, 40), st.integers(0, 30))


@given(versions, versions)
def test_upgrade_path_rule(c: tuple[int, int, int], t: tuple[int, int, int]) -> None:
    cur, tgt = "v{}.{}.{}".format(*c), "v{}.{}.{}".format(*t)
    allowed = t >= c and t[1] <= c[1] + 1
    try:
        check_upgrade_path(cur, tgt)
    except UsageError:
        assert not allowed
    else:
        assert allowed
    assert parse_version(cur) == c


def test_missing_binaries_in_the_store_are_named(tmp_path: Path) -> None:
    fake_store(tmp_path / "store", "v1.27.4", tools=("kubeadm",))
    with pytest.raises(NodeError) as err:
        dry(tmp_path, "v1.27.4", "v1.27.3", "worker")
    assert "has no kubelet, kubectl v1.27.4 for linux/amd64" in err.value.message
    assert err.value.hint and "--since inventory.json" in err.value.hint


def test_store_lookup_picks_version_and_platform(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fake_store(store, "v1.27.3", bundle="a")
    fake_store(store, "v1.27.4", bundle="b")
    fake_store(store, "v1.27.4", platform="linux/arm64", bundle="c")
    got = store_release_files(store, version="v1.27.4", platform=PLATFORM)
    assert sorted(got) == ["kubeadm", "kubectl", "kubelet"]
    assert all(f.platform == PLATFORM and f.version == "v1.27.4" for f in got.values())
    assert got["kubelet"].blob.read_bytes() == binary("kubelet", "v1.27.4")
    assert store_release_files(store, version="v1.28.0", platform=PLATFORM) == {}
    assert store_release_files(tmp_path / "none", version="v1.27.4", platform=PLATFORM) == {}


def test_role_and_version_detected_from_the_node(tmp_path: Path) -> None:
    fake_store(tmp_path / "store", "v1.27.4")
    manifest = tmp_path / "root/etc/kubernetes/manifests/kube-apiserver.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("spec:\n  containers:\n  - image: registry.k8s.io/kube-apiserver:v1.27.3\n")
    options = UpgradeOptions(
        target="v1.27.4",
        node_name="cp-1",
        root=tmp_path / "root",
        store=tmp_path / "store",
        platform=PLATFORM,
        dry_run=True,
    )
    result = upgrade_cluster(options=options, runner=NoRunner())
    assert (result.current, result.role) == ("v1.27.3", "first-control-plane")
    manifest.unlink()
    with pytest.raises(NodeError, match="cannot tell this node's Kubernetes version"):
        upgrade_cluster(options=options, runner=NoRunner())


def test_upgrade_carries_the_specs_preflight_waivers(tmp_path: Path) -> None:
    fake_store(tmp_path / "store", "v1.27.4")
    text = dry(
        tmp_path, "v1.27.4", "v1.27.3", "first-control-plane",
        ignore_preflight_errors=("CRI", "ImagePull"),
    )  # fmt: skip
    assert "kubeadm upgrade apply v1.27.4 -y --ignore-preflight-errors=CRI,ImagePull" in text
    assert "kubeadm upgrade plan v1.27.4 --ignore-preflight-errors=CRI,ImagePull" in text


def test_a_binary_stored_compressed_is_installed_decompressed(tmp_path: Path) -> None:
    """Bundle format 1.1 stores files zstd-compressed; the store's blob is not the binary."""
    from airlock.bundle.compression import ANNOTATION_CONTENT_DIGEST, ANNOTATION_CONTENT_SIZE, _zstd
    from airlock.cluster.runner import StepContext, SystemRunner
    from airlock.cluster.upgrade import InstallBinary, store_release_files

    data = binary("kubeadm", "v1.28.15")
    packed = _zstd().compress(data)
    layout = OciLayout(tmp_path / "store")
    layout.init()
    stored = layout.put_bytes(packed)
    layer = {
        "mediaType": "application/octet-stream+zstd",
        "digest": stored,
        "size": len(packed),
        "annotations": {
            ANNOTATION_TITLE: "kubeadm",
            ANNOTATION_FILE_KIND: "binary",
            ANNOTATION_FILE_URL: f"https://dl.k8s.io/release/v1.28.15/bin/{PLATFORM}/kubeadm",
            ANNOTATION_FILE_VERSION: "v1.28.15",
            ANNOTATION_FILE_PLATFORM: PLATFORM,
            ANNOTATION_CONTENT_DIGEST: sha256_digest(data),
            ANNOTATION_CONTENT_SIZE: str(len(data)),
        },
    }
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": FILES_ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "x", "size": 2},
            "layers": [layer],
        }
    )
    digest = layout.put_bytes(manifest)
    layout.merge_index(
        [{"mediaType": OCI_MANIFEST, "artifactType": FILES_ARTIFACT_TYPE, "digest": digest,
          "size": len(manifest)}]
    )  # fmt: skip
    found = store_release_files(tmp_path / "store", version="v1.28.15", platform=PLATFORM)
    assert found["kubeadm"].digest == sha256_digest(data)
    ctx = StepContext(root=tmp_path / "root", runner=SystemRunner(), log_dir=tmp_path / "log")
    InstallBinary("/usr/local/bin/kubeadm", found["kubeadm"]).execute(ctx)
    assert (tmp_path / "root/usr/local/bin/kubeadm").read_bytes() == data
