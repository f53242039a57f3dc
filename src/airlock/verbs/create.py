"""`airlock bundle create`: spec -> plan -> fetch (files and images, verified, cached) -> bundle.

Files and images are fetched concurrently into one content-addressed cache. After the kubeadm
binary arrives it is asked for its own image list when it can run on this host (the most
authoritative source), and any image the plan missed is pulled too, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import platform as host_platform
import re
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlock import system
from airlock.atomic import remove_dead_temps, write_atomic
from airlock.blobstore import BlobStore
from airlock.bundle.compression import CompressAhead, Compression, compress_files
from airlock.bundle.layout import AIRLOCK_JSON, bundle_filename
from airlock.bundle.manifest import parse_manifest
from airlock.bundle.reuse import content_key, kept_record, save_memo
from airlock.bundle.volumes import parts_file_path
from airlock.bundle.writer import (
    OUTPUT_RECORDS,
    Arrivals,
    BundleContent,
    WriteResult,
    write_bundle,
)
from airlock.cachedir import default_cache_dir
from airlock.content import FileArtifact, ImageArtifact, UpstreamChecksum
from airlock.errors import AirlockError
from airlock.fetch.downloader import FetchedFile, FileRequest, ProgressSink, fetch_files
from airlock.fetch.network import NetworkOptions
from airlock.oci.client import Endpoint, LayerFetch, fetch_layers, pull_images
from airlock.oci.credentials import CredentialRef, CredentialStore
from airlock.oci.digest import digest_hex
from airlock.oci.ref import parse_reference
from airlock.replay import code_fingerprint
from airlock.resolve.model import Artifact, Plan
from airlock.resolve.plan import resolve_plan
from airlock.resolve.urls import apply_mirror
from airlock.spec import Spec

if TYPE_CHECKING:
    from airlock.verbs.delta import Baseline, DeltaSummary

__all__ = [
    "ANNOTATION_ARTIFACT",
    "CreateOptions",
    "CreateResult",
    "create_bundle",
    "default_cache_dir",
    "registry_credentials",
]

ANNOTATION_ARTIFACT = "io.airlock.artifact"  # the logical name: kubeadm, cni-plugins, ...

_MEDIA = {
    "binary": "application/octet-stream",
    "archive": "application/gzip",
    "manifest": "application/yaml",
    "chart": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
    "systemd": "text/plain",
    "file": "application/octet-stream",
    "wheel": "application/zip",
}


@dataclass(frozen=True)
class CreateOptions:
    output: Path | None = None
    cache: Path | None = None
    sign_key: Path | None = None
    split: int | None = None
    sequence: int | None = None  # None: one above the baseline's (with --since), else 1
    expires: str | None = None
    concurrency: int = 8
    wheelhouse: bool = True
    progress: ProgressSink | None = None
    since: Path | None = None  # an inventory or an old bundle: build a delta on it
    since_keys: Sequence[Path] = ()  # the inventory's signature must verify with one of these
    registry_auth: Path | None = None  # a Docker config.json / auth.json with registry logins
    network: NetworkOptions = field(default_factory=NetworkOptions)  # proxies from env, CA
    spec_dir: Path | None = None  # relative credentials files in the spec are read from here
    compression: Compression = field(default_factory=Compression)  # zstd for the files
    recovery: float | None = None  # percent of the data volumes added as recovery volumes
    keep_cache: bool = (
        False  # the cache keeps its own copy of every layer (none lent to the bundle)
    )


@dataclass
class CreateResult:
    plan: Plan
    write: WriteResult
    images: list[ImageArtifact]
    files: list[FileArtifact]
    bytes_downloaded: int
    files_from_cache: int
    warnings: list[str] = field(default_factory=list)
    delta: DeltaSummary | None = None  # with --since: what was left out
    bootstrap: Path | None = None  # airlock-bootstrap.py, written beside the bundle
    unchanged: bool = False  # the bundle already held exactly this content: left as it was


def _file_requests(plan: Plan, mirrors: dict[str, str]) -> list[tuple[Artifact, FileRequest]]:
    out = []
    for a in plan.files():
        checksum = UpstreamChecksum("sha256", a.sha256, "spec") if a.sha256 else None
        req = FileRequest(
            url=a.source,
            fetch_url=a.fetch_url or a.source,
            checksum=checksum,
            checksum_url=apply_mirror(a.checksum_url, mirrors) if a.checksum_url else None,
        )
        out.append((a, req))
    return out


def _file_artifacts(pairs: Sequence[tuple[Artifact, FetchedFile]]) -> list[FileArtifact]:
    basenames = [a.source.rstrip("/").rsplit("/", 1)[1] for a, _ in pairs]
    out = []
    for (a, got), base in zip(pairs, basenames, strict=True):
        name = base
        if basenames.count(base) > 1 and a.platform:
            name = f"{base}-{a.platform.replace('/', '-')}"
        out.append(
            FileArtifact(
                name=name,
                kind=a.kind,
                url=a.source,
                digest=got.digest,
                size=got.size,
                media_type=_MEDIA.get(a.kind, "application/octet-stream"),
                platform=a.platform,
                version=a.version,
                checksum=got.checksum,
                annotations={ANNOTATION_ARTIFACT: a.name},
            )
        )
    return out


ANNOTATION_SIGNATURE_URL = "io.airlock.signature.url"
ANNOTATION_SIGNATURE_KEY = "io.airlock.signature.key"


def _check_signatures(
    files: list[FileArtifact],
    artifacts: Sequence[Artifact],
    cache: BlobStore,
    mirrors: dict[str, str],
    network: NetworkOptions | None = None,
) -> list[FileArtifact]:
    """Upstream detached signatures (spec `verify.signatures`), checked over the bytes fetched;
    each verified file records the signature URL and the key id in airlock.json."""
    from airlock.fetch.metadata import MetadataFetcher
    from airlock.fetch.signatures import verify_detached

    fetcher = MetadataFetcher(mirrors, network=network)
    out = []
    for f, a in zip(files, artifacts, strict=True):
        if a.signature_url and a.signature_key:
            with cache.path(f.digest).open("rb") as data:
                key_id = verify_detached(
                    data, fetcher.get(a.signature_url), Path(a.signature_key), what=a.source
                )
            f = replace(
                f,
                annotations={
                    **f.annotations,
                    ANNOTATION_SIGNATURE_URL: a.signature_url,
                    ANNOTATION_SIGNATURE_KEY: key_id,
                },
            )
        out.append(f)
    return out


def registry_credentials(
    spec: Spec, *, auth_file: Path | None, spec_dir: Path | None
) -> CredentialStore:
    """Where registry logins come from: the spec's references, `--registry-auth`, then the
    files the container tools read (see `airlock.oci.credentials`); read only when asked."""
    refs = {
        host: CredentialRef(env=c.env, file=c.file, username=c.username)
        for host, src in spec.sources.registries.items()
        if (c := src.credentials) is not None
    }
    return CredentialStore.default(spec_refs=refs, auth_file=auth_file, base=spec_dir)


def _endpoints(spec: Spec) -> dict[str, Endpoint]:
    return {
        host: Endpoint(src.url.rstrip("/"), insecure=src.insecure)
        for host, src in spec.sources.registries.items()
    }


def _host_platform() -> str:
    machine = host_platform.machine()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _kubeadm_listed(
    files: Sequence[FileArtifact], cache: BlobStore, version: str
) -> list[str] | None:
    """Ask the fetched kubeadm for its image list, when it runs on this host; else None."""
    here = _host_platform()
    kubeadm = next(
        (
            f
            for f in files
            if f.annotations.get(ANNOTATION_ARTIFACT) == "kubeadm" and f.platform == here
        ),
        None,
    )
    if kubeadm is None:
        return None
    # What a given kubeadm binary lists for a version never changes: remembered by its digest,
    # so a warm create neither copies ~50 MB out of the cache nor runs it again.
    memo = _kubeadm_memo(cache, kubeadm.digest, version)
    remembered = _read_list(memo)
    if remembered is not None:
        return remembered
    with tempfile.TemporaryDirectory(prefix="airlock-kubeadm-") as tmp:
        exe = Path(tmp) / "kubeadm"
        shutil.copyfile(cache.path(kubeadm.digest), exe)
        exe.chmod(0o755)
        try:
            result = system.run(
                [str(exe), "config", "images", "list", "--kubernetes-version", version],
                check=False,
                timeout=60,
            )
        except AirlockError:
            return None
    if result.returncode != 0:
        return None
    listed = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    with contextlib.suppress(OSError):  # only a memo: without it the next create runs kubeadm
        write_atomic(memo, json.dumps(listed).encode(), durable=False)
    return listed


_KUBEADM_LISTS = "kubeadm-images"  # in the cache: what each kubeadm binary listed, by digest


def _kubeadm_memo(cache: BlobStore, digest: str, version: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", version)
    return cache.root / _KUBEADM_LISTS / f"{digest_hex(digest)}-{safe}.json"


def _read_list(path: Path) -> list[str] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        return data
    return None


class _Layers:
    """The layers the cache lacks, downloaded from the moment the images are resolved (while
    the files are still fetched and compressed), in the order the tar holds them (by digest):
    the writer, which can start only once everything is known, waits for each one it reaches
    (`Arrivals`). Layers the baseline of a delta holds are never fetched."""

    def __init__(
        self,
        spec: Spec,
        cache: BlobStore,
        opts: CreateOptions,
        warnings: list[str],
        session: Any,
        skip: frozenset[str],
    ) -> None:
        self.arrivals = Arrivals(())
        self._spec, self._cache, self._opts, self._warnings = spec, cache, opts, warnings
        self._session = session
        self._skip = set(skip)
        self._tasks: list[asyncio.Task[None]] = []
        self.downloaded: set[str] = set()  # hashed as they arrived, in this run

    def start(self, layers: Sequence[LayerFetch]) -> None:
        todo = sorted((d for d in layers if d.digest not in self._skip), key=lambda d: d.digest)
        if not todo:
            return
        self._skip.update(d.digest for d in todo)
        self.arrivals.expect(d.digest for d in todo)
        opts = self._opts
        task = asyncio.create_task(
            fetch_layers(
                todo,
                dest=self._cache,
                endpoints=_endpoints(self._spec),
                session=self._session,
                concurrency=opts.concurrency,
                progress=opts.progress,
                credentials=registry_credentials(
                    self._spec, auth_file=opts.registry_auth, spec_dir=opts.spec_dir
                ),
                notices=self._warnings,
                on_fetched=self._fetched,
            )
        )
        task.add_done_callback(self._finished)
        self._tasks.append(task)

    def _fetched(self, digest: str) -> None:
        self.downloaded.add(digest)
        self.arrivals.arrived(digest)

    def _finished(self, task: asyncio.Task[None]) -> None:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            self.arrivals.stop(failure)

    def failure(self) -> BaseException | None:
        for t in self._tasks:
            failure = t.exception() if t.done() and not t.cancelled() else None
            if failure is not None:
                return failure
        return None

    async def stop(self) -> None:
        """The writer never waits on a fetch that stopped (Ctrl-C, a failure); fetches still
        running (the bundle was already written) are dropped."""
        self.arrivals.stop(AirlockError("bundle create stopped"))
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _fetch_all(
    spec: Spec,
    plan: Plan,
    cache: BlobStore,
    opts: CreateOptions,
    warnings: list[str],
    session: Any,
    layers: _Layers,
) -> tuple[list[FileArtifact], list[ImageArtifact], list[FetchedFile]]:
    """Files (checked, compressed), image manifests and configs; the layers missing from the
    cache start downloading (`layers`) as soon as the images are resolved."""
    pairs = _file_requests(plan, dict(spec.sources.files))
    refs = [parse_reference(a.source) for a in plan.images()]
    endpoints = _endpoints(spec)
    credentials = registry_credentials(spec, auth_file=opts.registry_auth, spec_dir=opts.spec_dir)
    deferred: list[LayerFetch] = []
    ahead = CompressAhead(cache, opts.compression)
    by_url = {r.url: a for a, r in pairs}

    def arrived(got: FetchedFile) -> None:
        # only a head start (a callback of the event loop): whatever fails here is met again,
        # and reported, when every file is in (compress_files)
        with contextlib.suppress(Exception):
            (f,) = _file_artifacts([(by_url[got.request.url], got)])
            ahead.offer(f, fresh=not got.from_cache)

    files_task = asyncio.create_task(  # noqa: RUF006 (awaited below)
        fetch_files(
            [r for _, r in pairs],
            cache=cache,
            session=session,
            concurrency=max(2, opts.concurrency // 2),
            progress=opts.progress,
            on_fetched=arrived,
        )
    )
    pull = functools.partial(
        pull_images,
        dest=cache,
        endpoints=endpoints,
        platforms=list(spec.platforms),
        session=session,
        concurrency=opts.concurrency,
        progress=opts.progress,
        credentials=credentials,
        notices=warnings,
    )
    images_task = asyncio.create_task(pull(refs, deferred=deferred))

    async def images_then_layers() -> list[ImageArtifact]:
        images = await images_task
        # once the files are in (they are needed first: airlock.json waits for their
        # compressed forms), while zstd and the signature checks run
        await asyncio.wait([files_task])
        layers.start(deferred)
        return images

    layers_started = asyncio.create_task(images_then_layers())

    async def files_checked_and_compressed() -> tuple[list[FetchedFile], list[FileArtifact]]:
        # in threads while the images still download: the signatures and zstd take the
        # other core instead of adding their seconds after the last layer
        fetched = await files_task
        files = _file_artifacts([(a, f) for (a, _), f in zip(pairs, fetched, strict=True)])
        files = await asyncio.to_thread(
            _check_signatures,
            files,
            [a for a, _ in pairs],
            cache,
            dict(spec.sources.files),
            opts.network,
        )
        fresh = {f.digest for f in fetched if not f.from_cache}  # hashed as they arrived
        await asyncio.to_thread(ahead.wait)  # most were compressed while the rest arrived
        return fetched, await asyncio.to_thread(
            compress_files, files, cache, opts.compression, fresh
        )

    files_done = asyncio.create_task(files_checked_and_compressed())
    try:
        fetched, files = await files_done
        images = await layers_started
    except BaseException:
        tasks = (files_task, images_task, files_done, layers_started)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        ahead.close()
    listed = _kubeadm_listed(files, cache, spec.kubernetes.version)
    if listed is not None:
        have = {a.source for a in plan.images()}
        missing = [str(parse_reference(r)) for r in listed if str(parse_reference(r)) not in have]
        plan.image_list_source += "; confirmed by the fetched kubeadm binary"
        if missing:
            warnings.append(
                "the fetched kubeadm lists images the plan missed; added: " + ", ".join(missing)
            )
            more: list[LayerFetch] = []
            images += await pull([parse_reference(r) for r in missing], deferred=more)
            layers.start(more)
            for r in missing:
                plan.artifacts.append(
                    Artifact(
                        kind="image",
                        name=parse_reference(r).name,
                        version="",
                        source=r,
                        found_in=("fetched kubeadm binary",),
                    )
                )
    return files, images, fetched


def _final(out: Path, name: str) -> Path:
    """The bundle's path as the writer names it: a path ending in `.tar`, else a directory."""
    if out.is_dir() or not out.name.endswith(".tar"):
        return out / bundle_filename(name)
    return out


def _content_key(content: BundleContent, opts: CreateOptions, final: Path) -> str | None:
    """The key of everything airlock.json and its signature are made from (None: unknown)."""
    from dataclasses import asdict

    try:
        key = opts.sign_key.read_bytes() if opts.sign_key is not None else None
        code = code_fingerprint()
    except OSError:
        return None  # the writer names an unreadable key
    return content_key(
        {
            "content": asdict(content),
            "signKey": hashlib.sha256(key).hexdigest() if key is not None else None,
            "split": opts.split,
            "final": str(final.resolve()),
            "code": code,
        }
    )


def _kept(content: BundleContent, cache: BlobStore, opts: CreateOptions) -> WriteResult | None:
    """The bundle as it is, when its airlock.json was made from exactly this content with the
    same key and options and its files are the ones written then (airlock.bundle.reuse): no
    SBOM, airlock.json or signature is made again. None: the writer decides."""
    if opts.recovery is not None:
        return None  # recovery volumes are always rebuilt by the writer
    final = _final(opts.output or Path.cwd(), content.name)
    key = _content_key(content, opts, final)
    if key is None:
        return None
    record = kept_record(cache.root / OUTPUT_RECORDS, final, key=key, split=opts.split)
    if record is None:
        return None
    first = final if opts.split is None else final.with_name(f"{final.name}.000")
    try:
        with first.open("rb") as fh:
            info = tarfile.TarInfo.frombuf(fh.read(tarfile.BLOCKSIZE), "utf-8", "strict")
            data = fh.read(info.size) if info.name == AIRLOCK_JSON else b""
    except (OSError, tarfile.TarError, UnicodeDecodeError):
        return None
    if not data or hashlib.sha256(data).hexdigest() != record.manifest_sha256:
        return None
    manifest = parse_manifest(data, what=f"{first}: airlock.json")
    volumes = tuple(final.parent / name for name, _, _ in record.volumes)
    return WriteResult(
        path=final if opts.split is None else parts_file_path(final),
        volumes=volumes if opts.split is not None else (),
        size=record.size,
        sha256=record.sha256,
        blob_count=len(manifest.blobs),
        unique_blob_bytes=sum(b.size for b in manifest.blobs),
        manifest=manifest,
        signed=record.signature_sha256 is not None,
    )


async def _write(
    content: BundleContent, cache: BlobStore, opts: CreateOptions, layers: _Layers
) -> tuple[WriteResult, bool]:
    """Write the bundle (a thread) while the layers it still lacks download: the writer, a few
    blobs behind, copies each one while it is still in the page cache. A bundle already
    written from this very content is kept as it is (True: unchanged)."""
    kept = await asyncio.to_thread(_kept, content, cache, opts)
    if kept is not None:
        return kept, True
    written = await _write_new(content, cache, opts, layers)
    await asyncio.to_thread(_remember, content, cache, opts, written)
    return written, False


def _remember(
    content: BundleContent, cache: BlobStore, opts: CreateOptions, written: WriteResult
) -> None:
    """The memo `_kept` reads: this output's airlock.json was made from this content."""
    if opts.recovery is not None:
        return
    final = _final(opts.output or Path.cwd(), content.name)
    key = _content_key(content, opts, final)
    if key is not None:
        save_memo(
            cache.root / OUTPUT_RECORDS,
            final,
            key=key,
            manifest_sha256=hashlib.sha256(written.manifest.to_bytes()).hexdigest(),
        )


async def _write_new(
    content: BundleContent, cache: BlobStore, opts: CreateOptions, layers: _Layers
) -> WriteResult:
    try:
        return await asyncio.to_thread(
            write_bundle,
            content,
            blobs=cache,
            out=opts.output or Path.cwd(),
            sign_key=opts.sign_key,
            split=opts.split,
            recovery=opts.recovery,
            progress=opts.progress,
            arrivals=layers.arrivals,
            hashed=layers.downloaded,  # grows as layers arrive; read after each one did
            lend=not opts.keep_cache,
        )
    except BaseException:
        cause = layers.failure()
        if cause is not None:
            raise cause from None  # the fetch's own error, not the writer's echo of it
        raise


def _resolved(spec: Spec, plan: Plan) -> dict[str, Any]:
    return {
        "kubernetes": spec.kubernetes.version,
        "containerd": spec.runtime.containerd,
        "runc": spec.runtime.runc,
        "crictl": spec.runtime.crictl,
        "cniPlugins": spec.runtime.cni_plugins,
        "cni": {"name": spec.network.cni, "version": spec.network.version},
        "helm": spec.tools.helm,
        "k9s": spec.tools.k9s,
        "platforms": list(spec.platforms),
        "kubeadmImageList": plan.image_list_source,
        "images": sorted(a.source for a in plan.images()),
        "wheelhouse": {  # what airlock-bootstrap.py can install on
            "pythons": list(spec.wheelhouse.pythons),
            "architectures": list(spec.wheelhouse.architectures),
        },
    }


_WHEEL_DIGESTS = "wheel-digests"  # in the cache: each cached wheel's digest, by file identity


def _wheel_digest(cache: BlobStore, path: Path) -> str:
    """The wheel's digest, put into the cache if missing. A wheel the cache already holds is
    not read again while its file is the one hashed (inode, size, mtime and ctime as then):
    every warm create read and hashed ~60 MB of wheels twice."""
    st = path.stat()
    identity = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    memo = cache.root / _WHEEL_DIGESTS / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        doc = json.loads(memo.read_bytes())
        if doc["identity"] == identity and cache.has(doc["digest"]):
            return str(doc["digest"])
    digest = cache.put_file(path)  # hashed while copied in
    with contextlib.suppress(OSError):  # only a memo: without it the next create hashes again
        write_atomic(
            memo, json.dumps({"identity": identity, "digest": digest}).encode(), durable=False
        )
    return digest


def _wheelhouse(cache: BlobStore, spec: Spec) -> list[FileArtifact]:
    from airlock.bundle.wheelhouse import wheelhouse_sources

    remove_dead_temps(cache.root / _WHEEL_DIGESTS)  # memos a killed run was writing
    out = []
    for path in wheelhouse_sources(
        pythons=spec.wheelhouse.pythons, architectures=spec.wheelhouse.architectures
    ):
        digest = _wheel_digest(cache, path)
        out.append(
            FileArtifact(
                name=path.name,
                kind="wheel",
                url=f"wheel:{path.name}",
                digest=digest,
                size=cache.size(digest),
                media_type=_MEDIA["wheel"],
                annotations={ANNOTATION_ARTIFACT: "wheelhouse"},
            )
        )
    return out


def _sequence(options: CreateOptions, baseline: Baseline | None, channel: str) -> int:
    if options.sequence is not None:
        return options.sequence
    if baseline is not None:
        from airlock.verbs.delta import next_sequence

        return next_sequence(baseline, channel)
    return 1


async def _fetch_and_write(
    spec: Spec,
    plan: Plan,
    cache: BlobStore,
    options: CreateOptions,
    warnings: list[str],
    baseline: Baseline | None,
) -> tuple[
    list[FileArtifact],
    list[ImageArtifact],
    list[FetchedFile],
    list[FileArtifact],
    BundleContent,
    DeltaSummary | None,
    WriteResult,
    bool,
]:
    skip = baseline.blobs if baseline is not None else frozenset()
    # the wheels (put into the cache on a cold run) in a thread from the start: ~1.5 s that
    # came after the files were compressed, before the bundle could start
    wheelhouse = asyncio.create_task(
        asyncio.to_thread(_wheelhouse, cache, spec) if options.wheelhouse else _no_wheels()
    )
    async with options.network.session(limit=max(4, options.concurrency * 2)) as session:
        layers = _Layers(spec, cache, options, warnings, session, skip)
        try:
            files, images, fetched = await _fetch_all(
                spec, plan, cache, options, warnings, session, layers
            )
            # files this run downloaded were hashed as they arrived and renamed in: a file
            # stored as fetched (not compressed) is copied into the bundle without a 2nd hash
            layers.downloaded.update(f.digest for f in fetched if not f.from_cache)
            wheels = await wheelhouse
            content, delta = await asyncio.to_thread(
                _content, spec, plan, options, warnings, baseline, files, images, wheels
            )
            written, unchanged = await _write(content, cache, options, layers)
        finally:
            await asyncio.gather(wheelhouse, return_exceptions=True)
            await layers.stop()
    return files, images, fetched, wheels, content, delta, written, unchanged


async def _no_wheels() -> list[FileArtifact]:
    return []


def _content(
    spec: Spec,
    plan: Plan,
    options: CreateOptions,
    warnings: list[str],
    baseline: Baseline | None,
    files: list[FileArtifact],
    images: list[ImageArtifact],
    wheels: list[FileArtifact],
) -> tuple[BundleContent, DeltaSummary | None]:
    content = BundleContent(
        name=spec.metadata.name,
        channel=spec.metadata.channel,
        sequence=_sequence(options, baseline, spec.metadata.channel),
        spec=spec.model_dump(by_alias=True, mode="json", exclude_none=True),
        resolved=_resolved(spec, plan),
        images=images,
        files=files,
        wheelhouse=wheels,
        expires=options.expires,
    )
    delta = None
    if baseline is not None:
        from airlock.verbs.delta import apply_baseline

        content, delta = apply_baseline(content, baseline)
        warnings.extend(baseline.warnings)
    return content, delta


def _holds(path: Path, data: bytes, mode: int) -> bool:
    """The file already has these bytes and this mode (a rerun need not rewrite it)."""
    try:
        return (path.stat().st_mode & 0o777) == mode and path.read_bytes() == data
    except OSError:
        return False


def create_bundle(spec: Spec, *, options: CreateOptions) -> CreateResult:
    """Resolve, fetch everything (verified, cached, concurrent) and write the bundle.

    With `since`, the bundle is a delta: every blob the inventory (or old bundle) holds is left
    out and listed as omitted; the layers it leaves out are not downloaded (manifests and
    configs are: they resolve and pin the images).
    """
    baseline = None
    if options.since is not None:
        from airlock.verbs.delta import read_baseline

        # Read and verify the baseline first: a bad signature refuses before any download.
        baseline = read_baseline(options.since, keys=options.since_keys)
    from airlock.verbs.plan import ensure_releases_exist

    # options a user got wrong fail before any network traffic
    registry_credentials(spec, auth_file=options.registry_auth, spec_dir=options.spec_dir)
    options.network.ssl_context  # noqa: B018 (reads the CA bundle: a bad one is named now)
    ensure_releases_exist(spec, network=options.network)  # a missing version: named, nearest too
    plan = resolve_plan(spec, network=options.network)
    # no fsync per cached blob: the bundle writer hashes every blob again as it copies it
    cache = BlobStore(options.cache or default_cache_dir(), durable=False)
    cache.ensure()
    cache.remove_temp_files()  # blobs a killed run was writing (a live writer's are locked)
    warnings = list(plan.warnings)
    # files come back checked and in their stored form (compressed while images download);
    # the layers the cache lacks download from then on, while the bundle is written
    files, images, fetched, wheels, _, delta, written, unchanged = asyncio.run(
        _fetch_and_write(spec, plan, cache, options, warnings, baseline)
    )
    bootstrap = None
    if wheels:
        from airlock.atomic import write_atomic
        from airlock.bootstrap import SCRIPT_NAME, render_script

        bootstrap = written.path.parent / SCRIPT_NAME
        script = render_script()
        if not _holds(bootstrap, script, 0o755):
            write_atomic(bootstrap, script, mode=0o755)
    return CreateResult(
        plan=plan,
        write=written,
        images=images,
        files=files,
        bytes_downloaded=sum(f.bytes_downloaded for f in fetched),
        files_from_cache=sum(1 for f in fetched if f.from_cache),
        warnings=warnings,
        delta=delta,
        bootstrap=bootstrap,
        unchanged=unchanged,
    )
