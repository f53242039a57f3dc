"""fetch_files against a real local HTTP server with fault injection (drops, 5xx, 404)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from airlock.blobstore import BlobStore
from airlock.content import UpstreamChecksum
from airlock.errors import DigestMismatch, FetchError
from airlock.fetch.downloader import FetchedFile, FileRequest, fetch_files

pytestmark = pytest.mark.component

MiB = 1 << 20


@dataclass
class FileServer:
    """Serves `files` by path; `faults[path]` is a queue of behaviours for the next requests."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    ignore_range: bool = False
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def requests_for(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.log if p == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.log.append((path, dict(request.headers)))
        queue = self.faults.get(path, [])
        behaviour = queue.pop(0) if queue else "ok"
        if behaviour == "503":
            return web.Response(status=503, headers={"Retry-After": "0"})
        if path not in self.files:
            return web.Response(status=404, text="no such file")
        data = self.files[path]
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        start = 0
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes=") and not self.ignore_range:
            if_range = request.headers.get("If-Range")
            if if_range is None or if_range == etag:
                start = int(rng[6:].split("-", 1)[0])
        body = data[start:]
        resp = web.StreamResponse(status=206 if start else 200, headers={"ETag": etag})
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        resp.content_length = len(body)
        await resp.prepare(request)
        if behaviour == "drop":
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection dies mid-body
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp


@contextlib.asynccontextmanager
async def serve(server: FileServer, host: str = "127.0.0.1") -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def sha256_ck(data: bytes) -> UpstreamChecksum:
    return UpstreamChecksum("sha256", hashlib.sha256(data).hexdigest(), "spec")


async def fetch(cache: BlobStore, reqs: list[FileRequest], **kw: Any) -> list[FetchedFile]:
    async with aiohttp.ClientSession() as session:
        return await fetch_files(reqs, cache=cache, session=session, backoff=0.01, **kw)


def leftovers(cache: BlobStore) -> list[Path]:
    d = cache.root / "partial"
    return sorted(d.iterdir()) if d.is_dir() else []


@dataclass
class Events:
    log: list[tuple[str, str, int | None]] = field(default_factory=list)

    def start(self, name: str, total: int | None) -> None:
        self.log.append(("start", name, total))

    def advance(self, name: str, nbytes: int) -> None:
        self.log.append(("advance", name, nbytes))

    def done(self, name: str) -> None:
        self.log.append(("done", name, None))


def test_resume_after_connection_drop(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 123)
    srv = FileServer(files={"/bin/kubeadm": data}, faults={"/bin/kubeadm": ["drop"]})
    cache = BlobStore(tmp_path / "cache")
    events = Events()

    async def go() -> FetchedFile:
        async with serve(srv) as base:
            url = "https://dl.k8s.io/bin/kubeadm"
            req = FileRequest(url, f"{base}/bin/kubeadm", sha256_ck(data), None)
            (res,) = await fetch(cache, [req], progress=events)
            return res

    res = run(go())
    reqs = srv.requests_for("/bin/kubeadm")
    assert len(reqs) == 2
    assert "Range" not in reqs[0]
    offset = int(reqs[1]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset < len(data)
    assert reqs[1].get("If-Range")  # resumes only the same version of the file
    assert res.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert res.size == len(data) and not res.from_cache
    assert len(data) <= res.bytes_downloaded < 2 * len(data)
    assert cache.read(res.digest) == data
    assert leftovers(cache) == []
    assert sum(n or 0 for kind, _, n in events.log if kind == "advance") == len(data)
    assert events.log[-1][0] == "done"


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path) -> None:
    data = os.urandom(2 * MiB + 7)
    srv = FileServer(files={"/f": data}, faults={"/f": ["drop"]}, ignore_range=True)
    cache = BlobStore(tmp_path / "cache")

    async def go() -> FetchedFile:
        async with serve(srv) as base:
            (res,) = await fetch(cache, [FileRequest("https://up/f", f"{base}/f", sha256_ck(data))])
            return res

    res = run(go())
    assert "Range" in srv.requests_for("/f")[1]
    assert cache.read(res.digest) == data  # the 200 was written from the start, not appended


def test_checksum_mismatch_names_url_and_leaves_nothing(tmp_path: Path) -> None:
    data = os.urandom(MiB + 5)
    wrong = hashlib.sha256(b"something else").hexdigest()
    srv = FileServer(
        files={
            "/v1/crictl.tgz": data,
            "/v1/crictl.tgz.sha256": f"{wrong}  crictl.tgz\n".encode(),
        }
    )
    cache = BlobStore(tmp_path / "cache")

    async def go() -> None:
        async with serve(srv) as base:
            req = FileRequest(
                "https://github.com/v1/crictl.tgz",
                f"{base}/v1/crictl.tgz",
                None,
                f"{base}/v1/crictl.tgz.sha256",
            )
            await fetch(cache, [req])

    with pytest.raises(DigestMismatch) as exc:
        run(go())
    msg = str(exc.value)
    assert "https://github.com/v1/crictl.tgz" in msg
    assert wrong in msg
    assert hashlib.sha256(data).hexdigest() in msg
    assert "https://github.com/v1/crictl.tgz.sha256" in (exc.value.hint or "")
    assert cache.digests() == []
    assert leftovers(cache) == []
    assert len(srv.requests_for("/v1/crictl.tgz")) == 1  # a mismatch is never retried


def test_second_run_makes_no_artifact_request(tmp_path: Path) -> None:
    data = os.urandom(MiB // 2)
    sha512 = hashlib.sha512(data).hexdigest()
    srv = FileServer(
        files={
            "/mirror/rel/kubelet": data,
            "/mirror/rel/kubelet.sha512": f"{sha512}\n".encode(),
        }
    )
    cache = BlobStore(tmp_path / "cache")

    async def go() -> list[FetchedFile]:
        async with serve(srv) as base:
            req = FileRequest(
                "https://dl.k8s.io/rel/kubelet",
                f"{base}/mirror/rel/kubelet",
                None,
                f"{base}/mirror/rel/kubelet.sha512",
            )
            first = await fetch(cache, [req])
            second = await fetch(cache, [req, req])
            return first + second

    first, second, dup = run(go())
    assert not first.from_cache and first.bytes_downloaded == len(data)
    assert first.checksum == UpstreamChecksum(
        "sha512", sha512, "https://dl.k8s.io/rel/kubelet.sha512"
    )
    assert second.from_cache and second.bytes_downloaded == 0
    assert second.digest == first.digest and dup.digest == first.digest
    assert len(srv.requests_for("/mirror/rel/kubelet")) == 1


def test_without_checksum_a_conditional_request_revalidates(tmp_path: Path) -> None:
    data = os.urandom(1000)
    srv = FileServer(files={"/kube-flannel.yml": data})
    cache = BlobStore(tmp_path / "cache")

    async def go() -> list[FetchedFile]:
        async with serve(srv) as base:
            req = FileRequest("https://gh/kube-flannel.yml", f"{base}/kube-flannel.yml")
            return await fetch(cache, [req]) + await fetch(cache, [req])

    first, second = run(go())
    reqs = srv.requests_for("/kube-flannel.yml")
    assert len(reqs) == 2 and "If-None-Match" in reqs[1]
    assert second.from_cache and second.bytes_downloaded == 0 and second.digest == first.digest
    assert first.checksum is None


def test_404_is_not_retried(tmp_path: Path) -> None:
    srv = FileServer()
    cache = BlobStore(tmp_path / "cache")

    async def go() -> None:
        async with serve(srv) as base:
            await fetch(cache, [FileRequest("https://dl.k8s.io/nope", f"{base}/nope")])

    with pytest.raises(FetchError) as exc:
        run(go())
    assert "https://dl.k8s.io/nope" in str(exc.value) and "404" in str(exc.value)
    assert len(srv.requests_for("/nope")) == 1


def test_503_is_retried_then_ok(tmp_path: Path) -> None:
    data = os.urandom(4096)
    srv = FileServer(files={"/f": data}, faults={"/f": ["503", "503"]})
    cache = BlobStore(tmp_path / "cache")

    async def go() -> FetchedFile:
        async with serve(srv) as base:
            (res,) = await fetch(cache, [FileRequest("https://up/f", f"{base}/f", sha256_ck(data))])
            return res

    res = run(go())
    assert len(srv.requests_for("/f")) == 3
    assert cache.read(res.digest) == data


def test_retries_are_bounded(tmp_path: Path) -> None:
    srv = FileServer(files={"/f": b"x"}, faults={"/f": ["503"] * 50})
    cache = BlobStore(tmp_path / "cache")

    async def go() -> None:
        async with serve(srv) as base:
            await fetch(cache, [FileRequest("https://up/f", f"{base}/f")], retries=2)

    with pytest.raises(FetchError) as exc:
        run(go())
    assert "3 attempts" in str(exc.value) and "https://up/f" in str(exc.value)
    assert len(srv.requests_for("/f")) == 3


def test_parallel_fetch_keeps_order(tmp_path: Path) -> None:
    files = {f"/f{i}": os.urandom(10_000 + i) for i in range(6)}
    srv = FileServer(files=dict(files))
    cache = BlobStore(tmp_path / "cache")

    async def go() -> list[FetchedFile]:
        async with serve(srv) as base:
            reqs = [
                FileRequest(f"https://up{p}", f"{base}{p}", sha256_ck(d)) for p, d in files.items()
            ]
            return await fetch(cache, reqs, concurrency=3)

    res = run(go())
    assert [r.request.url for r in res] == [f"https://up{p}" for p in files]
    assert all(cache.read(r.digest) == files[r.request.url.removeprefix("https://up")] for r in res)


def test_each_file_is_reported_once_as_it_is_in_the_cache(tmp_path: Path) -> None:
    """on_fetched (bundle create compresses each file as it arrives): once per URL, with the
    file already in the cache; a failed fetch is not reported."""
    files = {f"/f{i}": os.urandom(10_000 + i) for i in range(4)}
    srv = FileServer(files=dict(files))
    cache = BlobStore(tmp_path / "cache")
    seen: list[tuple[str, bool]] = []

    def arrived(got: FetchedFile) -> None:
        seen.append((got.request.url, cache.read(got.digest) == files[got.request.url[10:]]))

    async def go() -> list[FetchedFile]:
        async with serve(srv) as base:
            reqs = [
                FileRequest(f"https://up{p}", f"{base}{p}", sha256_ck(d)) for p, d in files.items()
            ]
            reqs.append(reqs[0])  # the same URL twice: fetched and reported once
            missing = FileRequest("https://up/none", f"{base}/none", None)
            with pytest.raises(FetchError):
                await fetch(cache, [missing, *reqs], concurrency=2, on_fetched=arrived)
            assert all(ok for _, ok in seen) and ("https://up/none", True) not in seen
            seen.clear()
            return await fetch(cache, reqs, concurrency=2, on_fetched=arrived)

    run(go())
    assert all(ok for _, ok in seen)
    assert sorted(u for u, _ in seen) == sorted(f"https://up{p}" for p in files)


def test_two_runs_sharing_a_cache_download_a_file_once(tmp_path: Path) -> None:
    """Two fetchers (two `bundle create` runs) on one cache, the same URL at the same time:
    the URL's lock makes the second wait and find the file in the cache; nobody writes the
    same partial file twice."""
    data = os.urandom(8 * MiB)
    srv = FileServer(files={"/rel/kubeadm": data})
    cache = tmp_path / "cache"

    async def go() -> list[list[FetchedFile]]:
        async with serve(srv) as base:
            req = FileRequest(
                "https://dl.k8s.io/rel/kubeadm", f"{base}/rel/kubeadm", sha256_ck(data)
            )
            return list(
                await asyncio.gather(fetch(BlobStore(cache), [req]), fetch(BlobStore(cache), [req]))
            )

    (a,), (b,) = run(go())
    assert a.digest == b.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert len(srv.requests_for("/rel/kubeadm")) == 1
    assert sorted([a.from_cache, b.from_cache]) == [False, True]
    assert leftovers(BlobStore(cache)) == []
    assert BlobStore(cache).read(a.digest) == data
