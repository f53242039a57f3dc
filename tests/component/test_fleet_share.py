"""The first node's share (`airlock bundle share`, a real server on loopback) and what the other
nodes read from it (`RemoteBundle`/`RemoteSource`, `node install --from`): the signature is
checked against the node's key, only listed blobs are served, every byte is checked while it
streams, and the access log counts the bytes each client received."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from airlock import system
from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import WriteResult, write_bundle
from airlock.errors import DigestMismatch, VerificationError
from airlock.fleet.remote import RemoteBundle, RemoteSource
from airlock.trust import UNVERIFIED, TrustPolicy
from airlock_lab.bundle_testing import sample_content

pytestmark = pytest.mark.component

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def signed(tmp_path: Path) -> tuple[WriteResult, Path, Path]:
    priv, pub = generate_keypair(tmp_path / "site")
    store = BlobStore(tmp_path / "store")
    built = write_bundle(sample_content(store), blobs=store, out=tmp_path / "out", sign_key=priv)
    return built, pub, priv


@pytest.fixture
def share(tmp_path: Path, signed: tuple[WriteResult, Path, Path]) -> Iterator[tuple[str, Path]]:
    built, pub, _ = signed
    port = _free_port()
    log = tmp_path / "access.log"
    argv = [AIRLOCK, "bundle", "share", str(built.path), "--key", str(pub)]
    proc = system.spawn([*argv, "--listen", f"127.0.0.1:{port}", "--access-log", str(log)])
    try:
        for _ in range(200):  # bounded: 20 s
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.alive(), (proc.log and proc.log.read_text()) or "share exited"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", log
    finally:
        proc.stop()


def test_node_reads_only_what_it_opens_every_byte_checked(
    share: tuple[str, Path], signed: tuple[WriteResult, Path, Path]
) -> None:
    url, log = share
    built, pub, _ = signed
    remote = RemoteBundle(url, trust=TrustPolicy((pub,)))
    assert remote.trust.startswith("signed by ")
    source = RemoteSource(remote)
    entry = min(source.files(), key=lambda f: f.size)
    with source.open(entry.digest) as fh:
        data = fh.read()
    assert len(data) == entry.size
    for _ in range(50):  # the server logs a request just after its last byte went out
        served = [json.loads(line) for line in log.read_text().splitlines()]
        if len(served) == 3:
            break
        time.sleep(0.1)
    sent = sum(e["bytes"] for e in served)
    assert sent == remote.fetched[0] < built.size  # one small file, not the bundle
    assert {e["client"] for e in served} == {"127.0.0.1"}


def test_wrong_key_and_unlisted_blob_are_refused(share: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = share
    _, other = generate_keypair(tmp_path / "other")
    with pytest.raises(VerificationError, match="does not verify"):
        RemoteBundle(url, trust=TrustPolicy((other,)))
    remote = RemoteBundle(url, trust=TrustPolicy((), allow_unsigned=True))
    assert remote.trust == UNVERIFIED
    with (
        pytest.raises(VerificationError, match="not listed"),
        remote.open_blob("sha256:" + "0" * 64),
    ):
        pass


def test_a_share_that_lies_is_caught_at_the_node(
    httpserver: HTTPServer, signed: tuple[WriteResult, Path, Path]
) -> None:
    """A share serving other bytes under a listed digest: DigestMismatch before the end."""
    built, pub, _ = signed
    import tarfile

    with tarfile.open(built.path) as tar:
        manifest = tar.extractfile("airlock.json").read()  # type: ignore[union-attr]
        signature = tar.extractfile("airlock.json.sig").read()  # type: ignore[union-attr]
    httpserver.expect_request("/airlock.json").respond_with_data(manifest)
    httpserver.expect_request("/airlock.json.sig").respond_with_data(signature)
    remote = RemoteBundle(httpserver.url_for("/"), trust=TrustPolicy((pub,)))
    entry = min(remote.manifest.files, key=lambda f: f.size)
    blob = entry.blob_digest
    size = remote.manifest.blob_map()[blob].size
    httpserver.expect_request(f"/blobs/sha256/{blob.removeprefix('sha256:')}").respond_with_data(
        b"x" * size
    )
    with pytest.raises(DigestMismatch), remote.open_blob(blob) as fh:
        fh.read()
