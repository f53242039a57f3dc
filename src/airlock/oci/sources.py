"""Where the registry server reads content from: a ContentSource.

Every source is an OCI image layout whose index.json names each image by its full upstream
reference (`registry.k8s.io/pause:3.9`); the repository the registry serves is the part before
the tag (`registry.k8s.io/pause`). A `Catalog` is the per-repository view built from index.json by
walking every image's manifests: which tags exist and which manifests and blobs a repository
references (a blob is served under a repository only if that repository references it, as in
distribution).

- `StoreSource(OciLayout)`: the store; the catalog is rebuilt when index.json changes; pushes
  go here (`store`).
- A bundle served in place is `airlock.bundle.serving.BundleSource` (this package knows no
  bundle format): blobs are byte `Segment`s of the files a verified bundle handle holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from airlock.errors import UsageError, VerificationError
from airlock.oci.digest import is_digest
from airlock.oci.layout import OciLayout
from airlock.oci.media import (
    ANNOTATION_REF_NAME,
    ANNOTATION_REPOSITORY,
    OCI_INDEX,
    OCI_MANIFEST,
)

__all__ = [
    "MAX_MANIFEST_SIZE",
    "BlobLocation",
    "Catalog",
    "ContentSource",
    "ManifestInfo",
    "Repository",
    "Segment",
    "StoreSource",
    "build_catalog",
    "entry_repository",
    "is_repository_name",
    "is_tag",
    "manifest_info",
    "split_ref_name",
]

# distribution's limit for what it reads as a manifest; also bounds what a push can send.
MAX_MANIFEST_SIZE = 4 << 20
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# The first component may carry a port (`localhost:5000/app`), as distribution's name grammar.
_REPO_RE = re.compile(rf"^{_COMPONENT}(?::[0-9]+)?(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}\Z")
_MAX_NAME = 255


def is_repository_name(name: str) -> bool:
    """distribution's repository grammar: lowercase components, no `..`, no empty parts."""
    return len(name) <= _MAX_NAME and bool(_REPO_RE.match(name))


def is_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def split_ref_name(ref: str) -> tuple[str, str | None, str | None] | None:
    """`registry.k8s.io/pause:3.9[@sha256:..]` -> (repository, tag, digest); None if not one.

    Bare tags (`3.9`, as `skopeo copy oci:` writes) name no repository and give None.
    """
    name, digest = ref, None
    if "@" in ref:
        name, digest = ref.split("@", 1)
        if not is_digest(digest):
            return None
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not is_tag(tag):
            return None
    if (tag is None and digest is None) or not is_repository_name(name):
        return None
    return name, tag, digest


@dataclass(frozen=True)
class Segment:
    """`length` bytes at `offset` of the file `path`."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True)
class BlobLocation:
    """Where a blob's bytes are: one segment for a store file, one or more inside a bundle."""

    digest: str
    size: int
    segments: tuple[Segment, ...]
    # The bytes, when the source holds them verified in memory (a bundle's manifests).
    data: bytes | None = field(default=None, repr=False)
    # To run (blocking: off the event loop) before the first byte is sent: raises
    # VerificationError when the bytes do not match the digest. None: nothing left to check.
    check: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def slice(self, start: int, length: int) -> list[Segment]:
        """The segments holding bytes [start, start+length) of the blob."""
        out: list[Segment] = []
        pos = 0
        for seg in self.segments:
            lo, hi = max(start, pos), min(start + length, pos + seg.length)
            if lo < hi:
                out.append(Segment(seg.path, seg.offset + lo - pos, hi - lo))
            pos += seg.length
        return out

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.check is not None:
            self.check()
        parts = []
        for seg in self.segments:
            with seg.path.open("rb") as fh:
                fh.seek(seg.offset)
                data = fh.read(seg.length)
            if len(data) != seg.length:
                raise VerificationError(f"{seg.path} is truncated: blob {self.digest} is cut short")
            parts.append(data)
        return b"".join(parts)


@dataclass(frozen=True)
class ManifestInfo:
    """What the catalog needs from one manifest or index."""

    media_type: str
    children: tuple[str, ...]  # manifests an index lists
    blobs: tuple[str, ...]  # config and layers of an image manifest
    size: int = 0
    subject: str | None = None  # the manifest this one refers to (OCI 1.1 referrers)
    artifact_type: str | None = None  # artifactType, else an image manifest's config type
    annotations: tuple[tuple[str, str], ...] = ()

    def referrer_descriptor(self, digest: str) -> dict[str, Any]:
        """This manifest as an entry of a referrers index."""
        desc: dict[str, Any] = {"mediaType": self.media_type, "digest": digest, "size": self.size}
        if self.artifact_type:
            desc["artifactType"] = self.artifact_type
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return desc


@dataclass
class Repository:
    name: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    manifests: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)
    # subject digest -> {referrer digest: descriptor}
    referrers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Catalog:
    repositories: dict[str, Repository]
    media_types: dict[str, str]  # manifest digest -> media type


class ContentSource(Protocol):
    """What the registry reads through."""

    @property
    def description(self) -> str: ...

    @property
    def store(self) -> OciLayout | None:
        """Where pushes are written; None for a read-only source."""
        ...

    def catalog(self) -> Catalog: ...

    def locate(self, digest: str) -> BlobLocation | None: ...


def _descriptor_digests(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [
        d["digest"] for d in items if isinstance(d, dict) and is_digest(str(d.get("digest", "")))
    ]


def manifest_info(data: bytes, fallback_media_type: str | None = None) -> ManifestInfo | None:
    """Parse a manifest or index enough to walk it; None when it is not one."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        if isinstance(doc.get("manifests"), list):
            media_type = fallback_media_type or OCI_INDEX
        elif isinstance(doc.get("config"), dict):
            media_type = fallback_media_type or OCI_MANIFEST
        else:
            return None
    children = _descriptor_digests(doc.get("manifests"))
    config = doc.get("config")
    blobs = _descriptor_digests(doc.get("layers")) + _descriptor_digests([config])
    subject = _descriptor_digests([doc.get("subject")])
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str) or not artifact_type:
        config_type = config.get("mediaType") if isinstance(config, dict) else None
        artifact_type = config_type if isinstance(config_type, str) and config_type else None
    raw_annotations = doc.get("annotations")
    annotations = (
        tuple(sorted((k, v) for k, v in raw_annotations.items() if isinstance(v, str)))
        if isinstance(raw_annotations, dict)
        else ()
    )
    return ManifestInfo(
        media_type,
        tuple(children),
        tuple(blobs),
        size=len(data),
        subject=subject[0] if subject else None,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def entry_repository(entry: dict[str, Any]) -> tuple[str, str | None] | None:
    """(repository, tag or None) an index.json entry belongs to; None when it names none.

    Loaded images carry their full reference; a manifest a client pushed by digest only
    carries its repository (`ANNOTATION_REPOSITORY`) instead.
    """
    annotations = entry.get("annotations") or {}
    ref = annotations.get(ANNOTATION_REF_NAME)
    if isinstance(ref, str):
        parsed = split_ref_name(ref)
        return (parsed[0], parsed[1]) if parsed is not None else None
    repo = annotations.get(ANNOTATION_REPOSITORY)
    if isinstance(repo, str) and is_repository_name(repo):
        return repo, None
    return None


def build_catalog(
    index_manifests: Iterable[dict[str, Any]],
    info: Callable[[str, str | None], ManifestInfo | None],
) -> Catalog:
    """Walk every named image of an index.json; `info(digest, media_type)` reads one manifest."""
    repos: dict[str, Repository] = {}
    media_types: dict[str, str] = {}

    def walk(repo: Repository, digest: str, media_type: str | None, depth: int) -> None:
        if digest in repo.manifests or depth > 8:
            return
        repo.manifests.add(digest)
        found = info(digest, media_type)
        if found is None:
            if media_type:
                media_types.setdefault(digest, media_type)
            return
        media_types[digest] = found.media_type
        repo.blobs.update(found.blobs)
        if found.subject is not None:
            refs = repo.referrers.setdefault(found.subject, {})
            refs[digest] = found.referrer_descriptor(digest)
        for child in found.children:
            walk(repo, child, None, depth + 1)

    for desc in index_manifests:
        digest = desc.get("digest")
        owner = entry_repository(desc)
        if owner is None or not isinstance(digest, str) or not is_digest(digest):
            continue
        name, tag = owner
        repo = repos.setdefault(name, Repository(name))
        if tag is not None:
            repo.tags[tag] = digest
        walk(repo, digest, desc.get("mediaType"), 0)
    return Catalog(repos, media_types)


class _InfoCache:
    """Manifest parses by digest: content is immutable, so a rebuild only reads new manifests."""

    def __init__(self, locate: Callable[[str], BlobLocation | None]) -> None:
        self._locate = locate
        self._cache: dict[str, ManifestInfo | None] = {}

    def __call__(self, digest: str, media_type: str | None) -> ManifestInfo | None:
        if digest in self._cache:
            return self._cache[digest]
        loc = self._locate(digest)
        result = None
        if loc is not None and loc.size <= MAX_MANIFEST_SIZE:
            try:
                result = manifest_info(loc.read(), media_type)
            except (OSError, VerificationError):
                result = None
            if result is not None:
                self._cache[digest] = result
        return result


class StoreSource:
    """The store directory (an OCI layout); pushes land here."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout
        self._info = _InfoCache(self.locate)
        self._stamp: tuple[int, int, int] | None = None
        self._catalog = Catalog({}, {})

    @property
    def description(self) -> str:
        return f"store {self.layout.root}"

    @property
    def store(self) -> OciLayout:
        return self.layout

    def _index_stamp(self) -> tuple[int, int, int]:
        try:
            st = self.layout.index_path.stat()
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def catalog(self) -> Catalog:
        stamp = self._index_stamp()
        if stamp != self._stamp:
            try:
                manifests = self.layout.manifests()
            except ValueError as exc:
                raise UsageError(
                    f"{self.layout.index_path} is not valid JSON: {exc}",
                    "the store is damaged; load the bundle again",
                ) from exc
            self._catalog = build_catalog(manifests, self._info)
            self._stamp = stamp
        return self._catalog

    def invalidate(self) -> None:
        self._stamp = None

    def locate(self, digest: str) -> BlobLocation | None:
        if not is_digest(digest):
            return None
        path = self.layout.path(digest)
        try:
            size = path.stat().st_size
        except OSError:
            return None
        return BlobLocation(digest, size, (Segment(path, 0, size),))
