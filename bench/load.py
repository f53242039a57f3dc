"""The registry under load (bench/run.py's `registry_under_load` figure): a bounded, mixed load
of concurrent verifying clients against one registry, with the server's memory sampled.

Each client (its own aiohttp session, one keep-alive connection) loops over a random mix until
the time or the request cap runs out: GET a manifest by tag (with the manifest Accept types,
body sha256 checked against the tag's digest), HEAD a manifest (by tag or digest,
Docker-Content-Digest checked), GET a whole blob (sha256 checked as it streams), GET a random
Range of a blob (bytes compared with that slice of the known blob file), HEAD a blob
(Content-Length checked), and ~2% pushes (a small random blob: POST an upload, PUT it with its
digest, HEAD it back) into a scratch repository. The server's VmRSS is read from
/proc/PID/status every second.

`registry_under_load` runs the same load against `airlock registry serve --store` and then
against Debian's docker-registry holding the same images under the same names, one at a time.
Only 127.0.0.1; every server started here is stopped here; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import statistics
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from support import MANIFEST_TYPES, ClientOpts, Daemon, discover, free_port, split_ref

from airlock_lab.distribution import start_distribution

__all__ = [
    "LoadOptions",
    "SideStats",
    "Workload",
    "build_workload",
    "memory_verdict",
    "registry_under_load",
    "run_load",
]

SCRATCH_REPO = "airlock-bench/load-scratch"
_ACCEPT = {"Accept": ", ".join(MANIFEST_TYPES)}
_CHUNK = 1 << 16
# The mix each client draws from, by weight (the pushes are ~2% of operations).
MIX: tuple[tuple[str, float], ...] = (
    ("manifest_get_tag", 0.22),
    ("manifest_head", 0.16),
    ("blob_get", 0.20),
    ("blob_range", 0.22),
    ("blob_head", 0.18),
    ("push", 0.02),
)
MAX_RANGE = 1 << 20


@dataclass(frozen=True)
class LoadOptions:
    clients: int = 50
    seconds: float = 60.0
    max_requests: int = 300_000  # a cap over all clients, whatever the time says
    request_timeout: float = 30.0
    push_max_bytes: int = 64 << 10
    seed: int = 20240601


@dataclass(frozen=True)
class Workload:
    """What the clients ask for, and what the right answers are."""

    tags: tuple[tuple[str, str, str], ...]  # (repo, tag, the tag's manifest digest)
    manifests: tuple[tuple[str, str], ...]  # (repo, digest)
    blobs: tuple[tuple[str, str, int], ...]  # (repo, digest, size)
    blob_dir: Path  # the known content: blob_dir/<hex> for every digest in `blobs`

    def key(self) -> tuple[Any, ...]:
        return self.tags, self.manifests, self.blobs


async def _workload(base: str, refs: Sequence[str], blob_dir: Path, client: ClientOpts) -> Workload:
    items = await discover(base, refs, client=client)
    tags = []
    async with client.session(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for ref in refs:
            repo, tag = split_ref(ref)
            async with session.head(f"{base}/v2/{repo}/manifests/{tag}", headers=_ACCEPT) as r:
                r.raise_for_status()
                tags.append((repo, tag, r.headers["Docker-Content-Digest"]))
    blobs = []
    for item in items:
        if not item.manifest:
            path = blob_dir / item.digest.removeprefix("sha256:")
            blobs.append((item.repo, item.digest, path.stat().st_size))
    return Workload(
        tags=tuple(tags),
        manifests=tuple((i.repo, i.digest) for i in items if i.manifest),
        blobs=tuple(blobs),
        blob_dir=blob_dir,
    )


def build_workload(
    base: str, refs: Sequence[str], blob_dir: Path, client: ClientOpts | None = None
) -> Workload:
    """The tags, manifests (linux/amd64 path) and blobs of `refs` as `base` serves them."""
    return asyncio.run(_workload(base, refs, blob_dir, client or ClientOpts()))


# --- the clients -------------------------------------------------------------------------------


@dataclass
class SideStats:
    requests: int = 0
    operations: dict[str, int] = field(default_factory=dict)
    bytes_received: int = 0
    bytes_pushed: int = 0
    http_5xx: int = 0
    unexpected_status: int = 0  # not 5xx, not what the operation expects (e.g. 404, 416)
    client_errors: int = 0  # connection errors, timeouts
    corrupt_responses: int = 0  # wrong digest, wrong length, wrong range, wrong bytes
    corrupt_bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    latencies_by_op: dict[str, list[float]] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    rss_kib: list[tuple[float, int]] = field(default_factory=list)  # (seconds, VmRSS)
    seconds: float = 0.0

    def sample(self, what: str) -> None:
        if len(self.error_samples) < 8:
            self.error_samples.append(what)

    def status(self, url: str, got: int, want: int) -> bool:
        """True if the answer is the expected one; counts it otherwise."""
        if got == want:
            return True
        if got >= 500:
            self.http_5xx += 1
        else:
            self.unexpected_status += 1
        self.sample(f"{url}: HTTP {got}, expected {want}")
        return False

    def corrupt(self, url: str, nbytes: int, why: str) -> None:
        self.corrupt_responses += 1
        self.corrupt_bytes += nbytes
        self.sample(f"{url}: {why}")


class _Client:
    def __init__(
        self,
        base: str,
        work: Workload,
        opts: LoadOptions,
        stats: SideStats,
        rng: random.Random,
        deadline: float,
        client: ClientOpts,
    ) -> None:
        self.base, self.work, self.opts, self.stats, self.rng = base, work, opts, stats, rng
        self.client = client
        self.deadline = deadline
        self.ops = [name for name, _ in MIX]
        self.weights = [w for _, w in MIX]

    def _more(self) -> bool:
        return time.monotonic() < self.deadline and self.stats.requests < self.opts.max_requests

    def _timed(self, op: str, t0: float) -> None:
        dt = time.perf_counter() - t0
        self.stats.requests += 1
        self.stats.latencies.append(dt)
        self.stats.latencies_by_op.setdefault(op, []).append(dt)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.opts.request_timeout)
        async with self.client.session(timeout=timeout, limit=1) as session:
            while self._more():
                op = self.rng.choices(self.ops, self.weights)[0]
                self.stats.operations[op] = self.stats.operations.get(op, 0) + 1
                try:
                    await getattr(self, op)(session)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.stats.client_errors += 1
                    self.stats.requests += 1
                    self.stats.sample(f"{op}: {type(exc).__name__}: {exc}")

    async def manifest_get_tag(self, s: aiohttp.ClientSession) -> None:
        repo, tag, digest = self.rng.choice(self.work.tags)
        url = f"{self.base}/v2/{repo}/manifests/{tag}"
        t0 = time.perf_counter()
        async with s.get(url, headers=_ACCEPT) as resp:
            body = await resp.read()
            self._timed("manifest_get_tag", t0)
            if not self.stats.status(url, resp.status, 200):
                return
            header = resp.headers.get("Docker-Content-Digest")
        self.stats.bytes_received += len(body)
        got = "sha256:" + hashlib.sha256(body).hexdigest()
        if got != digest or header != digest:
            self.stats.corrupt(url, len(body), f"body {got}, header {header}, want {digest}")

    async def manifest_head(self, s: aiohttp.ClientSession) -> None:
        if self.rng.random() < 0.5:
            repo, ref, digest = self.rng.choice(self.work.tags)
        else:
            repo, digest = self.rng.choice(self.work.manifests)
            ref = digest
        url = f"{self.base}/v2/{repo}/manifests/{ref}"
        t0 = time.perf_counter()
        async with s.head(url, headers=_ACCEPT) as resp:
            self._timed("manifest_head", t0)
            if not self.stats.status(url, resp.status, 200):
                return
            header = resp.headers.get("Docker-Content-Digest")
        if header != digest:
            self.stats.corrupt(url, 0, f"HEAD digest {header}, want {digest}")

    async def blob_get(self, s: aiohttp.ClientSession) -> None:
        repo, digest, size = self.rng.choice(self.work.blobs)
        url = f"{self.base}/v2/{repo}/blobs/{digest}"
        h = hashlib.sha256()
        n = 0
        t0 = time.perf_counter()
        async with s.get(url) as resp:
            ok = self.stats.status(url, resp.status, 200)
            async for chunk in resp.content.iter_chunked(_CHUNK):
                if ok:
                    h.update(chunk)
                    n += len(chunk)
            self._timed("blob_get", t0)
        if not ok:
            return
        self.stats.bytes_received += n
        if n != size or "sha256:" + h.hexdigest() != digest:
            self.stats.corrupt(url, n, f"{n} bytes (want {size}), sha256 {h.hexdigest()}")

    async def blob_range(self, s: aiohttp.ClientSession) -> None:
        repo, digest, size = self.rng.choice(self.work.blobs)
        if size == 0:
            return
        start = self.rng.randrange(size)
        end = start + self.rng.randrange(min(size - start, MAX_RANGE))
        url = f"{self.base}/v2/{repo}/blobs/{digest}"
        t0 = time.perf_counter()
        async with s.get(url, headers={"Range": f"bytes={start}-{end}"}) as resp:
            body = await resp.read()
            self._timed("blob_range", t0)
            if not self.stats.status(url, resp.status, 206):
                return
            content_range = resp.headers.get("Content-Range")
        self.stats.bytes_received += len(body)
        with (self.work.blob_dir / digest.removeprefix("sha256:")).open("rb") as fh:
            fh.seek(start)
            want = fh.read(end - start + 1)
        if body != want or content_range != f"bytes {start}-{end}/{size}":
            self.stats.corrupt(
                url, len(body), f"range {start}-{end}: {len(body)} bytes, {content_range}"
            )

    async def blob_head(self, s: aiohttp.ClientSession) -> None:
        repo, digest, size = self.rng.choice(self.work.blobs)
        url = f"{self.base}/v2/{repo}/blobs/{digest}"
        t0 = time.perf_counter()
        async with s.head(url) as resp:
            self._timed("blob_head", t0)
            if not self.stats.status(url, resp.status, 200):
                return
            length = resp.headers.get("Content-Length")
        if length != str(size):
            self.stats.corrupt(url, 0, f"HEAD Content-Length {length}, want {size}")

    async def push(self, s: aiohttp.ClientSession) -> None:
        data = self.rng.randbytes(self.rng.randint(1, self.opts.push_max_bytes))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        url = f"{self.base}/v2/{SCRATCH_REPO}/blobs/uploads/"
        t0 = time.perf_counter()
        async with s.post(url, headers={"Content-Length": "0"}) as resp:
            await resp.read()
            self._timed("push_post", t0)
            if not self.stats.status(url, resp.status, 202):
                return
            location = resp.headers.get("Location", "")
        put = urllib.parse.urljoin(url, location)
        put += ("&" if "?" in put else "?") + urllib.parse.urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream"}
        t0 = time.perf_counter()
        async with s.put(put, data=data, headers=headers) as resp:
            await resp.read()
            self._timed("push_put", t0)
            if not self.stats.status(put, resp.status, 201):
                return
        self.stats.bytes_pushed += len(data)
        blob = f"{self.base}/v2/{SCRATCH_REPO}/blobs/{digest}"
        t0 = time.perf_counter()
        async with s.head(blob) as resp:
            self._timed("push_head", t0)
            if not self.stats.status(blob, resp.status, 200):
                return
            length = resp.headers.get("Content-Length")
        if length != str(len(data)):
            self.stats.corrupt(blob, 0, f"pushed {len(data)} bytes, HEAD says {length}")


def _vmrss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


async def _sample_rss(pid: int, stats: SideStats, t0: float, stop: asyncio.Event) -> None:
    while True:
        rss = _vmrss_kib(pid)
        if rss is not None:
            stats.rss_kib.append((round(time.monotonic() - t0, 2), rss))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if stop.is_set():
            return


async def _run_load(
    base: str, pid: int, work: Workload, opts: LoadOptions, client: ClientOpts
) -> SideStats:
    stats = SideStats()
    stop = asyncio.Event()
    t0 = time.monotonic()
    sampler = asyncio.create_task(_sample_rss(pid, stats, t0, stop))
    deadline = t0 + opts.seconds
    clients = [
        _Client(base, work, opts, stats, random.Random(opts.seed + i), deadline, client)
        for i in range(opts.clients)
    ]
    try:
        # Every client stops at the deadline; a request in flight has its own timeout.
        await asyncio.wait_for(
            asyncio.gather(*(c.run() for c in clients)),
            opts.seconds + opts.request_timeout + 30,
        )
        stats.seconds = time.monotonic() - t0
    finally:
        stop.set()
        await sampler
    rss = _vmrss_kib(pid)  # once more, after the load
    if rss is not None:
        stats.rss_kib.append((round(time.monotonic() - t0, 2), rss))
    return stats


def run_load(
    base: str, pid: int, work: Workload, opts: LoadOptions, client: ClientOpts | None = None
) -> SideStats:
    """`opts.clients` clients against `base` for `opts.seconds` (bounded); `pid` is sampled."""
    return asyncio.run(_run_load(base, pid, work, opts, client or ClientOpts()))


async def _warm(base: str, work: Workload, client: ClientOpts) -> None:
    """GET every manifest and blob once (not measured): both sides start with a warm page cache."""
    async with client.session(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for repo, digest in work.manifests:
            async with session.get(f"{base}/v2/{repo}/manifests/{digest}", headers=_ACCEPT) as r:
                r.raise_for_status()
                await r.read()
        for repo, digest, _ in work.blobs:
            async with session.get(f"{base}/v2/{repo}/blobs/{digest}") as r:
                r.raise_for_status()
                async for _chunk in r.content.iter_chunked(1 << 20):
                    pass


# --- the summary -------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memory_verdict(samples: Sequence[tuple[float, int]], seconds: float) -> dict[str, Any]:
    """Start, steady, max and end RSS, and whether memory stayed flat.

    Steady is the median of the samples taken in the second quarter of the run (after the
    warm-up of connections and caches); flat means the end is within 1.25x of steady (no
    growth over the run) and the peak within 1.5x of it (no large spike).
    """
    rss = [kib for _, kib in samples]
    if not rss:
        return {"flat": False, "note": "no RSS samples"}
    steady_window = [kib for t, kib in samples if seconds / 4 <= t <= seconds / 2] or rss
    steady = statistics.median(steady_window)
    end, peak = rss[-1], max(rss)
    return {
        "start_mib": round(rss[0] / 1024, 1),
        "steady_mib": round(steady / 1024, 1),
        "max_mib": round(peak / 1024, 1),
        "end_mib": round(end / 1024, 1),
        "end_over_steady": round(end / steady, 3),
        "max_over_steady": round(peak / steady, 3),
        "flat": end / steady <= 1.25 and peak / steady <= 1.5,
        "samples": len(rss),
    }


def summarize(stats: SideStats) -> dict[str, Any]:
    secs = stats.seconds or 1.0
    by_op = {
        op: {
            "n": len(v),
            "p50_ms": round(_pct(v, 0.5) * 1e3, 2),
            "p99_ms": round(_pct(v, 0.99) * 1e3, 2),
        }
        for op, v in sorted(stats.latencies_by_op.items())
    }
    return {
        "seconds": round(stats.seconds, 2),
        "requests": stats.requests,
        "req_per_s": round(stats.requests / secs, 1),
        "mib_per_s": round(stats.bytes_received / secs / 2**20, 2),
        "bytes_received": stats.bytes_received,
        "bytes_pushed": stats.bytes_pushed,
        "operations": dict(sorted(stats.operations.items())),
        "http_5xx": stats.http_5xx,
        "unexpected_status": stats.unexpected_status,
        "client_errors": stats.client_errors,
        "corrupt_responses": stats.corrupt_responses,
        "corrupt_bytes": stats.corrupt_bytes,
        "p50_ms": round(_pct(stats.latencies, 0.5) * 1e3, 2),
        "p99_ms": round(_pct(stats.latencies, 0.99) * 1e3, 2),
        "latency_by_request": by_op,
        "rss": memory_verdict(stats.rss_kib, stats.seconds),
        "rss_mib_series": [round(kib / 1024, 1) for _, kib in stats.rss_kib],
        "error_samples": stats.error_samples,
    }


# --- the two servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """TLS and push credentials, written by `airlock registry certs` for both servers."""

    cert: Path
    key: Path
    htpasswd: Path
    client: ClientOpts


def make_pki(airlock: str, out: Path) -> Pki:
    subprocess.run(
        [
            *(airlock, "registry", "certs", "--out", str(out)),
            *("--address", "127.0.0.1", "--htpasswd-user", "bench"),
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    password = (out / "registry-password").read_text().strip()
    client = ClientOpts(ca_file=out / "ca.crt", username="bench", password=password)
    return Pki(out / "registry.crt", out / "registry.key", out / "htpasswd", client)


@contextlib.contextmanager
def airlock_tls(
    airlock: str, store: Path, log: Path, pki: Pki, *, push: bool = True
) -> Iterator[tuple[str, int]]:
    """`airlock registry serve [--push]` with TLS and credentials; yields (URL, pid)."""
    port = free_port()
    argv = [airlock, "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}"]
    argv += ["--push"] if push else []
    argv += ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    argv += ["--htpasswd", str(pki.htpasswd), "--free-floor", "256MiB", "--free-floor-percent", "0"]
    daemon = Daemon(argv, log)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not pki.client.answers(f"{url}/v2/"):
            if not daemon.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"airlock registry serve did not start: {daemon.tail()}")
            time.sleep(0.01)
        yield url, daemon.proc.pid
    finally:
        daemon.stop()


@contextlib.contextmanager
def distribution_tls(storage: Path, run_dir: Path, pki: Pki) -> Iterator[tuple[str, int]]:
    """Debian's docker-registry with the same certificate and htpasswd; yields (URL, pid)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with start_distribution(
        "load",
        storage,
        run_dir,
        tls=(pki.cert, pki.key),
        htpasswd=pki.htpasswd,
        ca_file=pki.client.ca_file,
    ) as dist:
        yield dist.url, dist.process.pid


def _one_side(
    base: str, pid: int, refs: Sequence[str], blob_dir: Path, opts: LoadOptions, client: ClientOpts
) -> tuple[dict[str, Any], Workload]:
    idle = _vmrss_kib(pid)
    work = build_workload(base, refs, blob_dir, client)
    asyncio.run(_warm(base, work, client))
    stats = run_load(base, pid, work, opts, client)
    out = summarize(stats)
    out["rss"]["idle_before_warmup_mib"] = round((idle or 0) / 1024, 1)
    out["server_pid_sampled"] = pid
    out["items"] = {
        "tags": len(work.tags),
        "manifests": len(work.manifests),
        "blobs": len(work.blobs),
    }
    return out, work


def registry_under_load(
    *,
    airlock: str,
    store: Path,
    dist_storage: Path,
    refs: Sequence[str],
    logs: Path,
    options: LoadOptions,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The same load against `airlock registry serve --store STORE`, then against
    docker-registry over DIST_STORAGE (holding the same images under the same names); pushes
    land in both (use copies). Each server runs alone while it is measured."""
    blob_dir = store / "blobs" / "sha256"
    pki = make_pki(airlock, logs / "load-pki")
    with airlock_tls(airlock, store, logs / "serve-load.log", pki) as (base, pid):
        ours, work_ours = _one_side(base, pid, refs, blob_dir, options, pki.client)
    say(
        f"   airlock: {ours['req_per_s']} req/s, {ours['mib_per_s']} MiB/s, p99 "
        f"{ours['p99_ms']} ms, 5xx {ours['http_5xx']}, corrupt {ours['corrupt_bytes']} B, "
        f"RSS {ours['rss']['start_mib']}->{ours['rss']['max_mib']}->{ours['rss']['end_mib']} MiB"
    )
    with distribution_tls(dist_storage, logs / "dist-load", pki) as (base, pid):
        theirs, work_theirs = _one_side(base, pid, refs, blob_dir, options, pki.client)
    say(
        f"   docker-registry: {theirs['req_per_s']} req/s, {theirs['mib_per_s']} MiB/s, p99 "
        f"{theirs['p99_ms']} ms, 5xx {theirs['http_5xx']}, corrupt {theirs['corrupt_bytes']} B, "
        f"RSS {theirs['rss']['start_mib']}->{theirs['rss']['max_mib']}->{theirs['rss']['end_mib']} MiB"
    )
    return {
        "airlock": ours,
        "distribution": theirs,
        "same_items": work_ours.key() == work_theirs.key(),
    }
