"""An OCI image layout on disk: `oci-layout`, `index.json`, `blobs/` (the store and the cache).

index.json holds one descriptor per image, annotated with the full upstream reference in both
`org.opencontainers.image.ref.name` and `io.containerd.image.name`. Updates are atomic, and every
read-modify-write of index.json (init, merge, write) holds `lock`, an inter-process flock on
`index.json.lock` beside it: a registry push and a load into the same layout lose no tag.
Readers need no lock (index.json is only ever replaced whole).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airlock.atomic import write_atomic
from airlock.blobstore import BlobStore
from airlock.locking import FileLock
from airlock.oci.media import (
    ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME,
    ANNOTATION_REPOSITORY,
    OCI_INDEX,
    OCI_LAYOUT_CONTENT,
)

__all__ = ["INDEX_LOCK", "OCI_LAYOUT_CONTENT", "OciLayout", "canonical_json", "image_descriptor"]

INDEX_LOCK = "index.json.lock"


def canonical_json(obj: Any) -> bytes:
    """Stable JSON bytes: sorted keys, no whitespace, UTF-8 (same input, same bytes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def image_descriptor(ref: str, media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {ANNOTATION_REF_NAME: ref, ANNOTATION_CONTAINERD_NAME: ref},
    }


def _sort_key(d: dict[str, Any]) -> tuple[str, str, str]:
    annotations = d.get("annotations") or {}
    return (
        annotations.get(ANNOTATION_REF_NAME, ""),
        annotations.get(ANNOTATION_REPOSITORY, ""),
        d["digest"],
    )


def _entry_key(d: dict[str, Any]) -> str:
    """Identity of an index.json entry: its ref name; a registry push by digest is one per
    repository and digest; anything else by digest."""
    annotations = d.get("annotations") or {}
    name = annotations.get(ANNOTATION_REF_NAME)
    if name:
        return str(name)
    repo = annotations.get(ANNOTATION_REPOSITORY)
    return f"{repo}@{d['digest']}" if repo else str(d["digest"])


class OciLayout(BlobStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.lock = FileLock(self.root / INDEX_LOCK, what=f"the index of {self.root}")

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def init(self) -> None:
        self.ensure()
        with self.lock:
            layout = self.root / "oci-layout"
            if not layout.exists():
                write_atomic(layout, OCI_LAYOUT_CONTENT)
            if not self.index_path.exists():
                self.write_index([])

    def read_index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        data: dict[str, Any] = json.loads(self.index_path.read_bytes())
        return data

    def manifests(self) -> list[dict[str, Any]]:
        return list(self.read_index().get("manifests", []))

    def write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": sorted(manifests, key=_sort_key),
        }
        with self.lock:
            write_atomic(self.index_path, canonical_json(index))

    def images(self) -> dict[str, dict[str, Any]]:
        """Full reference -> descriptor, for every annotated entry of index.json."""
        out: dict[str, dict[str, Any]] = {}
        for d in self.manifests():
            ref = d.get("annotations", {}).get(ANNOTATION_REF_NAME)
            if ref:
                out[ref] = d
        return out

    def merge_index(self, new: list[dict[str, Any]]) -> int:
        """Add or replace descriptors by reference name; returns how many entries changed."""
        with self.lock:
            current = {_entry_key(d): d for d in self.manifests()}
            changed = 0
            for d in new:
                key = _entry_key(d)
                if current.get(key) != d:
                    current[key] = d
                    changed += 1
            if changed:
                self.write_index(list(current.values()))
            return changed
