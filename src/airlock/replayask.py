"""Ask a create's recorded upstream requests again (`airlock.replay`): the same status, the
headers airlock reads and the same body sha256, or the full path runs. Standard library only, and
imported only when a record holds (http.client and ssl cost every other command 20 ms)."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from airlock.replay import COMPARED_HEADERS

__all__ = ["same_answers"]

_MAX_BODY = 64 << 20
_TIMEOUT = 10.0
_MAX_REDIRECTS = 5
_THREADS = 8


def same_answers(requests: Sequence[Mapping[str, Any]], ca: str | None) -> bool:
    """Every request answered as recorded, asked again on a few threads (keep-alive)."""
    if not requests:
        return True
    context = ssl.create_default_context()
    if ca is not None and any(str(r["url"]).startswith("https:") for r in requests):
        context.load_verify_locations(cafile=ca)
    todo = list(requests)
    lock = threading.Lock()
    differs: list[bool] = []

    def work() -> None:
        conns: dict[tuple[str, str], http.client.HTTPConnection] = {}
        try:
            while not differs:
                with lock:
                    if not todo:
                        return
                    req = todo.pop()
                if not _answered_as_recorded(req, conns, context):
                    differs.append(True)
        except Exception:
            differs.append(True)
        finally:
            for conn in conns.values():
                conn.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(min(_THREADS, len(todo)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return not differs and not todo


def _answered_as_recorded(
    req: Mapping[str, Any],
    conns: dict[tuple[str, str], http.client.HTTPConnection],
    context: ssl.SSLContext,
) -> bool:
    url, method = str(req["url"]), str(req["method"])
    headers = dict(req["headers"])
    for _ in range(_MAX_REDIRECTS + 1):
        resp = _ask(conns, context, method, url, headers)
        body = resp.read(_MAX_BODY + 1)  # all of it: the connection serves the next request
        if len(body) > _MAX_BODY:
            return False
        location = resp.getheader("Location")
        if req["follow"] and resp.status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        if resp.status != req["status"]:
            return False
        for name in COMPARED_HEADERS:
            if _header(resp.getheaders(), name) != req["answer"].get(name):
                return False
        if req["sha256"] is None:
            return True
        if req["decoded"]:
            body = _decoded(body, resp.getheader("Content-Encoding"))
        return bool(hashlib.sha256(body).hexdigest() == req["sha256"])
    return False


def _ask(
    conns: dict[tuple[str, str], http.client.HTTPConnection],
    context: ssl.SSLContext,
    method: str,
    url: str,
    headers: Mapping[str, str],
) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    key = (parts.scheme, parts.netloc)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    for attempt in (0, 1):  # a keep-alive connection the server closed: once more, anew
        conn = conns.get(key)
        if conn is None:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.netloc, timeout=_TIMEOUT, context=context)
            elif parts.scheme == "http":
                conn = http.client.HTTPConnection(parts.netloc, timeout=_TIMEOUT)
            else:
                raise ValueError(url)
            conns[key] = conn
        try:
            conn.request(method, path, headers=dict(headers))
            return conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            del conns[key]
            if attempt:
                raise
    raise AssertionError("unreachable")


def _header(items: Iterable[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in items if k.lower() == name]
    return ", ".join(values) if values else None


def _decoded(body: bytes, encoding: str | None) -> bytes:
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "gzip":
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if enc == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise ValueError(f"content encoding {enc}")
