"""The one door to the node's store (`/var/lib/airlock/store`): `Store.open(root, write=...)`.

A store is an OCI image layout (`blobs/sha256/`, `index.json`, `oci-layout`) plus what airlock
knows about it under `airlock/`: the airlock.json of every bundle loaded (`bundles/`) and the
sequence record, the highest sequence loaded per channel (`channels.json`, the rollback
high-water mark). One inter-process lock (the layout's flock) guards every read-modify-write
of index.json and of the sequence record, so a load, another load and a registry push at the
same time lose no tag and no sequence; a writer killed at any point leaves whole files (each is
replaced atomically) and the kernel drops its lock.

Opened without `write=True` a store is read-only: every write refuses (UsageError). Reads take
no lock. Blobs are content-addressed and published by rename, so adding them needs no lock;
what names them (index.json) does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from airlock.atomic import fsync_dir, remove_dead_temps, write_atomic
from airlock.blobstore import BlobStore
from airlock.errors import UsageError
from airlock.locking import FileLock
from airlock.oci.layout import OciLayout
from airlock.trust import ChannelState, check_sequence, read_channels, record_sequence

__all__ = ["DEFAULT_STORE", "META_DIR", "STAGING", "BundleCommit", "Store"]

DEFAULT_STORE = Path("/var/lib/airlock/store")
META_DIR = "airlock"
STAGING = (
    ".staging"  # per bundle: blobs copied and checked, not yet in the store (kept for a rerun)
)


class BundleCommit:
    """What a loaded bundle adds to the store's records, applied at once under the lock."""

    def __init__(
        self,
        *,
        name: str,
        channel: str,
        sequence: int,
        manifest_bytes: bytes,
        manifest_digest: str,
        index_manifests: Sequence[dict[str, Any]],
        allow_downgrade: bool,
    ) -> None:
        self.name = name
        self.channel = channel
        self.sequence = sequence
        self.manifest_bytes = manifest_bytes
        self.manifest_digest = manifest_digest
        self.index_manifests = list(index_manifests)
        self.allow_downgrade = allow_downgrade


class Store:
    """See the module doc. `Store.open(root)` reads; `Store.open(root, write=True)` writes."""

    def __init__(self, root: Path, *, writable: bool) -> None:
        self.root = Path(root)
        self.layout = OciLayout(self.root)
        self.meta_dir = self.root / META_DIR
        self.writable = writable

    @classmethod
    def open(cls, root: Path = DEFAULT_STORE, *, write: bool = False) -> Store:
        return cls(root, writable=write)

    # --- reading (no lock) ------------------------------------------------------------------

    def exists(self) -> bool:
        return self.layout.index_path.exists() or (self.root / "blobs").exists()

    def has(self, digest: str) -> bool:
        return self.layout.has(digest)

    def path(self, digest: str) -> Path:
        return self.layout.path(digest)

    def read(self, digest: str) -> bytes:
        return self.layout.read(digest)

    def digests(self) -> list[str]:
        return self.layout.digests()

    def manifests(self) -> list[dict[str, Any]]:
        return self.layout.manifests()

    def images(self) -> dict[str, dict[str, Any]]:
        return self.layout.images()

    def channels(self) -> dict[str, ChannelState]:
        return read_channels(self.meta_dir)

    def bundle_records(self) -> list[dict[str, Any]]:
        """The airlock.json of every bundle loaded, oldest sequence first."""
        out = []
        for path in sorted((self.meta_dir / "bundles").glob("*.json")):
            data: dict[str, Any] = json.loads(path.read_bytes())
            out.append((int(data.get("sequence", 0)), path.stat().st_mtime, data))
        return [d for _, _, d in sorted(out, key=lambda t: (t[0], t[1]))]

    def newest_bundle_record(self) -> dict[str, Any] | None:
        """The airlock.json of the newest bundle loaded (highest sequence, then the most
        recently loaded), or None when nothing was loaded."""
        records = self.bundle_records()
        return records[-1] if records else None

    # --- writing ------------------------------------------------------------------------------

    def _require_write(self) -> None:
        if not self.writable:
            raise UsageError(
                f"the store {self.root} was opened read-only",
                hint="this command only reads the store; `airlock load` writes it",
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[Store]:
        """Hold the store's inter-process lock (re-entrant in one thread) for the block."""
        self._require_write()
        with self.layout.lock:
            yield self

    def init(self) -> None:
        """Create the layout if needed; remove what a killed writer left beside the index and
        the records (a live writer's temp files are locked and stay)."""
        self._require_write()
        with self.layout.lock:
            self.layout.init()
            for directory in (self.root, self.meta_dir, self.meta_dir / "bundles"):
                remove_dead_temps(directory)

    @contextlib.contextmanager
    def staging(self, key: str) -> Iterator[BlobStore]:
        """Where one bundle's checked blobs wait (`.staging/KEY`), kept for a rerun after a
        kill; held with a lock of its own while in use, so two loads of different bundles never
        share one and two loads of the same bundle take turns."""
        self._require_write()
        lock = FileLock(
            self.meta_dir / "locks" / f"staging-{key}.lock",
            what=f"the staging area {key} of {self.root} (another load of the same bundle)",
        )
        with lock:
            yield BlobStore(self.root / STAGING / key)

    def drop_staging(self, staging: BlobStore) -> None:
        shutil.rmtree(staging.root, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last one out removes the parent
            (self.root / STAGING).rmdir()

    def remove_temp_files(self) -> int:
        self._require_write()
        return self.layout.remove_temp_files()

    def publish_staged(self, staging: BlobStore, digests: Sequence[str]) -> None:
        """Move checked blobs from staging into the store, each atomically (no lock needed:
        a blob is named by its content)."""
        self._require_write()
        self.layout.ensure()
        for digest in digests:
            os.replace(staging.path(digest), self.layout.path(digest))
        fsync_dir(self.layout.blob_dir)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        self._require_write()
        return self.layout.put_bytes(data, expected)

    def merge_index(self, descriptors: Sequence[dict[str, Any]]) -> int:
        self._require_write()
        return self.layout.merge_index(list(descriptors))

    def check_sequence(
        self, *, channel: str, sequence: int, manifest_digest: str, allow_downgrade: bool
    ) -> None:
        """The rollback guard, read now (commit_bundle checks again under the lock)."""
        check_sequence(
            self.meta_dir,
            channel=channel,
            sequence=sequence,
            manifest_digest=manifest_digest,
            allow_downgrade=allow_downgrade,
        )

    def commit_bundle(self, commit: BundleCommit) -> int:
        """Under the lock: the rollback guard again (another load may have committed since),
        the bundle's record, its index entries, then the sequence high-water mark. Returns how
        many index entries changed."""
        with self.locked():
            self.init()
            self.check_sequence(
                channel=commit.channel,
                sequence=commit.sequence,
                manifest_digest=commit.manifest_digest,
                allow_downgrade=commit.allow_downgrade,
            )
            record = self.meta_dir / "bundles" / f"{commit.name}.{commit.sequence}.json"
            if not record.exists() or record.read_bytes() != commit.manifest_bytes:
                write_atomic(record, commit.manifest_bytes)
            changed = self.merge_index(commit.index_manifests)
            record_sequence(
                self.meta_dir,
                channel=commit.channel,
                state=ChannelState(commit.sequence, commit.manifest_digest, commit.name),
            )
            return changed
