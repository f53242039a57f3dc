"""install_resources on a store-like source of small stand-in files packed the upstream way:
what goes where, verification before install, interrupted runs converging, user config kept."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from importlib import resources as ilr
from pathlib import Path
from typing import Any

import pytest

from airlock.blobstore import BlobStore
from airlock.errors import DigestMismatch, NodeError
from airlock.node.engine import Context, Plan, apply, plan
from airlock.node.install import (
    FileRecord,
    StoreSource,
    install_resources,
    store_source,
)
from airlock.node.units import kubelet_unit_for_local_bin, render_registry_unit

PLAT = "linux/amd64"
UPSTREAMS = ["docker.io", "registry.k8s.io"]


def script(name: str) -> bytes:
    return f"#!/bin/sh\necho {name} stand-in\n".encode()


def targz(members: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def data_file(name: str) -> bytes:
    return (ilr.files("airlock_lab") / "data" / name).read_bytes()


def bundle_files() -> dict[str, tuple[str, bytes, str]]:
    """name -> (upstream url, bytes, platform)"""
    gh = "https://github.com"
    return {
        "kubeadm": (
            "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm",
            script("kubeadm"),
            PLAT,
        ),
        "kubelet": (
            "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubelet",
            script("kubelet"),
            PLAT,
        ),
        "kubectl": (
            "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubectl",
            script("kubectl"),
            PLAT,
        ),
        "runc.amd64": (
            f"{gh}/opencontainers/runc/releases/download/v1.1.7/runc.amd64",
            script("runc"),
            PLAT,
        ),
        "crictl-v1.27.0-linux-amd64.tar.gz": (
            f"{gh}/kubernetes-sigs/cri-tools/releases/download/v1.27.0/crictl-v1.27.0-linux-amd64.tar.gz",
            targz({"crictl": (script("crictl"), 0o755)}),
            PLAT,
        ),
        "containerd-1.7.2-linux-amd64.tar.gz": (
            f"{gh}/containerd/containerd/releases/download/v1.7.2/containerd-1.7.2-linux-amd64.tar.gz",
            targz(
                {
                    "bin/containerd": (script("containerd"), 0o755),
                    "bin/ctr": (script("ctr"), 0o755),
                    "bin/containerd-shim-runc-v2": (script("shim"), 0o755),
                }
            ),
            PLAT,
        ),
        "cni-plugins-linux-amd64-v1.3.0.tgz": (
            f"{gh}/containernetworking/plugins/releases/download/v1.3.0/cni-plugins-linux-amd64-v1.3.0.tgz",
            targz(
                {
                    "./bridge": (script("bridge"), 0o755),
                    "./loopback": (script("lo"), 0o755),
                    "./LICENSE": (b"Apache\n", 0o644),
                }
            ),
            PLAT,
        ),
        "helm-v3.12.1-linux-amd64.tar.gz": (
            "https://get.helm.sh/helm-v3.12.1-linux-amd64.tar.gz",
            targz(
                {
                    "linux-amd64/helm": (script("helm"), 0o755),
                    "linux-amd64/LICENSE": (b"x\n", 0o644),
                }
            ),
            PLAT,
        ),
        "kubelet.service": (
            "https://raw.githubusercontent.com/x/kubelet.service",
            data_file("upstream-kubelet.service"),
            "",
        ),
        "10-kubeadm.conf": (
            "https://raw.githubusercontent.com/x/10-kubeadm.conf",
            data_file("upstream-10-kubeadm.conf"),
            "",
        ),
    }


def make_source(tmp: Path, files: dict[str, tuple[str, bytes, str]] | None = None) -> StoreSource:
    store = BlobStore(tmp / "store")
    records = []
    for name, (url, data, platform) in (files or bundle_files()).items():
        digest = store.put_bytes(data)
        records.append(FileRecord(name, "binary", url, digest, len(data), platform, ""))
    return StoreSource(store, records)


def resources_for(source: StoreSource, root: Path) -> list:  # type: ignore[type-arg]
    return install_resources(
        source,
        root=root,
        registry_addrs=["127.0.0.1:5000", "https://198.18.1.2:5000"],
        sandbox_image="registry.k8s.io/pause:3.9",
        upstreams=UPSTREAMS,
        platform=PLAT,
    )


def test_install_places_everything_and_converges(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    source = make_source(tmp_path)
    ctx = Context(root=root)
    first = plan(resources_for(source, root), ctx)
    result = apply(first, ctx)
    for path in [
        "usr/local/bin/kubeadm",
        "usr/local/bin/kubelet",
        "usr/local/bin/kubectl",
        "usr/local/bin/crictl",
        "usr/local/bin/helm",
        "usr/local/bin/containerd",
        "usr/local/bin/ctr",
        "usr/local/bin/containerd-shim-runc-v2",
        "usr/local/sbin/runc",
        "opt/cni/bin/bridge",
        "opt/cni/bin/loopback",
    ]:
        assert (root / path).stat().st_mode & 0o777 == 0o755, path
    assert (root / "opt/cni/bin/LICENSE").stat().st_mode & 0o777 == 0o644
    assert (root / "usr/local/bin/helm").read_bytes() == script("helm")
    assert (
        "runtime-endpoint: unix:///run/containerd/containerd.sock"
        in (root / "etc/crictl.yaml").read_text()
    )
    dropin = (root / "etc/systemd/system/kubelet.service.d/10-kubeadm.conf").read_text()
    assert "ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in dropin
    assert "/usr/bin/" not in dropin
    assert (
        "ExecStart=/usr/local/bin/kubelet\n"
        in (root / "etc/systemd/system/kubelet.service").read_text()
    )
    reg = (root / "etc/systemd/system/airlock-registry.service").read_text()
    assert (
        "ExecStart=/usr/local/bin/airlock registry serve --store /var/lib/airlock/store "
        "--listen 127.0.0.1:5000\n" in reg
    )
    assert "Before=containerd.service kubelet.service" in reg
    hosts = (root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
    assert '[host."http://127.0.0.1:5000/v2/registry.k8s.io"]' in hosts
    assert '[host."https://198.18.1.2:5000/v2/registry.k8s.io"]' in hosts
    assert (root / "etc/containerd/certs.d/docker.io/hosts.toml").exists()
    config = (root / "etc/containerd/config.toml").read_text()
    assert 'config_path = "/etc/containerd/certs.d"' in config and "SystemdCgroup = true" in config
    for unit in ["airlock-registry.service", "containerd.service", "kubelet.service"]:
        link = root / "etc/systemd/system/multi-user.target.wants" / unit
        assert os.readlink(link) == f"/etc/systemd/system/{unit}"
    assert "systemctl restart containerd.service" in result.recorded
    again = plan(resources_for(source, root), Context(root=root))
    assert again.empty, again.render()


def test_tampered_binary_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    source = make_source(tmp_path)
    kubelet = next(f for f in source.files() if f.name == "kubelet")
    blob = source.store.path(kubelet.digest)
    blob.write_bytes(blob.read_bytes() + b"# evil\n")
    with pytest.raises(DigestMismatch) as err:
        resources_for(source, root)
    assert "kubelet" in err.value.message and kubelet.digest in err.value.message
    assert list(root.iterdir()) == []


def test_tampered_archive_is_refused(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    cni = next(f for f in source.files() if f.name.startswith("cni-plugins"))
    blob = source.store.path(cni.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match="cni-plugins-linux-amd64-v1.3.0.tgz"):
        resources_for(source, tmp_path / "root")


def test_interrupted_install_converges_on_rerun(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    source = make_source(tmp_path)
    ctx = Context(root=root)
    full = plan(resources_for(source, root), ctx)
    half = Plan(full.root, full.items[: len(full.items) // 2], full.pending)
    apply(half, ctx)
    # A crash also leaves temp files beside targets; they must not disturb the rerun.
    (root / "usr/local/bin/.tmp-crashed").write_bytes(b"partial")
    ctx2 = Context(root=root)
    rest = plan(resources_for(source, root), ctx2)
    assert 0 < len(rest.changes) < len(full.changes)
    apply(rest, ctx2)
    assert plan(resources_for(source, root), Context(root=root)).empty


def test_user_containerd_config_sections_kept_and_diff_shows_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(
        'version = 2\nroot = "/data/containerd"\n\n[debug]\nlevel = "debug"\n\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd]\nsnapshotter = "overlayfs"\n'
    )
    source = make_source(tmp_path)
    p = plan(resources_for(source, root), Context(root=root, dry_run=True))
    item = next(i for i in p.changes if i.resource.id == "file:/etc/containerd/config.toml")
    diff = item.change.diff.splitlines()
    assert '+config_path = "/etc/containerd/certs.d"' in diff
    assert ' level = "debug"' in diff  # context: the user's section is still there
    assert not [ln for ln in diff if ln.startswith("-") and not ln.startswith("---")]
    ctx = Context(root=root)
    apply(plan(resources_for(source, root), ctx), ctx)
    text = (root / "etc/containerd/config.toml").read_text()
    assert 'snapshotter = "overlayfs"' in text and 'level = "debug"' in text


def test_missing_tools_named(tmp_path: Path) -> None:
    files = bundle_files()
    del files["kubeadm"]
    del files["cni-plugins-linux-amd64-v1.3.0.tgz"]
    with pytest.raises(NodeError, match="no kubeadm, cni-plugins for linux/amd64"):
        resources_for(make_source(tmp_path, files), tmp_path / "root")


def test_other_platform_files_are_not_chosen(tmp_path: Path) -> None:
    files = bundle_files()
    url, data, _ = files["kubeadm"]
    files["kubeadm-arm64"] = (url.replace("amd64", "arm64"), b"arm64 kubeadm", "linux/arm64")
    root = tmp_path / "root"
    root.mkdir()
    res = resources_for(make_source(tmp_path, files), root)
    ctx = Context(root=root)
    apply(plan(res, ctx), ctx)
    assert (root / "usr/local/bin/kubeadm").read_bytes() == data


def test_store_source_reads_files_artifact(tmp_path: Path) -> None:
    """A store filled by `airlock load`: file entries come from the files artifact manifest."""
    from airlock.bundle.layout import (
        ANNOTATION_FILE_KIND,
        ANNOTATION_FILE_PLATFORM,
        ANNOTATION_FILE_URL,
        FILES_ARTIFACT_TYPE,
    )
    from airlock.oci.layout import OciLayout, canonical_json

    layout = OciLayout(tmp_path / "store")
    layout.init()
    data = script("kubeadm")
    digest = layout.put_bytes(data)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "artifactType": FILES_ARTIFACT_TYPE,
            "layers": [
                {
                    "digest": digest,
                    "size": len(data),
                    "mediaType": "x",
                    "annotations": {
                        "org.opencontainers.image.title": "kubeadm",
                        ANNOTATION_FILE_KIND: "binary",
                        ANNOTATION_FILE_URL: "https://dl.k8s.io/kubeadm",
                        ANNOTATION_FILE_PLATFORM: PLAT,
                    },
                },
                {
                    "digest": digest,
                    "size": len(data),
                    "mediaType": "y",
                    "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
                },
            ],
        }
    )
    mdigest = layout.put_bytes(manifest)
    layout.write_index(
        [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": FILES_ARTIFACT_TYPE,
                "digest": mdigest,
                "size": len(manifest),
                "annotations": {"io.airlock.bundle.name": "lab", "io.airlock.bundle.sequence": "1"},
            }
        ]
    )
    src = store_source(tmp_path / "store")
    assert [(f.name, f.platform, f.digest) for f in src.files()] == [("kubeadm", PLAT, digest)]
    with src.open(digest) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == digest.split(":")[1]


def test_kubelet_sed_is_idempotent() -> None:
    text = "ExecStart=/usr/bin/kubelet\nX=/usr/local/bin/y\n"
    once = kubelet_unit_for_local_bin(text)
    assert once == "ExecStart=/usr/local/bin/kubelet\nX=/usr/local/bin/y\n"
    assert kubelet_unit_for_local_bin(once) == once


def test_registry_unit_listens_where_told_never_everywhere_by_default() -> None:
    from airlock.verbs.node import loopback_only_warning, registry_listen_addresses

    spec: dict[str, object] = {}
    assert registry_listen_addresses([], spec, "198.18.1.2") == [
        "198.18.1.2:5000",
        "127.0.0.1:5000",
    ]
    assert registry_listen_addresses([], spec, None) == ["127.0.0.1:5000"]  # no default route
    named = {"registry": {"listen": ["198.18.1.9:5443", "0.0.0.0:5000"]}}
    assert registry_listen_addresses([], named, "198.18.1.2") == [
        "198.18.1.9:5443",
        "0.0.0.0:5000",  # every interface only because the spec says so
    ]
    assert registry_listen_addresses(["198.18.1.3:5000"], named, None) == ["198.18.1.3:5000"]
    assert loopback_only_warning(["127.0.0.1:5000"]) is not None  # said in the plan
    assert loopback_only_warning(["198.18.1.2:5000", "127.0.0.1:5000"]) is None
    unit = render_registry_unit(listen=["198.18.1.2:5000", "127.0.0.1:5000"])
    assert "--listen 198.18.1.2:5000 --listen 127.0.0.1:5000" in unit


def test_install_writes_registry_credentials_once_and_never_prints_them(tmp_path: Path) -> None:
    from airlock.node.registry_pki import RegistryCredentials, certificate_addresses

    assert certificate_addresses(["198.18.1.2:5000", "0.0.0.0:5000", "[::1]:5000"]) == [
        "198.18.1.2",
        "::1",
    ]
    root = tmp_path / "root"
    root.mkdir()
    ctx = Context(root=root)
    creds = RegistryCredentials(listen=["198.18.1.2:5000", "127.0.0.1:5000"])
    first = plan([creds], ctx)
    (item,) = first.items
    assert item.change.changed and "/etc/airlock/pki/htpasswd" in item.change.msg
    apply(first, ctx)
    pki = root / "etc/airlock/pki"
    password = (pki / "registry-password").read_text().strip()
    assert password and password not in item.change.msg
    for name in ("ca.key", "registry.key", "htpasswd", "registry-password"):
        assert (pki / name).stat().st_mode & 0o777 == 0o600, name
    assert plan([creds], ctx).empty  # a second install keeps them (clients keep working)
    assert (pki / "registry-password").read_text().strip() == password


def test_install_from_a_bundle_needs_a_key_or_says_unverified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses as dc

    import airlock.trust
    from airlock.bundle.signing import generate_keypair
    from airlock.bundle.writer import write_bundle
    from airlock.errors import VerificationError
    from airlock.verbs.node import InstallOptions, NodeResult, install_node
    from airlock_lab.bundle_testing import put_file, sample_content

    monkeypatch.setattr(airlock.trust, "TRUSTED_KEYS_DIR", tmp_path / "no-keys")
    priv, pub = generate_keypair(tmp_path / "site")
    blobs = BlobStore(tmp_path / "blobs")
    files = [
        put_file(blobs, name, data, url=url, platform=platform)
        for name, (url, data, platform) in bundle_files().items()
    ]
    content = dc.replace(sample_content(blobs, big_file_size=10), files=files)
    bundle = write_bundle(content, blobs=blobs, out=tmp_path / "out", sign_key=priv).path

    def install(**kw: Any) -> NodeResult:
        opts = InstallOptions(registry_listen=["127.0.0.1:5000"], platform=PLAT, **kw)
        return install_node(bundle, root=tmp_path / "root", dry_run=True, options=opts)

    with pytest.raises(VerificationError, match="no trusted key") as refused:
        install()
    assert refused.value.exit_code == 3
    unverified = install(allow_unsigned=True)
    assert unverified.trust == "UNVERIFIED"
    assert unverified.to_json()["trust"] == "UNVERIFIED"
    signed = install(keys=[pub])
    assert signed.trust is not None and signed.trust.startswith("signed by sha256:")
    assert not (tmp_path / "root" / "usr").exists()  # a dry run


_RUN_INSTALL = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_node_install import make_source, resources_for
from airlock.node.engine import Context, apply, plan
tmp, root = Path(sys.argv[2]), Path(sys.argv[3])
resources = resources_for(make_source(tmp), root)
if sys.argv[4] == "kill":  # archives unpacked, nothing applied yet: as a Ctrl-\\\\ or OOM kill
    os.kill(os.getpid(), signal.SIGKILL)
ctx = Context(root=root)
apply(plan(resources, ctx), ctx)
"""


def _install_process(tmp: Path, root: Path, how: str) -> int:
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp / "tmpdir")}
    (tmp / "tmpdir").mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_INSTALL, str(Path(__file__).parent), str(tmp), str(root), how],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode


def test_killed_install_leaves_its_work_under_the_state_dir_and_a_rerun_clears_it(
    tmp_path: Path,
) -> None:
    from airlock.node.scratch import SCRATCH_DIR

    root = tmp_path / "root"
    scratch = root / SCRATCH_DIR.lstrip("/")
    assert _install_process(tmp_path, root, "kill") == -9
    left = sorted(scratch.glob("work-*"))
    assert left, "the killed run unpacked its archives under the node's state directory"
    assert list(left[0].glob("archive-*/*")), "the unpacked members are there"
    assert not list((tmp_path / "tmpdir").iterdir()), "nothing in the shared temp directory"
    assert _install_process(tmp_path, root, "apply") == 0
    assert not list(scratch.iterdir()), "the rerun removed the dead run's work and its own"
    assert not list((tmp_path / "tmpdir").iterdir())
    assert (root / "usr/local/bin/containerd").read_bytes() == script("containerd")


def test_a_live_runs_work_is_never_removed(tmp_path: Path) -> None:
    from airlock.node.scratch import Scratch, remove_dead_scratch

    parent = tmp_path / "var/lib/airlock/tmp"
    dead = parent / "work-dead"
    (dead / "archive-1").mkdir(parents=True)
    (dead / ".lock").touch()  # its process is gone: nobody holds the lock
    with Scratch.create(tmp_path) as live:
        assert live.path.parent == parent and not dead.exists()
        (live.subdir("archive-") / "0").write_bytes(b"x")
        assert remove_dead_scratch(parent) == []  # another run starting now keeps it
        assert live.path.is_dir()
    assert not live.path.exists()
