"""`airlock registry push --to URL`: copy the store into an existing registry (distribution,
Harbor, Zot), keeping the full upstream repository names (`registry.k8s.io/pause`).

Per blob: HEAD first (skip what the target has: a rerun after an interruption resumes there),
then a cross-repository mount from a repository this run already filled, else an upload
(POST then PUT with the digest, streamed from the store). Child manifests go by digest, then
the tag. A partial index (a bundle built for fewer platforms than upstream publishes) is pushed
as is; a registry that refuses it because of the absent platforms gets the single platform
manifest under the tag instead, and the result says so.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from airlock.errors import RegistryError
from airlock.fetch.retry import RetryPolicy
from airlock.oci.auth import Authenticator, Credentials
from airlock.oci.layout import OciLayout
from airlock.oci.media import INDEX_MEDIA_TYPES
from airlock.oci.ref import parse_reference
from airlock.progress import ProgressSink, report_done, report_start

__all__ = ["PushOptions", "PushResult", "push_store"]

_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PushOptions:
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    insecure: bool = False  # TLS without verification (plain http needs nothing)
    concurrency: int = 8
    images: Sequence[str] = ()  # default: every image in the store
    progress: ProgressSink | None = None  # per image: bytes pushed, mounted or already there


@dataclass
class PushResult:
    target: str
    images: list[str] = field(default_factory=list)
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    manifests_put: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Target:
    def __init__(self, url: str, session: aiohttp.ClientSession, options: PushOptions) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                f"--to {url!r} is not a registry URL", "e.g. https://harbor.local:443"
            )
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.strip("/")
        self.session = session
        if options.ca_file:
            self.ssl: ssl.SSLContext | bool = ssl.create_default_context(
                cafile=str(options.ca_file)
            )
        else:
            self.ssl = not options.insecure
        creds = Credentials(options.username, options.password or "") if options.username else None
        self.auth = Authenticator(
            host=parts.netloc,
            session=session,
            credentials=creds,
            policy=RetryPolicy(),
            ssl=self.ssl,
        )

    def repo(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    async def request(
        self, method: str, url: str, *, repo: str, **kw: Any
    ) -> aiohttp.ClientResponse:
        """One request with the registry's auth (answering a 401 challenge once)."""
        scope = f"repository:{repo}:pull,push"
        for attempt in (0, 1):
            headers = {**kw.pop("headers", {}), **self.auth.headers(scope)}
            data = kw.get("data")
            if attempt and data is not None and hasattr(data, "seek"):
                data.seek(0)
            resp = await self.session.request(
                method,
                url,
                headers=headers,
                ssl=self.ssl,
                timeout=_TIMEOUT,
                allow_redirects=False,
                **kw,
            )
            if resp.status != 401 or attempt:
                return resp
            challenge = resp.headers.get("WWW-Authenticate")
            resp.release()
            self.auth.forget(scope)
            if not await self.auth.answer(challenge, scope, what=f"push to {repo}"):
                break
            kw["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
        raise RegistryError(
            f"access denied: push to {repo} on {self.base} (HTTP 401)",
            "give --username/--password (or AIRLOCK_REGISTRY_PASSWORD)",
        )

    async def check(self, resp: aiohttp.ClientResponse, ok: Sequence[int], what: str) -> None:
        if resp.status in ok:
            return
        body = (await resp.read())[:500].decode(errors="replace")
        raise RegistryError(f"{what}: {self.base} answered HTTP {resp.status}: {body}")


class _Pusher:
    def __init__(
        self, store: OciLayout, target: _Target, options: PushOptions, result: PushResult
    ) -> None:
        self.store, self.t, self.result = store, target, result
        self.sem = asyncio.Semaphore(options.concurrency)
        self.done: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.where: dict[str, str] = {}  # digest -> a repository that has it (for mounts)
        self.first: dict[str, asyncio.Task[None]] = {}  # digest -> its first push
        self.progress = options.progress

    def blob(self, repo: str, digest: str, size: int) -> asyncio.Task[None]:
        key = (repo, digest)
        if key not in self.done:
            leader = self.first.get(digest)
            self.done[key] = asyncio.ensure_future(self._blob(repo, digest, size, leader))
            self.first.setdefault(digest, self.done[key])
        return self.done[key]

    async def _blob(
        self, repo: str, digest: str, size: int, leader: asyncio.Task[None] | None
    ) -> None:
        if leader is not None:  # the same blob is on its way to another repository: mount it
            await asyncio.wait([leader])
        t, r = self.t, self.t.repo(repo)
        async with self.sem:
            head = await t.request("HEAD", f"{t.base}/v2/{r}/blobs/{digest}", repo=r)
            head.release()
            if head.status == 200:
                self.result.blobs_present += 1
                self.where.setdefault(digest, repo)
                return
            source = self.where.get(digest)
            if source and source != repo:
                resp = await t.request(
                    "POST",
                    f"{t.base}/v2/{r}/blobs/uploads/?mount={digest}&from={t.repo(source)}",
                    repo=r,
                )
                async with resp:
                    if resp.status == 201:
                        self.result.blobs_mounted += 1
                        return
                    location = resp.headers.get("Location") if resp.status == 202 else None
            else:
                resp = await t.request("POST", f"{t.base}/v2/{r}/blobs/uploads/", repo=r)
                async with resp:
                    await t.check(resp, (202,), f"start upload of {digest} to {r}")
                    location = resp.headers.get("Location")
            if not location:
                raise RegistryError(f"{t.base} gave no upload location for {digest} in {r}")
            url = urljoin(f"{t.base}/", location)
            url += ("&" if "?" in url else "?") + f"digest={digest}"
            with self.store.path(digest).open("rb") as fh:
                put = await t.request(
                    "PUT",
                    url,
                    repo=r,
                    data=fh,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                )
                async with put:
                    await t.check(put, (201, 204), f"upload of {digest} to {r}")
            self.result.blobs_uploaded += 1
            self.result.bytes_uploaded += size
            self.where.setdefault(digest, repo)

    async def _counted(self, ref: str, repo: str, blob: Mapping[str, Any]) -> None:
        await self.blob(repo, blob["digest"], blob["size"])
        if self.progress is not None:
            self.progress.advance(ref, int(blob["size"]))

    async def manifest(self, repo: str, reference: str, digest: str, media_type: str) -> int:
        t, r = self.t, self.t.repo(repo)
        resp = await t.request(
            "PUT",
            f"{t.base}/v2/{r}/manifests/{reference}",
            repo=r,
            data=self.store.read(digest),
            headers={"Content-Type": media_type},
        )
        async with resp:
            if resp.status in (200, 201):
                self.result.manifests_put += 1
            elif resp.status >= 500:
                await t.check(resp, (201,), f"manifest {reference} of {r}")
            return resp.status

    async def image(self, ref: str, desc: Mapping[str, Any]) -> None:
        parsed = parse_reference(ref)
        repo, tag = parsed.name, parsed.tag or parsed.digest or "latest"
        top = json.loads(self.store.read(desc["digest"]))
        children = top.get("manifests", []) if desc["mediaType"] in INDEX_MEDIA_TYPES else []
        present = [c for c in children if self.store.has(c["digest"])]
        manifests = [(c["digest"], c["mediaType"]) for c in present]
        if not children:
            manifests = [(desc["digest"], desc["mediaType"])]
        docs = [json.loads(self.store.read(digest)) for digest, _ in manifests]
        blob_lists = [[doc["config"], *doc.get("layers", [])] for doc in docs]
        report_start(self.progress, ref, sum(int(b["size"]) for bl in blob_lists for b in bl))
        for blobs in blob_lists:
            await asyncio.gather(*(self._counted(ref, repo, b) for b in blobs))
        report_done(self.progress, ref)
        if children:
            for digest, media_type in manifests:
                status = await self.manifest(repo, digest, digest, media_type)
                if status not in (200, 201):
                    raise RegistryError(f"manifest {digest} of {repo} refused (HTTP {status})")
        status = await self.manifest(repo, tag, desc["digest"], desc["mediaType"])
        if status in (200, 201):
            return
        if children and len(present) == 1 and len(children) > 1:
            digest, media_type = manifests[0]
            if await self.manifest(repo, tag, digest, media_type) in (200, 201):
                self.result.notes.append(
                    f"{ref}: the target refused the partial index (it carries "
                    f"{len(present)} of {len(children)} platforms); tagged the platform manifest"
                )
                return
        raise RegistryError(f"the target refused the manifest of {ref} (HTTP {status})")


async def _push(store: OciLayout, url: str, options: PushOptions, result: PushResult) -> None:
    images = store.images()
    if options.images:
        images = {r: d for r, d in images.items() if r in options.images}
    async with aiohttp.ClientSession() as session:
        pusher = _Pusher(store, _Target(url, session, options), options, result)
        # one image at a time per repository name; blobs of different images in parallel
        await asyncio.gather(*(pusher.image(ref, d) for ref, d in sorted(images.items())))
    result.images = sorted(images)


def push_store(store: Path, *, to: str, options: PushOptions) -> PushResult:
    layout = OciLayout(store)
    if not layout.index_path.exists():
        raise RegistryError(
            f"{store} is not a store (no index.json)", "run `airlock load BUNDLE` first"
        )
    result = PushResult(target=to)
    asyncio.run(_push(layout, to, options, result))
    return result
