"""Leave a bundle's outputs as they are when they already hold the bytes a write would produce.

A second `bundle create` with nothing changed upstream used to write the whole tar again (on
ext4 there are no reflinks: every byte costs a disk write). Two ways to avoid that:

- The record. After a write, a small JSON record in the cache (`outputs/<key>.json`, keyed by
  the output path) names the digest of airlock.json, the signature, the split, the whole tar's
  sha256 and each output file's identity (inode, size, mtime, ctime). A later write whose
  airlock.json and signature are the same bytes, and whose files still have that identity
  (nothing wrote to them or replaced them since: ctime cannot be set back), keeps them
  without reading a byte. airlock.json pins index.json and every blob by digest, and the tar
  layout is a pure function of it, so equal airlock.json bytes mean an equal tar.
- The comparison. Without a usable record (another cache, an edited file), the sink reads
  each existing output alongside the stream it generates and writes nothing while the bytes
  match; at the first difference it starts a temp file with the matching prefix copied from
  the old file. An output equal to the stream is kept, so with volumes only the volumes
  whose bytes changed are written.

Either way a changed blob is never served from an old output: the record needs identical
airlock.json bytes, and the comparison compares every byte.

A third, earlier step skips even building airlock.json: beside the record, a memo
(`outputs/<key>.content.json`) names the key of the content that airlock.json was made from
(a hash of every pinned image and file digest, the spec, the options, the signing key's bytes
and the tool's code). A create whose freshly resolved content has that very key, and whose
output record still holds, keeps the outputs and their signature as they are: no SBOM, no
airlock.json, no signature is made again. Anything that would change airlock.json (a tag
that moved, another key, `--expires`, `--split`) changes the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock.atomic import write_atomic
from airlock.blobstore import file_identity

__all__ = [
    "OutputRecord",
    "content_key",
    "forget",
    "kept_record",
    "load_record",
    "record_path",
    "save_memo",
    "save_record",
]

_FORMAT = "airlock.output-record/v1"
_MEMO_FORMAT = "airlock.content-memo/v1"


@dataclass(frozen=True)
class OutputRecord:
    manifest_sha256: str  # of airlock.json's bytes
    signature_sha256: str | None
    split: int | None
    size: int  # of the whole tar stream
    sha256: str  # sha256:<hex> of the whole tar stream
    files: tuple[tuple[str, tuple[int, ...]], ...]  # (name in the output dir, identity)
    volumes: tuple[tuple[str, int, str], ...] = ()  # (name, size, sha256 hex) when split

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _FORMAT,
                "manifestSha256": self.manifest_sha256,
                "signatureSha256": self.signature_sha256,
                "split": self.split,
                "size": self.size,
                "sha256": self.sha256,
                "files": [[name, list(ident)] for name, ident in self.files],
                "volumes": [list(v) for v in self.volumes],
            },
            sort_keys=True,
        ).encode()

    def still_holds(self, directory: Path) -> bool:
        """Every output file is still the one written then (same inode, size and times)."""
        return all(
            (ident := file_identity(directory / name)) is not None and tuple(ident) == want
            for name, want in self.files
        )


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def record_path(records: Path, final: Path) -> Path:
    key = hashlib.sha256(str(final.resolve()).encode()).hexdigest()[:32]
    return records / f"{key}.json"


def _read(records: Path, final: Path) -> OutputRecord | None:
    try:
        doc = json.loads(record_path(records, final).read_bytes())
        if doc.get("format") != _FORMAT:
            return None
        return OutputRecord(
            manifest_sha256=str(doc["manifestSha256"]),
            signature_sha256=doc["signatureSha256"],
            split=doc["split"],
            size=int(doc["size"]),
            sha256=str(doc["sha256"]),
            files=tuple((str(n), tuple(int(x) for x in ident)) for n, ident in doc["files"]),
            volumes=tuple((str(n), int(s), str(h)) for n, s, h in doc["volumes"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_record(
    records: Path, final: Path, *, manifest: bytes, signature: bytes | None, split: int | None
) -> OutputRecord | None:
    """The record of `final`'s last write, if it was of these very airlock.json and signature
    bytes with this split; None otherwise (or when unreadable: then the caller compares)."""
    record = _read(records, final)
    if (
        record is None
        or record.manifest_sha256 != _sha(manifest)
        or record.signature_sha256 != _sha(signature)
        or record.split != split
        or not record.files
    ):
        return None
    return record


def content_key(parts: object) -> str:
    """The key of what an airlock.json is made from (JSON-able parts; dataclasses as dicts)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _memo_path(records: Path, final: Path) -> Path:
    return record_path(records, final).with_suffix(".content.json")


def save_memo(records: Path, final: Path, *, key: str, manifest_sha256: str) -> None:
    """Remember that `final`'s airlock.json (these bytes) was made from content with `key`."""
    doc = {"format": _MEMO_FORMAT, "key": key, "manifestSha256": manifest_sha256}
    try:
        records.mkdir(parents=True, exist_ok=True)
        write_atomic(
            _memo_path(records, final), json.dumps(doc, sort_keys=True).encode(), durable=False
        )
    except OSError:
        _memo_path(records, final).unlink(missing_ok=True)  # no memo: the writer decides


def kept_record(records: Path, final: Path, *, key: str, split: int | None) -> OutputRecord | None:
    """The record of `final` when its airlock.json was made from content with this `key`
    (the memo says so, the record names those airlock.json bytes, with this split) and every
    output file is still the one written then; None otherwise (the writer then decides)."""
    try:
        doc = json.loads(_memo_path(records, final).read_bytes())
        if doc.get("format") != _MEMO_FORMAT or doc["key"] != key:
            return None
        manifest_sha256 = str(doc["manifestSha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    record = _read(records, final)
    if (
        record is None
        or record.manifest_sha256 != manifest_sha256
        or record.split != split
        or not record.files
        or not record.still_holds(final.parent)
    ):
        return None
    return record


def save_record(
    records: Path,
    final: Path,
    *,
    manifest: bytes,
    signature: bytes | None,
    split: int | None,
    size: int,
    sha256: str,
    files: Sequence[Path],
    volumes: Sequence[tuple[str, int, str]] = (),
) -> None:
    """Record a finished write; a file that cannot be described leaves no record at all."""
    idents = []
    for path in files:
        ident = file_identity(path)
        if ident is None:
            forget(records, final)
            return
        idents.append((path.name, tuple(ident)))
    record = OutputRecord(
        manifest_sha256=_sha(manifest) or "",
        signature_sha256=_sha(signature),
        split=split,
        size=size,
        sha256=sha256,
        files=tuple(idents),
        volumes=tuple(volumes),
    )
    try:
        records.mkdir(parents=True, exist_ok=True)
        write_atomic(record_path(records, final), record.to_json())
    except OSError:
        forget(records, final)  # no record: the next write compares bytes instead


def forget(records: Path, final: Path) -> None:
    _memo_path(records, final).unlink(missing_ok=True)
    record_path(records, final).unlink(missing_ok=True)
