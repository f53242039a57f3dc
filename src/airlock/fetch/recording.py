"""What a `bundle create` asked upstream and read locally: the record airlock.replay answers a
later identical create from (see there for why and when).

- Requests: every aiohttp session and urllib opener airlock.fetch.network makes carries the
  hooks; while a recording runs, each request is noted with the headers it sent, and at its end
  the status and the headers airlock reads. The body is noted by the code that reads it
  (`saw`, `saw_digest`; urllib bodies here): a success whose body nobody noted spoils the
  record, so a reading site that forgets costs the fast path, never a stale bundle. Inside
  `verified()` (content named by its digest, checked when it arrives) nothing is noted.
- Local files: an audit hook notes every file opened for reading and every directory listed,
  with its identity at that moment; a file whose identity changed by the end spoils the record.
- Credentials or cookies sent, a proxy, more than a few thousand requests: no record.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import os
import sys
import threading
import time
import urllib.request
import urllib.response
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from airlock import replay

__all__ = ["Recording", "handler", "saw", "saw_digest", "start", "trace_configs", "verified"]

_SKIPPED_ROOTS = ("/proc/", "/sys/", "/dev/")
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_MAX_URLLIB_BODY = 64 << 20


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    follow: bool = False
    status: int = 0
    answer: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None
    decoded: bool = True  # the body as aiohttp hands it over (content encoding undone)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "follow": self.follow,
            "status": self.status,
            "answer": self.answer,
            "sha256": self.sha256,
            "decoded": self.decoded,
        }


class Recording:
    def __init__(self) -> None:
        self.requests: list[_Request] = []
        self.inputs: dict[str, list[int] | None] = {}
        self.spoiled: str | None = None
        self.began = time.time_ns() - 50_000_000  # ctime: the kernel clock is coarser
        self._lock = threading.Lock()

    def spoil(self, why: str) -> None:
        self.spoiled = self.spoiled or why

    def add(self, request: _Request) -> None:
        with self._lock:
            self.requests.append(request)

    def read(self, path: str) -> None:
        if path.startswith(_SKIPPED_ROOTS) or path in self.inputs:
            return
        self.inputs[path] = replay.identity(path)

    def record(
        self,
        *,
        argv: Sequence[str],
        cache: Path,
        outputs: Sequence[Path],
        ca: Path | None,
        stdout: str,
        stderr: str,
    ) -> dict[str, Any] | None:
        """The record of this run, or None when it cannot be replayed (`spoiled` says why)."""
        cache_prefix = str(cache.resolve()) + os.sep
        # the outputs and their directories are checked as outputs (the run changed them)
        outs = {str(q) for p in outputs for q in (p.resolve(), p.resolve().parent)}
        inputs = []
        for path, ident in sorted(self.inputs.items()):
            real = os.path.realpath(path)
            if real.startswith(cache_prefix) or real in outs:
                continue
            now = replay.identity(path)
            if now is None and ident is not None and ident[-1] >= self.began:
                continue  # made and removed by this run (a temporary file or directory)
            if now != ident:
                self.spoil(f"{path} changed while the command ran")
            inputs.append([path, ident])
        requests: dict[str, dict[str, Any]] = {}
        for req in self.requests:
            if req.method == "GET" and 200 <= req.status < 300 and req.sha256 is None:
                self.spoil(f"the body of {req.url} was not noted")
            if _SECRET_HEADERS & {k.lower() for k in req.headers}:
                self.spoil(f"{req.url} was asked with credentials")
            doc = req.to_json()
            key = repr((req.method, req.url, sorted(req.headers.items())))
            if requests.setdefault(key, doc) != doc:
                self.spoil(f"{req.url} was answered two ways")
        if replay.proxied():
            self.spoil("a proxy is set")
        if self.spoiled is not None:
            return None
        return {
            "argv": list(argv),
            "cwd": os.getcwd(),
            "environment": replay.environment_key(),
            "display": replay.display_key(),
            "code": replay.code_fingerprint(),
            "inputs": inputs,
            "outputs": [[str(p), replay.identity(str(p))] for p in outputs],
            "ca": str(ca) if ca is not None else None,
            "requests": list(requests.values()),
            "stdout": stdout,
            "stderr": stderr,
        }


_active: list[Recording] = []  # the recording under way (one per process)
_verified: contextvars.ContextVar[bool] = contextvars.ContextVar("verified", default=False)
_last: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("last", default=None)
_hooked: list[bool] = []


def _current() -> Recording | None:
    return _active[0] if _active and not _verified.get() else None


@contextlib.contextmanager
def start() -> Iterator[Recording]:
    """Note requests and local reads until the block ends."""
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked.append(True)
    rec = Recording()
    _active[:] = [rec]
    try:
        yield rec
    finally:
        _active.clear()


@contextlib.contextmanager
def verified() -> Iterator[None]:
    """Requests in this block fetch content named by its digest (checked on arrival)."""
    token = _verified.set(True)
    try:
        yield
    finally:
        _verified.reset(token)


def saw(body: bytes) -> None:
    """The body of the last request this task made, as airlock read it."""
    saw_digest(hashlib.sha256(body).hexdigest())


def saw_digest(sha256_hex: str) -> None:
    req = _last.get()
    if req is not None:
        req.sha256 = sha256_hex.removeprefix("sha256:")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _active:
        return
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        if mode is None:
            reading = isinstance(flags, int) and flags & os.O_ACCMODE == os.O_RDONLY
        else:
            reading = not any(c in str(mode) for c in "wax+")
        if reading:
            _active[0].read(os.path.abspath(os.fsdecode(path)))
    elif event in ("os.listdir", "os.scandir"):
        path = args[0]
        if not isinstance(path, int):
            _active[0].read(os.path.abspath(os.fsdecode(path if path is not None else ".")))


async def _on_start(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
) -> None:
    rec = _current()
    ctx.request = None if rec is None else _Request(params.method, str(params.url))
    _last.set(ctx.request)


async def _on_end(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    req: _Request | None = getattr(ctx, "request", None)
    rec = _active[0] if _active else None
    if req is None or rec is None:
        return
    resp = params.response
    first = resp.history[0] if resp.history else resp
    req.headers = {k: v for k, v in first.request_info.headers.items() if k.lower() != "host"}
    req.follow = bool(resp.history)
    req.status = resp.status
    req.answer = _answer(resp.headers)
    rec.add(req)


def _answer(headers: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name in replay.COMPARED_HEADERS:
        values = [v for k, v in headers.items() if k.lower() == name]
        if values:
            out[name] = ", ".join(values)
    return out


def trace_configs() -> list[aiohttp.TraceConfig]:
    """The hooks for an aiohttp session (they note nothing unless a recording runs)."""
    tc = aiohttp.TraceConfig()
    tc.on_request_start.append(_on_start)
    tc.on_request_end.append(_on_end)
    return [tc]


class _Handler(urllib.request.BaseHandler):
    handler_order = 900  # each answer before the redirect and error handlers act on it

    def http_response(self, request: urllib.request.Request, response: Any) -> Any:
        rec = _current()
        if rec is None:
            return response
        body = response.read(_MAX_URLLIB_BODY + 1)
        if len(body) > _MAX_URLLIB_BODY:
            rec.spoil(f"{request.full_url}: more than {_MAX_URLLIB_BODY} bytes")
        headers = {k: v for k, v in request.header_items() if k.lower() != "host"}
        rec.add(
            _Request(
                request.get_method(),
                request.full_url,
                headers,
                status=response.status,
                answer=_answer(response.headers),
                sha256=hashlib.sha256(body).hexdigest(),
                decoded=False,
            )
        )
        copy = urllib.response.addinfourl(
            io.BytesIO(body), response.headers, response.url, response.status
        )
        copy.msg = response.reason  # type: ignore[attr-defined]
        return copy

    https_response = http_response


def handler() -> urllib.request.BaseHandler:
    """The hook for a urllib opener (it notes nothing unless a recording runs)."""
    return _Handler()
