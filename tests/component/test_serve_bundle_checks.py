"""`registry serve --bundle` hashes each blob once, before its first byte goes out.

The handle is opened without hashing content (what the CLI does): the registry answers at once,
and a blob whose bytes were damaged (here: rewritten in place after open, which a check at open
would not have seen either) is refused with an error naming the blob and its volume, by the
request that asks for it and by the background thread; no byte of it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.handle import Bundle
from airlock.bundle.serving import BlobChecks, BundleSource
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock.errors import VerificationError
from airlock.oci.server import RunningServer, start_server
from airlock.trust import TrustPolicy
from airlock_lab.bundle_testing import sample_content

MiB = 1 << 20


def make(tmp: Path, *, split: int | None = None) -> Path:
    blobs = BlobStore(tmp / "blobs")
    content = sample_content(blobs, name="lab", sequence=1, big_file_size=3 * MiB)
    out = tmp / f"out-{split}"
    return write_bundle(content, blobs=blobs, out=out, sign_key=tmp / "site.key", split=split).path


@pytest.fixture
def trust(tmp_path: Path) -> TrustPolicy:
    _, pub = generate_keypair(tmp_path / "site")
    return TrustPolicy((pub,))


@contextlib.contextmanager
def serving(bundle: Bundle) -> Iterator[tuple[str, BundleSource]]:
    checks = BlobChecks(bundle)
    source = BundleSource(bundle, checks)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server: RunningServer = asyncio.run_coroutine_threadsafe(
        start_server(source, host="127.0.0.1", port=0), loop
    ).result(30)
    try:
        yield f"http://127.0.0.1:{server.port}", source
    finally:
        source.__exit__(None, None, None)  # stops the background checks (as the CLI's exit)
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _image_blobs(url: str, bundle: Bundle) -> tuple[str, list[str]]:
    """(repository, [config, layers...]) of the bundle's busybox image."""
    ref = next(i.reference for i in bundle.manifest.images if "busybox" in i.reference)
    repo, tag = ref.rsplit(":", 1)
    status, body = _get(f"{url}/v2/{repo}/manifests/{tag}")
    assert status == 200
    doc = json.loads(body)
    if "manifests" in doc:
        status, body = _get(f"{url}/v2/{repo}/manifests/{doc['manifests'][0]['digest']}")
        assert status == 200
        doc = json.loads(body)
    return repo, [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]


def _damage(bundle: Bundle, digest: str) -> str:
    """Flip one byte of the blob in place (same file, same inode); the volume's name."""
    span = bundle.blob_spans(digest)[-1]
    held = os.readlink(span.path)
    with open(held, "r+b") as fh:
        fh.seek(span.offset + span.length - 1)
        last = fh.read(1)
        fh.seek(span.offset + span.length - 1)
        fh.write(bytes([last[0] ^ 0xFF]))
    return Path(held).name


@pytest.mark.parametrize("background", [False, True])
def test_a_damaged_blob_is_refused_naming_blob_and_volume(
    tmp_path: Path, trust: TrustPolicy, background: bool
) -> None:
    path = make(tmp_path)
    with (
        Bundle.open(path, trust=trust, hash_content=False) as bundle,
        serving(bundle) as (url, source),
    ):
        checks = source.checks
        assert checks is not None
        repo, blobs = _image_blobs(url, bundle)
        bad = max(blobs, key=bundle.blob_size)
        volume = _damage(bundle, bad)
        if background:  # the thread finds it first; the requests get its verdict
            source.__enter__()  # what the CLI does once the catalog is built
            deadline = time.monotonic() + 60
            while not checks.finished() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert checks.finished()
            # files are never served by the registry: the thread does not hash them
            kubeadm = next(f for f in bundle.manifest.files if f.name == "kubeadm")
            assert not checks.passed(kubeadm.digest)
        for _ in range(2):  # refused every time, not only the first
            status, body = _get(f"{url}/v2/{repo}/blobs/{bad}")
            assert status == 500
            message = json.loads(body)["errors"][0]["message"]
            assert bad in message and volume in message and "refusing to serve" in message
        status, body = _get(f"{url}/v2/{repo}/blobs/{bad}", {"Range": "bytes=0-9"})
        assert status == 500
        for good in blobs:
            if good != bad:
                status, body = _get(f"{url}/v2/{repo}/blobs/{good}")
                assert status == 200
                assert "sha256:" + hashlib.sha256(body).hexdigest() == good
                assert checks.passed(good)
        assert not checks.passed(bad)


def test_a_blob_across_volumes_is_served_after_its_check_and_a_bad_volume_is_named(
    tmp_path: Path, trust: TrustPolicy
) -> None:
    path = make(tmp_path, split=MiB)
    parts = path.parent / "lab.airlock.parts.json"
    with (
        Bundle.open(parts, trust=trust, hash_content=False) as bundle,
        serving(bundle) as (url, source),
    ):
        checks = source.checks
        assert checks is not None
        repo, blobs = _image_blobs(url, bundle)
        for digest in blobs:
            assert not checks.passed(digest)
            status, body = _get(f"{url}/v2/{repo}/blobs/{digest}")
            assert status == 200
            assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
            assert checks.passed(digest)
        kubeadm = next(f for f in bundle.manifest.files if f.name == "kubeadm")
        assert len(bundle.blob_spans(kubeadm.digest)) >= 2  # spans volumes
        volume = _damage(bundle, kubeadm.digest)
        assert volume.startswith("lab.airlock.tar.")
        problem = bundle.check_blob(kubeadm.digest)
        assert problem is not None and kubeadm.digest in problem and volume in problem


def test_a_damaged_manifest_stops_the_registry_before_it_starts(
    tmp_path: Path, trust: TrustPolicy
) -> None:
    path = make(tmp_path)
    with Bundle.open(path, trust=trust, hash_content=False) as bundle:
        image = next(i for i in bundle.manifest.images if "busybox" in i.reference)
        volume = _damage(bundle, image.digest)
        with pytest.raises(VerificationError) as err:
            BundleSource(bundle, BlobChecks(bundle))
        assert image.digest in err.value.message and volume in err.value.message
