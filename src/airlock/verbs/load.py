"""`airlock load`: verify a bundle, then merge it into the node's store (an OCI layout).

Order, so that a crash at any point leaves a valid store and a rerun completes:
1. verify everything (volumes, signature, index, every blob, the graph): refuse before the
   store changes; a delta's omitted blobs must already be in the store (named if missing);
2. check free disk for the blobs the store does not have;
3. copy each missing blob (verified again while streaming: the bytes stored are the bytes
   checked) with temp file, fsync, rename;
4. under the store's lock: the rollback guard again, the bundle's airlock.json under
   `airlock/bundles/`, index.json merged (atomic), the sequence high-water mark (airlock.store).
Loading the same bundle twice changes nothing; two loads and a registry push at once lose
nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock import system
from airlock.blobstore import BlobStore
from airlock.bundle.handle import Bundle
from airlock.bundle.manifest import BlobEntry
from airlock.bundle.verify import VerifyReport
from airlock.bundle.volumes import check_volumes, locate_volumes
from airlock.errors import AirlockError, VerificationError
from airlock.oci.digest import digest_hex, sha256_digest
from airlock.progress import ProgressSink, report_done, report_start
from airlock.store import DEFAULT_STORE, BundleCommit, Store
from airlock.trust import trust_policy

__all__ = ["LoadOptions", "LoadResult", "load_bundle"]

_COPY_CHUNK = 1 << 20
_DISK_MARGIN = 64 << 20


@dataclass(frozen=True)
class LoadOptions:
    keys: Sequence[Path] = ()  # none: the trusted-keys directory; no key there: refused
    allow_unsigned: bool = False  # load without a checked signature (UNVERIFIED)
    allow_downgrade: bool = False
    scan: Sequence[str] = ()  # a scanner command; the directory of staged content is appended
    repair: bool = False  # rebuild damaged volumes from the recovery volumes first
    progress: ProgressSink | None = None  # bytes copied into the store, as they are


@dataclass
class LoadResult:
    bundle: Path
    store: Path
    verify: VerifyReport
    blobs_added: int = 0
    bytes_added: int = 0
    blobs_present: int = 0
    index_entries_changed: int = 0
    images: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # volumes rebuilt by --repair

    @property
    def changed(self) -> bool:
        return bool(self.blobs_added or self.index_entries_changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "store": str(self.store),
            "name": self.verify.name,
            "sequence": self.verify.sequence,
            "signedBy": self.verify.signed_by,
            "verified": self.verify.verified,
            "trust": self.verify.trust,
            "blobsAdded": self.blobs_added,
            "bytesAdded": self.bytes_added,
            "blobsPresent": self.blobs_present,
            "indexEntriesChanged": self.index_entries_changed,
            "changed": self.changed,
            "images": self.images,
            "repaired": self.repaired,
        }


def _check_free_space(store: Store, needed: int) -> None:
    free = BlobStore.free_bytes(store.root)
    if free < needed + _DISK_MARGIN:
        raise AirlockError(
            f"not enough free disk for {store.root}: {needed} bytes of new blobs "
            f"(+{_DISK_MARGIN} margin) needed, {free} free",
            hint="free space, or load into another --store",
        )


def load_bundle(
    bundle: Path | Bundle, *, store_dir: Path = DEFAULT_STORE, options: LoadOptions
) -> LoadResult:
    """Load a bundle (a path, opened and verified here, or a Bundle already open) into the
    store; see the module doc."""
    if isinstance(bundle, Bundle):
        return _load(bundle, store_dir=store_dir, options=options)
    locate_volumes(bundle)  # a bundle that is not there is named before any key is looked for
    trust = trust_policy(options.keys, allow_unsigned=options.allow_unsigned)
    repaired = _repair(bundle, options) if options.repair else []
    # Structure, signature, expiry, index and graph now; every blob's bytes while it is staged
    # below, so the bundle is read once.
    try:
        opened = Bundle.open(bundle, trust=trust, hash_content=False)
    except VerificationError as exc:
        if not options.repair and _damaged_volumes(bundle):
            exc.hint = _damage_hint(bundle, exc.hint)
        raise
    with opened:
        result = _load(opened, store_dir=store_dir, options=options)
    result.repaired = repaired
    return result


def _load(bundle: Bundle, *, store_dir: Path, options: LoadOptions) -> LoadResult:
    store = Store.open(store_dir, write=True)
    result = LoadResult(bundle=bundle.path, store=store_dir, verify=bundle.report)
    manifest = bundle.manifest
    manifest_digest = sha256_digest(bundle.manifest_bytes)
    # early, to refuse before copying; checked again under the store's lock at the commit
    store.check_sequence(
        channel=manifest.channel,
        sequence=manifest.sequence,
        manifest_digest=manifest_digest,
        allow_downgrade=options.allow_downgrade,
    )
    missing_base = [d for d in manifest.omitted if not store.has(d)]
    if missing_base:
        shown = ", ".join(missing_base[:5]) + (" ..." if len(missing_base) > 5 else "")
        raise VerificationError(
            f"delta bundle {bundle.display()} needs {len(missing_base)} blobs the store "
            f"{store_dir} does not have: {shown}",
            hint="load the bundle this delta was built on first (or build a full bundle)",
        )
    carried = [b for b in manifest.blobs if bundle.has_blob(b.digest)]
    new = [b for b in carried if not store.has(b.digest)]
    _check_free_space(store, sum(b.size for b in new) * (2 if options.scan else 1))
    existed = store_dir.exists()
    with contextlib.ExitStack() as stack:
        try:
            store_dir.mkdir(parents=True, exist_ok=True)
            if options.scan:
                scan_content(bundle, new, scanner=options.scan, workdir=store_dir)
            staging = stack.enter_context(store.staging(digest_hex(manifest_digest)[:16]))
            _stage(bundle, new, staging, options.progress)
        except BaseException:
            if not existed:  # refused: not even an empty store is left behind
                shutil.rmtree(store_dir, ignore_errors=True)
            raise
        store.init()
        store.remove_temp_files()
        # every byte checked: now they join the store, each atomically
        store.publish_staged(staging, [entry.digest for entry in new])
        store.drop_staging(staging)
    result.blobs_added = len(new)
    result.bytes_added = sum(entry.size for entry in new)
    result.blobs_present = len(carried) - len(new)
    # the record, index.json as verified when the bundle was opened (never read again) and the
    # sequence, at once under the store's lock
    result.index_entries_changed = store.commit_bundle(
        BundleCommit(
            name=manifest.name,
            channel=manifest.channel,
            sequence=manifest.sequence,
            manifest_bytes=bundle.manifest_bytes,
            manifest_digest=manifest_digest,
            index_manifests=list(bundle.index.get("manifests", [])),
            allow_downgrade=options.allow_downgrade,
        )
    )
    result.images = sorted(i.reference for i in manifest.images)
    return result


def _repair(bundle: Path, options: LoadOptions) -> list[str]:
    """`--repair`: rebuild damaged volumes first (a bundle without recovery volumes is loaded
    as it is, and refused as usual when damaged)."""
    from airlock.bundle.repair import find_recovery_set
    from airlock.verbs.repair import RepairOptions, repair_bundle

    if find_recovery_set(bundle) is None:
        return []
    repaired = repair_bundle(
        bundle,
        options=RepairOptions(
            keys=options.keys,
            allow_unsigned=options.allow_unsigned,
            verify=False,
            progress=options.progress,
        ),
    )
    return [str(p) for p in repaired.rebuilt]


def _stage(
    bundle: Bundle,
    entries: Sequence[BlobEntry],
    staging: BlobStore,
    progress: ProgressSink | None = None,
) -> None:
    """Copy each blob beside the store, hashing it on the way (both cores); a mismatch names
    the blob (and, for a split bundle, the volume that is damaged) and nothing joins the store."""
    staging.ensure()
    staging.remove_temp_files()
    label = f"load {bundle.path.name}"

    def copied(n: int) -> None:
        if progress is not None:
            progress.advance(label, n)

    def one(entry: BlobEntry) -> None:
        if staging.has(entry.digest):  # staged by an interrupted run: committed only if it matched
            copied(entry.size)
        else:
            bundle.copy_blob(entry.digest, staging, on_bytes=copied)

    report_start(progress, label, sum(e.size for e in entries))
    try:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(one, sorted(entries, key=lambda e: -e.size)))
    except VerificationError as exc:
        shutil.rmtree(staging.root, ignore_errors=True)
        bad = bundle.damaged_volumes()
        raise VerificationError(
            exc.message + (f"; {'; '.join(bad)}" if bad else ""),
            hint=_damage_hint(
                bundle.path, "nothing was loaded; copy the bundle (the named volume) again"
            ),
        ) from exc
    report_done(progress, label)


def _damaged_volumes(bundle: Path) -> bool:
    try:
        volumes = locate_volumes(bundle)
    except AirlockError:
        return False
    return bool(volumes.parts and check_volumes(volumes)[0])


def _damage_hint(bundle: Path, default: str | None) -> str | None:
    """With recovery volumes, the way out of a damaged volume is a repair, not another trip."""
    from airlock.bundle.repair import find_recovery_set

    try:
        rset = find_recovery_set(bundle)
    except VerificationError:
        rset = None
    if rset is None:
        return default
    return (
        f"nothing was loaded; the bundle has recovery volumes: `airlock load --repair {bundle}` "
        "rebuilds the damaged volumes first (or `airlock bundle repair`)"
    )


_SCANNED_ROLES = {"file", "image-layer", "sbom"}


def scan_content(
    bundle: Bundle,
    entries: Sequence[BlobEntry],
    *,
    scanner: Sequence[str],
    workdir: Path,
) -> None:
    """Stage every new file and image layer in a directory and run the user's scanner over it
    (ClamAV, Trivy offline, ...); a non-zero exit refuses the load before the store changes."""
    from airlock.node.install import BundleSource

    files = {f.blob_digest: f for f in bundle.manifest.files}
    source = BundleSource(bundle)  # a compressed file is scanned as itself, decompressed
    with tempfile.TemporaryDirectory(prefix=".scan-", dir=workdir) as tmp:
        staged = Path(tmp)
        for entry in entries:
            if entry.role not in _SCANNED_ROLES:
                continue
            f = files.get(entry.digest)
            name = f.name if f else f"{digest_hex(entry.digest)}.layer.tar.gz"
            opened = source.open(f.digest) if f else bundle.open_blob(entry.digest)
            with opened as src, (staged / name).open("wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        result = system.run([*scanner, str(staged)], check=False, timeout=3600)
        if result.returncode != 0:
            out = (result.stdout + result.stderr).strip()[-1500:]
            raise VerificationError(
                f"the scanner `{' '.join(scanner)}` refused the bundle (exit {result.returncode}): {out}",
                hint="nothing was loaded; inspect the findings before carrying the bundle again",
            )
