"""Parallel, resumable, checksum-verified file downloads into a content-addressed cache.

For each FileRequest (upstream `url`, the `fetch_url` actually requested, and the upstream
checksum given or fetched from `checksum_url`):

1. Cache: `cache.root/urls/<sha256(url)>.json` maps the upstream URL to the sha256 digest of
   the bytes, their size, the validators (ETag, Last-Modified) and the upstream checksum they
   were verified against. When the upstream checksum is known and matches the record (or is a
   sha256 already in the cache), the artifact is not requested at all. Without a checksum, a
   conditional GET (If-None-Match / If-Modified-Since) asks whether it changed.
2. Download: bytes stream in 1 MiB chunks into `cache.root/partial/<sha256(url)>`, hashed as
   they arrive. A dropped connection resumes with `Range: bytes=N-` (and `If-Range` when a
   validator is known); 206 appends, 200 means the server ignored the range: restart.
3. Verify: the upstream checksum (sha256 or sha512) over the whole file. A mismatch deletes the
   partial and raises DigestMismatch naming URL, expected and actual; nothing enters the cache.
4. Commit: `cache.adopt(partial, sha256)` (a rename: the bytes were hashed as they arrived;
   the bundle writer hashes every blob again as it copies it), then the record.

Steps 1-4 for one URL hold `locks/<sha256(url)>.lock` (airlock.locking, an flock): two
`bundle create` runs sharing a cache never write the same partial file; the second waits and
then finds the file in the cache.

Retries: see `airlock.fetch.retry` (transient failures only, bounded count and time).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from airlock.atomic import write_atomic
from airlock.blobstore import BlobStore
from airlock.content import UpstreamChecksum
from airlock.errors import DigestMismatch, FetchError
from airlock.fetch import recording
from airlock.fetch.checksums import (
    ChecksumHasher,
    checksum_matches_digest,
    parse_checksum_file,
    url_filename,
)
from airlock.fetch.network import TLS_HINT, is_certificate_error, proxy_for, tls_problem
from airlock.fetch.retry import (
    RetryPolicy,
    TransientError,
    is_transient_status,
    retry_after_seconds,
    with_retries,
)
from airlock.locking import async_locked
from airlock.progress import ProgressSink

__all__ = [
    "CHUNK_SIZE",
    "FetchedFile",
    "FileRequest",
    "ProgressSink",
    "fetch_files",
    "gather_or_cancel",
]

CHUNK_SIZE = 1 << 20
_MAX_CHECKSUM_FILE = 1 << 20
# no total timeout: a large file on a slow link is fine as long as bytes keep arriving
T = TypeVar("T")
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


@dataclass(frozen=True)
class FileRequest:
    url: str  # upstream URL, recorded
    fetch_url: str  # URL actually requested (a mirror from the spec's sources, or `url`)
    checksum: UpstreamChecksum | None = None  # known (spec); else fetched from checksum_url
    checksum_url: str | None = None  # a fetch URL too


@dataclass(frozen=True)
class FetchedFile:
    request: FileRequest
    digest: str  # sha256:<hex> of the bytes, present in the cache BlobStore
    size: int
    checksum: UpstreamChecksum | None  # what the bytes were verified against (None: nothing)
    from_cache: bool
    bytes_downloaded: int


@dataclass(frozen=True)
class _UrlRecord:
    url: str
    digest: str
    size: int
    etag: str | None = None
    last_modified: str | None = None
    checksum: UpstreamChecksum | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _UrlRecord:
        ck = data.get("checksum")
        return cls(
            url=str(data["url"]),
            digest=str(data["digest"]),
            size=int(data["size"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
            checksum=UpstreamChecksum(**ck) if ck else None,
        )


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


class _UrlMap:
    """url -> _UrlRecord, one small JSON file per URL under `cache.root/urls/`."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "urls"

    def get(self, url: str) -> _UrlRecord | None:
        path = self.dir / f"{_url_key(url)}.json"
        try:
            rec = _UrlRecord.from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: behave as a cache miss
        return rec if rec.url == url else None

    def put(self, rec: _UrlRecord) -> None:
        data = json.dumps(rec.to_json(), sort_keys=True, indent=1).encode()
        write_atomic(self.dir / f"{_url_key(rec.url)}.json", data)


def _same_checksum(a: UpstreamChecksum | None, b: UpstreamChecksum | None) -> bool:
    return a is not None and b is not None and (a.algorithm, a.value) == (b.algorithm, b.value)


def _upstream_checksum_url(req: FileRequest) -> str:
    """Map the checksum fetch URL back to upstream, using the url/fetch_url mirror prefix."""
    assert req.checksum_url is not None
    if req.fetch_url == req.url:
        return req.checksum_url
    n = 0  # length of the common suffix: what the mirror keeps of the upstream path
    while n < min(len(req.url), len(req.fetch_url)) and req.url[-1 - n] == req.fetch_url[-1 - n]:
        n += 1
    mirror, upstream = req.fetch_url[: len(req.fetch_url) - n], req.url[: len(req.url) - n]
    if mirror and req.checksum_url.startswith(mirror):
        return upstream + req.checksum_url[len(mirror) :]
    return req.checksum_url


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); `bytes */1000` -> (None, 1000)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total_s = value[6:].partition("/")
    total = int(total_s) if total_s.strip().isdigit() else None
    start_s = span.split("-", 1)[0]
    start = int(start_s) if start_s.strip().isdigit() else None
    return start, total


class _Download:
    """One file's download state across attempts (partial file, hashers, counters)."""

    def __init__(
        self,
        fetcher: _Fetcher,
        req: FileRequest,
        expected: UpstreamChecksum | None,
        cached: _UrlRecord | None,
    ) -> None:
        self.f = fetcher
        self.req = req
        self.expected = expected
        self.cached = cached  # present and unverifiable: revalidate with a conditional GET
        key = _url_key(req.url)
        self.partial = fetcher.cache.root / "partial" / key
        self.meta_path = fetcher.cache.root / "partial" / f"{key}.json"
        self.hasher: ChecksumHasher | None = None
        self.downloaded = 0
        self.started = False
        self.not_modified = False
        self.etag: str | None = None
        self.last_modified: str | None = None

    # -- partial file bookkeeping -------------------------------------------------------------

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.meta_path.read_bytes())
        except (OSError, ValueError):
            return None
        return data

    def _write_meta(self) -> None:
        meta = {
            "url": self.req.url,
            "fetch_url": self.req.fetch_url,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }
        write_atomic(self.meta_path, json.dumps(meta, sort_keys=True).encode())

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        self.hasher = None

    def _resume_offset(self) -> tuple[int, dict[str, Any] | None]:
        if not self.partial.is_file():
            return 0, None
        meta = self._read_meta()
        if meta is None or meta.get("url") != self.req.url:
            self.discard()  # bytes of unknown origin: start over
            return 0, None
        return self.partial.stat().st_size, meta

    def _hasher_at(self, offset: int) -> ChecksumHasher:
        """A hasher that has seen exactly the first `offset` bytes of the partial file."""
        algo = self.expected.algorithm if self.expected else None
        if self.hasher is not None and self.hasher.size == offset:
            return self.hasher
        h = ChecksumHasher(algo)
        if offset:
            with self.partial.open("rb") as fh:
                while chunk := fh.read(CHUNK_SIZE):
                    h.update(chunk)
        return h

    # -- one attempt ----------------------------------------------------------------------------

    async def attempt(self, _n: int) -> None:
        req = self.req
        offset, meta = self._resume_offset()
        # identity: a transparently decompressed body would not match the upstream checksum
        headers = {"Accept-Encoding": "identity"}
        if offset and meta is not None:
            headers["Range"] = f"bytes={offset}-"
            etag, lm = meta.get("etag"), meta.get("last_modified")
            if etag and not str(etag).startswith("W/"):
                headers["If-Range"] = str(etag)
            elif lm:
                headers["If-Range"] = str(lm)
            self.etag, self.last_modified = etag, lm
        elif self.cached is not None:
            if self.cached.etag:
                headers["If-None-Match"] = self.cached.etag
            if self.cached.last_modified:
                headers["If-Modified-Since"] = self.cached.last_modified
        async with self.f.session.get(
            req.fetch_url,
            headers=headers,
            timeout=_TIMEOUT,
            allow_redirects=True,
            **proxy_for(req.fetch_url),
        ) as resp:
            if resp.status == 304 and self.cached is not None and not offset:
                self.not_modified = True
                return
            if resp.status == 416 and offset:
                _, total = _parse_content_range(resp.headers.get("Content-Range"))
                if total is not None and total == offset:
                    self.hasher = await asyncio.to_thread(self._hasher_at, offset)
                    return  # the partial already holds every byte
                self.discard()
                raise TransientError(f"HTTP 416 for a resume at byte {offset}; restarting")
            if resp.status not in (200, 206):
                if is_transient_status(resp.status):
                    raise TransientError(
                        f"HTTP {resp.status} {resp.reason or ''}".strip(),
                        retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                    )
                raise FetchError(
                    f"{_describe_url(req)}: HTTP {resp.status} {resp.reason or ''}".strip(),
                    _status_hint(resp.status),
                )
            if resp.status == 206:
                start, total = _parse_content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    self.discard()
                    raise TransientError(f"server resumed at byte {start}, not {offset}")
            else:
                offset = 0  # the server ignored Range (or If-Range said it changed): restart
                clen = resp.content_length
                total = clen if clen is not None else None
                self.etag = resp.headers.get("ETag")
                self.last_modified = resp.headers.get("Last-Modified")
                self.partial.parent.mkdir(parents=True, exist_ok=True)
                self._write_meta()
            hasher = await asyncio.to_thread(self._hasher_at, offset) if offset else None
            if hasher is None:
                hasher = ChecksumHasher(self.expected.algorithm if self.expected else None)
            self.hasher = hasher
            progress = self.f.progress
            if progress is not None and not self.started:
                progress.start(req.url, total)
                self.started = True
                if offset:
                    progress.advance(req.url, offset)
            with self.partial.open("ab" if offset else "wb") as fh:
                async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
                    fh.write(chunk)
                    hasher.update(chunk)
                    self.downloaded += len(chunk)
                    if progress is not None:
                        progress.advance(req.url, len(chunk))
            if total is not None and hasher.size != total:
                raise TransientError(f"connection closed at byte {hasher.size} of {total}")


def _describe_url(req: FileRequest) -> str:
    if req.fetch_url == req.url:
        return req.url
    return f"{req.url} (fetched from {req.fetch_url})"


def _status_hint(status: int) -> str:
    if status == 404:
        return "the file does not exist there: check the version, platform and the sources mirror"
    if status in (401, 403):
        return "the server refused access: check the URL and any proxy or mirror credentials"
    return "the server refused the request; check the URL"


class _Fetcher:
    def __init__(
        self,
        *,
        cache: BlobStore,
        session: aiohttp.ClientSession,
        concurrency: int,
        policy: RetryPolicy,
        progress: ProgressSink | None,
    ) -> None:
        self.cache = cache
        self.session = session
        self.sem = asyncio.Semaphore(max(1, concurrency))
        self.policy = policy
        self.progress = progress
        self.urls = _UrlMap(cache.root)

    async def fetch(self, req: FileRequest) -> FetchedFile:
        async with self.sem:
            expected = req.checksum
            if expected is None and req.checksum_url:
                expected = await self._fetch_checksum(req)
            # one writer per URL: another process (or task) sharing this cache waits, then
            # finds the file in the cache instead of writing into the same partial file
            key = _url_key(req.url)
            lock = self.cache.root / "locks" / f"{key}.lock"
            async with async_locked(lock, what=f"the download cache's copy of {req.url}"):
                return await self._fetch_locked(req, expected)

    async def _fetch_locked(
        self, req: FileRequest, expected: UpstreamChecksum | None
    ) -> FetchedFile:
        hit = self._cache_hit(req, expected)
        if hit is None:
            record = self.urls.get(req.url)
            revalidate = (
                record if expected is None and record and self.cache.has(record.digest) else None
            )
            hit = await self._download(req, expected, revalidate)
        # the file is in the cache: a partial left by an earlier run that was killed after
        # its commit (or before a 304 revalidation made it moot) has no use any more
        partial = self.cache.root / "partial" / _url_key(req.url)
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + ".json").unlink(missing_ok=True)
        return hit

    def _cache_hit(self, req: FileRequest, expected: UpstreamChecksum | None) -> FetchedFile | None:
        if expected is None:
            return None
        record = self.urls.get(req.url)
        digest: str | None = None
        if (
            record
            and self.cache.has(record.digest)
            and (
                _same_checksum(record.checksum, expected)
                or checksum_matches_digest(expected, record.digest)
            )
        ):
            digest = record.digest
        if digest is None and expected.algorithm == "sha256":
            # content addressed: the same bytes may be cached under another URL
            candidate = f"sha256:{expected.value}"
            if self.cache.has(candidate):
                digest = candidate
        if digest is None:
            return None
        size = self.cache.size(digest)
        if (
            record is None
            or record.digest != digest
            or not _same_checksum(record.checksum, expected)
        ):
            self.urls.put(_UrlRecord(req.url, digest, size, None, None, expected))
        if self.progress is not None:
            self.progress.start(req.url, size)
            self.progress.advance(req.url, size)
            self.progress.done(req.url)
        return FetchedFile(req, digest, size, expected, from_cache=True, bytes_downloaded=0)

    async def _fetch_checksum(self, req: FileRequest) -> UpstreamChecksum:
        assert req.checksum_url is not None
        url = req.checksum_url

        async def attempt(_n: int) -> str:
            async with self.session.get(
                url, headers={"Accept-Encoding": "identity"}, timeout=_TIMEOUT, **proxy_for(url)
            ) as resp:
                if resp.status != 200:
                    if is_transient_status(resp.status):
                        raise TransientError(
                            f"HTTP {resp.status}",
                            retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                        )
                    raise FetchError(
                        f"checksum file {url} for {req.url}: HTTP {resp.status}",
                        _status_hint(resp.status),
                    )
                data = await resp.content.read(_MAX_CHECKSUM_FILE + 1)
                recording.saw(data)
                if len(data) > _MAX_CHECKSUM_FILE:
                    raise FetchError(f"checksum file {url} is larger than 1 MiB; refusing it")
                return data.decode("utf-8", errors="replace")

        try:
            text = await with_retries(attempt, policy=self.policy, what=f"checksum file {url}")
        except aiohttp.ClientError as exc:
            if is_certificate_error(exc):
                raise FetchError(f"checksum file {url}: {tls_problem(exc)}", TLS_HINT) from exc
            raise FetchError(f"checksum file {url}: {exc}", "check the URL") from exc
        return parse_checksum_file(
            text, filename=url_filename(req.url), source=_upstream_checksum_url(req)
        )

    async def _download(
        self, req: FileRequest, expected: UpstreamChecksum | None, cached: _UrlRecord | None
    ) -> FetchedFile:
        dl = _Download(self, req, expected, cached)
        try:
            # checked against a checksum known before it is asked for: nothing to record
            with recording.verified() if expected is not None else contextlib.nullcontext():
                await with_retries(dl.attempt, policy=self.policy, what=_describe_url(req))
        except aiohttp.InvalidURL as exc:
            raise FetchError(f"invalid URL {req.fetch_url!r} for {req.url}") from exc
        except aiohttp.ClientError as exc:
            if is_certificate_error(exc):
                raise FetchError(f"{_describe_url(req)}: {tls_problem(exc)}", TLS_HINT) from exc
            raise FetchError(f"{_describe_url(req)}: {exc}", "check the URL and TLS setup") from exc
        if dl.not_modified:
            assert cached is not None
            if self.progress is not None:
                self.progress.start(req.url, cached.size)
                self.progress.advance(req.url, cached.size)
                self.progress.done(req.url)
            return FetchedFile(
                req,
                cached.digest,
                cached.size,
                cached.checksum,
                from_cache=True,
                bytes_downloaded=0,
            )
        hasher = dl.hasher
        assert hasher is not None
        if expected is not None:
            actual = hasher.upstream_value
            if actual != expected.value:
                dl.discard()  # the bad bytes never reach the cache, and a retry starts clean
                raise DigestMismatch(
                    _describe_url(req),
                    f"{expected.algorithm}:{expected.value}",
                    f"{expected.algorithm}:{actual}",
                    hint=f"the download does not match the checksum from {expected.source}; "
                    "the mirror or the file is wrong, or the checksum is for another file",
                )
        digest = hasher.digest
        if expected is None:
            recording.saw_digest(digest)  # nothing else checks these bytes: a replay must
        # hashed as it arrived, under this URL's lock: renamed in, not copied (a second write
        # of every byte, and a second hash, cost a cold create seconds per GB)
        self.cache.adopt(dl.partial, digest)
        dl.discard()
        self.urls.put(_UrlRecord(req.url, digest, hasher.size, dl.etag, dl.last_modified, expected))
        if self.progress is not None:
            if not dl.started:
                self.progress.start(req.url, hasher.size)
            self.progress.done(req.url)
        return FetchedFile(
            req, digest, hasher.size, expected, from_cache=False, bytes_downloaded=dl.downloaded
        )


async def gather_or_cancel(tasks: Sequence[asyncio.Task[T]]) -> list[T]:
    """Await every task; on the first failure cancel the rest and raise that failure."""
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _report(on_fetched: Callable[[FetchedFile], None], task: asyncio.Task[FetchedFile]) -> None:
    if not task.cancelled() and task.exception() is None:
        on_fetched(task.result())


async def fetch_files(
    requests: Sequence[FileRequest],
    *,
    cache: BlobStore,
    session: aiohttp.ClientSession,
    concurrency: int = 4,
    retries: int = 4,
    backoff: float = 0.5,
    progress: ProgressSink | None = None,
    on_fetched: Callable[[FetchedFile], None] | None = None,
) -> list[FetchedFile]:
    """Fetch every request into `cache` (verified), in order; the same URL is fetched once.

    `backoff` is the first retry delay in seconds (doubling, capped at 8 s, 5 min in total).
    `on_fetched(file)` as each one is in `cache` (the first request of its URL).
    """
    cache.ensure()
    fetcher = _Fetcher(
        cache=cache,
        session=session,
        concurrency=concurrency,
        policy=RetryPolicy(retries=retries, base_delay=backoff),
        progress=progress,
    )
    # The same URL is fetched once per distinct expected checksum: a checksum pinned in the spec
    # must still be checked when the same URL also comes from the release layout.
    by_key: dict[tuple[str, UpstreamChecksum | None], asyncio.Task[FetchedFile]] = {}
    for req in requests:
        key = (req.url, req.checksum)
        if key not in by_key:
            by_key[key] = task = asyncio.create_task(fetcher.fetch(req))
            if on_fetched is not None:
                task.add_done_callback(functools.partial(_report, on_fetched))
    results = dict(zip(by_key, await gather_or_cancel(list(by_key.values())), strict=True))
    return [dataclasses.replace(results[(r.url, r.checksum)], request=r) for r in requests]
