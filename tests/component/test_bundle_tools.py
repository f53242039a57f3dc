"""The bundle against real tools: GNU tar, skopeo, umoci, OpenSSL, a full tmpfs, sha256 speed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.layout import AIRLOCK_JSON, SIGNATURE
from airlock.bundle.signing import generate_keypair, key_id
from airlock.bundle.verify import verify_bundle
from airlock.bundle.writer import WriteResult, write_bundle
from airlock.errors import AirlockError
from airlock.trust import TrustPolicy
from airlock_lab.bundle_testing import sample_content

pytestmark = pytest.mark.component
MiB = 1 << 20


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required for this test and is not installed")
    return path


def _run(*argv: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{' '.join(argv)} failed: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[WriteResult, Path]:
    root = tmp_path_factory.mktemp("bundle")
    store = BlobStore(root / "store")
    priv, pub = generate_keypair(root / "keys" / "airlock")
    result = write_bundle(
        sample_content(store, big_file_size=2 * MiB), blobs=store, out=root / "out", sign_key=priv
    )
    return result, pub


def test_gnu_tar_lists_it(bundle: tuple[WriteResult, Path]) -> None:
    result, _ = bundle
    listing = _run(_tool("tar"), "-tvf", str(result.path)).splitlines()
    assert listing[0].split()[-1] == AIRLOCK_JSON
    assert listing[1].split()[-1] == SIGNATURE
    assert all(" 0/0 " in line and "1970-01-01 00:00" in line for line in listing)
    assert len(listing) == 6 + result.blob_count


def test_skopeo_reads_it_as_an_oci_archive(
    bundle: tuple[WriteResult, Path], tmp_path: Path
) -> None:
    result, _ = bundle
    skopeo = _tool("skopeo")
    # skopeo matches the part after the archive path against org.opencontainers.image.ref.name
    src = f"oci-archive:{result.path}:registry.k8s.io/pause:3.9"
    info = json.loads(_run(skopeo, "inspect", src))
    index = json.loads(_run(skopeo, "inspect", "--raw", src))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    amd64 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    assert info["Architecture"] == "amd64" and len(info["Layers"]) == 2
    _run(skopeo, "copy", "--all", src, f"oci:{tmp_path / 'copy'}:pause")
    copied = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert copied["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "pause"
    assert (tmp_path / "copy" / "blobs" / "sha256" / amd64["digest"].split(":")[1]).is_file()
    busybox = json.loads(
        _run(skopeo, "inspect", f"oci-archive:{result.path}:docker.io/library/busybox:1.36")
    )
    assert busybox["Layers"][0] in info["Layers"]  # the shared base layer


def test_umoci_lists_the_extracted_layout(bundle: tuple[WriteResult, Path], tmp_path: Path) -> None:
    result, _ = bundle
    with tarfile.open(result.path) as tar:
        tar.extractall(tmp_path / "layout", filter="data")
    refs = _run(_tool("umoci"), "ls", "--layout", str(tmp_path / "layout")).split()
    assert set(refs) == {
        "registry.k8s.io/pause:3.9",
        "docker.io/library/busybox:1.36",
    }


def test_openssl_verifies_the_signature(bundle: tuple[WriteResult, Path], tmp_path: Path) -> None:
    result, pub = bundle
    openssl = _tool("openssl")
    with tarfile.open(result.path) as tar:
        for name in (AIRLOCK_JSON, SIGNATURE):
            (tmp_path / name).write_bytes(tar.extractfile(name).read())  # type: ignore[union-attr]
    args = ["pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin"]
    args += ["-in", AIRLOCK_JSON, "-sigfile", SIGNATURE]
    assert "Signature Verified Successfully" in _run(openssl, *args, cwd=tmp_path)
    # and openssl rejects a changed airlock.json
    data = bytearray((tmp_path / AIRLOCK_JSON).read_bytes())
    data[10] ^= 1
    (tmp_path / AIRLOCK_JSON).write_bytes(bytes(data))
    proc = subprocess.run([openssl, *args], cwd=tmp_path, capture_output=True, timeout=60)
    assert proc.returncode != 0
    der = subprocess.run(
        [openssl, "pkey", "-pubin", "-in", str(pub), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert key_id(pub) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_full_disk_leaves_no_bundle(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    content = sample_content(store, big_file_size=3 * MiB)
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    _run(_tool("mount"), "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt))
    try:
        for split in (None, MiB):
            with pytest.raises(AirlockError, match="cannot write bundle") as exc:
                write_bundle(content, blobs=store, out=mnt, split=split)
            assert exc.value.hint and "free space" in exc.value.hint
            assert list(mnt.iterdir()) == []
    finally:
        _run(_tool("umount"), str(mnt))


def test_verify_hashes_about_as_fast_as_openssl(tmp_path: Path) -> None:
    """Light check of the >= 0.9x goal (2 shared cores: assert a loose floor, print the ratio)."""
    store = BlobStore(tmp_path / "store")
    result = write_bundle(sample_content(store, big_file_size=96 * MiB), blobs=store, out=tmp_path)
    openssl = _tool("openssl")
    best_openssl = best_verify = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        _run(openssl, "dgst", "-sha256", str(result.path))
        best_openssl = min(best_openssl, time.perf_counter() - t)
        t = time.perf_counter()
        verify_bundle(result.path, trust=TrustPolicy((), allow_unsigned=True), workers=2)
        best_verify = min(best_verify, time.perf_counter() - t)
    ratio = best_openssl / best_verify
    print(f"verify throughput = {ratio:.2f}x openssl dgst -sha256")
    assert ratio > 0.5
