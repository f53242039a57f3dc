"""airlock.json as the plain facts verify uses (standard library only), parsed at least as
strictly as the typed model (`airlock.bundle.manifest`) parses it: the same keys (a test holds
them equal to the model's aliases), the same types (no bool for an int, no text for a number),
the same patterns and bounds. The typed model stays the one the rest of airlock reads; these
facts are for `airlock.bundle.rules`, which the handle and `airlock.earlyverify` both apply.
Any doubt is a ValueError: a caller that cannot parse them leaves the bundle to the handle."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from airlock.blobrole import BlobRole
from airlock.bundle.layout import (
    AIRLOCK_JSON,
    BUNDLE_NAME_RE,
    BUNDLE_SCHEMA,
    FILE_NAME_RE,
    FORMAT_VERSIONS,
)
from airlock.oci.digest import DIGEST_RE

__all__ = [
    "BLOB_KEYS",
    "FILE_KEYS",
    "IMAGE_KEYS",
    "TOP_KEYS",
    "Facts",
    "manifest_facts",
]

_DIGEST = DIGEST_RE
_HEX = re.compile(r"^[a-f0-9]{64}([a-f0-9]{64})?\Z")
_ROLES = frozenset(r.value for r in BlobRole)  # the model's Role, held equal to these
# (required, optional) keys of each object, by their JSON names (the model's aliases)
TOP_KEYS = (
    frozenset(
        {
            "schema",
            "tool",
            "name",
            "channel",
            "sequence",
            "createdFrom",
            "spec",
            "resolved",
            "index",
            "blobs",
            "images",
            "files",
            "filesManifest",
            "sbom",
        }
    ),
    frozenset({"formatVersion", "base", "omitted", "expires", "recovery"}),
)
BLOB_KEYS = (
    frozenset({"digest", "size", "mediaType", "role"}),
    frozenset({"source", "checksum"}),
)
IMAGE_KEYS = (
    frozenset({"reference", "digest", "mediaType", "size"}),
    frozenset({"platforms", "blobs", "contentSize"}),
)
FILE_KEYS = (
    frozenset({"name", "kind", "url", "digest", "size", "mediaType"}),
    frozenset({"platform", "version", "checksum", "annotations", "stored"}),
)
CHECKSUM_KEYS = (frozenset({"algorithm", "value", "source"}), frozenset[str]())
STORED_KEYS = (frozenset({"compression", "digest", "size"}), frozenset[str]())
RECOVERY_KEYS = (
    frozenset(
        {"scheme", "dataVolumes", "recoveryVolumes", "volumeSize", "chunkSize", "bootCopies"}
    ),
    frozenset[str](),
)


class Facts(NamedTuple):
    """What verify reads from airlock.json (a NamedTuple: no dataclasses import on the early
    path, as `airlock.bundle.rules` says)."""

    name: str
    sequence: int
    expires: str | None
    index_digest: str
    index_size: int
    files_manifest: str
    blobs: tuple[tuple[str, int], ...]  # (digest, size), sorted by digest
    images: Mapping[str, tuple[str, frozenset[str]]]  # reference -> (digest, its blobs)
    omitted: frozenset[str]
    stored_files: int  # files stored compressed (format 1.1)


def _obj(value: Any, keys: tuple[frozenset[str], frozenset[str]], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: not an object")
    required, optional = keys
    if not required <= value.keys() or not value.keys() <= required | optional:
        raise ValueError(f"{what}: keys {sorted(value)}")
    return value


def _str(value: Any, what: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise ValueError(f"{what}: {value!r}")
    return value


def _int(value: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
    if type(value) is not int or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{what}: {value!r}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what}: not a list")
    return value


def _checksum(value: Any, what: str) -> None:
    if value is None:
        return
    c = _obj(value, CHECKSUM_KEYS, what)
    if c["algorithm"] not in ("sha256", "sha512"):
        raise ValueError(f"{what}: algorithm")
    _str(c["value"], what, _HEX)
    _str(c["source"], what)


def _blob(value: Any) -> tuple[str, int, str, str]:
    b = _obj(value, BLOB_KEYS, "blob")
    digest = _str(b["digest"], "blob", _DIGEST)
    if b["role"] not in _ROLES:
        raise ValueError(f"blob {digest}: role")
    _str(b["mediaType"], "blob")
    _checksum(b.get("checksum"), f"blob {digest}")
    return digest, _int(b["size"], "blob"), b["role"], _str(b.get("source", ""), "blob")


def _image(value: Any) -> tuple[str, str, frozenset[str]]:
    i = _obj(value, IMAGE_KEYS, "image")
    ref = _str(i["reference"], "image")
    _str(i["mediaType"], ref)
    _int(i["size"], ref)
    _int(i.get("contentSize", 0), ref)
    for p in _list(i.get("platforms", []), ref):
        _str(p, ref)
    blobs = frozenset(_str(d, ref, _DIGEST) for d in _list(i.get("blobs", []), ref))
    return ref, _str(i["digest"], ref, _DIGEST), blobs


def _file(value: Any) -> bool:
    """Check one file entry; whether it is stored compressed."""
    f = _obj(value, FILE_KEYS, "file")
    name = _str(f["name"], "file", FILE_NAME_RE)
    for key in ("kind", "url", "mediaType"):
        _str(f[key], name)
    for key in ("platform", "version"):
        _str(f.get(key, ""), name)
    _str(f["digest"], name, _DIGEST)
    _int(f["size"], name)
    _checksum(f.get("checksum"), name)
    annotations = f.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ValueError(f"{name}: annotations")
    stored = f.get("stored")
    if stored is not None:
        s = _obj(stored, STORED_KEYS, name)
        if s["compression"] != "zstd":
            raise ValueError(f"{name}: compression")
        _str(s["digest"], name, _DIGEST)
        _int(s["size"], name)
    return stored is not None


def _recovery(value: Any) -> None:
    if value is None:
        return
    r = _obj(value, RECOVERY_KEYS, "recovery")
    if r["scheme"] != "zfec":
        raise ValueError("recovery: scheme")
    _int(r["dataVolumes"], "recovery", 1, 255)
    _int(r["recoveryVolumes"], "recovery", 1, 255)
    _int(r["volumeSize"], "recovery", 1)
    _int(r["chunkSize"], "recovery", 1)
    _int(r["bootCopies"], "recovery", 1, 999)


def manifest_facts(data: bytes) -> Facts:
    """airlock.json's facts, parsed at least as strictly as `airlock.bundle.manifest` parses
    it (any doubt is a ValueError: the caller leaves the bundle to the handle)."""
    if not data.startswith(b"{"):
        raise ValueError("not a JSON object")
    doc = _obj(json.loads(data), TOP_KEYS, AIRLOCK_JSON)
    if doc["schema"] != BUNDLE_SCHEMA or doc.get("formatVersion", "1.0") not in FORMAT_VERSIONS:
        raise ValueError("schema or format version")
    tool = doc["tool"]
    if not isinstance(tool, dict) or tool.keys() != {"name", "version"}:
        raise ValueError("tool")
    _str(tool["name"], "tool")
    _str(tool["version"], "tool")
    name = _str(doc["name"], "name", BUNDLE_NAME_RE)
    _str(doc["channel"], "channel")
    for key in ("createdFrom", "filesManifest", "sbom"):
        _str(doc[key], key, _DIGEST)
    if not isinstance(doc["spec"], dict) or not isinstance(doc["resolved"], dict):
        raise ValueError("spec or resolved")
    index = _obj(doc["index"], (frozenset({"digest", "size"}), frozenset()), "index")
    blobs = [_blob(b) for b in _list(doc["blobs"], "blobs")]
    digests = [b[0] for b in blobs]
    if digests != sorted(set(digests)):
        raise ValueError("blobs must be sorted by digest and unique")
    images = [_image(i) for i in _list(doc["images"], "images")]
    stored = sum(_file(f) for f in _list(doc["files"], "files"))
    base = doc.get("base")
    if base is not None:
        _str(
            _obj(base, (frozenset({"inventory"}), frozenset()), "base")["inventory"],
            "base",
            _DIGEST,
        )
    omitted = frozenset(
        _str(d, "omitted", _DIGEST) for d in _list(doc.get("omitted", []), "omitted")
    )
    expires = doc.get("expires")
    if expires is not None:
        datetime.date.fromisoformat(_str(expires, "expires"))
    _recovery(doc.get("recovery"))
    return Facts(
        name=name,
        sequence=_int(doc["sequence"], "sequence"),
        expires=expires,
        index_digest=_str(index["digest"], "index", _DIGEST),
        index_size=_int(index["size"], "index"),
        files_manifest=doc["filesManifest"],
        blobs=tuple((d, n) for d, n, _, _ in blobs),
        images={ref: (digest, members) for ref, digest, members in images},
        omitted=omitted,
        stored_files=stored,
    )
