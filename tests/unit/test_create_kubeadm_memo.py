"""create's memo of the fetched kubeadm's image list: keyed by the binary's digest, so a
changed kubeadm is asked again, never answered from the old one's list."""

from __future__ import annotations

import platform
from pathlib import Path

from airlock.blobstore import BlobStore
from airlock.content import FileArtifact
from airlock.verbs.create import ANNOTATION_ARTIFACT, _kubeadm_listed
from airlock_lab.bundle_testing import put_file

_HERE = "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(
    platform.machine(), platform.machine()
)


def _kubeadm(store: BlobStore, images: list[str]) -> FileArtifact:
    script = "#!/bin/sh\n" + "".join(f"echo {i}\n" for i in images)
    f = put_file(store, "kubeadm", script.encode(), platform=_HERE)
    from dataclasses import replace

    return replace(f, annotations={ANNOTATION_ARTIFACT: "kubeadm"})


def test_the_list_is_remembered_per_binary_and_asked_again_when_it_changes(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path / "cache")
    old = _kubeadm(store, ["registry.k8s.io/etcd:3.5.7-0"])
    assert _kubeadm_listed([old], store, "v1.27.3") == ["registry.k8s.io/etcd:3.5.7-0"]
    # the memo answers without running it (the binary gone from the cache proves it)
    store.path(old.digest).unlink()
    assert _kubeadm_listed([old], store, "v1.27.3") == ["registry.k8s.io/etcd:3.5.7-0"]
    new = _kubeadm(store, ["registry.k8s.io/etcd:3.5.24-0"])
    assert _kubeadm_listed([new], store, "v1.27.3") == ["registry.k8s.io/etcd:3.5.24-0"]


def test_a_failing_kubeadm_is_not_remembered(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "cache")
    bad = put_file(store, "kubeadm", b"#!/bin/sh\nexit 3\n", platform=_HERE)
    from dataclasses import replace

    bad = replace(bad, annotations={ANNOTATION_ARTIFACT: "kubeadm"})
    assert _kubeadm_listed([bad], store, "v1.27.3") is None
    assert not (store.root / "kubeadm-images").exists() or not any(
        (store.root / "kubeadm-images").iterdir()
    )
