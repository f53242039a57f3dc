"""Deltas across the gap: the inventory round trip, what a `--since` bundle leaves out, and
`plan --since` (what will travel, and how many bytes, before any download).

The far side runs `airlock inventory -o inventory.json [--sign KEY]` and carries the file back;
`inventory.json.sig` is the raw ed25519 signature of its bytes (like airlock.json.sig, so
`openssl pkeyutl -verify -rawin` checks it too). A `Baseline` is what the far side holds, read
from such an inventory or from an old bundle (the blobs it carried plus those it omitted, which
the far side had to hold to load it). A delta bundle carries everything the spec resolves to
except the blobs of the baseline: `airlock.json` records the baseline's digest (`base`) and the
omitted digests, and `airlock load` refuses it, naming the missing blobs, on a store that lacks
any of them.

`plan_since` answers "what will travel" from metadata only: image indexes and manifests (layer
and config digests and sizes come from their descriptors), upstream checksum files (a file's
sha256 is its blob digest) with a HEAD for the size, and the CNI manifest and charts that
`plan` fetches anyway. A small file with no published checksum (a systemd unit) is fetched to
hash it; a larger one is reported as "unknown" and counted as travelling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from airlock.atomic import write_atomic
from airlock.bundle.signing import key_id, load_private_key, sign, verify_signature
from airlock.bundle.writer import BundleContent
from airlock.errors import FetchError, UsageError, VerificationError
from airlock.fetch.checksums import checksum_from_spec, parse_checksum_file, url_filename
from airlock.fetch.metadata import MetadataFetcher
from airlock.fetch.network import NetworkOptions, proxy_for
from airlock.oci.client import Endpoint, Manifest, RegistryClient, default_endpoint
from airlock.oci.credentials import CredentialStore
from airlock.oci.digest import is_digest, sha256_digest
from airlock.oci.media import INDEX_MEDIA_TYPES
from airlock.oci.platform import parse_platform, select_manifests
from airlock.oci.ref import parse_reference
from airlock.resolve.model import Artifact, Plan
from airlock.resolve.plan import resolve_plan_with
from airlock.resolve.urls import apply_mirror
from airlock.spec import Spec
from airlock.trust import TrustPolicy

__all__ = [
    "INVENTORY_SCHEMA",
    "SIGNATURE_SUFFIX",
    "ArtifactBlobs",
    "Baseline",
    "DeltaSummary",
    "InventoryWritten",
    "SincePlan",
    "TravelEntry",
    "apply_baseline",
    "inventory_bytes",
    "measure_plan",
    "omitted_digests",
    "plan_since",
    "read_baseline",
    "signature_path",
    "travel_summary",
    "write_inventory",
]

INVENTORY_SCHEMA = "airlock.inventory/v1"  # the schema of airlock.node.inventory
SIGNATURE_SUFFIX = ".sig"
_MAX_INVENTORY = 64 << 20
_HASH_SMALL_FILES = 256 << 10  # files without a published checksum, up to this size, are hashed
_META_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=20, sock_read=30)


def signature_path(path: Path) -> Path:
    return path.with_name(path.name + SIGNATURE_SUFFIX)


# --- the inventory on the far side --------------------------------------------------------------


def inventory_bytes(data: Mapping[str, Any]) -> bytes:
    """The inventory as written to disk: stable JSON (sorted keys), so it can be signed."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class InventoryWritten:
    path: Path
    size: int
    digest: str  # sha256 of the file: what a delta built on it records as its base
    signature: Path | None = None
    key_id: str | None = None
    blobs: int = 0


def write_inventory(
    data: Mapping[str, Any], output: Path, *, sign_key: Path | None = None
) -> InventoryWritten:
    """Write the inventory (and `OUTPUT.sig`, the raw ed25519 signature of its bytes)."""
    raw = inventory_bytes(data)
    sig = sign(raw, sign_key) if sign_key is not None else None  # a bad key fails before writing
    write_atomic(output, raw)
    sig_path: Path | None = None
    kid: str | None = None
    if sig is not None and sign_key is not None:
        sig_path = signature_path(output)
        write_atomic(sig_path, sig)
        kid = key_id(load_private_key(sign_key).public_key())
    else:
        signature_path(output).unlink(missing_ok=True)  # a stale signature would not verify
    store = data.get("store") or {}
    return InventoryWritten(
        path=output,
        size=len(raw),
        digest=sha256_digest(raw),
        signature=sig_path,
        key_id=kid,
        blobs=len(store.get("blobs") or []),
    )


# --- what the far side holds --------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """What the far side holds, from an inventory or an old bundle."""

    kind: Literal["inventory", "bundle"]
    path: Path
    digest: str  # sha256 of the inventory file, or of the old bundle's airlock.json
    blobs: frozenset[str]
    images: Mapping[str, str] = field(default_factory=dict)  # reference -> digest
    signed_by: str | None = None  # the key that verified it, when keys were given
    warnings: tuple[str, ...] = ()
    channels: Mapping[str, int] = field(default_factory=dict)  # newest sequence per channel
    # files the far side holds compressed, by their own digest (what upstream checksums name);
    # only `plan --since` uses them: a delta omits by the blobs themselves
    contents: frozenset[str] = frozenset()


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_INVENTORY + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > _MAX_INVENTORY:
        raise UsageError(f"{path} is larger than {_MAX_INVENTORY} bytes: not an inventory")
    return data


def _check_signature(
    what: str, path: Path, data: bytes, sig: bytes | None, keys: Sequence[Path]
) -> str:
    """`what` is "inventory" or "bundle"; returns the key id that verified."""
    inventory = what == "inventory"
    what = f"{what} {path}"
    if sig is None:
        raise VerificationError(
            f"{what} is not signed, but --since-key was given",
            f"sign it on the far side: airlock inventory -o {path.name} --sign KEY"
            if inventory
            else "build the old bundle with --sign, or drop --since-key",
        )
    try:
        good = verify_signature(data, sig, keys)
    except VerificationError as exc:
        names = ", ".join(str(k) for k in keys)
        raise VerificationError(
            f"the signature of {what} does not verify with {names}",
            "it was changed after signing, or signed with another key; take the inventory "
            "again on the far side and carry both files",
        ) from exc
    return key_id(good)


def _inventory_baseline(
    path: Path, raw: bytes, doc: Mapping[str, Any], keys: Sequence[Path]
) -> Baseline:
    signed_by = None
    if keys:
        sig_file = signature_path(path)
        sig = sig_file.read_bytes() if sig_file.is_file() else None
        signed_by = _check_signature("inventory", path, raw, sig, keys)
    store = doc.get("store")
    if not isinstance(store, dict):
        raise UsageError(f"inventory {path} has no `store` section", "take the inventory again")
    blobs = store.get("blobs") or []
    images = store.get("images") or {}
    if not isinstance(blobs, list) or not isinstance(images, dict):
        raise UsageError(f"inventory {path}: `store.blobs` must be a list, `store.images` a map")
    bad = [b for b in blobs if not isinstance(b, str) or not is_digest(b)]
    if bad:
        raise UsageError(f"inventory {path} lists {len(bad)} invalid digests, e.g. {bad[0]!r}")
    compressed = store.get("compressedFiles") or {}
    contents = frozenset(
        str(k)
        for k, v in (compressed.items() if isinstance(compressed, dict) else ())
        if isinstance(k, str) and is_digest(k) and v in blobs
    )
    warnings: tuple[str, ...] = ()
    if not store.get("present", True) or not blobs:
        warnings = (
            f"the inventory {path} shows an empty store ({store.get('path', '?')}): "
            "the delta carries everything",
        )
    return Baseline(
        kind="inventory",
        path=path,
        digest=sha256_digest(raw),
        blobs=frozenset(blobs),
        images={str(k): str(v) for k, v in images.items()},
        signed_by=signed_by,
        warnings=warnings,
        channels=_channels(doc),
        contents=contents,
    )


def _bundle_baseline(path: Path, keys: Sequence[Path]) -> Baseline:
    from airlock.bundle.handle import Bundle

    # the structure and graph are checked; the signature below, with its own messages; an old
    # bundle's expiry does not matter to what it says the far side holds
    unchecked = TrustPolicy((), allow_unsigned=True)
    with Bundle.open(path, trust=unchecked, hash_content=False, expiry=False) as reader:
        manifest = reader.manifest
        signed_by = None
        if keys:
            signed_by = _check_signature(
                "bundle", path, reader.manifest_bytes, reader.signature, keys
            )
        carried = {b.digest for b in manifest.blobs}
        return Baseline(
            kind="bundle",
            path=path,
            digest=sha256_digest(reader.manifest_bytes),
            # what the far side had to hold to load it, plus what it carried
            blobs=frozenset(carried | set(manifest.omitted)),
            images={i.reference: i.digest for i in manifest.images},
            signed_by=signed_by,
            channels={manifest.channel: manifest.sequence},
            contents=frozenset(
                f.digest
                for f in manifest.files
                if f.stored and f.stored.digest in carried | set(manifest.omitted)
            ),
        )


def read_baseline(path: Path, *, keys: Sequence[Path] = ()) -> Baseline:
    """An inventory (`airlock inventory -o`) or an old bundle (tar, parts file or volume).

    With `keys`, the inventory's `.sig` (or the old bundle's signature) must verify with one of
    them; a missing or bad signature is a VerificationError, before anything else happens.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(
            f"{path} does not exist",
            "pass the inventory carried back from the far side, or an old bundle",
        )
    if path.is_file() and path.stat().st_size <= _MAX_INVENTORY:
        raw = _read_limited(path)
        if raw.lstrip()[:1] == b"{":
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise UsageError(f"{path} is not valid JSON: {exc}") from exc
            if isinstance(doc, dict) and doc.get("schema") == INVENTORY_SCHEMA:
                return _inventory_baseline(path, raw, doc, keys)
            if not (isinstance(doc, dict) and "volumes" in doc):  # a parts file is a bundle
                raise UsageError(
                    f"{path} is JSON but not an airlock inventory "
                    f"(schema {doc.get('schema') if isinstance(doc, dict) else None!r})",
                    f"expected schema {INVENTORY_SCHEMA}, from `airlock inventory -o FILE`",
                )
    return _bundle_baseline(path, keys)


# --- the delta bundle ---------------------------------------------------------------------------


def omitted_digests(candidates: Iterable[str], present: Collection[str]) -> tuple[str, ...]:
    """The digests of `candidates` the far side holds: sorted, each once."""
    return tuple(sorted({d for d in candidates if d in present}))


@dataclass(frozen=True)
class DeltaSummary:
    base: str
    baseline: str  # the inventory or bundle path
    kind: str
    omitted: int
    omitted_bytes: int
    carried_candidates: int  # blobs the spec resolves to that the far side lacks


def _content_blobs(content: BundleContent) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for image in content.images:
        for b in image.blobs:
            sizes[b.digest] = b.size
    for f in (*content.files, *content.wheelhouse):
        # the blob that travels: a compressed file's stored form
        sizes[f.blob_digest] = f.stored.size if f.stored else f.size
    return sizes


def apply_baseline(
    content: BundleContent, baseline: Baseline
) -> tuple[BundleContent, DeltaSummary]:
    """`content` as a delta on `baseline`: every blob the far side holds is left out."""
    sizes = _content_blobs(content)
    omitted = omitted_digests(sizes, baseline.blobs)
    summary = DeltaSummary(
        base=baseline.digest,
        baseline=str(baseline.path),
        kind=baseline.kind,
        omitted=len(omitted),
        omitted_bytes=sum(sizes[d] for d in omitted),
        carried_candidates=len(sizes) - len(omitted),
    )
    return dataclasses.replace(content, base=baseline.digest, omitted=omitted), summary


# --- plan --since: what travels, from metadata only ---------------------------------------------


@dataclass(frozen=True)
class ArtifactBlobs:
    """One planned artifact and the blobs it is made of (size None: not known)."""

    kind: str
    name: str
    platform: str = ""
    blobs: tuple[tuple[str | None, int | None], ...] = ()  # (digest or None when unknown, size)
    note: str = ""


TravelStatus = Literal["travels", "present", "partial", "unknown"]


@dataclass(frozen=True)
class TravelEntry:
    kind: str
    name: str
    platform: str
    status: TravelStatus
    travel_bytes: int  # bytes of its blobs the far side lacks (shared blobs counted per entry)
    present_bytes: int
    blobs_travel: int
    blobs_present: int
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "platform": self.platform,
            "status": self.status,
            "travelBytes": self.travel_bytes,
            "presentBytes": self.present_bytes,
            "blobsTravel": self.blobs_travel,
            "blobsPresent": self.blobs_present,
            "note": self.note,
        }


def travel_summary(
    items: Sequence[ArtifactBlobs], present: Collection[str]
) -> tuple[list[TravelEntry], int, int]:
    """Per artifact what travels, and the totals (travel, present) over unique digests: a layer
    shared by several images travels once. A blob of unknown digest counts as travelling."""
    entries: list[TravelEntry] = []
    travel: dict[str, int] = {}
    here: dict[str, int] = {}
    unknown_total = 0
    for item in items:
        t_bytes = p_bytes = t_n = p_n = 0
        unknown = False
        seen: set[str] = set()
        for digest, size in item.blobs:
            if digest is not None:
                if digest in seen:
                    continue  # a blob listed twice in one artifact counts once
                seen.add(digest)
            n = size or 0
            if digest is None:
                unknown = True
                t_bytes += n
                t_n += 1
                unknown_total += n
            elif digest in present:
                p_bytes += n
                p_n += 1
                here[digest] = n
            else:
                t_bytes += n
                t_n += 1
                travel[digest] = n
        status: TravelStatus
        if unknown:
            status = "unknown"
        elif t_n == 0:
            status = "present"
        elif p_n == 0:
            status = "travels"
        else:
            status = "partial"
        entries.append(
            TravelEntry(
                kind=item.kind,
                name=item.name,
                platform=item.platform,
                status=status,
                travel_bytes=t_bytes,
                present_bytes=p_bytes,
                blobs_travel=t_n,
                blobs_present=p_n,
                note=item.note,
            )
        )
    return entries, sum(travel.values()) + unknown_total, sum(here.values())


@dataclass
class SincePlan:
    plan: Plan
    base: str
    baseline: str
    entries: list[TravelEntry]
    travel_bytes: int
    present_bytes: int
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"travels": 0, "present": 0, "partial": 0, "unknown": 0}
        for e in self.entries:
            out[e.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.plan.name,
            "kubernetesVersion": self.plan.kubernetes_version,
            "base": self.base,
            "baseline": self.baseline,
            "travelBytes": self.travel_bytes,
            "presentBytes": self.present_bytes,
            "counts": self.counts(),
            "artifacts": [e.to_json() for e in self.entries],
            "notCounted": [
                "airlock's wheelhouse (built at bundle time; omitted when unchanged)",
                "the bundle's own metadata (airlock.json, index.json, files manifest, SBOM)",
            ],
            "warnings": self.warnings,
        }


def _endpoints(spec: Spec) -> dict[str, Endpoint]:
    return {
        host: Endpoint(src.url.rstrip("/"), insecure=src.insecure)
        for host, src in spec.sources.registries.items()
    }


async def _image_blobs(
    artifact: Artifact, clients: dict[str, RegistryClient], platforms: Sequence[str]
) -> ArtifactBlobs:
    ref = parse_reference(artifact.source)
    what = str(ref)
    client = clients[ref.registry]
    top = await client.get_manifest(ref.repository, ref.digest or ref.tag or "latest", what=what)
    blobs: list[tuple[str | None, int | None]] = [(top.digest, len(top.data))]
    manifests: list[Manifest] = [top]
    if top.media_type in INDEX_MEDIA_TYPES:
        entries = [e for e in top.doc.get("manifests", []) if isinstance(e, dict)]
        wanted = [parse_platform(p) for p in platforms]
        selected, missing = select_manifests(entries, wanted) if wanted else (entries, [])
        if missing:
            raise FetchError(
                f"{what} has no image for {', '.join(str(m) for m in missing)}",
                "change the spec's platforms, or use an image built for them",
            )
        manifests = list(
            await asyncio.gather(
                *(
                    client.get_manifest(ref.repository, str(e["digest"]), what=what)
                    for e in selected
                )
            )
        )
        blobs += [(m.digest, len(m.data)) for m in manifests]
    for m in manifests:
        config = m.doc.get("config")
        if isinstance(config, dict):
            blobs.append((str(config.get("digest")), int(config.get("size", 0))))
        for layer in m.doc.get("layers", []) or []:
            if isinstance(layer, dict):
                blobs.append((str(layer.get("digest")), int(layer.get("size", 0))))
    unique = list(dict.fromkeys(blobs))  # a blob shared inside one image counts once
    return ArtifactBlobs("image", what, "", tuple(unique))


async def _head_size(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.head(
            url, allow_redirects=True, timeout=_META_TIMEOUT, **proxy_for(url)
        ) as resp:
            if resp.status != 200:
                return None
            return resp.content_length
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _small_get(session: aiohttp.ClientSession, url: str) -> bytes | None:
    try:
        async with session.get(url, timeout=_META_TIMEOUT, **proxy_for(url)) as resp:
            if resp.status != 200:
                return None
            data = await resp.content.read(_HASH_SMALL_FILES + 1)
    except (aiohttp.ClientError, TimeoutError):
        return None
    return data if len(data) <= _HASH_SMALL_FILES else None


async def _file_blobs(
    artifact: Artifact,
    *,
    session: aiohttp.ClientSession,
    meta: MetadataFetcher,
    mirrors: Mapping[str, str],
) -> ArtifactBlobs:
    name = url_filename(artifact.source) or artifact.name
    fetch_url = artifact.fetch_url or apply_mirror(artifact.source, mirrors)
    digest: str | None = None
    note = ""
    if artifact.sha256:
        checksum = checksum_from_spec(artifact.sha256)
        digest = f"sha256:{checksum.value}" if checksum.algorithm == "sha256" else None
        note = "sha256 from the spec/plan"
    elif artifact.source in meta.cache:  # the CNI manifest and charts: plan fetched them
        data = meta.cache[artifact.source]
        return ArtifactBlobs(
            artifact.kind,
            name,
            artifact.platform,
            ((sha256_digest(data), len(data)),),
            "hashed from the metadata plan fetched",
        )
    elif artifact.checksum_url:
        text = await asyncio.to_thread(meta.get, artifact.checksum_url)
        checksum = parse_checksum_file(
            text.decode("utf-8", errors="replace"), filename=name, source=artifact.checksum_url
        )
        if checksum.algorithm == "sha256":
            digest = f"sha256:{checksum.value}"
            note = "sha256 from the upstream checksum file"
        else:
            note = f"upstream publishes {checksum.algorithm} only: digest unknown until fetched"
    size = await _head_size(session, fetch_url)
    if digest is None and not note:
        if size is not None and size <= _HASH_SMALL_FILES:
            small = await _small_get(session, fetch_url)
            if small is not None:
                return ArtifactBlobs(
                    artifact.kind,
                    name,
                    artifact.platform,
                    ((sha256_digest(small), len(small)),),
                    "no published checksum: small file hashed",
                )
        note = "no published checksum: digest unknown until fetched"
    if size is None:
        note = (note + "; " if note else "") + "size unknown (no Content-Length)"
    return ArtifactBlobs(artifact.kind, name, artifact.platform, ((digest, size),), note)


async def measure_plan(
    spec: Spec, plan: Plan, meta: MetadataFetcher, *, credentials: CredentialStore | None = None
) -> list[ArtifactBlobs]:
    """Every file then every image of `plan`, with its blobs, from metadata only."""
    endpoints = _endpoints(spec)
    async with meta.network.session(limit=8) as session:
        clients: dict[str, RegistryClient] = {}
        for a in plan.images():
            host = parse_reference(a.source).registry
            if host not in clients:
                ep = endpoints.get(host) or default_endpoint(host)
                clients[host] = RegistryClient(host, ep, session=session, credentials=credentials)
        sem = asyncio.Semaphore(8)

        async def bounded(coro: Any) -> ArtifactBlobs:
            async with sem:
                result: ArtifactBlobs = await coro
                return result

        files = [
            bounded(_file_blobs(a, session=session, meta=meta, mirrors=dict(spec.sources.files)))
            for a in plan.files()
        ]
        images = [bounded(_image_blobs(a, clients, list(spec.platforms))) for a in plan.images()]
        return list(await asyncio.gather(*files, *images))


def plan_since(
    spec: Spec,
    *,
    baseline: Baseline,
    fetcher: MetadataFetcher | None = None,
    network: NetworkOptions | None = None,
    credentials: CredentialStore | None = None,
) -> SincePlan:
    """Resolve the plan, then learn every artifact's blobs from metadata and subtract what the
    baseline holds. Downloads no artifact (files are HEAD-ed for their size)."""
    meta = fetcher or MetadataFetcher(spec.sources.files, network=network)
    plan = resolve_plan_with(spec, meta)
    try:
        items = asyncio.run(measure_plan(spec, plan, meta, credentials=credentials))
    except aiohttp.ClientError as exc:  # pragma: no cover - mapped at the boundary
        raise FetchError(f"plan --since: {exc}") from exc
    entries, travel, present = travel_summary(items, baseline.blobs | baseline.contents)
    warnings = [*plan.warnings, *baseline.warnings]
    unknown = [e.name for e in entries if e.status == "unknown"]
    if unknown:
        warnings.append(
            "digest unknown before download (counted as travelling): " + ", ".join(unknown)
        )
    return SincePlan(
        plan=plan,
        base=baseline.digest,
        baseline=str(baseline.path),
        entries=entries,
        travel_bytes=travel,
        present_bytes=present,
        warnings=warnings,
    )


def _channels(inventory: Any) -> dict[str, int]:
    store = inventory.get("store") if isinstance(inventory, dict) else None
    raw = store.get("channels", {}) if isinstance(store, dict) else {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}


def next_sequence(baseline: Baseline, channel: str) -> int:
    """One above the newest sequence the far side loaded on `channel` (1 when it has none)."""
    return baseline.channels.get(channel, 0) + 1
