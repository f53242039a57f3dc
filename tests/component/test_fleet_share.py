"""The first node's share (`airlock bundle share`, a real server on loopback) and what the other
nodes read from it (`RemoteBundle`/`RemoteSource`, `node install --from`): the signature is
checked against the node's key, only listed blobs are served, every byte is checked while it
streams, and the access log counts the bytes each client received. A node keeps what it fetched
(`FETCHED_DIR`): a rerun hashes it again and fetches nothing but airlock.json and its signature;
a kept blob that no longer matches is fetched again."""

from __future__ import annotations

import contextlib
import io
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
from airlock.oci.digest import file_digest
from airlock.trust import UNVERIFIED, TrustPolicy
from airlock_lab.bundle_testing import sample_content
from wheel_bundles import run_script, wheel_bundle, write_script

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


@contextlib.contextmanager
def _sharing(bundle: Path, pub: Path, log: Path) -> Iterator[str]:
    """`airlock bundle share` on a free loopback port, until the block ends: its URL."""
    port = _free_port()
    argv = [AIRLOCK, "bundle", "share", str(bundle), "--key", str(pub)]
    proc = system.spawn([*argv, "--listen", f"127.0.0.1:{port}", "--access-log", str(log)])
    try:
        for _ in range(200):  # bounded: 20 s
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.alive(), (proc.log and proc.log.read_text()) or "share exited"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.stop()


@pytest.fixture
def share(tmp_path: Path, signed: tuple[WriteResult, Path, Path]) -> Iterator[tuple[str, Path]]:
    built, pub, _ = signed
    log = tmp_path / "access.log"
    with _sharing(built.path, pub, log) as url:
        yield url, log


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


def _served(log: Path, count: int) -> list[dict[str, object]]:
    """The access log once it has `count` entries (the server logs just after the last byte)."""
    served: list[dict[str, object]] = []
    for _ in range(50):  # bounded: 5 s
        served = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if len(served) >= count:
            break
        time.sleep(0.1)
    return served


def _read_all(source: RemoteSource) -> int:
    total = 0
    for entry in source.files():
        with source.open(entry.digest) as fh:
            data = fh.read()
        assert file_digest(io.BytesIO(data)) == entry.digest
        total += len(data)
    return total


def test_a_rerun_fetches_nothing_it_holds_and_refetches_what_changed(
    share: tuple[str, Path], signed: tuple[WriteResult, Path, Path], tmp_path: Path
) -> None:
    url, log = share
    _, pub, _ = signed
    cache = BlobStore(tmp_path / "fetched", durable=False)
    first = RemoteSource(RemoteBundle(url, trust=TrustPolicy((pub,))), cache=cache)
    _read_all(first)
    _read_all(first)  # opened twice in one run (verify, then install): fetched once
    listed = {e.blob_digest for e in first.files()}
    assert set(cache.digests()) == listed and not first.reused
    blob_requests = [e for e in _served(log, 2 + len(listed)) if "/blobs/" in str(e["path"])]
    assert len(blob_requests) == len(listed)

    # the rerun: every blob from the cache, hashed again; only airlock.json and .sig fetched
    remote = RemoteBundle(url, trust=TrustPolicy((pub,)))
    again = RemoteSource(remote, cache=cache)
    _read_all(again)
    assert again.reused == listed
    assert remote.fetched[0] - len(remote.manifest_bytes) < 4096  # the signature, no blob
    served = _served(log, 4 + len(listed))
    assert len(served) == 4 + len(listed)
    assert [e["path"] for e in served[-2:]] == ["/airlock.json", "/airlock.json.sig"]

    # a kept blob altered on disk: dropped, fetched again, and the bytes used are the right ones
    victim = sorted(listed)[0]
    cache.path(victim).write_bytes(b"not the blob")
    third = RemoteSource(RemoteBundle(url, trust=TrustPolicy((pub,))), cache=cache)
    _read_all(third)
    assert third.dropped == {victim} and third.reused == listed - {victim}
    cache.verify(victim)
    served = _served(log, 7 + len(listed))
    assert served[-1]["path"] == f"/blobs/sha256/{victim.removeprefix('sha256:')}"


def test_a_plan_uses_what_is_kept_and_keeps_nothing_new(
    share: tuple[str, Path], signed: tuple[WriteResult, Path, Path], tmp_path: Path
) -> None:
    url, _ = share
    _, pub, _ = signed
    cache = BlobStore(tmp_path / "fetched", durable=False)
    plan = RemoteSource(RemoteBundle(url, trust=TrustPolicy((pub,))), cache=cache, fill=False)
    _read_all(plan)
    assert cache.digests() == [] and not plan.reused


def test_bootstrap_from_a_share_keeps_its_wheels(tmp_path: Path) -> None:
    """`airlock-bootstrap.py --from URL --cache DIR` (fake wheels: pip fails after the fetch,
    which is enough here): a second run takes the wheels from DIR, a damaged one is fetched
    again."""
    priv, pub = generate_keypair(tmp_path / "site")
    wheels = []
    for name in ("airlock-0.1.0-py3-none-any.whl", "pip-24.0-py3-none-any.whl"):
        (tmp_path / "wheels").mkdir(exist_ok=True)
        wheels.append(tmp_path / "wheels" / name)
        wheels[-1].write_bytes(name.encode() * 1000)
    built = wheel_bundle(tmp_path, wheels, key=priv)
    log = tmp_path / "access.log"
    script = write_script(tmp_path)
    cache = tmp_path / "fetched"
    with _sharing(built.path, pub, log) as url:
        args = ["--from", url, "--key", pub, "--venv", tmp_path / "venv", "--cache", cache]
        first = run_script(script, *args)
        assert "2 wheels (" in first.stdout and "already here" not in first.stdout, first.stdout
        kept = sorted((cache / "blobs" / "sha256").iterdir())
        assert len(kept) == 2
        second = run_script(script, *args)
        assert "2 already here" in second.stdout, second.stdout + second.stderr
        kept[0].write_bytes(b"damaged")
        third = run_script(script, *args)
        assert "does not match airlock.json: fetching it again" in third.stdout, third.stdout
        assert "1 already here" in third.stdout
    paths = [str(e["path"]) for e in _served(log, 10)]
    blobs = [p for p in paths if p.startswith("/blobs/")]
    assert len(blobs) == 3  # two on the first run, none on the second, one on the third
    assert not (tmp_path / "venv").exists()  # pip failed on the fake wheels: nothing left


def test_share_as_a_unit_in_a_sysroot(
    signed: tuple[WriteResult, Path, Path], tmp_path: Path
) -> None:
    """`bundle share --unit --root DIR`: the bundle is opened (signature checked) first, then the
    unit written with the node's paths; a second run changes nothing."""
    built, pub, _ = signed
    root = tmp_path / "node"
    (root / "etc").mkdir(parents=True)
    bundle = root / "incoming" / built.path.name
    bundle.parent.mkdir()
    bundle.write_bytes(built.path.read_bytes())
    base = [AIRLOCK, "bundle", "share", str(bundle), "--listen", "127.0.0.1:5001"]
    base += ["--unit", "--root", str(root), "--json"]
    argv = [*base, "--key", str(pub)]
    _, other = generate_keypair(tmp_path / "other")
    refused = system.run([*base, "--key", str(other)], check=False, timeout=60)
    assert refused.returncode == 3 and not (root / "etc/systemd").exists()
    first = json.loads(system.run(argv, timeout=60).stdout)
    assert len(first["applied"]["changed"]) == 2
    unit = (root / "etc/systemd/system/airlock-share.service").read_text()
    assert f"bundle share /incoming/{built.path.name} --listen 127.0.0.1:5001" in unit
    again = json.loads(system.run(argv, timeout=60).stdout)
    assert again["plan"]["changes"] == [] and again["applied"] is None
