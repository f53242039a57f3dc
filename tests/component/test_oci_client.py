"""pull_images against the real Debian docker-registry and a fault-injecting fake registry.

Images are built here (random-bytes gzip tar layers, config, manifest, an amd64+arm64 index)
in an OciLayout; docker-registry gets them through `skopeo copy`. The fake registry (aiohttp,
serving straight from an OciLayout) counts requests and injects auth, redirects, drops and
corruption.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import io
import json
import os
import socket
import subprocess
import tarfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from airlock.blobstore import BlobStore
from airlock.content import BlobRole, ImageArtifact
from airlock.errors import DigestMismatch, RegistryError
from airlock.oci.client import Endpoint, LayerFetch, fetch_layers, pull_images
from airlock.oci.digest import sha256_digest
from airlock.oci.layout import OciLayout, canonical_json
from airlock.oci.media import (
    ANNOTATION_REF_NAME,
    DOCKER_SCHEMA1_SIGNED,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from airlock.oci.ref import parse_reference
from airlock_lab.distribution import start_distribution

pytestmark = pytest.mark.component


# -- building images ------------------------------------------------------------------------------


def gz_layer(payload: bytes, name: str = "data.bin") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(buf.getvalue(), mtime=0)


def put(layout: OciLayout, data: bytes, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": layout.put_bytes(data), "size": len(data)}


def build_manifest(layout: OciLayout, arch: str, layers: list[bytes]) -> dict[str, Any]:
    descs = [put(layout, gz_layer(p, f"f{i}"), OCI_LAYER_GZIP) for i, p in enumerate(layers)]
    diff_ids = [sha256_digest(gzip.decompress(layout.read(d["digest"]))) for d in descs]
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cdesc = put(layout, canonical_json(config), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc, "layers": descs}
    desc = put(layout, canonical_json(manifest), OCI_MANIFEST)
    desc["platform"] = {"architecture": arch, "os": "linux"}
    return desc


def build_index(layout: OciLayout, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return put(layout, canonical_json(index), OCI_INDEX)


def tag(layout: OciLayout, name: str, desc: dict[str, Any]) -> None:
    d = {k: v for k, v in desc.items() if k != "platform"}
    d["annotations"] = {ANNOTATION_REF_NAME: name}
    layout.merge_index([d])


def children(layout: OciLayout, digest: str) -> list[str]:
    """Every digest below a manifest or index, itself included."""
    doc = json.loads(layout.read(digest))
    out = [digest]
    for m in doc.get("manifests", []):
        out += children(layout, m["digest"])
    if "config" in doc:
        out += [doc["config"]["digest"]] + [layer["digest"] for layer in doc["layers"]]
    return out


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


async def pull(
    dest: BlobStore, refs: list[str], endpoints: dict[str, Endpoint], **kw: Any
) -> list[ImageArtifact]:
    kw.setdefault("platforms", ["linux/amd64"])
    async with aiohttp.ClientSession() as session:
        return await pull_images(
            [parse_reference(r) for r in refs],
            dest=dest,
            endpoints=endpoints,
            session=session,
            backoff=0.01,
            **kw,
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# -- the real docker-registry ---------------------------------------------------------------------


@dataclass
class RealRegistry:
    url: str
    layout: OciLayout
    single: dict[str, Any]
    multi: dict[str, Any]
    amd64: dict[str, Any]
    arm64: dict[str, Any]


@pytest.fixture(scope="module")
def real_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRegistry]:
    for tool in ("docker-registry", "skopeo"):
        if not any((Path(d) / tool).exists() for d in os.environ["PATH"].split(":")):
            pytest.fail(f"{tool} is required for this test (apt-get install {tool})")
    root = tmp_path_factory.mktemp("registry")
    reg = start_distribution("client-test", root / "data", root)
    url, port = reg.url, reg.port
    try:
        layout = OciLayout(root / "layout")
        layout.init()
        base = os.urandom(300_000)
        single = build_manifest(layout, "amd64", [base, os.urandom(1000)])
        amd64 = build_manifest(layout, "amd64", [base, os.urandom(2000)])
        arm64 = build_manifest(layout, "arm64", [base, os.urandom(3000)])
        multi = build_index(layout, [amd64, arm64])
        tag(layout, "single", single)
        tag(layout, "multi", multi)
        for name, dest in (("single", "pause:3.9"), ("multi", "multi/app:1.0")):
            subprocess.run(
                [
                    "skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
                    "--dest-tls-verify=false", f"oci:{layout.root}:{name}",
                    f"docker://127.0.0.1:{port}/{dest}",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )  # fmt: skip
        yield RealRegistry(url, layout, single, multi, amd64, arm64)
    finally:
        reg.stop()


def test_pull_single_arch_from_docker_registry(real_registry: RealRegistry, tmp_path: Path) -> None:
    reg = real_registry
    dest = BlobStore(tmp_path / "dest")
    eps = {"registry.k8s.io": Endpoint(reg.url, insecure=True)}
    (art,) = run(pull(dest, ["registry.k8s.io/pause:3.9"], eps))
    assert art.reference == "registry.k8s.io/pause:3.9"
    assert art.digest == reg.single["digest"]  # the bytes pushed, resolved once, by digest
    assert art.media_type == OCI_MANIFEST and art.platforms == ("linux/amd64",)
    assert [b.role for b in art.blobs] == [
        BlobRole.MANIFEST, BlobRole.CONFIG, BlobRole.LAYER, BlobRole.LAYER
    ]  # fmt: skip
    assert [b.digest for b in art.blobs] == children(reg.layout, reg.single["digest"])
    for b in art.blobs:
        assert b.source == "registry.k8s.io/pause:3.9"
        dest.verify(b.digest)
        assert dest.size(b.digest) == b.size
    assert sorted(dest.digests()) == sorted(b.digest for b in art.blobs)


class _Recorder:
    """A ProgressSink that records what each download was called."""

    def __init__(self) -> None:
        self.started: dict[str, int | None] = {}
        self.bytes: Counter[str] = Counter()
        self.finished: list[str] = []

    def start(self, name: str, total: int | None) -> None:
        self.started[name] = total

    def advance(self, name: str, nbytes: int) -> None:
        self.bytes[name] += nbytes

    def done(self, name: str) -> None:
        self.finished.append(name)


def test_deferred_layers_are_listed_then_fetched(
    real_registry: RealRegistry, tmp_path: Path
) -> None:
    """bundle create's order: manifests and configs first, the layers missing from the store
    listed (each once, with its progress label), then fetched and verified by fetch_layers."""
    reg = real_registry
    dest = BlobStore(tmp_path / "dest")
    eps = {"registry.k8s.io": Endpoint(reg.url, insecure=True)}
    deferred: list[LayerFetch] = []
    (art,) = run(pull(dest, ["registry.k8s.io/pause:3.9"], eps, deferred=deferred))
    layers = [b.digest for b in art.blobs if b.role == BlobRole.LAYER]
    assert [d.digest for d in deferred] == layers and len(layers) == 2
    assert [d.label for d in deferred] == [
        "registry.k8s.io/pause:3.9 layer 1/2",
        "registry.k8s.io/pause:3.9 layer 2/2",
    ]
    assert not any(dest.has(d) for d in layers)
    assert all(dest.has(b.digest) for b in art.blobs if b.role != BlobRole.LAYER)
    arrived: list[str] = []

    async def fetch() -> None:
        async with aiohttp.ClientSession() as session:
            await fetch_layers(
                deferred, dest=dest, endpoints=eps, session=session, on_fetched=arrived.append
            )

    run(fetch())
    assert sorted(arrived) == sorted(layers)
    for d in layers:
        dest.verify(d)
    again: list[LayerFetch] = []
    run(pull(dest, ["registry.k8s.io/pause:3.9"], eps, deferred=again))
    assert again == []  # everything is in the store now


def test_download_progress_is_labelled_by_image_and_layer(
    real_registry: RealRegistry, tmp_path: Path
) -> None:
    labels = _Recorder()
    eps = {"registry.k8s.io": Endpoint(real_registry.url, insecure=True)}
    run(pull(BlobStore(tmp_path / "dest"), ["registry.k8s.io/pause:3.9"], eps, progress=labels))
    ref = "registry.k8s.io/pause:3.9"
    assert sorted(labels.started) == [f"{ref} config 1/1", f"{ref} layer 1/2", f"{ref} layer 2/2"]
    assert sorted(labels.finished) == sorted(labels.started)
    for name, total in labels.started.items():
        assert labels.bytes[name] == total  # every byte reported under its label


def test_single_arch_for_another_platform_fails(
    real_registry: RealRegistry, tmp_path: Path
) -> None:
    eps = {"registry.k8s.io": Endpoint(real_registry.url, insecure=True)}
    with pytest.raises(RegistryError) as exc:
        run(
            pull(BlobStore(tmp_path), ["registry.k8s.io/pause:3.9"], eps, platforms=["linux/arm64"])
        )
    assert "registry.k8s.io/pause:3.9" in str(exc.value)
    assert "linux/amd64" in str(exc.value) and "linux/arm64" in str(exc.value)


def test_pull_multi_arch_keeps_index_and_only_wanted_platform(
    real_registry: RealRegistry, tmp_path: Path
) -> None:
    reg = real_registry
    dest = BlobStore(tmp_path / "dest")
    eps = {"docker.io": Endpoint(reg.url, insecure=True)}
    (art,) = run(pull(dest, ["multi/app:1.0"], eps))
    assert art.reference == "docker.io/multi/app:1.0"
    assert art.digest == reg.multi["digest"] and art.media_type == OCI_INDEX
    assert dest.read(art.digest) == reg.layout.read(reg.multi["digest"])  # index kept as-is
    want = children(reg.layout, reg.amd64["digest"])
    assert [b.digest for b in art.blobs] == [reg.multi["digest"], *want]
    assert [b.role for b in art.blobs][:3] == [BlobRole.INDEX, BlobRole.MANIFEST, BlobRole.CONFIG]
    assert sorted(dest.digests()) == sorted([reg.multi["digest"], *want])
    assert not dest.has(reg.arm64["digest"])
    assert art.platforms == ("linux/amd64",)

    both = BlobStore(tmp_path / "both")
    (art2,) = run(pull(both, ["multi/app:1.0"], eps, platforms=["linux/amd64", "linux/arm64/v8"]))
    assert both.has(reg.arm64["digest"]) and both.has(reg.amd64["digest"])
    assert art2.platforms == ("linux/amd64", "linux/arm64")
    assert len({b.digest for b in art2.blobs}) == len(art2.blobs)  # shared base listed once


def test_missing_platform_names_available(real_registry: RealRegistry, tmp_path: Path) -> None:
    eps = {"docker.io": Endpoint(real_registry.url, insecure=True)}
    with pytest.raises(RegistryError) as exc:
        run(pull(BlobStore(tmp_path), ["multi/app:1.0"], eps, platforms=["linux/s390x"]))
    msg = str(exc.value)
    assert "docker.io/multi/app:1.0" in msg and "linux/s390x" in msg
    assert "linux/amd64" in msg and "linux/arm64" in msg


def test_missing_tag_names_the_reference(real_registry: RealRegistry, tmp_path: Path) -> None:
    eps = {"registry.k8s.io": Endpoint(real_registry.url, insecure=True)}
    with pytest.raises(RegistryError) as exc:
        run(pull(BlobStore(tmp_path), ["registry.k8s.io/kube-apiserver:v9.9.9"], eps))
    assert str(exc.value) == "not found: registry.k8s.io/kube-apiserver:v9.9.9"


# -- a fake registry with fault injection ---------------------------------------------------------

TOKEN = "s3cret-token"


@dataclass
class FakeRegistry:
    layout: OciLayout
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    require_token: bool = False
    forbid_after_token: bool = False
    basic: tuple[str, str] | None = None  # credentials the token service demands
    redirect_blobs_to: str | None = None
    corrupt: set[str] = field(default_factory=set)
    drop_once: set[str] = field(default_factory=set)
    manifest_503: int = 0
    raw_manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    header_digest: str | None = None  # a lying Docker-Content-Digest
    base: str = ""
    blob_gets: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_get("/v2/{name:.+}/manifests/{ref}", self.manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self.blob)
        return app

    def _denied(self, request: web.Request) -> web.Response | None:
        if not self.require_token:
            return None
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            scope = f"repository:{request.match_info['name']}:pull"
            challenge = f'Bearer realm="{self.base}/token",service="fake",scope="{scope}"'
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED"}]},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        if self.forbid_after_token:
            return web.json_response({"errors": [{"code": "DENIED"}]}, status=403)
        return None

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(dict(request.headers) | dict(request.query))
        if self.basic is not None:
            want = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if request.headers.get("Authorization") != want:
                return web.Response(status=401)
        return web.json_response({"token": TOKEN, "expires_in": 300})

    async def manifest(self, request: web.Request) -> web.Response:
        self.log.append((request.path, dict(request.headers)))
        if (denied := self._denied(request)) is not None:
            return denied
        if self.manifest_503:
            self.manifest_503 -= 1
            return web.Response(status=503)
        name, ref = request.match_info["name"], request.match_info["ref"]
        if (name, ref) in self.raw_manifests:
            body, ctype = self.raw_manifests[(name, ref)]
            return web.Response(body=body, headers={"Content-Type": ctype})
        digest = self.tags.get((name, ref), ref)
        if not ref.startswith("sha256:") and (name, ref) not in self.tags:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        if not self.layout.has(digest):
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        body = self.layout.read(digest)
        return web.Response(
            body=body,
            headers={
                "Content-Type": json.loads(body)["mediaType"],
                "Docker-Content-Digest": self.header_digest or digest,
            },
        )

    async def blob(self, request: web.Request) -> web.StreamResponse:
        self.log.append((request.path, dict(request.headers)))
        if (denied := self._denied(request)) is not None:
            return denied
        digest = request.match_info["digest"]
        if self.redirect_blobs_to and "redirected" not in request.query:
            raise web.HTTPTemporaryRedirect(f"{self.redirect_blobs_to}/storage/{digest}")
        return await serve_blob(self, request, digest)


async def serve_blob(reg: FakeRegistry, request: web.Request, digest: str) -> web.StreamResponse:
    reg.blob_gets[digest] += 1
    if not reg.layout.has(digest):
        return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
    data = reg.layout.read(digest)
    if digest in reg.corrupt:
        data = data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
    start = 0
    rng = request.headers.get("Range", "")
    if rng.startswith("bytes="):
        start = int(rng[6:].split("-", 1)[0])
    resp = web.StreamResponse(status=206 if start else 200)
    if start:
        resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    body = data[start:]
    resp.content_length = len(body)
    await resp.prepare(request)
    if digest in reg.drop_once:
        reg.drop_once.discard(digest)
        await resp.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.close()
        return resp
    await resp.write(body)
    await resp.write_eof()
    return resp


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_fake(reg: FakeRegistry) -> AsyncIterator[dict[str, Endpoint]]:
    async with serve_app(reg.app()) as base:
        reg.base = base
        yield {"registry.example": Endpoint(base, insecure=True)}


def fake_with_images(tmp_path: Path) -> tuple[FakeRegistry, dict[str, Any], dict[str, Any], str]:
    """Two single-arch images (repos a and b) sharing one 2 MiB base layer."""
    layout = OciLayout(tmp_path / "fake")
    layout.init()
    base = os.urandom(2 << 20)
    a = build_manifest(layout, "amd64", [base, os.urandom(500)])
    b = build_manifest(layout, "amd64", [base, os.urandom(700)])
    reg = FakeRegistry(layout, tags={("a", "1"): a["digest"], ("b", "1"): b["digest"]})
    shared = children(layout, a["digest"])[2]
    assert shared == children(layout, b["digest"])[2]
    return reg, a, b, shared


def test_shared_layer_fetched_once(tmp_path: Path) -> None:
    reg, a, b, shared = fake_with_images(tmp_path)
    dest = BlobStore(tmp_path / "dest")

    async def go() -> list[ImageArtifact]:
        async with serve_fake(reg) as eps:
            arts = await pull(dest, ["registry.example/a:1", "registry.example/b:1"], eps)
            gets = sum(reg.blob_gets.values())
            again = await pull(dest, ["registry.example/a:1", "registry.example/b:1"], eps)
            assert sum(reg.blob_gets.values()) == gets  # everything already in dest
            return arts + again

    arts = run(go())
    assert reg.blob_gets[shared] == 1
    assert all(n == 1 for n in reg.blob_gets.values())
    assert [x.digest for x in arts] == [a["digest"], b["digest"]] * 2
    assert shared in [x.digest for x in arts[0].blobs] and shared in [
        x.digest for x in arts[1].blobs
    ]


def test_bearer_token_flow_with_credentials(tmp_path: Path) -> None:
    reg, a, _, _ = fake_with_images(tmp_path)
    reg.require_token = True
    reg.basic = ("alice", "pw")
    dest = BlobStore(tmp_path / "dest")

    async def go() -> ImageArtifact:
        async with serve_fake(reg) as eps:
            ep = eps["registry.example"]
            eps = {
                "registry.example": Endpoint(ep.url, insecure=True, username="alice", password="pw")
            }
            (art,) = await pull(dest, ["registry.example/a:1"], eps)
            return art

    art = run(go())
    assert art.digest == a["digest"]
    assert len(reg.token_requests) == 1  # cached for the scope across all blobs
    assert reg.token_requests[0]["scope"] == "repository:a:pull"
    assert reg.token_requests[0]["service"] == "fake"
    # after the first challenge, every request carried the token
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, h in reg.log[1:])
    assert all(dest.has(blob.digest) for blob in art.blobs)


def test_token_without_credentials_then_403_is_access_denied(tmp_path: Path) -> None:
    reg, _, _, _ = fake_with_images(tmp_path)
    reg.require_token = True
    reg.forbid_after_token = True

    async def go() -> None:
        async with serve_fake(reg) as eps:
            await pull(BlobStore(tmp_path / "dest"), ["registry.example/a:1"], eps)

    with pytest.raises(RegistryError) as exc:
        run(go())
    assert str(exc.value).startswith("access denied: registry.example/a:1")
    assert "403" in str(exc.value)
    assert exc.value.hint and "credentials" in exc.value.hint
    assert len(reg.token_requests) == 1
    assert len(reg.log) == 2  # 401, then 403 with the token: no retries of a refusal


def test_redirect_to_another_host_drops_authorization(tmp_path: Path) -> None:
    reg, _a, _, _ = fake_with_images(tmp_path)
    reg.require_token = True
    storage_log: list[dict[str, str]] = []

    async def storage(request: web.Request) -> web.StreamResponse:
        storage_log.append(dict(request.headers))
        return await serve_blob(reg, request, request.match_info["digest"])

    app = web.Application()
    app.router.add_get("/storage/{digest}", storage)
    dest = BlobStore(tmp_path / "dest")

    async def go() -> ImageArtifact:
        async with serve_app(app, "127.0.0.2") as other:
            reg.redirect_blobs_to = other
            async with serve_fake(reg) as eps:
                (art,) = await pull(dest, ["registry.example/a:1"], eps)
                return art

    art = run(go())
    assert len(storage_log) == len(art.blobs) - 1  # config + layers went through storage
    assert all("Authorization" not in h for h in storage_log)
    blob_reqs = [h for p, h in reg.log if "/blobs/" in p]
    assert any(h.get("Authorization") == f"Bearer {TOKEN}" for h in blob_reqs)
    assert all(dest.has(b.digest) for b in art.blobs)


def test_corrupt_blob_is_rejected(tmp_path: Path) -> None:
    reg, _a, _, shared = fake_with_images(tmp_path)
    reg.corrupt.add(shared)
    dest = BlobStore(tmp_path / "dest")

    async def go() -> None:
        async with serve_fake(reg) as eps:
            await pull(dest, ["registry.example/a:1"], eps)

    with pytest.raises(DigestMismatch) as exc:
        run(go())
    assert shared in str(exc.value) and "registry.example/a:1" in str(exc.value)
    assert not dest.has(shared)
    assert not [p for p in dest.blob_dir.iterdir() if p.name.startswith(".tmp")]
    assert reg.blob_gets[shared] == 1  # a mismatch is not retried


def test_connection_drop_mid_blob_resumes(tmp_path: Path) -> None:
    reg, a, _, shared = fake_with_images(tmp_path)
    reg.drop_once.add(shared)
    reg.manifest_503 = 2
    dest = BlobStore(tmp_path / "dest")

    async def go() -> ImageArtifact:
        async with serve_fake(reg) as eps:
            (art,) = await pull(dest, ["registry.example/a:1"], eps)
            return art

    art = run(go())
    dest.verify(shared)
    assert reg.blob_gets[shared] == 2
    ranges = [h.get("Range") for p, h in reg.log if p.endswith(shared)]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert art.digest == a["digest"]
    assert sum(1 for p, _ in reg.log if "/manifests/" in p) == 3  # 503, 503, then OK


def test_schema1_is_refused(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "fake")
    layout.init()
    body = b'{"schemaVersion": 1, "name": "old", "tag": "1", "fsLayers": [], "signatures": []}'
    reg = FakeRegistry(layout, raw_manifests={("old", "1"): (body, DOCKER_SCHEMA1_SIGNED)})

    async def go() -> None:
        async with serve_fake(reg) as eps:
            await pull(BlobStore(tmp_path / "dest"), ["registry.example/old:1"], eps)

    with pytest.raises(RegistryError) as exc:
        run(go())
    assert "schema 1" in str(exc.value) and "registry.example/old:1" in str(exc.value)


def test_pinned_digest_mismatch_is_caught(tmp_path: Path) -> None:
    reg, a, b, _ = fake_with_images(tmp_path)
    reg.tags[("a", b["digest"])] = a["digest"]  # asked for b's digest, answers a's bytes

    async def go() -> None:
        async with serve_fake(reg) as eps:
            await pull(BlobStore(tmp_path / "dest"), [f"registry.example/a@{b['digest']}"], eps)

    with pytest.raises(DigestMismatch) as exc:
        run(go())
    assert b["digest"] in str(exc.value) and a["digest"] in str(exc.value)


def test_lying_content_digest_header_is_caught(tmp_path: Path) -> None:
    reg, a, b, _ = fake_with_images(tmp_path)
    reg.tags[("a", "1")] = a["digest"]
    reg.header_digest = b["digest"]

    async def go() -> None:
        async with serve_fake(reg) as eps:
            await pull(BlobStore(tmp_path / "dest"), ["registry.example/a:1"], eps)

    with pytest.raises(DigestMismatch) as exc:
        run(go())
    assert "Docker-Content-Digest" in str(exc.value)
    assert b["digest"] in str(exc.value) and a["digest"] in str(exc.value)
