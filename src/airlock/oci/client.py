"""An OCI distribution client: resolve tags once, pull by digest, verify every byte.

`pull_images` takes full upstream references (`registry.k8s.io/pause:3.9`) and, per upstream
registry host, the endpoint actually used (a mirror from the spec's sources, else
`https://<host>`; docker.io is `https://registry-1.docker.io`). For each reference:

1. The tag is resolved ONCE: GET the manifest with an Accept for OCI and Docker schema 2
   manifests and indexes; its digest is the sha256 of the bytes received, and a
   Docker-Content-Digest header that disagrees is a DigestMismatch. Everything else is fetched
   by digest and checked against it.
2. An index is kept byte for byte; the child manifests of the requested platforms are pulled
   (a missing platform is an error naming those available). A single-platform manifest whose
   config says another platform is an error too. Docker schema 1 is refused.
3. Blobs stream into `dest` through its verifying writer (a mismatch never gets a final name).
   A blob already in `dest` is trusted by name, because the store only ever publishes a blob
   through that writer after checking its digest; `verify_existing=True` re-hashes it instead
   (and refetches it when it is damaged). A blob wanted by several images, at the same time or
   not, is fetched once (an in-flight map digest -> task).

Auth is anonymous until a 401 (see `airlock.oci.auth`), and kept per origin: redirects are
followed by hand, and each host reached (the registry, another registry a redirect leads to,
object storage) gets only what its own challenge asked for, with the credentials filed for that
host (`airlock.oci.credentials`), never the first host's token or password. Object storage that
never challenges therefore never sees an Authorization header. 429 and 503 are retried after
the server's Retry-After within a bounded budget (`airlock.fetch.retry`); Docker Hub's
RateLimit-* headers are reported (`notices`) when few pulls are left.
Connection drops resume with Range (or skip what we already have when the server sends it all).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from airlock.blobstore import BlobStore
from airlock.content import Blob, BlobRole, ImageArtifact
from airlock.errors import AirlockError, DigestMismatch, RegistryError
from airlock.fetch import recording
from airlock.fetch.downloader import ProgressSink, gather_or_cancel
from airlock.fetch.network import TLS_HINT, is_certificate_error, proxy_for, tls_problem
from airlock.fetch.retry import (
    RetryPolicy,
    TransientError,
    is_transient_status,
    retry_after_seconds,
    with_retries,
)
from airlock.oci.auth import Authenticator, CredentialLoader, Credentials, pull_scope
from airlock.oci.credentials import CredentialStore
from airlock.oci.digest import is_digest, sha256_digest
from airlock.oci.media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)
from airlock.oci.platform import (
    Platform,
    available_platforms,
    format_platforms,
    parse_platform,
    platform_of,
    select_manifests,
)
from airlock.oci.ref import DOCKER_HUB, Reference

__all__ = [
    "MANIFEST_ACCEPT",
    "Endpoint",
    "LayerFetch",
    "Manifest",
    "RegistryClient",
    "default_endpoint",
    "fetch_layers",
    "pull_images",
]

# schema 1 is accepted on the wire only so that it can be refused with a clear message
MANIFEST_ACCEPT = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED]
)
_MAX_MANIFEST = 4 << 20
_CHUNK = 1 << 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


@dataclass(frozen=True)
class Endpoint:
    """Where an upstream registry is reached. A path in `url` is a repository prefix.

    E.g. `http://127.0.0.1:5000/registry.k8s.io` reads `registry.k8s.io/pause` from
    `/v2/registry.k8s.io/pause/...` (airlock's own registry names repositories that way).
    """

    url: str
    insecure: bool = False  # plain http allowed, TLS not verified
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def default_endpoint(host: str) -> Endpoint:
    if host == DOCKER_HUB:
        return Endpoint("https://registry-1.docker.io")
    return Endpoint(f"https://{host}")


@dataclass(frozen=True)
class Manifest:
    data: bytes
    digest: str
    media_type: str
    doc: dict[str, Any]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _rate_value(value: str | None) -> tuple[int, int] | None:
    """`100;w=21600` -> (100, 21600); `100` -> (100, 0); None when absent or malformed."""
    if not value:
        return None
    head, _, params = value.partition(";")
    window = 0
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k == "w" and v.isdigit():
            window = int(v)
    return (int(head.strip()), window) if head.strip().isdigit() else None


def _redact(url: str) -> str:
    """A URL without its query (signed storage URLs carry their signature there)."""
    return url.split("?", 1)[0]


def _error_code(body: bytes) -> str:
    """The distribution error code(s) of a JSON error body (`MANIFEST_UNKNOWN`), or ''."""
    try:
        data = json.loads(body)
        codes = [str(e.get("code")) for e in data.get("errors", []) if isinstance(e, dict)]
    except (ValueError, AttributeError, TypeError):
        return ""
    return ", ".join(c for c in codes if c)


def _parse_manifest(data: bytes, content_type: str, digest: str, *, what: str) -> Manifest:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"the manifest of {what} is not JSON") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"the manifest of {what} is not a JSON object")
    declared = doc.get("mediaType")
    media_type = declared if isinstance(declared, str) and declared else content_type
    if doc.get("schemaVersion") == 1 or media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise RegistryError(
            f"{what} is a Docker schema 1 manifest, which airlock does not support",
            "schema 1 is deprecated and unsafe to pin; re-push the image with a current tool "
            "(e.g. `skopeo copy --format v2s2` or `--format oci`) and reference that",
        )
    if media_type not in INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES:
        # OCI makes mediaType optional; tell index from manifest by shape
        if isinstance(doc.get("manifests"), list):
            media_type = OCI_INDEX
        elif isinstance(doc.get("config"), dict):
            media_type = OCI_MANIFEST
        else:
            raise RegistryError(
                f"{what} has an unsupported manifest type {media_type or 'unknown'!r}",
                "airlock pulls OCI and Docker schema 2 images and indexes",
            )
    return Manifest(data, digest, media_type, doc)


def _descriptor(obj: Any, *, what: str) -> dict[str, Any]:
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("digest"), str)
        or not isinstance(obj.get("size"), int)
    ):
        raise RegistryError(f"{what} has a malformed descriptor: {str(obj)[:200]}")
    if not is_digest(obj["digest"]):
        raise RegistryError(
            f"{what} references {obj['digest']!r}, not a sha256 digest",
            "airlock stores sha256-addressed content only",
        )
    return obj


class RegistryClient:
    """One upstream registry (`host`, e.g. registry.k8s.io) reached through `endpoint`."""

    def __init__(
        self,
        host: str,
        endpoint: Endpoint,
        *,
        session: aiohttp.ClientSession,
        policy: RetryPolicy | None = None,
        credentials: CredentialStore | None = None,
        notices: list[str] | None = None,
    ) -> None:
        self.host = host
        self.endpoint = endpoint
        self.session = session
        self.policy = policy or RetryPolicy()
        parts = urlsplit(endpoint.url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                f"invalid registry endpoint {endpoint.url!r} for {host}",
                "use a URL like https://mirror.example:5000 or http://127.0.0.1:5001",
            )
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.strip("/")
        self.credentials = credentials
        self.notices = notices if notices is not None else []
        self._rate_reported = False
        self.home = _origin(self.base)
        self.auths: dict[tuple[str, str, int | None], Authenticator] = {}
        self.auth = self._authenticator(self.home)

    def _authenticator(self, origin: tuple[str, str, int | None]) -> Authenticator:
        """The auth state of one origin; credentials are the ones issued for THAT host."""
        if origin not in self.auths:
            scheme, hostname, port = origin
            netloc = (
                hostname
                if port in (None, {"http": 80, "https": 443}.get(scheme))
                else (f"{hostname}:{port}")
            )
            creds: Credentials | CredentialLoader | None = None
            ep = self.endpoint
            store = self.credentials
            if origin == self.home and ep.username is not None:
                creds = Credentials(ep.username, ep.password or "")
            elif store is not None:
                if origin == self.home:
                    upstream = self.host
                    creds = lambda: store.for_registry(upstream, netloc)  # noqa: E731
                else:
                    creds = lambda: store.for_host(netloc)  # noqa: E731
            self.auths[origin] = Authenticator(
                host=self.host if origin == self.home else netloc,
                session=self.session,
                credentials=creds,
                policy=self.policy,
                ssl=not self.endpoint.insecure if origin == self.home else True,
            )
        return self.auths[origin]

    def url(self, repository: str, kind: str, reference: str) -> str:
        repo = f"{self.prefix}/{repository}" if self.prefix else repository
        return f"{self.base}/v2/{repo}/{kind}/{reference}"

    def _ssl(self, origin: tuple[str, str, int | None]) -> bool:
        # `insecure` is for the configured endpoint only; a redirect elsewhere is verified
        return not self.endpoint.insecure if origin == self.home else True

    def _note_rate_limit(self, headers: Mapping[str, str]) -> None:
        """Docker Hub's pull limit (`RateLimit-Remaining: 7;w=21600`): said once when low."""
        limit = _rate_value(headers.get("RateLimit-Limit"))
        remaining = _rate_value(headers.get("RateLimit-Remaining"))
        if limit is None or remaining is None or self._rate_reported:
            return
        if remaining[0] * 5 <= limit[0]:
            self._rate_reported = True
            hours = f" per {limit[1] / 3600:g} h" if limit[1] else ""
            who = "this account" if self.auth.sent_credentials else "anonymous pulls"
            self.notices.append(
                f"{self.host}: rate limit nearly used up: {remaining[0]} of {limit[0]} pulls "
                f"left{hours} for {who}; "
                + (
                    "wait for the window to pass, or use a mirror"
                    if who == "this account"
                    else "log in (docker login, or sources.registries."
                    f"{self.host}.credentials) for a higher limit"
                )
            )

    async def _open(
        self, url: str, *, scope: str, headers: Mapping[str, str], what: str
    ) -> aiohttp.ClientResponse:
        """GET with auth and hand-followed redirects; returns a 2xx or 404 response (open).

        Each origin (the registry, the registry a redirect leads to, object storage) gets only
        the Authorization its OWN challenge asked for: nothing before a 401, and never another
        origin's token or credentials. 401 -> that origin's challenge answered once; 401 again
        or 403 -> access denied. 5xx/429 -> TransientError (with Retry-After).
        """
        answered: set[tuple[str, str, int | None]] = set()
        target = url
        hops = 0
        while True:
            origin = _origin(target)
            auth = self._authenticator(origin)
            h = dict(headers)
            auth_headers = auth.headers(scope)
            h.update(auth_headers)
            resp = await self.session.get(
                target,
                headers=h,
                allow_redirects=False,
                ssl=self._ssl(origin),
                timeout=_TIMEOUT,
                **proxy_for(target),
            )
            status = resp.status
            if origin == self.home:
                self._note_rate_limit(resp.headers)
            if status in _REDIRECTS and resp.headers.get("Location"):
                location = resp.headers["Location"]
                resp.release()
                hops += 1
                if hops > _MAX_REDIRECTS:
                    raise RegistryError(f"{what}: more than {_MAX_REDIRECTS} redirects from {url}")
                target = urljoin(target, location)
                continue
            if status == 401 and origin not in answered:
                challenge = resp.headers.get("WWW-Authenticate")
                resp.release()
                if auth_headers:
                    auth.forget(scope)  # expired or revoked: get a fresh one
                if await auth.answer(challenge, scope, what=what):
                    answered.add(origin)
                    if origin == self.home:
                        target, hops = url, 0
                    continue  # elsewhere: the same redirect target, now with its own token
                raise RegistryError(
                    f"access denied: {what} on {auth.host} (HTTP 401, no usable credentials)",
                    f"the registry requires credentials for {auth.host}: name them in the "
                    f"spec (sources.registries.{self.host}.credentials: env or file), pass "
                    "--registry-auth FILE, or log in with docker/podman/skopeo login",
                )
            if status in (401, 403):
                body = await resp.read()
                resp.release()
                code = _error_code(body)
                raise RegistryError(
                    f"access denied: {what} on {auth.host} (HTTP {status}"
                    + (f" {code})" if code else ")"),
                    "the registry refused this repository for these credentials: check the "
                    f"image name, and the credentials for {auth.host} (the spec's "
                    f"sources.registries.{self.host}.credentials, --registry-auth, or "
                    "docker/podman login; anonymous pulls may not be allowed)",
                )
            if 200 <= status < 300 or status == 404:
                return resp
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            body = await resp.read() if status == 400 else b""
            resp.release()
            if is_transient_status(status):
                raise TransientError(
                    f"HTTP {status} from {origin[1]}"
                    + (" (rate limited)" if status == 429 else "")
                    + (f" (Retry-After {resp.headers['Retry-After']})" if retry_after else ""),
                    retry_after=retry_after,
                )
            detail = f": {body[:200].decode(errors='replace')}" if body else ""
            raise RegistryError(
                f"{what}: {origin[1]} answered HTTP {status} for {_redact(target)}{detail}"
            )

    async def get_manifest(self, repository: str, reference: str, *, what: str) -> Manifest:
        """GET a manifest by tag or digest; its digest is the sha256 of the bytes, verified."""
        url = self.url(repository, "manifests", reference)
        scope = pull_scope(repository)

        async def attempt(_n: int) -> tuple[bytes, str, str | None]:
            resp = await self._open(
                url, scope=scope, headers={"Accept": MANIFEST_ACCEPT}, what=what
            )
            async with resp:
                if resp.status == 404:
                    code = _error_code(await resp.read())
                    raise RegistryError(
                        f"not found: {what}",
                        f"{self.host} has no such "
                        + ("manifest" if is_digest(reference) else "tag")
                        + (f" ({code})" if code else "")
                        + "; check the name and version (skopeo list-tags lists the tags)",
                    )
                if resp.content_length is not None and resp.content_length > _MAX_MANIFEST:
                    raise RegistryError(f"the manifest of {what} is larger than 4 MiB; refusing it")
                data = await resp.content.read(_MAX_MANIFEST + 1)
                recording.saw(data)  # a manifest by tag: its answer decides the content
                if len(data) > _MAX_MANIFEST:
                    raise RegistryError(f"the manifest of {what} is larger than 4 MiB; refusing it")
                ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
                return data, ctype, resp.headers.get("Docker-Content-Digest")

        with recording.verified() if is_digest(reference) else contextlib.nullcontext():
            data, ctype, header_digest = await self._retrying(attempt, what=f"manifest of {what}")
        digest = sha256_digest(data)
        if is_digest(reference) and digest != reference:
            raise DigestMismatch(f"manifest {reference} of {what}", reference, digest)
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise DigestMismatch(
                f"manifest of {what} (Docker-Content-Digest)", header_digest, digest
            )
        return _parse_manifest(data, ctype, digest, what=what)

    async def fetch_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        dest: BlobStore,
        *,
        what: str,
        progress: ProgressSink | None = None,
        progress_label: str | None = None,
    ) -> int:
        """Stream a blob into `dest`, verified; returns the bytes downloaded (resumes count).
        `progress_label` names it to `progress` (default: the image and the digest)."""
        url = self.url(repository, "blobs", digest)
        scope = pull_scope(repository)
        label = f"blob {digest} of {what}"
        shown = progress_label or f"{what} {digest}"
        downloaded = 0
        with recording.verified(), dest.writer(digest) as w:

            async def attempt(_n: int) -> None:
                nonlocal downloaded
                offset = w.size
                headers = {"Accept-Encoding": "identity"}
                if offset:
                    headers["Range"] = f"bytes={offset}-"
                resp = await self._open(url, scope=scope, headers=headers, what=what)
                async with resp:
                    if resp.status == 404:
                        raise RegistryError(
                            f"not found: {label} on {self.host}",
                            "the registry lost a blob its manifest names; try again later or "
                            "report it to the registry's operator",
                        )
                    skip = offset  # a 200 to a Range request: the whole blob again
                    if resp.status == 206:
                        start_s = resp.headers.get("Content-Range", "").removeprefix("bytes ")
                        start = start_s.split("-", 1)[0]
                        if not start.isdigit() or int(start) > offset:
                            raise RegistryError(f"{label}: bad Content-Range {start_s!r}")
                        skip = offset - int(start)
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        downloaded += len(chunk)
                        if skip:
                            n = min(skip, len(chunk))
                            chunk, skip = chunk[n:], skip - n
                            if not chunk:
                                continue
                        if w.size + len(chunk) > size:
                            raise DigestMismatch(label, f"{digest} ({size} bytes)", "more bytes")
                        w.write(chunk)
                        if progress is not None:
                            progress.advance(shown, len(chunk))
                if w.size < size:
                    raise TransientError(f"connection closed at byte {w.size} of {size}")

            if progress is not None:
                progress.start(shown, size)
            await self._retrying(attempt, what=label)
            w.commit(label)
            if progress is not None:
                progress.done(shown)
        return downloaded

    async def _retrying(self, attempt: Any, *, what: str) -> Any:
        try:
            return await with_retries(attempt, policy=self.policy, what=what, error=RegistryError)
        except AirlockError:
            raise
        except aiohttp.ClientError as exc:
            if is_certificate_error(exc):
                raise RegistryError(f"{what}: {tls_problem(exc)}", TLS_HINT) from exc
            hint = (
                "the registry's TLS setup failed: check its certificate and the CA bundle"
                if isinstance(exc, aiohttp.ClientSSLError)
                else "check the registry endpoint in sources.registries"
            )
            raise RegistryError(f"{what}: {exc}", hint) from exc


@dataclass(frozen=True)
class LayerFetch:
    """A layer `pull_images(deferred=...)` left for `fetch_layers` (not in the store yet)."""

    ref: Reference
    digest: str
    size: int
    what: str  # the image reference, for messages
    label: str  # "name:tag layer 2/3", for progress


class _Puller:
    def __init__(
        self,
        *,
        dest: BlobStore,
        endpoints: Mapping[str, Endpoint],
        platforms: Sequence[Platform],
        session: aiohttp.ClientSession,
        concurrency: int,
        policy: RetryPolicy,
        progress: ProgressSink | None,
        verify_existing: bool,
        credentials: CredentialStore | None = None,
        notices: list[str] | None = None,
    ) -> None:
        self.credentials = credentials
        self.notices = notices
        self.dest = dest
        self.endpoints = endpoints
        self.platforms = platforms
        self.session = session
        self.sem = asyncio.Semaphore(max(1, concurrency))
        self.policy = policy
        self.progress = progress
        self.verify_existing = verify_existing
        self.clients: dict[str, RegistryClient] = {}
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.checked: set[str] = set()
        self.deferred: dict[str, LayerFetch] | None = None  # set: layers are listed, not fetched

    def client(self, host: str) -> RegistryClient:
        if host not in self.clients:
            ep = self.endpoints.get(host) or default_endpoint(host)
            self.clients[host] = RegistryClient(
                host,
                ep,
                session=self.session,
                policy=self.policy,
                credentials=self.credentials,
                notices=self.notices,
            )
        return self.clients[host]

    async def _present(self, digest: str) -> bool:
        if not self.dest.has(digest):
            return False
        if not self.verify_existing or digest in self.checked:
            return True
        try:
            await asyncio.to_thread(self.dest.verify, digest)
        except DigestMismatch:
            self.dest.path(digest).unlink(missing_ok=True)  # damaged: fetch it again
            return False
        self.checked.add(digest)
        return True

    async def ensure_blob(
        self, ref: Reference, desc: Mapping[str, Any], *, what: str, label: str | None = None
    ) -> None:
        """Make sure a blob is in dest; concurrent and repeated requests share one fetch."""
        digest = str(desc["digest"])
        task = self.inflight.get(digest)
        if task is None:
            task = asyncio.create_task(
                self._fetch_blob(ref, digest, int(desc["size"]), what, label or what)
            )
            self.inflight[digest] = task
        # shield: one image giving up must not cancel a fetch another image waits on
        await asyncio.shield(task)

    async def _fetch_blob(
        self, ref: Reference, digest: str, size: int, what: str, label: str
    ) -> None:
        if await self._present(digest):
            return
        async with self.sem:
            await self.client(ref.registry).fetch_blob(
                ref.repository,
                digest,
                size,
                self.dest,
                what=what,
                progress=self.progress,
                progress_label=label,
            )
        self.checked.add(digest)

    async def manifest_by_digest(
        self, ref: Reference, desc: Mapping[str, Any], *, what: str
    ) -> Manifest:
        digest = str(desc["digest"])
        if not await self._present(digest):
            task = self.inflight.get(digest)
            if task is None:
                task = asyncio.create_task(self._fetch_manifest(ref, digest, what))
                self.inflight[digest] = task
            await asyncio.shield(task)
        data = self.dest.read(digest)
        return _parse_manifest(data, str(desc.get("mediaType", "")), digest, what=what)

    async def _fetch_manifest(self, ref: Reference, digest: str, what: str) -> None:
        async with self.sem:
            m = await self.client(ref.registry).get_manifest(ref.repository, digest, what=what)
        self.dest.put_bytes(m.data, expected=digest)

    async def resolve(self, ref: Reference, *, what: str) -> Manifest:
        """The top-level manifest or index: by tag (resolved here, once) or by pinned digest."""
        if ref.digest and await self._present(ref.digest):
            return _parse_manifest(self.dest.read(ref.digest), "", ref.digest, what=what)
        async with self.sem:
            m = await self.client(ref.registry).get_manifest(
                ref.repository, ref.digest or ref.tag or "latest", what=what
            )
        if not self.dest.has(m.digest):
            self.dest.put_bytes(m.data, expected=m.digest)
        return m

    async def pull(self, ref: Reference) -> ImageArtifact:
        what = str(ref)
        top = await self.resolve(ref, what=what)
        blobs: list[Blob] = [
            Blob(
                top.digest,
                len(top.data),
                top.media_type,
                BlobRole.INDEX if top.media_type in INDEX_MEDIA_TYPES else BlobRole.MANIFEST,
                what,
            )
        ]
        if top.media_type in INDEX_MEDIA_TYPES:
            entries = top.doc.get("manifests")
            if not isinstance(entries, list):
                raise RegistryError(f"the index of {what} has no manifests list")
            entries = [_descriptor(e, what=f"the index of {what}") for e in entries]
            if self.platforms:
                selected, missing = select_manifests(entries, self.platforms)
                if missing:
                    raise RegistryError(
                        f"{what} has no image for {format_platforms(missing)}; it offers: "
                        + (", ".join(available_platforms(entries)) or "no platforms"),
                        "change the spec's platforms, or use an image built for them",
                    )
            else:
                selected = list(entries)
            children = await asyncio.gather(
                *(self.manifest_by_digest(ref, e, what=what) for e in selected)
            )
            for child in children:
                if child.media_type not in MANIFEST_MEDIA_TYPES:
                    raise RegistryError(
                        f"{what}: index entry {child.digest} is {child.media_type}, not an "
                        "image manifest (nested indexes are not supported)"
                    )
                blobs.append(
                    Blob(child.digest, len(child.data), child.media_type, BlobRole.MANIFEST, what)
                )
            manifests = list(children)
            carried = [str(p) for e in selected if (p := platform_of(e)) is not None]
        else:
            manifests = [top]
            carried = []
        configs = [
            _descriptor(m.doc.get("config"), what=f"the manifest {m.digest} of {what}")
            for m in manifests
        ]
        await asyncio.gather(
            *(
                self.ensure_blob(ref, c, what=what, label=f"{what} config {i}/{len(configs)}")
                for i, c in enumerate(configs, 1)
            )
        )
        if top.media_type in MANIFEST_MEDIA_TYPES:
            carried = self._check_single_platform(configs[0], what=what)
        layers: list[dict[str, Any]] = []
        for m in manifests:
            raw_layers = m.doc.get("layers")
            if not isinstance(raw_layers, list):
                raise RegistryError(f"the manifest {m.digest} of {what} has no layers list")
            layers.extend(
                _descriptor(d, what=f"the manifest {m.digest} of {what}") for d in raw_layers
            )
        if self.deferred is not None:
            for i, d in enumerate(layers, 1):
                digest = str(d["digest"])
                if digest not in self.deferred and not await self._present(digest):
                    label = f"{what} layer {i}/{len(layers)}"
                    self.deferred[digest] = LayerFetch(ref, digest, int(d["size"]), what, label)
        else:
            await gather_or_cancel(
                [
                    asyncio.ensure_future(
                        self.ensure_blob(ref, d, what=what, label=f"{what} layer {i}/{len(layers)}")
                    )
                    for i, d in enumerate(layers, 1)
                ]
            )
        for c in configs:
            blobs.append(
                Blob(c["digest"], c["size"], str(c.get("mediaType", "")), BlobRole.CONFIG, what)
            )
        for d in layers:
            blobs.append(
                Blob(d["digest"], d["size"], str(d.get("mediaType", "")), BlobRole.LAYER, what)
            )
        unique: dict[str, Blob] = {}
        for b in blobs:
            unique.setdefault(b.digest, b)  # a blob shared inside one image is listed once
        return ImageArtifact(
            reference=what,
            digest=top.digest,
            media_type=top.media_type,
            size=len(top.data),
            blobs=tuple(unique.values()),
            platforms=tuple(carried),
        )

    def _check_single_platform(self, config: Mapping[str, Any], *, what: str) -> list[str]:
        try:
            doc = json.loads(self.dest.read(str(config["digest"])))
        except ValueError:
            return []  # not a JSON config (an artifact): nothing to match
        plat = platform_of(doc) if isinstance(doc, dict) else None
        if plat is None:
            return []
        if self.platforms and not any(plat.matches(p) for p in self.platforms):
            raise RegistryError(
                f"{what} is a single-platform image for {plat}, not for "
                f"{format_platforms(self.platforms)}",
                "use a multi-platform tag, or change the spec's platforms",
            )
        return [str(plat)]


async def pull_images(
    refs: Sequence[Reference],
    *,
    dest: BlobStore,
    endpoints: Mapping[str, Endpoint],
    platforms: Sequence[str],
    session: aiohttp.ClientSession,
    concurrency: int = 8,
    progress: ProgressSink | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    verify_existing: bool = False,
    credentials: CredentialStore | None = None,
    notices: list[str] | None = None,
    deferred: list[LayerFetch] | None = None,
) -> list[ImageArtifact]:
    """Pull every reference into `dest` (verified), in order; empty `platforms` = all.

    `endpoints` is keyed by upstream registry host; a host without one is reached directly.
    `credentials` answers challenges (per host contacted); `notices` collects what the user
    should hear (a rate limit nearly used up). With `deferred`, layers missing from `dest`
    are appended there (each once) instead of fetched: `fetch_layers` fetches them later
    (bundle create, while it writes the bundle); manifests and configs are fetched as always.
    """
    wanted = [parse_platform(p) for p in platforms]
    dest.ensure()
    puller = _Puller(
        dest=dest,
        endpoints=endpoints,
        platforms=wanted,
        session=session,
        concurrency=concurrency,
        policy=RetryPolicy(retries=retries, base_delay=backoff),
        progress=progress,
        verify_existing=verify_existing,
        credentials=credentials,
        notices=notices,
    )
    listed = None
    if deferred is not None:
        listed = puller.deferred = {d.digest: d for d in deferred}
    try:
        tasks = [asyncio.ensure_future(puller.pull(r)) for r in refs]
        images = await gather_or_cancel(tasks)
        if deferred is not None and listed is not None:
            deferred[:] = list(listed.values())  # the ones given first, then the new ones
        return images
    finally:
        await _stop(puller)


async def _stop(puller: _Puller) -> None:
    """Cancel fetches still running (a failure elsewhere), retrieving every outcome."""
    pending = [t for t in puller.inflight.values() if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for t in puller.inflight.values():
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: no "exception never retrieved" noise


async def fetch_layers(
    layers: Sequence[LayerFetch],
    *,
    dest: BlobStore,
    endpoints: Mapping[str, Endpoint],
    session: aiohttp.ClientSession,
    concurrency: int = 8,
    progress: ProgressSink | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    credentials: CredentialStore | None = None,
    notices: list[str] | None = None,
    on_fetched: Callable[[str], None] | None = None,
) -> None:
    """Fetch layers `pull_images` deferred into `dest` (verified), started in the order given
    (at most `concurrency` at once); `on_fetched(digest)` as each one is in `dest`."""
    puller = _Puller(
        dest=dest,
        endpoints=endpoints,
        platforms=[],
        session=session,
        concurrency=concurrency,
        policy=RetryPolicy(retries=retries, base_delay=backoff),
        progress=progress,
        verify_existing=False,
        credentials=credentials,
        notices=notices,
    )

    async def one(layer: LayerFetch) -> None:
        desc = {"digest": layer.digest, "size": layer.size}
        await puller.ensure_blob(layer.ref, desc, what=layer.what, label=layer.label)
        if on_fetched is not None:
            on_fetched(layer.digest)

    try:
        await gather_or_cancel([asyncio.ensure_future(one(layer)) for layer in layers])
    finally:
        await _stop(puller)
