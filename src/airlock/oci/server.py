"""`airlock registry serve`: an OCI distribution registry on aiohttp, pull-only unless asked.

Repositories are the full upstream names (`/v2/registry.k8s.io/pause/manifests/3.9`), which is
what containerd asks for through hosts.toml with `override_path = true` and `/v2/<upstream>`.
Content comes from a `ContentSource` (the store, or a bundle tar served in place). Pushes
(`RegistryOptions.push`; the CLI also demands TLS and an htpasswd file for them) go into the
store: blobs are hashed while they stream into a temp file and only a matching digest is
published; tags and manifests pushed by digest are entries of the store's index.json
(`repo_index`), so they, and the referrers computed from them, survive a restart. Limits
(`limits.Limits`) bound what a push may take. Deletes (`RegistryOptions.delete`, off by default:
405 UNSUPPORTED) remove index.json entries and repository links; the bytes go with
`airlock registry gc`.

Behaviour follows distribution (docker-registry 2.8) where clients depend on it: error bodies
`{"errors":[{"code","message","detail"}]}`, a blob is served under a repository only if that
repository references it (or it was pushed or mounted there), `Docker-Content-Digest` on every
manifest and blob answer. Deliberate differences (see tests/component/test_registry_conformance.py):
manifests are served whatever the Accept header says (distribution 2.8 hides OCI manifests from
clients that do not list the OCI types), an unsatisfiable Range answers 416 with a JSON error,
a manifest reference that does not resolve (even one that is not a valid tag or digest)
answers 404, and a blob that a manifest of the repository still names is not deleted (405).

Blob links (blobs uploaded or mounted into a repository before a manifest names them) are kept
in memory and in an append-only log in the store (`blob_links`), so they survive a restart too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from airlock.errors import AirlockError, DigestMismatch, UsageError
from airlock.oci.blob_links import LINKS_LOG, BlobLinks
from airlock.oci.digest import is_digest, sha256_digest
from airlock.oci.gc import store_lock
from airlock.oci.htpasswd import Htpasswd, load_htpasswd
from airlock.oci.layout import OciLayout, canonical_json, image_descriptor
from airlock.oci.limits import DEFAULT_LIMITS, Limits, free_space
from airlock.oci.media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)
from airlock.oci.repo_index import digest_entry, with_digest_entry, without_manifest, without_tag
from airlock.oci.sources import (
    MAX_MANIFEST_SIZE,
    ContentSource,
    Segment,
    StoreSource,
    is_repository_name,
    is_tag,
    manifest_info,
)

__all__ = [
    "API_VERSION_HEADER",
    "REALM",
    "RegistryOptions",
    "RunningServer",
    "make_app",
    "parse_listen",
    "serve",
    "start_server",
]

log = logging.getLogger("airlock.registry")

API_VERSION_HEADER = "Docker-Distribution-API-Version"
REALM = "airlock"
UPLOADS_DIR = "uploads"
_CHUNK = 1 << 20
_PUSH_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST})
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_UPLOAD_RE = re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)\Z")
_BLOB_RE = re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)\Z")
_MANIFEST_RE = re.compile(r"^(?P<name>.+)/manifests/(?P<ref>[^/]+)\Z")
_TAGS_RE = re.compile(r"^(?P<name>.+)/tags/list\Z")
_REFERRERS_RE = re.compile(r"^(?P<name>.+)/referrers/(?P<digest>[^/]+)\Z")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)\Z")
_CONTENT_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)\Z")
# A client that goes away mid-body surfaces as one of these while the body is read.
_CLIENT_GONE = (OSError, HttpProcessingError)
# How often (in bytes received) an upload checks the free-space floor again.
_FLOOR_CHECK_BYTES = 4 << 20
_RETRY_AFTER_SECONDS = 10


@dataclass(frozen=True)
class RegistryOptions:
    """What the registry lets clients do beyond pulling."""

    push: bool = False
    delete: bool = False
    limits: Limits = DEFAULT_LIMITS


class RegistryHTTPError(Exception):
    """An answer in the distribution error format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]}
        return web.json_response(body, status=self.status, headers=self.headers)


def _name_invalid(name: str) -> RegistryHTTPError:
    return RegistryHTTPError(400, "NAME_INVALID", "invalid repository name", {"name": name})


def _name_unknown(name: str) -> RegistryHTTPError:
    return RegistryHTTPError(
        404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name}
    )


def _blob_unknown(digest: str) -> RegistryHTTPError:
    return RegistryHTTPError(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)


def _digest_invalid(message: str, detail: Any = None) -> RegistryHTTPError:
    return RegistryHTTPError(400, "DIGEST_INVALID", message, detail)


def _unsupported(message: str = "The operation is unsupported.") -> RegistryHTTPError:
    return RegistryHTTPError(405, "UNSUPPORTED", message)


def _manifest_unknown(detail: Any) -> RegistryHTTPError:
    return RegistryHTTPError(404, "MANIFEST_UNKNOWN", "manifest unknown", detail)


def _too_large(what: str, limit: int, seen: int) -> RegistryHTTPError:
    return RegistryHTTPError(
        413,
        "SIZE_INVALID",
        f"{what} is larger than this registry accepts ({limit} bytes)",
        {"limit": limit, "size_at_least": seen},
    )


@dataclass
class _Upload:
    id: str
    repo: str
    path: Path
    size: int = 0
    busy: bool = False
    touched: float = field(default_factory=time.monotonic)


@dataclass
class _Registry:
    """Server state: the source, auth, options, uploads in progress and blob links."""

    source: ContentSource
    auth: Htpasswd | None
    upload_dir: Path | None
    options: RegistryOptions = field(default_factory=RegistryOptions)
    uploads: dict[str, _Upload] = field(default_factory=dict)
    streaming: int = 0  # single-request (POST ?digest=) uploads in progress
    blob_links: BlobLinks = field(default_factory=BlobLinks)
    index_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # -- what a repository holds ------------------------------------------------------------

    def repo_exists(self, name: str) -> bool:
        """A repository exists while it holds a manifest or a blob pushed or mounted into it."""
        return name in self.source.catalog().repositories or self.blob_links.has_any(name)

    def repo_has_manifest(self, name: str, digest: str) -> bool:
        repo = self.source.catalog().repositories.get(name)
        return repo is not None and digest in repo.manifests

    def blob_anywhere(self, digest: str) -> bool:
        """Whether some repository serves the blob (where a mount without `from` finds it)."""
        if self.blob_links.anywhere(digest):
            return True
        return any(digest in r.blobs for r in self.source.catalog().repositories.values())

    def repo_has_blob(self, name: str, digest: str) -> bool:
        repo = self.source.catalog().repositories.get(name)
        # Manifests are not blobs of a repository (distribution answers BLOB_UNKNOWN too).
        if repo is not None and digest in repo.blobs:
            return True
        return self.blob_links.has(name, digest)

    def link_blob(self, name: str, digest: str) -> None:
        self.blob_links.add(name, digest)

    def writable_store(self) -> OciLayout:
        store = self.source.store
        if store is None:
            raise _unsupported(f"this registry is read-only (serving {self.source.description})")
        if not self.options.push or self.upload_dir is None:
            raise _unsupported(
                "this registry is pull-only: the operator did not enable pushes (--push)"
            )
        return store

    def deletable_store(self) -> OciLayout:
        store = self.source.store
        if store is None or not self.options.delete:
            raise _unsupported(
                "deletes are disabled on this registry (the operator enables them with --delete)"
            )
        return store

    def invalidate(self) -> None:
        if isinstance(self.source, StoreSource):
            self.source.invalidate()

    # -- limits -----------------------------------------------------------------------------

    def check_floor(self, store: OciLayout, incoming: int = 0) -> None:
        """DENIED when `incoming` more bytes would take the store below its free-space floor."""
        free, total = free_space(store.root)
        floor = self.options.limits.floor_for(total)
        if free - incoming < floor:
            raise RegistryHTTPError(
                403,
                "DENIED",
                "the store's filesystem is at its free-space floor; push refused",
                {"free": free, "incoming": incoming, "floor": floor},
            )

    def check_in_flight(self) -> None:
        limits = self.options.limits
        now = time.monotonic()
        for upload in list(self.uploads.values()):
            if not upload.busy and now - upload.touched > limits.idle_upload_seconds:
                log.info("dropping upload %s: idle for %.0f s", upload.id, now - upload.touched)
                _drop_upload(self, upload)
        if len(self.uploads) + self.streaming >= limits.uploads_in_flight:
            raise RegistryHTTPError(
                429,
                "TOOMANYREQUESTS",
                f"too many uploads in flight (at most {limits.uploads_in_flight})",
                {"limit": limits.uploads_in_flight},
                {"Retry-After": str(_RETRY_AFTER_SECONDS)},
            )

    async def check_auth(self, header: str | None) -> bool:
        assert self.auth is not None
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        if self.auth.known_good(user, password):
            return True
        # bcrypt is slow on purpose: keep it off the event loop.
        return await asyncio.to_thread(self.auth.verify, user, password)


_REGISTRY: web.AppKey[_Registry] = web.AppKey("airlock_registry", _Registry)


# -- helpers ------------------------------------------------------------------------------------


def _repo_name(name: str) -> str:
    if not is_repository_name(name):
        raise _name_invalid(name)
    return name


def _manifest_media_type(data: bytes, known: str | None) -> str:
    info = manifest_info(data, known)
    if info is not None:
        return info.media_type
    return known or OCI_MANIFEST


def _unsatisfiable(header: str, size: int) -> RegistryHTTPError:
    return RegistryHTTPError(
        416,
        "RANGE_INVALID",
        "requested range not satisfiable",
        {"size": size, "range": header},
        {"Content-Range": f"bytes */{size}"},
    )


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for a single satisfiable byte range; None to send the whole blob.

    Other units and multi-range headers are ignored (RFC 9110 lets a server do so); an invalid
    or unsatisfiable byte range is 416.
    """
    if not header or not header.strip().startswith("bytes="):
        return None
    if "," in header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise _unsatisfiable(header, size)
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        end = int(last) if last else size - 1
        if end < start or start >= size:
            raise _unsatisfiable(header, size)
        return start, min(end, size - 1)
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise _unsatisfiable(header, size)
    return max(0, size - suffix), size - 1


async def _send_segments(
    request: web.Request, resp: web.StreamResponse, segments: list[Segment]
) -> None:
    """Send file byte ranges with sendfile (asyncio falls back to read/write over TLS)."""
    loop = asyncio.get_running_loop()
    for seg in segments:
        if seg.length == 0:
            continue
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        with seg.path.open("rb") as fh:
            await loop.sendfile(transport, fh, seg.offset, seg.length)


def _pagination(request: web.Request) -> tuple[int | None, str | None]:
    raw_n = request.query.get("n", "")
    # A malformed `n` is ignored, as distribution does.
    n = int(raw_n) if raw_n.isdigit() else None
    return n, request.query.get("last") or None


def _paginate(
    items: list[str], n: int | None, last: str | None, path: str
) -> tuple[list[str], dict[str, str]]:
    if last is not None:
        items = [i for i in items if i > last]
    headers: dict[str, str] = {}
    if n is not None and len(items) > n:
        items = items[:n]
        if items:
            last_q = urllib.parse.quote(items[-1], safe="")
            headers["Link"] = f'<{path}?last={last_q}&n={n}>; rel="next"'
    return items, headers


@dataclass(frozen=True)
class _Cap:
    """What a body may carry beyond its declared length: a byte limit, a free-space floor."""

    what: str
    limit: int
    already: int = 0  # bytes of the same upload received before this body
    floor: Callable[[int], None] | None = None  # called with the bytes received so far


async def _read_body(
    request: web.Request,
    sink: Callable[[bytes], None],
    *,
    limit: int | None,
    cap: _Cap | None = None,
) -> int:
    """Stream the request body into `sink`; more than `limit` bytes is SIZE_INVALID (400), more
    than the cap SIZE_INVALID (413), whether or not the client declared a length."""
    total = 0
    checked = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return total
        total += len(chunk)
        if limit is not None and total > limit:
            raise RegistryHTTPError(
                400,
                "SIZE_INVALID",
                "the body is larger than declared",
                {"declared": limit, "received_at_least": total},
            )
        if cap is not None:
            if cap.already + total > cap.limit:
                raise _too_large(cap.what, cap.limit, cap.already + total)
            if cap.floor is not None and total - checked >= _FLOOR_CHECK_BYTES:
                checked = total
                cap.floor(total)
        sink(chunk)


def _declared_length(request: web.Request) -> int | None:
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise RegistryHTTPError(400, "SIZE_INVALID", "invalid Content-Length", raw)
    return int(raw)


# -- handlers ----------------------------------------------------------------------------------


async def _v2_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/v2/")


async def _v2_root(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise _unsupported()
    return web.json_response({})


async def _dispatch(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    method = request.method
    if tail == "_catalog":
        if method not in ("GET", "HEAD"):
            raise _unsupported()
        return await _catalog(request)
    if m := _TAGS_RE.match(tail):
        if method not in ("GET", "HEAD"):
            raise _unsupported()
        return await _tags_list(request, _repo_name(m["name"]))
    if m := _REFERRERS_RE.match(tail):
        if method not in ("GET", "HEAD"):
            raise _unsupported()
        return await _referrers(request, _repo_name(m["name"]), m["digest"])
    if m := _UPLOAD_RE.match(tail):
        name, upload_id = _repo_name(m["name"]), m["id"]
        if not upload_id:
            if method != "POST":
                raise RegistryHTTPError(
                    404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry"
                )
            return await _upload_start(request, name)
        handlers: dict[str, Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]] = {
            "GET": _upload_status,
            "PATCH": _upload_patch,
            "PUT": _upload_finish,
            "DELETE": _upload_cancel,
        }
        handler = handlers.get(method)
        if handler is None:
            raise _unsupported()
        return await handler(request, name, upload_id)
    if m := _BLOB_RE.match(tail):
        if method == "DELETE":
            return await _blob_delete(request, _repo_name(m["name"]), m["digest"])
        if method not in ("GET", "HEAD"):
            raise _unsupported()
        return await _blob_get(request, _repo_name(m["name"]), m["digest"])
    if m := _MANIFEST_RE.match(tail):
        name, ref = _repo_name(m["name"]), m["ref"]
        if method in ("GET", "HEAD"):
            return await _manifest_get(request, name, ref)
        if method == "PUT":
            return await _manifest_put(request, name, ref)
        if method == "DELETE":
            return await _manifest_delete(request, name, ref)
        raise _unsupported()
    raise RegistryHTTPError(404, "NOT_FOUND", "no such API endpoint", tail)


async def _catalog(request: web.Request) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    n, last = _pagination(request)
    names = set(reg.source.catalog().repositories)
    items, headers = _paginate(sorted(names), n, last, "/v2/_catalog")
    return web.json_response({"repositories": items}, headers=headers)


async def _tags_list(request: web.Request, name: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    if not reg.repo_exists(name):
        raise _name_unknown(name)
    n, last = _pagination(request)
    repo = reg.source.catalog().repositories.get(name)
    tags = sorted(repo.tags) if repo else []
    items, headers = _paginate(tags, n, last, f"/v2/{name}/tags/list")
    return web.json_response({"name": name, "tags": items}, headers=headers)


def _resolve_manifest(reg: _Registry, name: str, ref: str) -> str:
    """The digest a manifest reference means in `name`, or MANIFEST_UNKNOWN (404).

    A reference that cannot resolve (not a valid tag or digest) is unknown as well, as the
    distribution spec's conformance suite expects; an unknown repository answers
    MANIFEST_UNKNOWN, as distribution does (not NAME_UNKNOWN).
    """
    if ":" in ref:
        if not is_digest(ref) or not reg.repo_has_manifest(name, ref):
            raise _manifest_unknown({"Name": name, "Revision": ref})
        return ref
    repo = reg.source.catalog().repositories.get(name)
    digest = repo.tags.get(ref) if repo is not None and is_tag(ref) else None
    if digest is None:
        raise _manifest_unknown({"Tag": ref})
    return digest


async def _manifest_get(request: web.Request, name: str, ref: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    digest = _resolve_manifest(reg, name, ref)
    loc = reg.source.locate(digest)
    if loc is None or loc.size > MAX_MANIFEST_SIZE:
        raise _manifest_unknown(digest)
    data = loc.data if loc.data is not None else await asyncio.to_thread(loc.read)
    known = reg.source.catalog().media_types.get(digest)
    headers = {
        "Content-Type": _manifest_media_type(data, known),
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return web.Response(status=200, headers=headers)
    return web.Response(body=data, status=200, headers=headers)


async def _referrers(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    """OCI 1.1 referrers: an image index of the manifests whose `subject` is `digest`.

    A digest nothing refers to (or an unknown repository) gives an empty index, never 404.
    """
    if not is_digest(digest):
        raise _digest_invalid("invalid digest", digest)
    repo = request.app[_REGISTRY].source.catalog().repositories.get(name)
    found = repo.referrers.get(digest, {}) if repo is not None else {}
    descriptors = [found[d] for d in sorted(found)]
    headers = {"Content-Type": OCI_INDEX}
    wanted = request.query.get("artifactType")
    if wanted:
        descriptors = [d for d in descriptors if d.get("artifactType") == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    body = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return web.Response(status=200, headers=headers)
    return web.Response(body=body, status=200, headers=headers)


async def _blob_delete(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    """Unlink a blob from a repository; the bytes go with `registry gc` once nothing names them.

    A blob that a manifest of the repository names stays (405): deleting it would leave that
    manifest broken.
    """
    reg = request.app[_REGISTRY]
    reg.deletable_store()
    if not is_digest(digest):
        raise _digest_invalid("invalid digest", digest)
    repo = reg.source.catalog().repositories.get(name)
    if repo is not None and digest in repo.blobs:
        raise _unsupported(
            f"blob {digest} is named by a manifest of {name}; delete the manifest first"
        )
    if not reg.blob_links.remove(name, digest):
        raise _blob_unknown(digest)
    return web.Response(status=202, headers={"Content-Length": "0"})


def _delete_entries(store: OciLayout, name: str, ref: str) -> bool:
    """Remove a tag, or a manifest and its tags, from index.json; False when there was none."""
    with store_lock(store.root, exclusive=False), store.lock:  # index.json read-modify-write
        entries = store.manifests()
        if ":" in ref:
            new = without_manifest(entries, name, ref)
        else:
            new = without_tag(entries, name, ref)
        if new is None:
            return False
        store.write_index(new)
        return True


async def _manifest_delete(request: web.Request, name: str, ref: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    store = reg.deletable_store()
    digest = _resolve_manifest(reg, name, ref)
    async with reg.index_lock:
        deleted = await asyncio.to_thread(_delete_entries, store, name, ref)
        reg.invalidate()
    if not deleted:
        # reachable only as the child of an index of this repository
        raise _unsupported(
            f"manifest {digest} is part of an index of {name}; delete that index first"
        )
    return web.Response(status=202, headers={"Content-Length": "0"})


async def _blob_get(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    if not is_digest(digest):
        raise _digest_invalid("provided digest did not match uploaded content", digest)
    if not reg.repo_has_blob(name, digest):
        raise _blob_unknown(digest)
    loc = reg.source.locate(digest)
    if loc is None:
        raise _blob_unknown(digest)
    headers = {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(loc.size)
        return web.Response(status=200, headers=headers)
    rng = _parse_range(request.headers.get("Range"), loc.size)
    if loc.check is not None:  # bytes not hashed yet: hashed once, before any is sent
        await asyncio.to_thread(loc.check)
    status, start, length = 200, 0, loc.size
    if rng is not None:
        status, start, length = 206, rng[0], rng[1] - rng[0] + 1
        headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{loc.size}"
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    await resp.prepare(request)
    await _send_segments(request, resp, loc.slice(start, length))
    await resp.write_eof()
    return resp


# -- push ---------------------------------------------------------------------------------------


def _upload_headers(name: str, upload: _Upload) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload.id}",
        "Range": f"0-{max(upload.size - 1, 0)}",
        "Docker-Upload-UUID": upload.id,
        "Content-Length": "0",
    }


def _created(name: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


def _mountable(reg: _Registry, store: OciLayout, digest: str, source_repo: str | None) -> bool:
    """Whether a blob can be mounted: `from` serves it, or (no `from`) some repository does."""
    if not is_digest(digest) or not store.has(digest):
        return False
    if source_repo is None:
        return reg.blob_anywhere(digest)
    return is_repository_name(source_repo) and reg.repo_has_blob(source_repo, digest)


def _touch_blob(store: OciLayout, digest: str) -> bool:
    """Mark a blob as in use (gc spares young blobs), under the gc lock; False if it is gone."""
    with store_lock(store.root, exclusive=False):
        try:
            os.utime(store.path(digest))
        except FileNotFoundError:
            return False
        return True


async def _upload_start(request: web.Request, name: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    store = reg.writable_store()
    mount = request.query.get("mount")
    if (
        mount
        and _mountable(reg, store, mount, request.query.get("from"))
        and await asyncio.to_thread(_touch_blob, store, mount)
    ):
        reg.link_blob(name, mount)
        return _created(name, mount)
    reg.check_in_flight()
    declared = _declared_length(request)
    limit = reg.options.limits.upload_bytes
    if declared is not None and declared > limit:
        raise _too_large("the blob", limit, declared)
    await asyncio.to_thread(reg.check_floor, store, declared or 0)
    digest = request.query.get("digest")
    if digest is not None:
        return await _monolithic(request, name, store, digest)
    return _new_upload(reg, name)


def _new_upload(reg: _Registry, name: str) -> web.Response:
    assert reg.upload_dir is not None
    reg.upload_dir.mkdir(parents=True, exist_ok=True)
    upload_id = str(uuid.uuid4())
    upload = _Upload(upload_id, name, reg.upload_dir / upload_id)
    upload.path.touch(mode=0o600)
    reg.uploads[upload_id] = upload
    return web.Response(status=202, headers=_upload_headers(name, upload))


async def _monolithic(
    request: web.Request, name: str, store: OciLayout, digest: str
) -> web.StreamResponse:
    if not is_digest(digest):
        raise _digest_invalid("invalid digest", digest)
    reg = request.app[_REGISTRY]
    declared = _declared_length(request)
    reg.streaming += 1
    try:
        with store.writer(digest) as w:
            try:
                await _read_body(request, w.write, limit=declared, cap=_upload_cap(reg, store, 0))
            except _CLIENT_GONE as exc:
                log.info("client went away during a blob upload to %s: %s", name, exc)
                raise RegistryHTTPError(400, "BLOB_UPLOAD_INVALID", "upload interrupted") from exc
            try:
                await asyncio.to_thread(w.commit, f"blob pushed to {name}")
            except DigestMismatch as exc:
                raise _digest_invalid(
                    "provided digest did not match uploaded content",
                    {"expected": digest, "actual": exc.actual},
                ) from exc
    finally:
        reg.streaming -= 1
    reg.link_blob(name, digest)
    return _created(name, digest)


def _upload_cap(reg: _Registry, store: OciLayout, already: int) -> _Cap:
    """The rest of the upload limit for a body, and the free-space floor checked as it comes."""

    def floor(_received: int) -> None:
        reg.check_floor(store)

    return _Cap("the blob", reg.options.limits.upload_bytes, already, floor)


def _get_upload(reg: _Registry, name: str, upload_id: str) -> _Upload:
    if not _UUID_RE.match(upload_id):
        raise RegistryHTTPError(404, "BLOB_UPLOAD_INVALID", "blob upload invalid", upload_id)
    upload = reg.uploads.get(upload_id)
    if upload is None or upload.repo != name:
        raise RegistryHTTPError(
            404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", upload_id
        )
    if upload.busy:
        raise RegistryHTTPError(
            416, "BLOB_UPLOAD_INVALID", "another request is writing to this upload", upload_id
        )
    return upload


def _drop_upload(reg: _Registry, upload: _Upload) -> None:
    reg.uploads.pop(upload.id, None)
    upload.path.unlink(missing_ok=True)


async def _append(
    request: web.Request, upload: _Upload, *, limit: int | None, cap: _Cap | None
) -> None:
    """Append the body to the upload; on any failure the upload is cut back to where it was."""
    before = upload.size
    upload.busy = True
    upload.touched = time.monotonic()
    fh: BinaryIO = upload.path.open("r+b")
    try:
        fh.seek(before)

        def sink(chunk: bytes) -> None:
            fh.write(chunk)

        written = await _read_body(request, sink, limit=limit, cap=cap)
        fh.flush()
        upload.size = before + written
    except BaseException:
        fh.truncate(before)
        raise
    finally:
        fh.close()
        upload.busy = False
        upload.touched = time.monotonic()


def _chunk_limit(request: web.Request, upload: _Upload) -> int | None:
    """The byte count this chunk may carry: from Content-Range, else Content-Length."""
    declared = _declared_length(request)
    raw = request.headers.get("Content-Range")
    if raw is None:
        return declared
    m = _CONTENT_RANGE_RE.match(raw.strip())
    if not m or int(m.group(2)) < int(m.group(1)):
        raise RegistryHTTPError(416, "RANGE_INVALID", "invalid content range", raw)
    start, end = int(m.group(1)), int(m.group(2))
    if start != upload.size:
        raise RegistryHTTPError(
            416,
            "RANGE_INVALID",
            "invalid content range",
            {"range": raw, "uploaded": upload.size},
            {
                "Range": f"0-{max(upload.size - 1, 0)}",
                "Location": f"/v2/{upload.repo}/blobs/uploads/{upload.id}",
            },
        )
    length = end - start + 1
    if declared is not None and declared != length:
        raise RegistryHTTPError(
            400,
            "SIZE_INVALID",
            "Content-Length does not match Content-Range",
            {"content_length": declared, "content_range": raw},
        )
    return length


async def _upload_status(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    upload = _get_upload(request.app[_REGISTRY], name, upload_id)
    return web.Response(status=204, headers=_upload_headers(name, upload))


async def _limited_append(
    request: web.Request, reg: _Registry, store: OciLayout, upload: _Upload
) -> None:
    """Append a chunk within the limits; past one, the whole upload is dropped (nothing stays).

    The upload is claimed (busy) before the first await, so a second request for the same
    upload is refused rather than interleaved.
    """
    limit = _chunk_limit(request, upload)
    cap = _upload_cap(reg, store, upload.size)
    upload.busy = True
    try:
        if limit is not None and upload.size + limit > cap.limit:
            raise _too_large(cap.what, cap.limit, upload.size + limit)
        await asyncio.to_thread(reg.check_floor, store, limit or 0)
        await _append(request, upload, limit=limit, cap=cap)
    except RegistryHTTPError as exc:
        if exc.status in (403, 413):
            _drop_upload(reg, upload)
        raise
    finally:
        upload.busy = False


async def _upload_patch(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    store = reg.writable_store()
    upload = _get_upload(reg, name, upload_id)
    try:
        await _limited_append(request, reg, store, upload)
    except _CLIENT_GONE as exc:
        log.info("client went away during a chunk of upload %s: %s", upload_id, exc)
        raise RegistryHTTPError(400, "BLOB_UPLOAD_INVALID", "upload interrupted") from exc
    return web.Response(status=202, headers=_upload_headers(name, upload))


async def _upload_finish(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    store = reg.writable_store()
    upload = _get_upload(reg, name, upload_id)
    digest = request.query.get("digest", "")
    if not is_digest(digest):
        raise _digest_invalid("invalid digest", digest)
    try:
        await _limited_append(request, reg, store, upload)
    except _CLIENT_GONE as exc:
        _drop_upload(reg, upload)
        raise RegistryHTTPError(400, "BLOB_UPLOAD_INVALID", "upload interrupted") from exc
    upload.busy = True  # from here on the upload is being published: nobody appends
    try:
        # publishing copies the upload into the blob directory
        await asyncio.to_thread(reg.check_floor, store, upload.size)
    except RegistryHTTPError:
        _drop_upload(reg, upload)
        raise
    try:
        await asyncio.to_thread(store.put_file, upload.path, digest)
    except DigestMismatch as exc:
        raise _digest_invalid(
            "provided digest did not match uploaded content",
            {"expected": digest, "actual": exc.actual},
        ) from exc
    finally:
        # Like distribution, a finished upload is gone whether or not its digest matched.
        _drop_upload(reg, upload)
    reg.link_blob(name, digest)
    return _created(name, digest)


async def _upload_cancel(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    _drop_upload(reg, _get_upload(reg, name, upload_id))
    return web.Response(status=204)


def _check_descriptor(store: OciLayout, desc: Any, what: str) -> str | None:
    """A referenced descriptor's digest; MANIFEST_BLOB_UNKNOWN when it is not in the store."""
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise RegistryHTTPError(400, "MANIFEST_INVALID", f"manifest invalid: bad {what} descriptor")
    digest: str = desc["digest"]
    size = desc.get("size")
    if not is_digest(digest) or not isinstance(size, int) or size < 0:
        raise RegistryHTTPError(
            400, "MANIFEST_INVALID", f"manifest invalid: bad {what} descriptor", digest
        )
    if not store.has(digest):
        if what == "layer" and desc.get("urls"):
            return None  # a foreign layer, fetched from its URLs by the client
        raise RegistryHTTPError(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", digest)
    if store.size(digest) != size:
        raise RegistryHTTPError(
            400,
            "MANIFEST_INVALID",
            f"manifest invalid: {what} size does not match the stored blob",
            {"digest": digest, "size": size, "stored": store.size(digest)},
        )
    return digest


# airlock's own artifacts (the files a node installs from: kubelet, kubeadm, ...) come only
# from bundles that `load` verified; a push must not be able to pose as one.
_RESERVED_TYPE_PREFIX = "application/vnd.airlock."


def _refuse_reserved(doc: dict[str, Any]) -> None:
    config = doc.get("config")
    kinds = [doc.get("artifactType"), config.get("mediaType") if isinstance(config, dict) else None]
    reserved = [k for k in kinds if isinstance(k, str) and k.startswith(_RESERVED_TYPE_PREFIX)]
    if reserved:
        raise RegistryHTTPError(
            403,
            "DENIED",
            f"artifact type {reserved[0]} is reserved to bundles loaded with `airlock load`",
            reserved[0],
        )


def _validate_manifest(
    store: OciLayout, body: bytes, content_type: str
) -> tuple[str, list[str], list[str]]:
    """(media type, referenced blobs, referenced manifests) of a pushed manifest."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise RegistryHTTPError(400, "MANIFEST_INVALID", f"manifest invalid: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryHTTPError(400, "MANIFEST_INVALID", "manifest invalid: not a JSON object")
    if content_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1:
        raise RegistryHTTPError(
            400, "MANIFEST_INVALID", "manifest invalid: schema 1 manifests are not supported"
        )
    if doc.get("schemaVersion") != 2:
        raise RegistryHTTPError(
            400, "MANIFEST_INVALID", "manifest invalid: schemaVersion must be 2"
        )
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise RegistryHTTPError(400, "MANIFEST_INVALID", "manifest invalid: bad mediaType")
    if declared and content_type in _PUSH_TYPES and declared != content_type:
        raise RegistryHTTPError(
            400,
            "MANIFEST_INVALID",
            "manifest invalid: mediaType does not match Content-Type",
            {"mediaType": declared, "Content-Type": content_type},
        )
    media_type = declared or (content_type if content_type in _PUSH_TYPES else "")
    if not media_type:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in _PUSH_TYPES:
        raise RegistryHTTPError(
            400, "MANIFEST_INVALID", "manifest invalid: unsupported media type", media_type
        )
    _refuse_reserved(doc)
    blobs: list[str] = []
    children: list[str] = []
    if media_type in INDEX_MEDIA_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise RegistryHTTPError(400, "MANIFEST_INVALID", "manifest invalid: no manifests list")
        for d in items:
            if (digest := _check_descriptor(store, d, "manifest")) is not None:
                children.append(digest)
    else:
        if (digest := _check_descriptor(store, doc.get("config"), "config")) is not None:
            blobs.append(digest)
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise RegistryHTTPError(400, "MANIFEST_INVALID", "manifest invalid: no layers list")
        for d in layers:
            if (digest := _check_descriptor(store, d, "layer")) is not None:
                blobs.append(digest)
    return media_type, blobs, children


def _publish_manifest(
    store: OciLayout, name: str, ref: str, body: bytes, content_type: str
) -> tuple[str, str | None]:
    """Validate a pushed manifest against the store and record it; (digest, subject).

    Under the gc lock (shared): gc cannot remove a blob between the check that it is there and
    the index.json entry that names it.
    """
    digest = sha256_digest(body)
    with store_lock(store.root, exclusive=False):
        media_type, _blobs, _children = _validate_manifest(store, body, content_type)
        store.put_bytes(body, digest)
        if ":" in ref:
            with store.lock:  # index.json read-modify-write
                entries = with_digest_entry(
                    store.manifests(), digest_entry(name, media_type, digest, len(body))
                )
                if entries is not None:
                    store.write_index(entries)
        else:
            store.merge_index([image_descriptor(f"{name}:{ref}", media_type, digest, len(body))])
    info = manifest_info(body, media_type)
    return digest, info.subject if info is not None else None


async def _manifest_put(request: web.Request, name: str, ref: str) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    store = reg.writable_store()
    by_digest = ":" in ref
    if by_digest and not is_digest(ref):
        raise _digest_invalid("invalid digest", ref)
    if not by_digest and not is_tag(ref):
        raise RegistryHTTPError(400, "TAG_INVALID", "manifest tag did not match URI", ref)
    limit = reg.options.limits.manifest_bytes
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise _too_large("the manifest", limit, declared)
    await asyncio.to_thread(reg.check_floor, store, declared or 0)
    parts: list[bytes] = []
    try:
        await _read_body(request, parts.append, limit=declared, cap=_Cap("the manifest", limit))
    except _CLIENT_GONE as exc:
        raise RegistryHTTPError(400, "MANIFEST_INVALID", "manifest upload interrupted") from exc
    body = b"".join(parts)
    if by_digest and sha256_digest(body) != ref:
        raise _digest_invalid(
            "provided digest did not match uploaded content",
            {"expected": ref, "actual": sha256_digest(body)},
        )
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    async with reg.index_lock:
        try:
            digest, subject = await asyncio.to_thread(
                _publish_manifest, store, name, ref, body, content_type
            )
        finally:
            reg.invalidate()
    headers = {
        "Location": f"/v2/{name}/manifests/{digest}",
        "Docker-Content-Digest": digest,
        "Content-Length": "0",
    }
    if subject is not None:
        headers["OCI-Subject"] = subject
    return web.Response(status=201, headers=headers)


# -- app ----------------------------------------------------------------------------------------


@web.middleware
async def _errors_and_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    reg = request.app[_REGISTRY]
    if reg.auth is not None and not await reg.check_auth(request.headers.get("Authorization")):
        return RegistryHTTPError(
            401,
            "UNAUTHORIZED",
            "authentication required",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
        ).response()
    try:
        return await handler(request)
    except RegistryHTTPError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status == 404:
            return RegistryHTTPError(
                404, "NOT_FOUND", "no such API endpoint", request.path
            ).response()
        if exc.status == 405:
            return _unsupported().response()
        raise
    except AirlockError as exc:
        log.error("%s %s: %s", request.method, request.path, exc)
        return RegistryHTTPError(500, "UNKNOWN", exc.message).response()


async def _add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[API_VERSION_HEADER] = "registry/2.0"


async def _on_startup(app: web.Application) -> None:
    reg = app[_REGISTRY]
    # Uploads in progress are held in memory: whatever a previous run left is unreachable.
    if reg.upload_dir is not None and reg.upload_dir.is_dir():
        for p in reg.upload_dir.iterdir():
            if _UUID_RE.match(p.name) and p.name not in reg.uploads:
                p.unlink(missing_ok=True)
    if reg.source.store is not None:
        reg.source.store.remove_temp_files()
    # a pull-only registry reads the links but never writes into the store
    reg.blob_links.load(compact=reg.upload_dir is not None)


async def _on_cleanup(app: web.Application) -> None:
    reg = app[_REGISTRY]
    for upload in list(reg.uploads.values()):
        _drop_upload(reg, upload)


def make_app(
    source: ContentSource,
    *,
    htpasswd: Path | None = None,
    upload_dir: Path | None = None,
    options: RegistryOptions | None = None,
) -> web.Application:
    """The registry as an aiohttp application: pull-only unless `options.push` (which needs a
    writable source); deletes only with `options.delete`."""
    auth = load_htpasswd(htpasswd) if htpasswd is not None else None
    options = options or RegistryOptions()
    store = source.store
    if upload_dir is None and store is not None:
        upload_dir = store.root / UPLOADS_DIR
    if options.push and store is None:
        raise UsageError(
            f"cannot accept pushes into {source.description}: it is read-only",
            "serve a store (--store) to accept pushes",
        )
    app = web.Application(middlewares=[_errors_and_auth], client_max_size=MAX_MANIFEST_SIZE)
    writable = upload_dir if store is not None and options.push else None
    links = BlobLinks(store.root / LINKS_LOG if store is not None else None)
    app[_REGISTRY] = _Registry(source, auth, writable, options, blob_links=links)
    app.router.add_route("*", "/v2/", _v2_root)
    app.router.add_route("*", "/v2", _v2_redirect)
    app.router.add_route("*", "/v2/{tail:.+}", _dispatch)
    app.on_response_prepare.append(_add_api_version)
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    return app


# -- running ------------------------------------------------------------------------------------


@dataclass
class RunningServer:
    url: str
    host: str
    port: int
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:5000`, `[::1]:5000`, `:5000` (every address), `0.0.0.0:0` (a free port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(
            f"invalid listen address {listen!r}", "use ADDRESS:PORT, e.g. 127.0.0.1:5000"
        )
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise AirlockError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "another process may hold the port; pick another with --listen",
        ) from exc
    return sock


async def start_server(
    source: ContentSource,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    ssl_context: ssl.SSLContext | None = None,
    htpasswd: Path | None = None,
    upload_dir: Path | None = None,
    options: RegistryOptions | None = None,
    also: Sequence[tuple[str, int]] = (),
) -> RunningServer:
    """Start serving in the running event loop; port 0 picks a free port. `also` names more
    addresses to listen on (the URL returned is the first one's)."""
    app = make_app(source, htpasswd=htpasswd, upload_dir=upload_dir, options=options)
    socks: list[socket.socket] = []
    try:
        for h, p in ((host, port), *also):
            socks.append(_bind(h, p))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    runner = web.AppRunner(app, access_log=log)
    await runner.setup()
    for sock in socks:
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    bound = socks[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if ssl_context is not None else "http"
    return RunningServer(f"{scheme}://{shown}:{bound}", host, bound, runner)


def _sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) the registry is ready, so `Before=kubelet.service` means it."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())


def serve(
    source: ContentSource,
    *,
    listen: str | Sequence[str] = "127.0.0.1:5000",
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    htpasswd: Path | None = None,
    options: RegistryOptions | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve on every `listen` address until SIGTERM or SIGINT; `ready(url)` is called once
    the ports are open (with the first address's URL).

    Pushes and deletes need TLS and an htpasswd file: credentials never cross the wire in
    clear, and nobody writes anonymously.
    """
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together", "pass both, or neither")
    options = options or RegistryOptions()
    if (options.push or options.delete) and (tls_cert is None or htpasswd is None):
        raise UsageError(
            "--push and --delete need TLS and credentials (--tls-cert, --tls-key, --htpasswd)",
            "`airlock registry certs --htpasswd-user NAME` writes all three and prints their paths",
        )
    ssl_context = None
    if tls_cert is not None and tls_key is not None:
        from airlock.oci.certs import server_ssl_context  # cryptography: only when asked for

        ssl_context = server_ssl_context(tls_cert, tls_key)
    addrs = [parse_listen(a) for a in ([listen] if isinstance(listen, str) else listen)]
    if not addrs:
        raise UsageError("no address to listen on", "pass --listen ADDRESS:PORT")
    (host, port), also = addrs[0], addrs[1:]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await start_server(
            source,
            host=host,
            port=port,
            ssl_context=ssl_context,
            htpasswd=htpasswd,
            options=options,
            also=also,
        )
        try:
            if ready is not None:
                ready(server.url)
            _sd_notify("READY=1")
            await stop.wait()
            _sd_notify("STOPPING=1")
        finally:
            await server.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
