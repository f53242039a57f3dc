"""`airlock registry push`: the store into Debian's docker-registry; skopeo reads every image
back with equal digests; a second push uploads nothing; kill -9 mid-push, then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.writer import write_bundle
from airlock.oci.layout import OciLayout
from airlock.verbs.load import LoadOptions, load_bundle
from airlock_lab.bundle_testing import sample_content
from airlock_lab.distribution import Distribution, start_distribution
from output_schemas import check_output

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


@pytest.fixture
def target(tmp_path: Path) -> Distribution:
    with start_distribution("target", tmp_path / "registry", tmp_path) as reg:
        yield reg


def _store(tmp: Path, big: int = 1 << 20) -> Path:
    blobs = BlobStore(tmp / "blobs")
    bundle = write_bundle(
        sample_content(blobs, big_file_size=big), blobs=blobs, out=tmp / "out"
    ).path
    store = tmp / "store"
    load_bundle(bundle, store_dir=store, options=LoadOptions(allow_unsigned=True))
    return store


def push(store: Path, url: str) -> dict[str, object]:
    out = subprocess.run(
        [AIRLOCK, "registry", "push", "--to", url, "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = check_output("registry push", json.loads(out.stdout))
    return data


def test_push_then_read_back_equal_digests(tmp_path: Path, target: Distribution) -> None:
    store = _store(tmp_path)
    first = push(store, target.url)
    assert first["images"] == ["docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.9"]
    assert first["blobsUploaded"] and first["blobsMounted"]  # the shared base layer is mounted
    for ref, desc in OciLayout(store).images().items():
        repo_tag = ref  # the full upstream name is the repository name on the target too
        digest = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://127.0.0.1:{target.port}/{repo_tag}",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        import hashlib

        assert "sha256:" + hashlib.sha256(digest).hexdigest() == desc["digest"], ref
    second = push(store, target.url)
    assert second["blobsUploaded"] == 0 and second["blobsMounted"] == 0


def test_kill_9_mid_push_then_rerun(tmp_path: Path, target: Distribution) -> None:
    store = _store(tmp_path, big=48 << 20)
    proc = subprocess.Popen(
        [AIRLOCK, "registry", "push", "--to", target.url, "--store", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(0.8)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    result = push(store, target.url)
    assert result["images"]
    again = push(store, target.url)
    assert again["blobsUploaded"] == 0
