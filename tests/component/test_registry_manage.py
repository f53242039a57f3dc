"""The registry's write side: off unless asked, limits, deletes, referrers, restarts and gc.

Servers run in a thread on a free loopback port (as in test_registry_server.py); the CLI
surface (`registry serve --push`, `registry certs`, `registry gc`) runs as a subprocess. The
free-space floor is tested on a tmpfs of a known size, mounted here and removed after.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_registry_server import (
    PUSH,
    Reply,
    _chunked,
    _raw,
    blob_files,
    free_port,
    request,
    running,
    upload_files,
)

from airlock.oci.digest import sha256_digest
from airlock.oci.gc import GcOptions, collect_garbage, referenced_blobs
from airlock.oci.layout import OciLayout
from airlock.oci.limits import Limits
from airlock.oci.media import OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from airlock.oci.server import RegistryOptions
from airlock.oci.sources import StoreSource

pytestmark = pytest.mark.component

NO_FLOOR = Limits(floor_bytes=0, floor_percent=0)
MANAGE = RegistryOptions(push=True, delete=True, limits=NO_FLOOR)


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    OciLayout(root).init()
    return root


def _push_blob(port: int, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    got = request(port, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data)
    assert got.status == 201, got.body
    return digest


def _manifest(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(x), "size": len(x)}
            for x in layers
        ],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def _push_image(port: int, repo: str, ref: str, config: bytes, layers: list[bytes]) -> Reply:
    for blob in (config, *layers):
        _push_blob(port, repo, blob)
    body = _manifest(config, layers)
    ref = ref or sha256_digest(body)
    return request(
        port,
        "PUT",
        f"/v2/{repo}/manifests/{ref}",
        body=body,
        headers={"Content-Type": OCI_MANIFEST},
    )


# -- off unless asked ---------------------------------------------------------------------------


def test_pull_only_and_no_deletes_by_default(store: Path) -> None:
    with running(StoreSource(OciLayout(store))) as srv:
        for method, path in (
            ("POST", "/v2/app/blobs/uploads/"),
            ("PUT", "/v2/app/manifests/v1"),
        ):
            got = request(srv.port, method, path, body=b"{}")
            assert (got.status, got.code) == (405, "UNSUPPORTED"), path
            assert "--push" in got.json()["errors"][0]["message"]
    with running(StoreSource(OciLayout(store)), options=PUSH) as srv:
        reply = _push_image(srv.port, "app", "v1", b'{"c":1}', [b"layer"])
        assert reply.status == 201
        digest = reply.headers["docker-content-digest"]
        for path in (
            f"/v2/app/manifests/{digest}",
            "/v2/app/manifests/v1",
            f"/v2/app/blobs/{sha256_digest(b'layer')}",
        ):
            got = request(srv.port, "DELETE", path)
            assert (got.status, got.code) == (405, "UNSUPPORTED"), path
            assert "--delete" in got.json()["errors"][0]["message"]
        assert request(srv.port, "GET", "/v2/app/manifests/v1").status == 200


def _airlock(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airlock", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_push_needs_tls_and_credentials(store: Path, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    made = _airlock(
        "registry", "certs", "--out", str(pki), "--address", "127.0.0.1",
        "--htpasswd-user", "ci",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    password = (pki / "registry-password").read_text().strip()
    assert password not in made.stdout + made.stderr  # the secret only with --show-secrets
    assert str(pki / "htpasswd") in made.stdout and str(pki / "registry-password") in made.stdout
    for name in ("htpasswd", "registry-password", "registry.key", "ca.key"):
        assert oct((pki / name).stat().st_mode & 0o777) == "0o600", name
    shown = _airlock(
        "registry", "certs", "--out", str(pki), "--htpasswd-user", "ci", "--show-secrets", "--json"
    )
    data = json.loads(shown.stdout)
    assert data["password"] == password and data["credentialsCreated"] is False
    # --push alone (no TLS, no credentials) is refused before anything listens
    port = free_port()
    refused = _airlock(
        "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}", "--push"
    )
    assert refused.returncode == 2, refused.stderr
    assert "--push and --delete need TLS and credentials" in refused.stderr
    tls = ["--tls-cert", str(pki / "registry.crt"), "--tls-key", str(pki / "registry.key")]
    refused = _airlock(
        "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}", "--push",
        *tls,
    )  # fmt: skip
    assert refused.returncode == 2 and "--htpasswd" in refused.stderr
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "airlock", "registry", "serve", "--store", str(store)),
            *("--listen", f"127.0.0.1:{port}", "--push", *tls),
            *(
                "--htpasswd",
                str(pki / "htpasswd"),
                "--free-floor",
                "0",
                "--free-floor-percent",
                "0",
            ),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "(pull and push)" in line, line
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        anon = request(port, "POST", "/v2/team/app/blobs/uploads/", tls=ctx)
        assert (anon.status, anon.code) == (401, "UNAUTHORIZED")
        auth = {"Authorization": "Basic " + base64.b64encode(f"ci:{password}".encode()).decode()}
        ok = request(port, "POST", "/v2/team/app/blobs/uploads/", tls=ctx, headers=auth)
        assert ok.status == 202, ok.body
        assert list((store / "uploads").iterdir())  # the authenticated upload was opened
    finally:
        proc.terminate()
        proc.wait(20)


# -- limits ------------------------------------------------------------------------------------


def test_chunked_upload_without_length_past_the_limit(store: Path) -> None:
    small = RegistryOptions(push=True, limits=Limits(upload_bytes=1 << 20, **_no_floor()))
    with running(StoreSource(OciLayout(store)), options=small) as srv:
        before = blob_files(store)
        start = request(srv.port, "POST", "/v2/app/blobs/uploads/")
        loc = start.headers["location"]
        # no Content-Length, no Content-Range: a chunked body of 1.5 MiB against a 1 MiB limit
        reply = _raw(
            srv.port,
            f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n",
            [_chunked(os.urandom(3 << 19))],
        )
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"SIZE_INVALID" in reply
        assert upload_files(store) == []  # the whole upload is gone, not only the chunk
        assert request(srv.port, "GET", loc).status == 404
        # within the limit in chunks, then one byte too many
        start = request(srv.port, "POST", "/v2/app/blobs/uploads/")
        loc = start.headers["location"]
        assert request(srv.port, "PATCH", loc, body=b"a" * (1 << 20)).status == 202
        over = request(srv.port, "PATCH", loc, body=b"b")
        assert (over.status, over.code) == (413, "SIZE_INVALID")
        assert upload_files(store) == []
        # a monolithic push that declares too much is refused before any byte is read
        big = request(
            srv.port,
            "POST",
            f"/v2/app/blobs/uploads/?digest={sha256_digest(b'x')}",
            headers={"Content-Length": str(2 << 20)},
        )
        assert (big.status, big.code) == (413, "SIZE_INVALID")
        # ... and one whose chunked body grows past the limit leaves no temp file
        data = os.urandom(3 << 19)
        reply = _raw(
            srv.port,
            f"POST /v2/app/blobs/uploads/?digest={sha256_digest(data)} HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            [_chunked(data)],
        )
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert blob_files(store) == before


def _no_floor() -> dict[str, Any]:
    return {"floor_bytes": 0, "floor_percent": 0}


def test_manifest_size_and_uploads_in_flight(store: Path) -> None:
    limits = Limits(manifest_bytes=1024, uploads_in_flight=3, **_no_floor())
    with running(
        StoreSource(OciLayout(store)), options=RegistryOptions(push=True, limits=limits)
    ) as srv:
        body = _manifest(b"{}", [], annotations={"pad": "x" * 2000})
        got = request(
            srv.port,
            "PUT",
            "/v2/app/manifests/big",
            body=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert (got.status, got.code) == (413, "SIZE_INVALID")
        opened = [request(srv.port, "POST", "/v2/app/blobs/uploads/") for _ in range(3)]
        assert [o.status for o in opened] == [202, 202, 202]
        fourth = request(srv.port, "POST", "/v2/app/blobs/uploads/")
        assert (fourth.status, fourth.code) == (429, "TOOMANYREQUESTS")
        assert fourth.headers["retry-after"].isdigit()
        # finishing (or cancelling) one frees a place
        assert request(srv.port, "DELETE", opened[0].headers["location"]).status == 204
        assert request(srv.port, "POST", "/v2/app/blobs/uploads/").status == 202


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a filesystem whose free space the test controls."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the free-space test (run as root): {done.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_at_its_floor(small_fs: Path) -> None:
    root = small_fs / "store"
    OciLayout(root).init()
    # the defaults (2 GiB or 5 %) put a 64 MiB filesystem below its floor: every push refused
    with running(StoreSource(OciLayout(root)), options=RegistryOptions(push=True)) as srv:
        got = request(srv.port, "POST", "/v2/app/blobs/uploads/")
        assert (got.status, got.code) == (403, "DENIED")
        assert "free-space floor" in got.json()["errors"][0]["message"]
        assert request(srv.port, "GET", "/v2/").status == 200  # pulls go on
    # a 40 MiB floor: a 32 MiB chunked body with no length crosses it midway and is dropped
    floor = RegistryOptions(push=True, limits=Limits(floor_bytes=40 << 20, floor_percent=0))
    with running(StoreSource(OciLayout(root)), options=floor) as srv:
        start = request(srv.port, "POST", "/v2/app/blobs/uploads/")
        assert start.status == 202, start.body
        reply = _raw(
            srv.port,
            f"PATCH {start.headers['location']} HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            [_chunked(os.urandom(32 << 20))],
        )
        assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
        assert b"DENIED" in reply
        assert upload_files(root) == []
        assert [n for n in blob_files(root) if n.startswith(".tmp-")] == []
        assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize > 60 << 20


# -- deletes, referrers, restarts -------------------------------------------------------------


def test_delete_keeps_the_store_consistent(store: Path) -> None:
    with running(StoreSource(OciLayout(store)), options=MANAGE) as srv:
        port = srv.port
        reply = _push_image(port, "app", "v1", b'{"c":"delete"}', [b"layer-d"])
        digest = reply.headers["docker-content-digest"]
        body = _manifest(b'{"c":"delete"}', [b"layer-d"])
        for tag in ("v2", "v3"):
            put = request(
                port, "PUT", f"/v2/app/manifests/{tag}", body=body,
                headers={"Content-Type": OCI_MANIFEST},
            )  # fmt: skip
            assert put.status == 201
        # a tag delete removes the tag only: the manifest still resolves by digest
        assert request(port, "DELETE", "/v2/app/manifests/v1").status == 202
        assert request(port, "GET", "/v2/app/manifests/v1").status == 404
        assert request(port, "GET", f"/v2/app/manifests/{digest}").status == 200
        assert request(port, "GET", "/v2/app/tags/list").json()["tags"] == ["v2", "v3"]
        # a blob a manifest still names is not deleted
        layer = sha256_digest(b"layer-d")
        held = request(port, "DELETE", f"/v2/app/blobs/{layer}")
        assert (held.status, held.code) == (405, "UNSUPPORTED")
        # deleting the manifest removes every tag on it
        assert request(port, "DELETE", f"/v2/app/manifests/{digest}").status == 202
        assert request(port, "GET", f"/v2/app/manifests/{digest}").status == 404
        assert request(port, "GET", "/v2/app/manifests/v2").status == 404
        tags = request(port, "GET", "/v2/app/tags/list")
        assert (tags.status, tags.json()["tags"]) == (200, [])
        assert request(port, "DELETE", f"/v2/app/manifests/{digest}").status == 404
        # now the blob can go from the repository; its bytes wait for gc
        assert request(port, "DELETE", f"/v2/app/blobs/{layer}").status == 202
        assert request(port, "GET", f"/v2/app/blobs/{layer}").status == 404
        assert request(port, "DELETE", f"/v2/app/blobs/{layer}").status == 404
        assert OciLayout(store).has(layer)
    entries = OciLayout(store).manifests()
    assert all(e["digest"] != digest for e in entries)
    result = collect_garbage(store, options=GcOptions(dry_run=False, grace_seconds=0))
    assert layer in result.removed and not OciLayout(store).has(layer)
    assert result.missing == []


def test_referrers_and_digest_pushes_survive_a_restart(store: Path) -> None:
    config, layer = b'{"c":"subject"}', b"subject-layer"
    with running(StoreSource(OciLayout(store)), options=MANAGE) as srv:
        port = srv.port
        subject = _push_image(port, "app", "v1", config, [layer]).headers["docker-content-digest"]
        subject_size = len(_manifest(config, [layer]))
        _push_blob(port, "app", b"{}")
        sig = _push_blob(port, "app", b"signature bytes")
        refs = []
        for kind in ("application/vnd.example.sig", "application/vnd.example.sbom"):
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": kind,
                    "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(b"{}"), "size": 2},
                    "layers": [{"mediaType": kind, "digest": sig, "size": 15}],
                    "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
                    "annotations": {"org.example.kind": kind},
                }
            ).encode()
            digest = sha256_digest(body)
            put = request(
                port, "PUT", f"/v2/app/manifests/{digest}", body=body,
                headers={"Content-Type": OCI_MANIFEST},
            )  # fmt: skip
            assert put.status == 201 and put.headers["oci-subject"] == subject
            refs.append((kind, digest))
        untagged = _push_image(port, "app", "", b'{"c":"untagged"}', [b"untagged-layer"])
        assert untagged.status == 201
    # a new server on the same store: tags, digest-only manifests and referrers are all there
    with running(StoreSource(OciLayout(store)), options=MANAGE) as srv:
        port = srv.port
        assert request(port, "GET", "/v2/app/tags/list").json()["tags"] == ["v1"]
        assert request(port, "GET", f"/v2/app/manifests/{refs[0][1]}").status == 200
        got = request(port, "GET", f"/v2/app/manifests/{untagged.headers['docker-content-digest']}")
        assert got.status == 200
        listing = request(port, "GET", f"/v2/app/referrers/{subject}")
        assert listing.headers["content-type"] == OCI_INDEX
        index = listing.json()
        assert index["mediaType"] == OCI_INDEX
        assert sorted(m["digest"] for m in index["manifests"]) == sorted(d for _, d in refs)
        by_digest = {m["digest"]: m for m in index["manifests"]}
        for kind, digest in refs:
            assert by_digest[digest]["artifactType"] == kind
            assert by_digest[digest]["annotations"] == {"org.example.kind": kind}
        assert "oci-filters-applied" not in listing.headers
        only = request(
            port, "GET", f"/v2/app/referrers/{subject}?artifactType=application/vnd.example.sbom"
        )
        assert only.headers["oci-filters-applied"] == "artifactType"
        assert [m["digest"] for m in only.json()["manifests"]] == [refs[1][1]]
        none = request(port, "GET", f"/v2/app/referrers/{sha256_digest(b'nothing')}")
        assert (none.status, none.json()["manifests"]) == (200, [])
        bad = request(port, "GET", "/v2/app/referrers/sha256:abc")
        assert (bad.status, bad.code) == (400, "DIGEST_INVALID")
        # a referrer deleted is gone from the listing
        assert request(port, "DELETE", f"/v2/app/manifests/{refs[0][1]}").status == 202
        after = request(port, "GET", f"/v2/app/referrers/{subject}").json()["manifests"]
        assert [m["digest"] for m in after] == [refs[1][1]]
    # pushed by digest: an entry with its repository, not an image name other tools would list
    assert set(OciLayout(store).images()) == {"app:v1"}


def test_a_push_cannot_pose_as_a_bundle_files_artifact(store: Path) -> None:
    with running(StoreSource(OciLayout(store)), options=MANAGE) as srv:
        _push_blob(srv.port, "app", b"{}")
        script = b"#!/bin/sh\necho not kubelet\n"
        kubelet = _push_blob(srv.port, "app", script)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.airlock.files.v1",
                "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(b"{}"), "size": 2},
                "layers": [
                    {
                        "mediaType": "application/octet-stream",
                        "digest": kubelet,
                        "size": len(script),
                    }
                ],
            }
        ).encode()
        for ref in ("files", sha256_digest(body)):
            got = request(
                srv.port, "PUT", f"/v2/app/manifests/{ref}", body=body,
                headers={"Content-Type": OCI_MANIFEST},
            )  # fmt: skip
            assert (got.status, got.code) == (403, "DENIED"), got.body
    assert OciLayout(store).manifests() == []


def test_blob_links_survive_a_restart(store: Path) -> None:
    """Blobs uploaded or mounted before their manifest stay in their repository across a
    restart (the registry keeps them in a log in the store), and so do their deletions."""
    with running(StoreSource(OciLayout(store)), options=MANAGE) as srv:
        kept = _push_blob(srv.port, "team/app", b"uploaded before the restart")
        gone = _push_blob(srv.port, "team/app", b"deleted before the restart")
        mounted = request(srv.port, "POST", f"/v2/team/other/blobs/uploads/?mount={kept}")
        assert mounted.status == 201
        assert request(srv.port, "DELETE", f"/v2/team/app/blobs/{gone}").status == 202
    # a torn last line (a crash mid-append) is skipped, the rest replayed
    with (store / "airlock" / "registry-links.jsonl").open("ab") as fh:
        fh.write(b'{"op": "+", "repo": "team/app", "dig')
    with running(StoreSource(OciLayout(store))) as srv:  # pull-only: reads, never writes
        assert request(srv.port, "GET", f"/v2/team/app/blobs/{kept}").status == 200
        assert request(srv.port, "GET", f"/v2/team/other/blobs/{kept}").status == 200
        assert request(srv.port, "GET", f"/v2/team/app/blobs/{gone}").status == 404
        assert request(srv.port, "GET", "/v2/team/app/tags/list").json()["tags"] == []
    with running(StoreSource(OciLayout(store)), options=MANAGE) as srv:  # compacts the log
        assert request(srv.port, "GET", f"/v2/team/app/blobs/{kept}").status == 200
    lines = (store / "airlock" / "registry-links.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["repo"] for line in lines) == ["team/app", "team/other"]


def test_mount_without_from_finds_the_blob(store: Path) -> None:
    with running(StoreSource(OciLayout(store)), options=MANAGE) as srv:
        digest = _push_blob(srv.port, "team/one", b"shared layer")
        got = request(srv.port, "POST", f"/v2/team/two/blobs/uploads/?mount={digest}")
        assert (got.status, got.headers["location"]) == (201, f"/v2/team/two/blobs/{digest}")
        assert request(srv.port, "GET", f"/v2/team/two/blobs/{digest}").body == b"shared layer"
        unknown = sha256_digest(b"nobody has this")
        got = request(srv.port, "POST", f"/v2/team/two/blobs/uploads/?mount={unknown}")
        assert got.status == 202 and "/blobs/uploads/" in got.headers["location"]


# -- gc ------------------------------------------------------------------------------------------


def _age(store: Path, digest: str, seconds: float) -> None:
    path = OciLayout(store).path(digest)
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_gc_dry_run_first_then_apply(store: Path) -> None:
    layout = OciLayout(store)
    with running(StoreSource(layout), options=MANAGE) as srv:
        kept = _push_image(srv.port, "app", "v1", b'{"c":"kept"}', [b"kept-layer"])
        assert kept.status == 201
    orphan = layout.put_bytes(b"orphan blob")
    young = layout.put_bytes(b"young orphan")
    _age(store, orphan, 7200)
    for digest in layout.digests():
        if digest != young:
            _age(store, digest, 7200)
    dry = subprocess.run(
        [sys.executable, "-m", "airlock", "registry", "gc", "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dryRun"] is True and report["removed"] == [orphan] and report["young"] == 1
    assert layout.has(orphan)
    applied = subprocess.run(
        [sys.executable, "-m", "airlock", "registry", "gc", "--store", str(store), "--apply"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert "removed 1 blobs" in applied.stdout and orphan in applied.stdout
    assert not layout.has(orphan) and layout.has(young)
    assert layout.has(sha256_digest(b"kept-layer"))


def _push_one(port: int, n: int) -> tuple[int, str, list[str]]:
    """One image with its own config and a layer shared by all; (status, manifest, blobs)."""
    config, shared, own = f'{{"n":{n}}}'.encode(), b"shared layer", os.urandom(2048)
    reply = _push_image(port, f"load/app{n % 3}", f"t{n}", config, [shared, own])
    blobs = [sha256_digest(config), sha256_digest(shared), sha256_digest(own)]
    return reply.status, reply.headers.get("docker-content-digest", ""), blobs


@pytest.mark.parametrize("grace", [0.0, 3600.0])
def test_gc_under_concurrent_pushes_never_removes_what_is_referenced(
    store: Path, grace: float
) -> None:
    layout = OciLayout(store)
    stale = [layout.put_bytes(f"stale {i}".encode()) for i in range(20)]
    for digest in stale:
        _age(store, digest, 7200)
    results: list[tuple[int, str, list[str]]] = []
    passes: list[list[str]] = []
    stop = threading.Event()

    def collector() -> None:
        while not stop.is_set() and len(passes) < 200:
            result = collect_garbage(store, options=GcOptions(dry_run=False, grace_seconds=grace))
            passes.append(result.missing)

    with running(StoreSource(layout), options=MANAGE) as srv:
        gc_thread = threading.Thread(target=collector)
        gc_thread.start()
        try:
            workers = [
                threading.Thread(
                    target=lambda w=w: results.extend(
                        _push_one(srv.port, w * 100 + i) for i in range(8)
                    )
                )
                for w in range(3)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join(120)
        finally:
            stop.set()
            gc_thread.join(60)
        assert len(results) == 24 and len(passes) >= 2
        # never a referenced blob missing, at any pass
        assert all(missing == [] for missing in passes)
        for status, digest, blobs in results:
            if grace > 0:
                assert status == 201  # with a grace period every push completes
            if status != 201:
                continue  # grace 0: gc may take an unreferenced upload; the push is refused
            repo = next(e for e in layout.manifests() if e["digest"] == digest)
            name = repo["annotations"]["org.opencontainers.image.ref.name"].rsplit(":", 1)[0]
            assert request(srv.port, "GET", f"/v2/{name}/manifests/{digest}").status == 200
            for blob in blobs:
                assert layout.has(blob), blob
    referenced, missing = referenced_blobs(layout)
    assert missing == set()
    assert not any(layout.has(d) for d in stale)  # the old orphans did go
    assert all(layout.has(d) for d in referenced)
