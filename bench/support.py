"""What bench/run.py needs around the figures: daemons it starts and stops, waiting for HTTP,
timing subprocesses, and the concurrent verifying registry clients of the last figure.

Everything here talks to 127.0.0.1 only, and every wait and loop has a bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEX_TYPES = MANIFEST_TYPES[0], MANIFEST_TYPES[2]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def say(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run(argv: Sequence[str], *, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run a command, fail loudly with its output, return stdout."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return proc.stdout


def timed(argv: Sequence[str], *, timeout: float = 600) -> tuple[float, str]:
    """(wall seconds, stdout) of one command."""
    t0 = time.perf_counter()
    out = run(argv, timeout=timeout)
    return time.perf_counter() - t0, out


class Daemon:
    """A process in its own session (so its whole group is stopped by its id), logging to a file."""

    def __init__(self, argv: Sequence[str], log: Path) -> None:
        self.argv = list(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._fh: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self._fh.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:]


def http_status(url: str, *, method: str = "GET", accept: Sequence[str] = ()) -> int:
    req = urllib.request.Request(url, method=method)
    if accept:
        req.add_header("Accept", ", ".join(accept))
    try:
        with _NO_PROXY.open(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def wait_http(url: str, daemon: Daemon | None = None, *, seconds: float = 60) -> None:
    """Poll every 10 ms until `url` answers 200 (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if daemon is not None and not daemon.alive():
            raise RuntimeError(f"{daemon.argv[0]} exited: {daemon.tail()}")
        if http_status(url) == 200:
            return
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


@dataclass(frozen=True)
class ClientOpts:
    """How a bench client reaches a registry: the CA that verifies its TLS and the credentials
    it sends (neither: plain HTTP, anonymous)."""

    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None

    def session(self, *, timeout: aiohttp.ClientTimeout, limit: int = 100) -> aiohttp.ClientSession:
        tls: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
        )
        connector = aiohttp.TCPConnector(limit=limit, ssl=tls)
        return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers())

    def headers(self) -> dict[str, str]:
        if self.username is None:
            return {}
        raw = f"{self.username}:{self.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def opener(self) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if self.ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        return urllib.request.build_opener(*handlers)

    def answers(self, url: str) -> bool:
        """Whether `url` answers at all over this TLS (401 counts: the server is up)."""
        try:
            with self.opener().open(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False


def split_ref(ref: str) -> tuple[str, str]:
    """`registry.k8s.io/pause:3.9` -> (`registry.k8s.io/pause`, `3.9`): the name airlock's
    registry serves it under, and the tag."""
    name, _, tag = ref.rpartition(":")
    return name, tag


def check_pullable(base: str, refs: Sequence[str]) -> None:
    """HEAD every image's manifest by tag; all must answer 200."""
    for ref in refs:
        name, tag = split_ref(ref)
        status = http_status(
            f"{base}/v2/{name}/manifests/{tag}", method="HEAD", accept=MANIFEST_TYPES
        )
        if status != 200:
            raise RuntimeError(f"{ref} is not pullable from {base} (HTTP {status})")


@contextlib.contextmanager
def docker_registry(storage: Path, run_dir: Path) -> Iterator[str]:
    """Debian's docker-registry (distribution 2.8.2) on a free loopback port; yields its URL."""
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = run_dir / f"registry-{port}.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: airlock-bench\n"
    )
    daemon = Daemon(["docker-registry", "serve", str(config)], run_dir / f"registry-{port}.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", daemon)
        yield f"http://127.0.0.1:{port}"
    finally:
        daemon.stop()


@contextlib.contextmanager
def airlock_registry(airlock: str, source: Sequence[str], log: Path) -> Iterator[str]:
    """`airlock registry serve --store DIR` (or `--bundle B`), ready; yields its URL."""
    port = free_port()
    daemon = Daemon([airlock, "registry", "serve", *source, "--listen", f"127.0.0.1:{port}"], log)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", daemon)
        yield f"http://127.0.0.1:{port}"
    finally:
        daemon.stop()


# --- the concurrent verifying clients ------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One thing to GET by digest: a manifest or a blob of some repository."""

    repo: str
    digest: str
    manifest: bool


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[dict[str, Any], str]:
    async with session.get(url, headers={"Accept": ", ".join(MANIFEST_TYPES)}) as resp:
        resp.raise_for_status()
        body = await resp.read()
    return json.loads(body), "sha256:" + hashlib.sha256(body).hexdigest()


async def discover(
    base: str,
    refs: Sequence[str],
    platform: str = "linux/amd64",
    *,
    client: ClientOpts | None = None,
) -> list[Item]:
    """Every manifest and blob a linux/amd64 pull of `refs` needs, deduplicated per repo."""
    os_, arch = platform.split("/")
    items: dict[tuple[str, str], Item] = {}
    async with (client or ClientOpts()).session(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for ref in refs:
            repo, tag = split_ref(ref)
            doc, digest = await _get_json(session, f"{base}/v2/{repo}/manifests/{tag}")
            items[(repo, digest)] = Item(repo, digest, manifest=True)
            if doc.get("mediaType") in _INDEX_TYPES or "manifests" in doc:
                child = next(
                    m
                    for m in doc["manifests"]
                    if m.get("platform", {}).get("os") == os_
                    and m.get("platform", {}).get("architecture") == arch
                )
                doc, digest = await _get_json(
                    session, f"{base}/v2/{repo}/manifests/{child['digest']}"
                )
                items[(repo, digest)] = Item(repo, digest, manifest=True)
            for blob in [doc["config"], *doc["layers"]]:
                items[(repo, blob["digest"])] = Item(repo, blob["digest"], manifest=False)
    return sorted(items.values(), key=lambda i: (i.repo, i.digest))


@dataclass
class PullStats:
    requests: int = 0
    errors: int = 0
    bytes_ok: int = 0
    corrupt_bytes: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


async def _one_client(
    base: str, items: Sequence[Item], stats: PullStats, client: ClientOpts
) -> None:
    timeout = aiohttp.ClientTimeout(total=120)
    async with client.session(timeout=timeout, limit=1) as session:
        for item in items:
            kind = "manifests" if item.manifest else "blobs"
            url = f"{base}/v2/{item.repo}/{kind}/{item.digest}"
            headers = {"Accept": ", ".join(MANIFEST_TYPES)} if item.manifest else {}
            stats.requests += 1
            h = hashlib.sha256()
            n = 0
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status != 200:
                        stats.error(f"{url}: HTTP {resp.status}")
                        continue
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        h.update(chunk)
                        n += len(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                stats.error(f"{url}: {type(exc).__name__}: {exc}")
                continue
            if "sha256:" + h.hexdigest() == item.digest:
                stats.bytes_ok += n
            else:
                stats.corrupt_bytes += n
                stats.error(f"{url}: sha256 mismatch over {n} bytes")


async def _concurrent(
    base: str, items: Sequence[Item], clients: int, client: ClientOpts
) -> tuple[float, PullStats]:
    stats = PullStats()
    t0 = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(_one_client(base, items, stats, client) for _ in range(clients))), 600
    )
    return time.perf_counter() - t0, stats


def concurrent_pull(
    base: str, items: Sequence[Item], *, clients: int, client: ClientOpts | None = None
) -> tuple[float, PullStats]:
    """`clients` concurrent sessions, each GETting every item once, each verified by sha256."""
    return asyncio.run(_concurrent(base, items, clients, client or ClientOpts()))


def discover_sync(base: str, refs: Sequence[str], client: ClientOpts | None = None) -> list[Item]:
    return asyncio.run(discover(base, refs, client=client))


def manifest_digest(base: str, ref: str, client: ClientOpts | None = None) -> str:
    """The Docker-Content-Digest a registry answers for an image's tag (HEAD)."""
    name, tag = split_ref(ref)
    req = urllib.request.Request(f"{base}/v2/{name}/manifests/{tag}", method="HEAD")
    req.add_header("Accept", ", ".join(MANIFEST_TYPES))
    opener = (client or ClientOpts()).opener()
    for key, value in (client or ClientOpts()).headers().items():
        req.add_header(key, value)
    with opener.open(req, timeout=10) as resp:
        return str(resp.headers.get("Docker-Content-Digest", ""))


def skopeo_copy(src: str, dest: str, *flags: str) -> None:
    """`skopeo copy` over plain HTTP on loopback (both ends), quietly."""
    tls = ["--src-tls-verify=false", "--dest-tls-verify=false"]
    run(["skopeo", "copy", "-q", *tls, *flags, src, dest], timeout=300)


def parallel(argvs: Iterable[Sequence[str]], *, timeout: float = 600) -> float:
    """Wall seconds for several commands started together, until the last one ends."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(list(a), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for a in argvs
    ]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{p.args!r} exited {p.returncode}: {err[-1000:]!r}")
    return time.perf_counter() - t0
