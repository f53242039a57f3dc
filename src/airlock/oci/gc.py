"""`airlock registry gc`: remove blobs that nothing in the store references any more.

A blob is kept when any of these holds:
- it is reachable from an entry of index.json (tags, images loaded from bundles, manifests
  pushed by digest): the entry's manifest, an index's children, a manifest's config and layers;
- a bundle recorded under `airlock/bundles/` lists it (what `load` brought stays until the
  record goes);
- it is younger than the grace period: a client uploads blobs before the manifest that names
  them, and `load` copies blobs before it merges index.json.

The registry takes the store's gc lock shared while it publishes a blob, mounts one or puts a
manifest (checking and touching every blob the manifest names first); gc takes it exclusive
while it decides and removes, so a manifest never lands naming a blob gc is removing. A dry
run (the default of the CLI) only reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from airlock.atomic import fsync_dir
from airlock.errors import UsageError
from airlock.oci.digest import is_digest
from airlock.oci.layout import OciLayout
from airlock.oci.sources import MAX_MANIFEST_SIZE, manifest_info

__all__ = ["GC_LOCK", "GcOptions", "GcResult", "collect_garbage", "referenced_blobs", "store_lock"]

GC_LOCK = Path("airlock") / "gc.lock"
BUNDLE_RECORDS = Path("airlock") / "bundles"
DEFAULT_GRACE_SECONDS = 3600.0


@contextlib.contextmanager
def store_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """The store's gc lock (flock: released by the kernel even when the holder is killed)."""
    path = root / GC_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class GcOptions:
    dry_run: bool = True
    grace_seconds: float = DEFAULT_GRACE_SECONDS


@dataclass
class GcResult:
    store: str
    dry_run: bool
    kept: int = 0
    young: int = 0
    removed: list[str] = field(default_factory=list)  # or "would remove", on a dry run
    bytes_freed: int = 0
    missing: list[str] = field(default_factory=list)  # referenced, but not in the store

    def to_json(self) -> dict[str, object]:
        return {
            "store": self.store,
            "dry_run": self.dry_run,
            "kept": self.kept,
            "young": self.young,
            "removed": self.removed,
            "bytes_freed": self.bytes_freed,
            "missing": self.missing,
        }


def _walk(layout: OciLayout, digest: str, seen: set[str], missing: set[str]) -> None:
    stack = [digest]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if not layout.has(current):
            missing.add(current)
            continue
        if layout.size(current) > MAX_MANIFEST_SIZE:
            continue  # a layer, not a manifest
        info = manifest_info(layout.read(current))
        if info is not None:
            stack.extend(info.children)
            stack.extend(info.blobs)


def _recorded_blobs(root: Path) -> set[str]:
    out: set[str] = set()
    records = root / BUNDLE_RECORDS
    if not records.is_dir():
        return out
    for record in sorted(records.glob("*.json")):
        try:
            doc = json.loads(record.read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"cannot read bundle record {record}: {exc}",
                "the store is damaged; load the bundle again before collecting garbage",
            ) from exc
        for blob in doc.get("blobs", []) if isinstance(doc, dict) else []:
            digest = blob.get("digest") if isinstance(blob, dict) else None
            if isinstance(digest, str) and is_digest(digest):
                out.add(digest)
        for key in ("files_manifest", "sbom"):
            value = doc.get(key) if isinstance(doc, dict) else None
            if isinstance(value, str) and is_digest(value):
                out.add(value)
    return out


def referenced_blobs(layout: OciLayout) -> tuple[set[str], set[str]]:
    """(every digest the store references, the referenced ones it does not hold)."""
    try:
        entries = layout.manifests()
    except ValueError as exc:
        raise UsageError(
            f"{layout.index_path} is not valid JSON: {exc}",
            "the store is damaged; nothing was removed",
        ) from exc
    seen: set[str] = set()
    missing: set[str] = set()
    for entry in entries:
        digest = entry.get("digest")
        if isinstance(digest, str) and is_digest(digest):
            _walk(layout, digest, seen, missing)
    return seen | _recorded_blobs(layout.root), missing


def collect_garbage(store: Path, *, options: GcOptions) -> GcResult:
    layout = OciLayout(store)
    if not layout.index_path.exists():
        raise UsageError(f"{store} is not a store (no index.json)", "pass --store DIR")
    result = GcResult(str(store), options.dry_run)
    with store_lock(layout.root, exclusive=True):
        cutoff = time.time() - options.grace_seconds
        keep, missing = referenced_blobs(layout)
        result.missing = sorted(missing)
        for digest in layout.digests():
            if digest in keep:
                result.kept += 1
                continue
            path = layout.path(digest)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime > cutoff:
                result.young += 1
                continue
            result.removed.append(digest)
            result.bytes_freed += st.st_size
            if not options.dry_run:
                path.unlink(missing_ok=True)
        if result.removed and not options.dry_run:
            fsync_dir(layout.blob_dir)
    return result
