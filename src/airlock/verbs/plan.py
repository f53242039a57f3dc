"""`airlock plan`: the spec resolved, checked against upstream and measured, downloading no
artifact.

1. Every release file (binaries, archives, systemd templates, the CNI manifest) is asked for
   with HEAD through the spec's mirrors. A 404 means that version was never released there:
   plan fails (exit 1) naming the field, the URL and the nearest version that does exist,
   found by a bounded set of HEAD probes on the same URL layout (patch releases of the same
   minor, then of the two minors below).
2. The plan is resolved (`airlock.resolve.plan`), then every artifact is measured from
   metadata only: a file's sha256 from its checksum file (or the spec), its size from HEAD; an
   image's digest and the size of every blob its manifests name for the spec's platforms.
   The bundle total counts each blob once (layers shared by several images), and says how
   many artifacts' sizes are not known before download.
3. airlock's own wheelhouse is measured per (Python, architecture) target of the spec: the
   bytes each target adds. That fills the wheelhouse cache `bundle create` uses (pip downloads
   airlock's dependencies once); it is airlock itself, not an artifact of the cluster.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from airlock.errors import FetchError, UsageError
from airlock.fetch.metadata import MetadataFetcher
from airlock.fetch.network import NetworkOptions, proxy_for
from airlock.resolve.model import Plan
from airlock.resolve.plan import helm_template, resolve_plan_with
from airlock.resolve.urls import FileSpec, apply_mirror, cni_manifest_url, release_files
from airlock.spec import Spec

__all__ = [
    "PlanOptions",
    "ReleaseCheck",
    "check_releases",
    "ensure_releases_exist",
    "nearest_candidates",
    "plan_bundle",
]

# artifact name -> (the release_files keyword that versions it, the spec field users write)
_FIELDS: dict[str, tuple[str, str]] = {
    "kubeadm": ("kubernetes", "kubernetes.version"),
    "kubelet": ("kubernetes", "kubernetes.version"),
    "kubectl": ("kubernetes", "kubernetes.version"),
    "kubelet.service": ("release_tools", "kubernetes.releaseTools"),
    "10-kubeadm.conf": ("release_tools", "kubernetes.releaseTools"),
    "containerd": ("containerd", "runtime.containerd"),
    "runc": ("runc", "runtime.runc"),
    "crictl": ("crictl", "runtime.crictl"),
    "cni-plugins": ("cni_plugins", "runtime.cniPlugins"),
    "helm": ("helm", "tools.helm"),
    "k9s": ("k9s", "tools.k9s"),
}
_VERSION = re.compile(r"^(v?)(\d+)\.(\d+)\.(\d+)\Z")
_HEAD_TIMEOUT = aiohttp.ClientTimeout(total=30)
_PROBES = 16  # HEAD requests at once while looking for the nearest release


@dataclass(frozen=True)
class PlanOptions:
    network: NetworkOptions = field(default_factory=NetworkOptions)
    registry_auth: Path | None = None
    spec_dir: Path | None = None
    measure: bool = True  # digests and sizes (HEAD, checksum files, manifests)
    wheelhouse: bool = True  # measure airlock's wheelhouse per target (fills its cache)


@dataclass(frozen=True)
class ReleaseCheck:
    """One spec field whose release is missing upstream, and the nearest that exists."""

    field: str
    version: str
    url: str
    status: int
    nearest: str | None

    def message(self) -> str:
        near = (
            f"the nearest release that exists: {self.nearest}"
            if self.nearest
            else "no release near it answered either"
        )
        return f"{self.field} {self.version}: HTTP {self.status} for {self.url}; {near}"


def nearest_candidates(version: str) -> list[str]:
    """Versions to probe around a missing one, nearest first: patches of the same minor
    (every one up to 15, then sparser, and a few above), then of the two minors below."""
    m = _VERSION.match(version)
    if m is None:
        return []
    v, major, minor, patch = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
    near = set(range(0, 16)) | {16, 20, 24, 32, 48, 64, 96} | set(range(patch - 4, patch + 5))
    same = sorted((p for p in near if p >= 0 and p != patch), key=lambda p: (abs(p - patch), p))
    out = [f"{v}{major}.{minor}.{p}" for p in same]
    for lower in (minor - 1, minor - 2):
        if lower >= 0:
            out += [f"{v}{major}.{lower}.{p}" for p in sorted(near - {-1}, reverse=True) if p >= 0]
    return out


def _release_urls(spec: Spec, **override: str) -> list[FileSpec]:
    rt = spec.runtime
    args: dict[str, str | None] = {
        "kubernetes": spec.kubernetes.version,
        "release_tools": spec.kubernetes.release_tools,
        "containerd": rt.containerd,
        "runc": rt.runc,
        "crictl": rt.crictl,
        "cni_plugins": rt.cni_plugins,
        "helm": spec.tools.helm,
        "k9s": spec.tools.k9s,
    }
    args.update(override)
    return release_files(platforms=list(spec.platforms), **args)  # type: ignore[arg-type]


Exists = Callable[[str], Awaitable[int]]  # URL -> HTTP status of a HEAD (0: unreachable)


async def _nearest(version: str, url_for: Callable[[str], str], status: Exists) -> str | None:
    """The first candidate (nearest first) whose URL answers 200."""
    urls: dict[str, str] = {}
    for c in nearest_candidates(version):
        try:
            urls[c] = url_for(c)
        except UsageError:
            continue  # outside every known layout: not a candidate
    candidates = list(urls)
    results = await asyncio.gather(*(status(urls[c]) for c in candidates))
    found = [c for c, s in zip(candidates, results, strict=True) if s == 200]
    return found[0] if found else None


async def check_releases(spec: Spec, status: Exists) -> list[ReleaseCheck]:
    """HEAD every release file; for each spec field with a 404, the nearest that exists."""
    mirrors = dict(spec.sources.files)
    # one representative per (field, platform): the first file of each
    reps: dict[tuple[str, str], FileSpec] = {}
    for f in _release_urls(spec):
        key = _FIELDS.get(f.name, (f.name, f.name))[0]
        reps.setdefault((key, f.platform), f)
    cni = cni_manifest_url(spec.network.cni, spec.network.version)
    statuses = await asyncio.gather(
        *(status(apply_mirror(f.url, mirrors)) for f in reps.values()),
        status(apply_mirror(cni, mirrors)),
    )
    missing: list[ReleaseCheck] = []
    seen: set[str] = set()
    for (key, platform), f, st in zip(reps, reps.values(), statuses[:-1], strict=True):
        if st != 404 or key in seen:
            continue
        seen.add(key)
        kw, label = _FIELDS.get(f.name, (key, f.name))

        def url_for(v: str, kw: str = kw, f: FileSpec = f, platform: str = platform) -> str:
            same = [
                g
                for g in _release_urls(spec, **{kw: v})
                if g.name == f.name and g.platform == platform
            ]
            return apply_mirror(same[0].url, mirrors)

        nearest = await _nearest(f.version, url_for, status)
        missing.append(ReleaseCheck(label, f.version, f.url, st, nearest))
    if statuses[-1] == 404:
        version = spec.network.version

        def cni_for(v: str) -> str:
            return apply_mirror(cni_manifest_url(spec.network.cni, v), mirrors)

        nearest = await _nearest(version, cni_for, status)
        missing.append(ReleaseCheck("network.version", version, cni, 404, nearest))
    return missing


def _head_status(session: aiohttp.ClientSession, sem: asyncio.Semaphore) -> Exists:
    cache: dict[str, int] = {}

    async def status(url: str) -> int:
        if url not in cache:
            async with sem:
                try:
                    async with session.head(
                        url, allow_redirects=True, timeout=_HEAD_TIMEOUT, **proxy_for(url)
                    ) as resp:
                        cache[url] = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    cache[url] = 0
        return cache[url]

    return status


def _measured(plan: Plan, items: Sequence[object]) -> Plan:
    """Each artifact with its digest and size; the bundle total over unique blobs."""
    from airlock.verbs.delta import ArtifactBlobs

    targets = [*plan.files(), *plan.images()]
    sized = {}
    blobs: dict[str, int] = {}
    unknown = 0
    for artifact, item in zip(targets, items, strict=True):
        assert isinstance(item, ArtifactBlobs)
        digest, size = item.blobs[0] if item.blobs else (None, None)
        if artifact.kind == "image":
            size = sum(s or 0 for _, s in item.blobs)
        for d, s in item.blobs:
            if d is None or s is None:
                unknown += 1
            else:
                blobs[d] = s
        sized[id(artifact)] = replace(
            artifact,
            digest=digest,
            size=size if size is not None else artifact.size,
        )
    plan.artifacts = [sized.get(id(a), a) for a in plan.artifacts]
    plan.total_size = sum(blobs.values())
    plan.unknown_sizes = unknown
    if unknown:
        plan.warnings.append(
            f"{unknown} artifact size(s) unknown before download (not in the total)"
        )
    return plan


def ensure_releases_exist(spec: Spec, *, network: NetworkOptions) -> None:
    """HEAD every release file; a version never released fails naming the nearest."""

    async def check() -> list[ReleaseCheck]:
        async with network.session(limit=_PROBES) as session:
            return await check_releases(spec, _head_status(session, asyncio.Semaphore(_PROBES)))

    missing = asyncio.run(check())
    if missing:
        raise FetchError(
            "release not found upstream:\n  " + "\n  ".join(m.message() for m in missing),
            "use a version that exists (the nearest is named above), or fix the `sources` "
            "mirror if it lacks a release that does exist",
        )


def plan_bundle(spec: Spec, *, options: PlanOptions) -> Plan:
    """Check every release exists, resolve the plan, and measure it (no artifact download)."""
    from airlock.verbs.create import registry_credentials
    from airlock.verbs.delta import measure_plan

    credentials = registry_credentials(
        spec, auth_file=options.registry_auth, spec_dir=options.spec_dir
    )  # a missing --registry-auth file is named before any network traffic
    ensure_releases_exist(spec, network=options.network)
    meta = MetadataFetcher(spec.sources.files, network=options.network)
    plan = resolve_plan_with(spec, meta, render=helm_template, network=options.network)
    if not options.measure:
        return plan
    items = asyncio.run(measure_plan(spec, plan, meta, credentials=credentials))
    measured = _measured(plan, items)
    if options.wheelhouse:
        from airlock.bundle.wheelhouse import measure_wheelhouse

        sizes = measure_wheelhouse(
            pythons=spec.wheelhouse.pythons, architectures=spec.wheelhouse.architectures
        )
        total = (measured.total_size or 0) + sum(sizes.values())
        measured = replace(measured, wheelhouse=sizes, total_size=total)
    return measured
