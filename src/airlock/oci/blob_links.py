"""Blobs a repository holds before any manifest names them (uploaded or mounted there).

Kept in memory and, for a store, in an append-only log (`<store>/airlock/registry-links.jsonl`,
one `{"op": "+"|"-", "repo", "digest"}` per line), so a restart between a client's blob uploads
and its manifest push loses nothing. The log is replayed and compacted when the registry
starts; a torn last line (a crash mid-append) is skipped. Losing a line costs a client one
upload again, never the store's consistency: manifests are checked against the blobs
themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from airlock.atomic import write_atomic
from airlock.oci.digest import is_digest
from airlock.oci.sources import is_repository_name

__all__ = ["LINKS_LOG", "BlobLinks"]

LINKS_LOG = Path("airlock") / "registry-links.jsonl"


def _line(op: str, repo: str, digest: str) -> bytes:
    return json.dumps({"op": op, "repo": repo, "digest": digest}, sort_keys=True).encode() + b"\n"


def _replay(path: Path) -> dict[str, set[str]]:
    links: dict[str, set[str]] = {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return links
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
            op, repo, digest = entry["op"], entry["repo"], entry["digest"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line
        if not (isinstance(repo, str) and is_repository_name(repo) and is_digest(str(digest))):
            continue
        if op == "+":
            links.setdefault(repo, set()).add(digest)
        elif op == "-":
            links.get(repo, set()).discard(digest)
    return {repo: digests for repo, digests in links.items() if digests}


class BlobLinks:
    """repository -> blobs linked into it; persisted when `path` is given."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._links: dict[str, set[str]] = {}

    def load(self, *, compact: bool) -> None:
        """Replay the log; with `compact`, rewrite it with only what is linked now."""
        if self.path is None:
            return
        self._links = _replay(self.path)
        if not compact:
            return
        compacted = b"".join(
            _line("+", repo, digest)
            for repo in sorted(self._links)
            for digest in sorted(self._links[repo])
        )
        if compacted or self.path.exists():
            write_atomic(self.path, compacted, mode=0o600)

    def _append(self, op: str, repo: str, digest: str) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(_line(op, repo, digest))

    def add(self, repo: str, digest: str) -> None:
        held = self._links.setdefault(repo, set())
        if digest not in held:
            held.add(digest)
            self._append("+", repo, digest)

    def remove(self, repo: str, digest: str) -> bool:
        held = self._links.get(repo)
        if not held or digest not in held:
            return False
        held.discard(digest)
        self._append("-", repo, digest)
        return True

    def has(self, repo: str, digest: str) -> bool:
        return digest in self._links.get(repo, set())

    def has_any(self, repo: str) -> bool:
        return bool(self._links.get(repo))

    def anywhere(self, digest: str) -> bool:
        return any(digest in held for held in self._links.values())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for repo in sorted(self._links):
            for digest in sorted(self._links[repo]):
                yield repo, digest
