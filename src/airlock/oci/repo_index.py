"""What the registry records in the store's index.json beyond loaded images (pure functions).

Everything a push creates lives in index.json, so it survives a restart and `registry gc`
sees every reference:
- a tag is an entry named `repo:tag` (as `load` writes them);
- a manifest pushed by digest only (an index child, a signature, an SBOM, a referrer) is an
  entry without a ref name, annotated with its repository (`ANNOTATION_REPOSITORY`), so tools
  that list images by name do not take it for an image.

Each function takes the current entries and returns the new list (or None when nothing
changes); the caller reads and writes index.json under the store's lock. Deleting a tag keeps
its manifest reachable by digest, as the distribution spec says; deleting a manifest removes
every tag that points at it.
"""

from __future__ import annotations

from typing import Any

from airlock.oci.media import ANNOTATION_REPOSITORY
from airlock.oci.sources import entry_repository

__all__ = [
    "digest_entry",
    "with_digest_entry",
    "without_manifest",
    "without_tag",
]

Entry = dict[str, Any]


def digest_entry(repo: str, media_type: str, digest: str, size: int) -> Entry:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {ANNOTATION_REPOSITORY: repo},
    }


def _in_repo(entry: Entry, repo: str) -> bool:
    owner = entry_repository(entry)
    return owner is not None and owner[0] == repo


def with_digest_entry(entries: list[Entry], new: Entry) -> list[Entry] | None:
    """Add a digest-only entry unless the repository already holds that manifest."""
    repo = new["annotations"][ANNOTATION_REPOSITORY]
    if any(e.get("digest") == new["digest"] and _in_repo(e, repo) for e in entries):
        return None
    return [*entries, new]


def without_manifest(entries: list[Entry], repo: str, digest: str) -> list[Entry] | None:
    """Remove a manifest from a repository: its digest entry and every tag on it."""
    kept = [e for e in entries if not (e.get("digest") == digest and _in_repo(e, repo))]
    return kept if len(kept) != len(entries) else None


def without_tag(entries: list[Entry], repo: str, tag: str) -> list[Entry] | None:
    """Remove one tag; its manifest stays in the repository by digest."""
    target = next((e for e in entries if entry_repository(e) == (repo, tag)), None)
    if target is None:
        return None
    kept = [e for e in entries if e is not target]
    if not any(e.get("digest") == target["digest"] and _in_repo(e, repo) for e in kept):
        kept.append(digest_entry(repo, target["mediaType"], target["digest"], target["size"]))
    return kept
