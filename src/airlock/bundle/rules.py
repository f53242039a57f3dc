"""What a good bundle is, as rules over plain data (standard library only).

The Bundle handle applies them to what it reads (`airlock.bundle.reader` indexes the archive,
`airlock.bundle.verify` checks the rest), and so does `airlock.earlyverify`, which answers
`bundle verify` before the command line's libraries are imported. One set of rules, so the
two cannot come to different verdicts on the same bytes; the handle alone names problems
(the early path answers only when every rule holds, and leaves anything else to the handle).

- `check_first` and `index_members`: the archive's entries against airlock.json (airlock.json
  first, its signature second, nothing unlisted, no duplicates, every size as pinned);
- airlock.json's facts (`airlock.bundle.facts`: parsed as strictly as the typed model);
- `padding_ranges`: the tar bytes no digest covers, which must be zeros;
- `graph_problems`: every image's manifests, configs and layers present;
- the words of a verify report (`checked`/`not checked`), so both paths say the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from airlock.bundle.facts import Facts
from airlock.bundle.layout import (
    AIRLOCK_JSON,
    BLOB_DIR,
    BLOBS_DIR,
    FILES_ARTIFACT_TYPE,
    INDEX_JSON,
    MAX_AIRLOCK_JSON_BYTES,
    MAX_JSON_BLOB_BYTES,
    OCI_LAYOUT,
    SIGNATURE,
    blob_member,
)
from airlock.errors import VerificationError
from airlock.oci.media import ANNOTATION_REF_NAME, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES
from airlock.standalone.tarindex import TarEntry
from airlock.trust import UNVERIFIED

__all__ = [
    "BLOCK",
    "HOSTILE_HINT",
    "Member",
    "VerifyReport",
    "blob_sizes",
    "check_first",
    "graph_problems",
    "index_members",
    "json_blob",
    "may_have_recovery",
    "padding_ranges",
    "refuse",
    "words",
    "zeros",
]

BLOCK = 512
_SMALL_MEMBER_MAX = 4096  # oci-layout, airlock.json.sig
HOSTILE_HINT = "the archive was not written by airlock or was altered; do not extract it"


# Member and VerifyReport are NamedTuples, not dataclasses: `airlock.earlyverify` applies these
# rules while its child process hashes on both cores, and importing dataclasses (inspect, ast,
# dis: 7-12 ms of CPU here) and decorating a class (about 0.7 ms each) is time taken from it.
class Member(NamedTuple):
    name: str
    size: int
    offset: int  # of the data, in the whole tar stream
    is_dir: bool = False


class VerifyReport(NamedTuple):
    ok: bool
    path: Path
    name: str | None = None
    sequence: int | None = None
    signed: bool = False  # airlock.json.sig is present
    signed_by: str | None = None  # key id of the key that verified it (None: not checked)
    signed_by_path: Path | None = None
    blobs_checked: int = 0
    bytes_checked: int = 0
    volumes_checked: int = 0
    expires: str | None = None
    problems: tuple[str, ...] = ()
    recovery: tuple[str, ...] = ()  # recovery volumes, boot copies: what is damaged (bundle good)
    checked: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        """The signature verified with a trusted key (else the bundle is UNVERIFIED)."""
        return self.signed_by is not None

    @property
    def trust(self) -> str:
        return f"signed by {self.signed_by}" if self.signed_by else UNVERIFIED


# --- the archive's entries ----------------------------------------------------------------------


def refuse(name: str, why: str) -> VerificationError:
    return VerificationError(f"unsafe bundle entry {name!r}: {why}", HOSTILE_HINT)


def check_first(first: TarEntry | None, where: str) -> TarEntry:
    """The first member must be airlock.json, of a bounded size."""
    if first is None or first.name != AIRLOCK_JSON or first.is_dir:
        got = "nothing" if first is None else repr(first.name)
        raise VerificationError(
            f"{where} is not an airlock bundle: its first member is {got}, expected {AIRLOCK_JSON}",
            "airlock bundles start with airlock.json; was it made by `airlock bundle create`?",
        )
    if first.size > MAX_AIRLOCK_JSON_BYTES:
        raise refuse(AIRLOCK_JSON, f"is {first.size} bytes (at most {MAX_AIRLOCK_JSON_BYTES})")
    return first


def index_members(
    first: TarEntry,
    entries: Iterable[TarEntry],
    *,
    blob_sizes: Mapping[str, int],
    index_size: int,
    max_members: int,
) -> tuple[dict[str, Member], Member | None]:
    """Every entry after airlock.json checked against what it pins (`blob_sizes`: member name
    -> size); (the members, the signature's member if there is one)."""
    fixed: dict[str, int | None] = {
        SIGNATURE: None,
        OCI_LAYOUT: None,
        INDEX_JSON: index_size,
        BLOBS_DIR: -1,
        BLOB_DIR: -1,
    }
    limit_members = min(max_members, len(blob_sizes) + len(fixed) + 1)
    members: dict[str, Member] = {AIRLOCK_JSON: Member(AIRLOCK_JSON, first.size, first.offset)}
    signature: Member | None = None
    count = 1
    for info in entries:
        count += 1
        name = info.name
        if count > limit_members:
            raise refuse(name, f"more entries than the {limit_members} airlock.json accounts for")
        if name in members:
            raise refuse(name, "duplicate entry")
        if name in fixed:
            expected = fixed[name]
            if (expected == -1) != info.is_dir:
                raise refuse(name, "has the wrong entry type")
            if name == SIGNATURE and count != 2:
                raise refuse(name, "must directly follow airlock.json")
            if expected is None and info.size > _SMALL_MEMBER_MAX:
                raise refuse(name, f"is {info.size} bytes (at most {_SMALL_MEMBER_MAX})")
            if expected is not None and expected >= 0 and info.size != expected:
                raise refuse(
                    name, f"is {info.size} bytes but airlock.json says {expected} (size mismatch)"
                )
        elif name in blob_sizes:
            if info.is_dir:
                raise refuse(name, "a blob must be a regular file")
            if info.size != blob_sizes[name]:
                raise refuse(
                    name,
                    f"is {info.size} bytes but airlock.json says {blob_sizes[name]} (size mismatch)",
                )
        else:
            raise refuse(name, "is not listed in airlock.json")
        members[name] = Member(name, info.size, info.offset, is_dir=info.is_dir)
        if name == SIGNATURE:
            signature = members[name]
    return members, signature


def padding_ranges(members: Iterable[Member], size: int) -> list[tuple[int, int]]:
    """The [lo, hi) byte ranges of the tar that no digest covers and the indexer did not
    checksum: the padding after each member and the end of the archive (all zeros)."""
    ordered = sorted(members, key=lambda m: m.offset)
    ends = [-(-(m.offset + m.size) // BLOCK) * BLOCK for m in ordered]
    ranges = [(m.offset + m.size, end) for m, end in zip(ordered, ends, strict=True)]
    ranges.append((max(ends, default=0), size))
    return [(lo, hi) for lo, hi in ranges if hi > lo]


def blob_sizes(facts: Facts) -> dict[str, int]:
    """Member name -> size of every blob airlock.json lists."""
    return {blob_member(d): n for d, n in facts.blobs}


# --- the image graph ----------------------------------------------------------------------------


def json_blob(size: int, read: Callable[[], bytes]) -> dict[str, Any] | None:
    """A manifest or index blob as a JSON object (None: too big or not one)."""
    if size > MAX_JSON_BLOB_BYTES:
        return None
    try:
        doc = json.loads(read())
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def graph_problems(
    index: Mapping[str, Any],
    facts: Facts,
    verified: set[str],
    load_json: Callable[[str], dict[str, Any] | None],
) -> list[str]:
    """Every descriptor of index.json reachable, with its child manifests, configs and layers
    present (or omitted by a delta), and index.json and airlock.json agreeing on each image."""
    problems: list[str] = []
    blob_sizes = dict(facts.blobs)

    def present(d: Mapping[str, Any], owner: str, what: str) -> bool:
        digest = d.get("digest")
        if not isinstance(digest, str) or digest not in blob_sizes:
            if digest in facts.omitted:
                return False
            problems.append(f"{owner}: {what} {digest} is missing from the bundle")
            return False
        if d.get("size") != blob_sizes[digest]:
            problems.append(
                f"{owner}: {what} {digest} has size {d.get('size')} in its descriptor "
                f"but {blob_sizes[digest]} in airlock.json"
            )
        return digest in verified

    def walk(d: Mapping[str, Any], owner: str, carried: frozenset[str], depth: int) -> None:
        media = d.get("mediaType", "")
        if not present(d, owner, "manifest" if depth else "top-level manifest"):
            return
        if media not in INDEX_MEDIA_TYPES and media not in MANIFEST_MEDIA_TYPES:
            return
        doc = load_json(d["digest"])
        if doc is None:
            problems.append(f"{owner}: manifest {d['digest']} is not readable JSON")
            return
        if media in INDEX_MEDIA_TYPES:
            if depth > 2:
                problems.append(f"{owner}: indexes nested too deep at {d['digest']}")
                return
            for child in doc.get("manifests", []):
                # A multi-arch index keeps every entry; platforms not carried are fine as long
                # as airlock.json does not claim them for this image.
                if (
                    child.get("digest") not in blob_sizes
                    and child.get("digest") not in carried
                    and carried
                ):
                    continue
                walk(child, owner, carried, depth + 1)
            return
        config = doc.get("config")
        if isinstance(config, dict):
            present(config, owner, "config")
        for layer in doc.get("layers", []):
            if isinstance(layer, dict):
                present(layer, owner, "layer")

    descriptors = index.get("manifests", [])
    refs: dict[str, Mapping[str, Any]] = {}
    for d in descriptors:
        ref = d.get("annotations", {}).get(ANNOTATION_REF_NAME, d.get("digest"))
        refs[ref] = d
        entry = facts.images.get(ref)
        walk(d, f"image {ref}" if entry else ref, entry[1] if entry else frozenset(), 0)
    for ref, (digest, _) in facts.images.items():
        got = refs.get(ref)
        if got is None:
            problems.append(f"image {ref} is listed in airlock.json but not in index.json")
        elif got.get("digest") != digest:
            problems.append(
                f"image {ref} is {got.get('digest')} in index.json but {digest} in airlock.json"
            )
    if not any(
        d.get("digest") == facts.files_manifest and d.get("artifactType") == FILES_ARTIFACT_TYPE
        for d in descriptors
    ):
        problems.append(f"index.json does not list the files manifest {facts.files_manifest}")
    return problems


def may_have_recovery(parts_path: Path) -> bool:
    """Whether recovery files (an index or boot copies: `airlock.bundle.repair`'s names) may
    lie beside the parts file `STEM.parts.json`; other names are left to repair to judge."""
    name = parts_path.name
    if not name.endswith(".parts.json"):
        return True
    stem = name.removesuffix(".parts.json")
    here = parts_path.parent
    return (here / f"{stem}.recovery.json").exists() or any(here.glob(f"{stem}.boot.*.tar"))


# --- the words of a report ----------------------------------------------------------------------


class words:
    """What a verify report says it checked, and did not, in the handle's order."""

    @staticmethod
    def archive(entries: int) -> str:
        return (
            f"archive: {entries} entries, regular files only, no path outside the bundle, "
            "every size as airlock.json pins it"
        )

    @staticmethod
    def signature(kid: str, key: Path) -> str:
        return f"signature of airlock.json: ed25519, by {kid} ({key})"

    @staticmethod
    def volumes_signed(count: int, display: str) -> str:
        return (
            f"volumes: {count}, each size against {display}; every byte they hold checked once "
            "(blobs by sha256, tar headers by checksum, padding and the end of the archive as "
            "zeros); hashed as wholes only to name a damaged one"
        )

    @staticmethod
    def expiry(expires: str | None) -> str:
        return f"expiry: valid until {expires}" if expires else "expiry: none set"

    INDEX = "index.json: sha256 as airlock.json pins it"

    @staticmethod
    def blobs(count: int, nbytes: int) -> str:
        return f"blobs: {count}, {nbytes} bytes, each sha256 as named"

    @staticmethod
    def compressed(count: int) -> str:
        return (
            f"compressed files: {count}, their stored bytes (the blobs) as airlock.json pins them"
        )

    COMPRESSED_CONTENT = (
        "compressed files' content: decompressed and checked against the file's own digest "
        "when it is installed (node install, upgrade) or unpacked from the store"
    )
    GRAPH = "graph: every image's manifests, configs and layers present, as airlock.json lists them"

    @staticmethod
    def omitted(count: int) -> str:
        return f"{count} blobs this delta leaves out: `load` checks that the store holds them"

    ROLLBACK = "rollback: `load` compares the sequence with the store's high-water mark"
    UPSTREAM = (
        "upstream checksums and signatures of files: checked when the bundle was made "
        "(airlock.json records them)"
    )


def zeros(ranges: Iterable[tuple[int, int]], read_at: Callable[[int, int], bytes]) -> Iterator[int]:
    """The tar offset of the first non-zero byte of each range that has one."""
    for lo, hi in ranges:
        data = read_at(lo, hi - lo)
        if data.strip(b"\0"):
            yield lo + len(data) - len(data.lstrip(b"\0"))
