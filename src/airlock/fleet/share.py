"""The first node shares what the other nodes need, read-only, from the bundle it holds.

    GET|HEAD /airlock.json            the signed manifest, as in the bundle
    GET|HEAD /airlock.json.sig        its signature (404 when the bundle is unsigned)
    GET|HEAD /airlock-bootstrap.py    the bootstrap script of this airlock
    GET|HEAD /blobs/sha256/<hex>      a blob airlock.json lists (files, wheels); nothing else

The bundle is opened (structure, signature) before the port opens: nothing unverified is
shared. Each blob is read through the handle's verifying reader, and every node checks every
byte again against the signed airlock.json it fetched, so a share that lies is caught at the
node. At most `max_clients` requests are served at once; each request's client and bytes go to
an access log (JSON lines), which is how bytes sent per node are counted.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from airlock.bootstrap import SCRIPT_NAME, render_script
from airlock.bundle.handle import Bundle

__all__ = ["make_share_app", "serve_share"]

_BLOB = re.compile(r"^[a-f0-9]{64}\Z")
_CHUNK = 1 << 20
_BUNDLE: web.AppKey[Bundle] = web.AppKey("bundle")
_SCRIPT: web.AppKey[bytes] = web.AppKey("script")
_GATE: web.AppKey[asyncio.Semaphore] = web.AppKey("gate")
_LOG: web.AppKey[Path | None] = web.AppKey("log")


def _record(request: web.Request, status: int, sent: int) -> None:
    path = request.app[_LOG]
    if path is None:
        return
    entry = {"t": round(time.time(), 3), "client": request.remote, "path": request.path}
    with path.open("a") as fh:
        fh.write(json.dumps({**entry, "status": status, "bytes": sent}, sort_keys=True) + "\n")


async def _small(request: web.Request, body: bytes | None, content_type: str) -> web.Response:
    if body is None:
        _record(request, 404, 0)
        raise web.HTTPNotFound()
    sent = 0 if request.method == "HEAD" else len(body)
    _record(request, 200, sent)
    return web.Response(body=None if request.method == "HEAD" else body, content_type=content_type,
                        headers={"Content-Length": str(len(body))})  # fmt: skip


async def _manifest(request: web.Request) -> web.StreamResponse:
    return await _small(request, request.app[_BUNDLE].manifest_bytes, "application/json")


async def _signature(request: web.Request) -> web.StreamResponse:
    return await _small(request, request.app[_BUNDLE].signature, "application/octet-stream")


async def _script(request: web.Request) -> web.StreamResponse:
    return await _small(request, request.app[_SCRIPT], "text/x-python")


async def _blob(request: web.Request) -> web.StreamResponse:
    bundle = request.app[_BUNDLE]
    hexdigest = request.match_info["hex"]
    digest = f"sha256:{hexdigest}"
    if not _BLOB.match(hexdigest) or digest not in bundle.manifest.blob_map():
        _record(request, 404, 0)
        raise web.HTTPNotFound()
    size = bundle.blob_size(digest)
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    sent = 0
    if request.method == "GET":
        async with request.app[_GATE]:
            with bundle.open_blob(digest) as fh:
                while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                    await response.write(chunk)
                    sent += len(chunk)
    await response.write_eof()
    _record(request, 200, sent)
    return response


def make_share_app(
    bundle: Bundle, *, max_clients: int = 16, access_log: Path | None = None
) -> web.Application:
    app = web.Application(client_max_size=1024)
    app[_BUNDLE] = bundle
    app[_SCRIPT] = render_script()
    app[_GATE] = asyncio.Semaphore(max_clients)
    app[_LOG] = access_log
    for path, handler in (
        ("/airlock.json", _manifest),
        ("/airlock.json.sig", _signature),
        (f"/{SCRIPT_NAME}", _script),
        ("/blobs/sha256/{hex}", _blob),
    ):
        app.router.add_get(path, handler)  # GET also answers HEAD
    return app


def serve_share(
    bundle: Bundle,
    *,
    host: str,
    port: int,
    max_clients: int = 16,
    access_log: Path | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app = make_share_app(bundle, max_clients=max_clients, access_log=access_log)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            if ready is not None:
                ready(f"http://{host}:{port}/")
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
