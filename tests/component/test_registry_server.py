"""airlock's OCI registry against real clients: skopeo pulls and pushes, raw HTTP for the rest.

The store is built here (an image with two layers, a multi-arch index, a Docker-typed image);
the server runs in a thread on a free loopback port. Real binaries: skopeo, openssl (via the
`cryptography`-made certificates). A missing binary fails the test with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airlock import system
from airlock.errors import UsageError
from airlock.node.units import render_registry_unit
from airlock.oci.certs import generate_certs, server_ssl_context
from airlock.oci.digest import sha256_digest
from airlock.oci.htpasswd import hash_password
from airlock.oci.layout import OciLayout, canonical_json, image_descriptor
from airlock.oci.limits import Limits
from airlock.oci.media import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from airlock.oci.server import RegistryOptions, RunningServer, start_server
from airlock.oci.sources import ContentSource, StoreSource
from airlock_lab.distribution import start_distribution

pytestmark = pytest.mark.component

# Pushes on, no free-space floor: these tests must not depend on the disk they run on (the
# floor has tests of its own, on a filesystem of a known size).
PUSH = RegistryOptions(push=True, limits=Limits(floor_bytes=0, floor_percent=0))
PAUSE = "registry.k8s.io/pause"
APISERVER = "registry.k8s.io/kube-apiserver"
FLANNEL = "docker.io/flannel/flannel"
ACCEPT = ", ".join(
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


# -- building content ---------------------------------------------------------------------------


def require(*binaries: str) -> None:
    missing = [b for b in binaries if system.which(b) is None]
    if missing:
        pytest.fail(
            f"required binaries missing: {', '.join(missing)} "
            "(apt-get install skopeo docker-registry openssl curl)"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A deterministic gzip layer and its diff_id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    return gzip.compress(tar, mtime=0), sha256_digest(tar)


@dataclass
class Image:
    ref: str
    digest: str
    media_type: str
    size: int
    blobs: list[str] = field(default_factory=list)  # config and layers
    children: list[str] = field(default_factory=list)  # index entries


@dataclass
class Content:
    root: Path
    images: dict[str, Image]
    big_layer: str


def _put_json(layout: OciLayout, doc: dict[str, Any]) -> tuple[str, int]:
    data = canonical_json(doc)
    return layout.put_bytes(data), len(data)


def _image_manifest(
    layout: OciLayout,
    layers: list[tuple[bytes, str]],
    *,
    arch: str,
    docker: bool = False,
) -> tuple[str, int, list[str]]:
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
    }
    cfg_digest, cfg_size = _put_json(layout, config)
    layer_descs = []
    for blob, _ in layers:
        digest = layout.put_bytes(blob)
        layer_descs.append(
            {
                "mediaType": DOCKER_LAYER if docker else OCI_LAYER_GZIP,
                "digest": digest,
                "size": len(blob),
            }
        )
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": cfg_digest,
            "size": cfg_size,
        },
        "layers": layer_descs,
    }
    digest, size = _put_json(layout, manifest)
    return digest, size, [cfg_digest, *(d["digest"] for d in layer_descs)]


def build_store(root: Path) -> Content:
    """pause:3.9 (index amd64+arm64), kube-apiserver:v1.27.3 (2 layers, one large), flannel."""
    layout = OciLayout(root)
    layout.init()
    base = layer({"etc/os-release": b"ID=airlock-test\n"})
    # Incompressible, so the blob is large enough for several sendfile chunks and ranges.
    big = layer({"usr/bin/kube-apiserver": os.urandom(3 << 20)})
    images: dict[str, Image] = {}

    digest, size, blobs = _image_manifest(layout, [base, big], arch="amd64")
    images["apiserver"] = Image(f"{APISERVER}:v1.27.3", digest, OCI_MANIFEST, size, blobs)

    children = []
    child_blobs = []
    for arch in ("amd64", "arm64"):
        own = layer({"pause": f"pause for {arch}\n".encode()})
        c_digest, c_size, c_blobs = _image_manifest(layout, [base, own], arch=arch)
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": c_digest,
                "size": c_size,
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
        child_blobs += c_blobs
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    i_digest, i_size = _put_json(layout, index)
    images["pause"] = Image(
        f"{PAUSE}:3.9", i_digest, OCI_INDEX, i_size, child_blobs, [c["digest"] for c in children]
    )

    flannel_layer = layer({"opt/bin/flanneld": b"flanneld\n"})
    digest, size, blobs = _image_manifest(layout, [base, flannel_layer], arch="amd64", docker=True)
    images["flannel"] = Image(f"{FLANNEL}:v0.22.0", digest, DOCKER_MANIFEST, size, blobs)

    layout.merge_index(
        [image_descriptor(i.ref, i.media_type, i.digest, i.size) for i in images.values()]
    )
    return Content(root, images, images["apiserver"].blobs[2])


# -- running the server -------------------------------------------------------------------------


class ServerThread:
    """airlock's registry on its own event loop in a thread (skopeo calls block the test)."""

    def __init__(self, source: ContentSource, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            start_server(source, host="127.0.0.1", port=0, **kwargs), self.loop
        )
        self.server: RunningServer = fut.result(30)
        self.port = self.server.port
        self.url = self.server.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def running(source: ContentSource, **kwargs: Any) -> Iterator[ServerThread]:
    srv = ServerThread(source, **kwargs)
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            return str(self.json()["errors"][0]["code"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """One HTTP request with the path sent exactly as given (no `..` normalisation)."""
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        try:
            data = resp.read()
        except http.client.IncompleteRead as exc:
            # distribution's 416 announces the blob's length and sends a short text
            data = exc.partial
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    require("skopeo")
    proc = subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed:\n{proc.stderr}"
    return proc


@dataclass
class DockerRegistry:
    port: int
    proc: system.Process


@contextlib.contextmanager
def docker_registry(tmp: Path) -> Iterator[DockerRegistry]:
    """Debian's docker-registry (distribution 2.8) on a free loopback port, its own storage."""
    tmp.mkdir(parents=True, exist_ok=True)
    with start_distribution("conformance", tmp / "data", tmp, delete=False) as reg:
        yield DockerRegistry(reg.port, reg.process)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture()
def content(tmp_path: Path) -> Content:
    return build_store(tmp_path / "store")


@pytest.fixture()
def server(content: Content) -> Iterator[ServerThread]:
    with running(StoreSource(OciLayout(content.root))) as srv:
        yield srv


def blob_files(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs" / "sha256").iterdir()}


def upload_files(root: Path) -> list[str]:
    d = root / "uploads"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# -- pull -----------------------------------------------------------------------------------


def test_skopeo_pulls_multi_arch_index_and_inspects(
    content: Content, server: ServerThread, tmp_path: Path
) -> None:
    pause = content.images["pause"]
    out = tmp_path / "pulled"
    skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://127.0.0.1:{server.port}/{pause.ref}",
        f"oci:{out}:pulled",
    )
    index = json.loads((out / "index.json").read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [pause.digest]
    for digest in [*pause.children, *pause.blobs]:
        assert (out / "blobs" / "sha256" / digest.split(":")[1]).is_file(), digest

    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://127.0.0.1:{server.port}/{pause.ref}"
    )
    assert raw.stdout.encode() == OciLayout(content.root).read(pause.digest)

    api = content.images["apiserver"]
    info = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", f"docker://127.0.0.1:{server.port}/{api.ref}"
        ).stdout
    )
    assert info["Digest"] == api.digest
    assert info["Layers"] == api.blobs[1:]
    assert info["Architecture"] == "amd64"
    assert info["RepoTags"] == ["v1.27.3"]


def test_manifests_by_tag_and_digest_with_head(content: Content, server: ServerThread) -> None:
    for img in content.images.values():
        repo, tag = img.ref.rsplit(":", 1)
        for ref in (tag, img.digest):
            got = request(
                server.port, "GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}
            )
            assert got.status == 200, (img.ref, ref, got.body)
            assert got.headers["content-type"] == img.media_type
            assert got.headers["docker-content-digest"] == img.digest
            assert int(got.headers["content-length"]) == len(got.body) == img.size
            assert sha256_digest(got.body) == img.digest
            assert got.headers["docker-distribution-api-version"] == "registry/2.0"
            head = request(server.port, "HEAD", f"/v2/{repo}/manifests/{ref}")
            assert head.status == 200 and head.body == b""
            for key in ("content-type", "docker-content-digest", "content-length"):
                assert head.headers[key] == got.headers[key], key
    # containerd adds ?ns=<upstream> with override_path: ignored
    ns = request(server.port, "GET", f"/v2/{PAUSE}/manifests/3.9?ns=registry.k8s.io")
    assert ns.headers["docker-content-digest"] == content.images["pause"].digest
    # an index child is reachable by digest in its repository only
    child = content.images["pause"].children[1]
    assert request(server.port, "GET", f"/v2/{PAUSE}/manifests/{child}").status == 200
    other = request(server.port, "GET", f"/v2/{APISERVER}/manifests/{child}")
    assert (other.status, other.code) == (404, "MANIFEST_UNKNOWN")


def test_blob_get_head_and_ranges(content: Content, server: ServerThread) -> None:
    digest = content.big_layer
    data = OciLayout(content.root).read(digest)
    size = len(data)
    path = f"/v2/{APISERVER}/blobs/{digest}"
    full = request(server.port, "GET", path)
    assert full.status == 200 and full.body == data
    assert full.headers["docker-content-digest"] == digest
    assert full.headers["content-length"] == str(size)
    head = request(server.port, "HEAD", path)
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", str(size))
    assert head.headers["accept-ranges"] == "bytes"

    cases = {
        "bytes=0-9": (0, 9),
        "bytes=1000-1099999": (1000, 1099999),
        f"bytes={size - 10}-": (size - 10, size - 1),
        "bytes=-7": (size - 7, size - 1),
        f"bytes=5-{size + 100}": (5, size - 1),
    }
    for header, (lo, hi) in cases.items():
        got = request(server.port, "GET", path, headers={"Range": header})
        assert got.status == 206, header
        assert got.headers["content-range"] == f"bytes {lo}-{hi}/{size}", header
        assert got.body == data[lo : hi + 1], header
    for header in (f"bytes={size}-", "bytes=-0", "bytes=9-5", "bytes=x-y"):
        got = request(server.port, "GET", path, headers={"Range": header})
        assert (got.status, got.code) == (416, "RANGE_INVALID"), header
        assert got.headers["content-range"] == f"bytes */{size}"
    # other units and several ranges are ignored: the whole blob
    for header in ("items=0-5", "bytes=0-1,5-6"):
        got = request(server.port, "GET", path, headers={"Range": header})
        assert got.status == 200 and got.body == data, header


def test_catalog_and_tags_with_pagination(content: Content, server: ServerThread) -> None:
    every = sorted(i.ref.rsplit(":", 1)[0] for i in content.images.values())
    assert request(server.port, "GET", "/v2/_catalog").json() == {"repositories": every}
    seen: list[str] = []
    path = "/v2/_catalog?n=1"
    for _ in range(10):
        page = request(server.port, "GET", path)
        seen += page.json()["repositories"]
        link = page.headers.get("link")
        if not link:
            break
        path = link.split(";")[0].strip("<>")
    assert seen == every
    tags = request(server.port, "GET", f"/v2/{PAUSE}/tags/list").json()
    assert tags == {"name": PAUSE, "tags": ["3.9"]}
    none = request(server.port, "GET", "/v2/registry.k8s.io/nope/tags/list")
    assert (none.status, none.code) == (404, "NAME_UNKNOWN")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/registry.k8s.io/nope/manifests/3.9", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{PAUSE}/manifests/3.10", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{PAUSE}/manifests/sha256:{'a' * 64}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{PAUSE}/manifests/sha256:abc", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{PAUSE}/manifests/bad~tag", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{PAUSE}/blobs/sha256:{'a' * 64}", 404, "BLOB_UNKNOWN"),
        ("GET", f"/v2/{PAUSE}/blobs/sha256:ABC", 400, "DIGEST_INVALID"),
        ("HEAD", f"/v2/{PAUSE}/blobs/md5:abc", 400, None),
        ("GET", "/v2/registry.k8s.io/../../etc/manifests/3.9", 400, "NAME_INVALID"),
        ("GET", "/v2/../blobs/sha256:" + "a" * 64, 400, "NAME_INVALID"),
        ("GET", "/v2/registry.k8s.io/Pause/manifests/3.9", 400, "NAME_INVALID"),
        ("GET", "/v2/registry.k8s.io//pause/manifests/3.9", 400, "NAME_INVALID"),
        ("GET", "/v2/registry.k8s.io/pause/../pause/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/" + "a/" * 130 + "manifests/1", 400, "NAME_INVALID"),
        ("GET", f"/v2/{PAUSE}/blobs/uploads/not-a-uuid", 404, "BLOB_UPLOAD_INVALID"),
        (
            "GET",
            f"/v2/{PAUSE}/blobs/uploads/{'0' * 8}-0000-0000-0000-{'0' * 12}",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        ("DELETE", f"/v2/{PAUSE}/manifests/3.9", 405, "UNSUPPORTED"),
        ("GET", "/v2/nothing", 404, "NOT_FOUND"),
    ],
)
def test_bad_requests_answer_the_spec_error(
    server: ServerThread, method: str, path: str, status: int, code: str | None
) -> None:
    got = request(server.port, method, path)
    assert got.status == status, got.body
    if method != "HEAD":
        assert got.code == code, got.body


def test_blob_is_served_only_under_repositories_that_reference_it(
    content: Content, server: ServerThread
) -> None:
    big = content.big_layer  # only kube-apiserver references it
    assert request(server.port, "HEAD", f"/v2/{APISERVER}/blobs/{big}").status == 200
    for repo in (PAUSE, FLANNEL, "registry.k8s.io/nope"):
        got = request(server.port, "GET", f"/v2/{repo}/blobs/{big}")
        assert (got.status, got.code) == (404, "BLOB_UNKNOWN"), repo
    # a manifest is not a blob of its repository (as distribution)
    got = request(server.port, "GET", f"/v2/{PAUSE}/blobs/{content.images['pause'].digest}")
    assert (got.status, got.code) == (404, "BLOB_UNKNOWN")


# -- push -----------------------------------------------------------------------------------


@pytest.fixture()
def empty_server(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    root = tmp_path / "empty"
    OciLayout(root).init()
    with running(StoreSource(OciLayout(root)), options=PUSH) as srv:
        yield srv, root


def test_skopeo_push_then_pull_back_same_digests(
    content: Content, empty_server: tuple[ServerThread, Path], tmp_path: Path
) -> None:
    srv, root = empty_server
    pause, api = content.images["pause"], content.images["apiserver"]
    for img, dest in ((pause, "registry.local/team/pause:1"), (api, "registry.local/api:2")):
        skopeo(
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{content.root}:{img.ref}",
            f"docker://127.0.0.1:{srv.port}/{dest}",
        )
    images = OciLayout(root).images()
    assert images["registry.local/team/pause:1"]["digest"] == pause.digest
    assert images["registry.local/team/pause:1"]["mediaType"] == OCI_INDEX
    assert images["registry.local/api:2"]["digest"] == api.digest
    for digest in [*pause.blobs, *pause.children, *api.blobs]:
        assert OciLayout(root).has(digest)
    assert upload_files(root) == []
    out = tmp_path / "back"
    skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://127.0.0.1:{srv.port}/registry.local/team/pause:1",
        f"oci:{out}:back",
    )
    assert json.loads((out / "index.json").read_bytes())["manifests"][0]["digest"] == pause.digest
    # the tag survives a restart: it is in index.json, not only in memory
    with running(StoreSource(OciLayout(root))) as again:
        got = request(again.port, "HEAD", "/v2/registry.local/api/manifests/2")
        assert got.headers["docker-content-digest"] == api.digest
        tags = request(again.port, "GET", "/v2/_catalog").json()["repositories"]
        assert tags == ["registry.local/api", "registry.local/team/pause"]


def _start_upload(port: int, repo: str) -> str:
    got = request(port, "POST", f"/v2/{repo}/blobs/uploads/")
    assert got.status == 202, got.body
    return got.headers["location"]


def test_chunked_upload_mount_and_monolithic(empty_server: tuple[ServerThread, Path]) -> None:
    srv, root = empty_server
    data = os.urandom(300_000)
    digest = sha256_digest(data)
    loc = _start_upload(srv.port, "app/one")
    first = request(
        srv.port, "PATCH", loc, body=data[:100_000], headers={"Content-Range": "0-99999"}
    )
    assert first.status == 202 and first.headers["range"] == "0-99999"
    loc = first.headers["location"]
    # a chunk that does not start where the upload ends is refused and changes nothing
    wrong = request(srv.port, "PATCH", loc, body=data[:10], headers={"Content-Range": "5-14"})
    assert (wrong.status, wrong.code) == (416, "RANGE_INVALID")
    second = request(srv.port, "PATCH", loc, body=data[100_000:200_000])
    assert second.headers["range"] == "0-199999"
    status = request(srv.port, "GET", loc)
    assert (status.status, status.headers["range"]) == (204, "0-199999")
    done = request(srv.port, "PUT", f"{loc}?digest={digest}", body=data[200_000:])
    assert done.status == 201, done.body
    assert done.headers["docker-content-digest"] == digest
    assert OciLayout(root).read(digest) == data
    assert upload_files(root) == []
    assert request(srv.port, "GET", loc).status == 404
    assert request(srv.port, "GET", f"/v2/app/one/blobs/{digest}").body == data
    assert request(srv.port, "HEAD", f"/v2/app/two/blobs/{digest}").status == 404
    mount = request(srv.port, "POST", f"/v2/app/two/blobs/uploads/?mount={digest}&from=app/one")
    assert (mount.status, mount.headers["location"]) == (201, f"/v2/app/two/blobs/{digest}")
    assert request(srv.port, "HEAD", f"/v2/app/two/blobs/{digest}").status == 200
    # mounting from a repository that does not hold the blob starts a normal upload
    fallback = request(srv.port, "POST", f"/v2/app/three/blobs/uploads/?mount={digest}&from=app/x")
    assert fallback.status == 202
    small = b"monolithic"
    mono = request(
        srv.port, "POST", f"/v2/app/one/blobs/uploads/?digest={sha256_digest(small)}", body=small
    )
    assert mono.status == 201 and OciLayout(root).read(sha256_digest(small)) == small


def test_wrong_digest_commits_nothing(empty_server: tuple[ServerThread, Path]) -> None:
    srv, root = empty_server
    before = blob_files(root)
    data = b"some layer bytes"
    lie = sha256_digest(b"other bytes")
    got = request(srv.port, "POST", f"/v2/app/blobs/uploads/?digest={lie}", body=data)
    assert (got.status, got.code) == (400, "DIGEST_INVALID")
    loc = _start_upload(srv.port, "app")
    request(srv.port, "PATCH", loc, body=data)
    got = request(srv.port, "PUT", f"{loc}?digest={lie}")
    assert (got.status, got.code) == (400, "DIGEST_INVALID")
    assert blob_files(root) == before
    assert upload_files(root) == []
    assert request(srv.port, "HEAD", f"/v2/app/blobs/{sha256_digest(data)}").status == 404


def _raw(port: int, head: str, body_parts: list[bytes], *, close_early: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode())
        for part in body_parts:
            s.sendall(part)
        if close_early:
            return b""
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


def test_upload_larger_than_declared_is_refused(empty_server: tuple[ServerThread, Path]) -> None:
    srv, root = empty_server
    loc = _start_upload(srv.port, "app")
    upload_id = loc.rsplit("/", 1)[1]
    # Content-Range says 10 bytes, the (chunked) body carries 20
    reply = _raw(
        srv.port,
        f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-9\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        [_chunked(b"x" * 20)],
    )
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"SIZE_INVALID" in reply
    assert (root / "uploads" / upload_id).stat().st_size == 0
    # Content-Length and Content-Range disagree
    got = request(srv.port, "PATCH", loc, body=b"y" * 20, headers={"Content-Range": "0-9"})
    assert (got.status, got.code) == (400, "SIZE_INVALID")
    # a monolithic push whose chunked body outgrows its declared length
    data = b"z" * 50
    reply = _raw(
        srv.port,
        f"POST /v2/app/blobs/uploads/?digest={sha256_digest(data[:10])} HTTP/1.1\r\nHost: x\r\n"
        "Content-Range: 0-9\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        [_chunked(data)],
    )
    assert b"HTTP/1.1 400" in reply.split(b"\r\n")[0]
    assert not OciLayout(root).has(sha256_digest(data[:10]))
    assert not OciLayout(root).has(sha256_digest(data))


def _wait_for(predicate: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_client_disconnecting_mid_upload_leaves_nothing(
    empty_server: tuple[ServerThread, Path],
) -> None:
    srv, root = empty_server
    data = os.urandom(2 << 20)
    digest = sha256_digest(data)
    tmp_names = lambda: [n for n in blob_files(root) if n.startswith(".tmp-")]  # noqa: E731
    _raw(
        srv.port,
        f"POST /v2/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(data)}\r\n\r\n",
        [data[: len(data) // 2]],
        close_early=True,
    )
    assert _wait_for(lambda: not tmp_names())
    assert not OciLayout(root).has(digest)
    # the same for one chunk of a chunked upload: the upload keeps only what was complete
    loc = _start_upload(srv.port, "app")
    request(srv.port, "PATCH", loc, body=data[:1000])
    _raw(
        srv.port,
        f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n",
        [data[1000 : len(data) // 2]],
        close_early=True,
    )
    upload = root / "uploads" / loc.rsplit("/", 1)[1]
    # while the interrupted request is still being handled the upload answers 416 (busy)
    assert _wait_for(lambda: request(srv.port, "GET", loc).status == 204)
    assert request(srv.port, "GET", loc).headers["range"] == "0-999"
    assert upload.stat().st_size == 1000
    assert not OciLayout(root).has(digest)
    # and the server still works
    rest = request(srv.port, "PUT", f"{loc}?digest={digest}", body=data[1000:])
    assert rest.status == 201 and OciLayout(root).has(digest)


def test_manifest_push_is_validated(
    content: Content, empty_server: tuple[ServerThread, Path]
) -> None:
    srv, root = empty_server
    store = OciLayout(root)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cfg = store.put_bytes(config)
    request(srv.port, "POST", f"/v2/app/blobs/uploads/?digest={cfg}", body=config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": len(config)},
        "layers": [],
    }
    good = json.dumps(manifest).encode()
    missing = json.dumps(
        {
            **manifest,
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": "sha256:" + "b" * 64, "size": 3}],
        }
    ).encode()
    wrong_size = json.dumps({**manifest, "config": {**manifest["config"], "size": 1}}).encode()
    index_missing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:" + "c" * 64, "size": 9}],
        }
    ).encode()
    ct = {"Content-Type": OCI_MANIFEST}
    cases = [
        ("v1", missing, ct, "MANIFEST_BLOB_UNKNOWN"),
        ("v1", wrong_size, ct, "MANIFEST_INVALID"),
        ("v1", b"{not json", ct, "MANIFEST_INVALID"),
        ("v1", b"[]", ct, "MANIFEST_INVALID"),
        ("v1", json.dumps({**manifest, "schemaVersion": 1}).encode(), ct, "MANIFEST_INVALID"),
        ("v1", good, {"Content-Type": DOCKER_MANIFEST}, "MANIFEST_INVALID"),
        ("v1", index_missing, {"Content-Type": OCI_INDEX}, "MANIFEST_BLOB_UNKNOWN"),
        (sha256_digest(b"other"), good, ct, "DIGEST_INVALID"),
        ("bad~tag", good, ct, "TAG_INVALID"),
    ]
    index_before = store.index_path.read_bytes()
    for ref, body, headers, code in cases:
        got = request(srv.port, "PUT", f"/v2/app/manifests/{ref}", body=body, headers=headers)
        assert (got.status, got.code) == (400, code), (ref, body[:60], got.body)
    assert store.index_path.read_bytes() == index_before
    ok = request(srv.port, "PUT", "/v2/app/manifests/v1", body=good, headers=ct)
    assert ok.status == 201, ok.body
    assert ok.headers["docker-content-digest"] == sha256_digest(good)
    desc = store.images()["app:v1"]
    assert (desc["digest"], desc["mediaType"], desc["size"]) == (
        sha256_digest(good),
        OCI_MANIFEST,
        len(good),
    )
    # by digest without a tag: served by digest, no index.json entry
    untagged = json.dumps({**manifest, "annotations": {"x": "y"}}).encode()
    d = sha256_digest(untagged)
    assert (
        request(srv.port, "PUT", f"/v2/app/manifests/{d}", body=untagged, headers=ct).status == 201
    )
    assert request(srv.port, "GET", f"/v2/app/manifests/{d}").body == untagged
    assert set(store.images()) == {"app:v1"}
    assert request(srv.port, "GET", "/v2/app/tags/list").json()["tags"] == ["v1"]


# -- auth and TLS ---------------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_on_every_endpoint(content: Content, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"legacy").digest()).decode()
    htpasswd.write_text(f"ci:{hash_password('s3cret', rounds=4)}\nold:{sha}\n")
    pause = content.images["pause"]
    with running(StoreSource(OciLayout(content.root)), htpasswd=htpasswd) as srv:
        for path in (
            "/v2/",
            f"/v2/{PAUSE}/manifests/3.9",
            "/v2/_catalog",
            f"/v2/{PAUSE}/tags/list",
        ):
            for headers in (
                {},
                _basic("ci", "wrong"),
                _basic("nobody", "s3cret"),
                {"Authorization": "Basic !!"},
            ):
                got = request(srv.port, "GET", path, headers=headers)
                assert (got.status, got.code) == (401, "UNAUTHORIZED"), (path, headers)
                assert got.headers["www-authenticate"] == 'Basic realm="airlock"'
            assert request(srv.port, "GET", path, headers=_basic("ci", "s3cret")).status == 200
            assert request(srv.port, "GET", path, headers=_basic("old", "legacy")).status == 200
        push = request(srv.port, "POST", "/v2/app/blobs/uploads/")
        assert push.status == 401
        info = skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "ci:s3cret",
            f"docker://127.0.0.1:{srv.port}/{pause.ref}",
        )
        assert sha256_digest(info.stdout.encode()) == pause.digest
        bad = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                "ci:nope",
                f"docker://127.0.0.1:{srv.port}/{pause.ref}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bad.returncode != 0 and "unauthorized" in bad.stderr.lower()


def test_tls_with_generated_ca(content: Content, tmp_path: Path) -> None:
    require("skopeo", "openssl")
    paths = generate_certs(
        tmp_path / "pki", names=["localhost", "registry.airlock"], addresses=["127.0.0.1"]
    )
    assert not paths.ca_reused
    assert oct(paths.key.stat().st_mode & 0o777) == "0o600"
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(paths.ca_cert), str(paths.cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    ctx = server_ssl_context(paths.cert, paths.key)
    pause = content.images["pause"]
    with running(StoreSource(OciLayout(content.root)), ssl_context=ctx) as srv:
        assert srv.url.startswith("https://")
        with pytest.raises(ssl.SSLCertVerificationError):
            request(srv.port, "GET", "/v2/", tls=ssl.create_default_context())
        trusting = ssl.create_default_context(cafile=str(paths.ca_cert))
        got = request(srv.port, "GET", f"/v2/{PAUSE}/manifests/3.9", tls=trusting)
        assert got.headers["docker-content-digest"] == pause.digest
        big = request(srv.port, "GET", f"/v2/{APISERVER}/blobs/{content.big_layer}", tls=trusting)
        assert sha256_digest(big.body) == content.big_layer  # sendfile falls back under TLS
        no_ca = subprocess.run(
            ["skopeo", "inspect", "--raw", f"docker://127.0.0.1:{srv.port}/{pause.ref}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert no_ca.returncode != 0 and "certificate" in no_ca.stderr
        certs = tmp_path / "certs.d"
        certs.mkdir()
        shutil.copy(paths.ca_cert, certs / "ca.crt")
        out = skopeo(
            "inspect",
            "--raw",
            "--cert-dir",
            str(certs),
            f"docker://127.0.0.1:{srv.port}/{pause.ref}",
        )
        assert sha256_digest(out.stdout.encode()) == pause.digest
    # a second run reuses the CA (nodes keep trusting it) and writes a new server certificate
    again = generate_certs(tmp_path / "pki", names=["localhost"], addresses=[])
    assert again.ca_reused and again.ca_cert.read_bytes() == paths.ca_cert.read_bytes()


# -- running as a service -------------------------------------------------------------------


def test_serve_reports_url_and_stops_on_sigterm(content: Content, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from airlock.oci.layout import OciLayout\n"
        "from airlock.oci.server import serve\n"
        "from airlock.oci.sources import StoreSource\n"
        "serve(StoreSource(OciLayout(Path(sys.argv[1]))), listen='127.0.0.1:0',\n"
        "      ready=lambda url: print(url, flush=True))\n"
        "print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(content.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else url
        port = int(url.rsplit(":", 1)[1])
        assert port != 0
        assert request(port, "GET", "/v2/").status == 200
        proc.send_signal(15)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert out.strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_systemd_unit_starts_before_kubelet() -> None:
    unit = render_registry_unit(
        airlock_bin="/usr/local/bin/airlock",
        store="/var/lib/airlock/store",
        listen="0.0.0.0:5000",
        tls_cert="/etc/airlock/pki/registry.crt",
        tls_key="/etc/airlock/pki/registry.key",
    )
    lines = unit.splitlines()
    assert "Before=containerd.service kubelet.service" in lines
    assert "WantedBy=multi-user.target" in lines
    assert "Restart=always" in lines
    assert "Type=notify" in lines
    assert (
        "ExecStart=/usr/local/bin/airlock registry serve --store /var/lib/airlock/store "
        "--listen 0.0.0.0:5000 --tls-cert /etc/airlock/pki/registry.crt "
        "--tls-key /etc/airlock/pki/registry.key"
    ) in lines
    odd = render_registry_unit(
        airlock_bin="/opt/my tools/airlock", store="/srv/100%", listen="[::]:5000"
    )
    assert (
        'ExecStart="/opt/my tools/airlock" registry serve --store /srv/100%% --listen [::]:5000'
        in odd
    )
    with pytest.raises(UsageError):
        render_registry_unit(airlock_bin="/a", store="/s", listen="nope")
