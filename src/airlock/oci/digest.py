"""Digests: parse, validate, compute (pure, plus a streaming hasher)."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from airlock.errors import DigestMismatch, UsageError

__all__ = [
    "DIGEST_RE",
    "Hasher",
    "digest_hex",
    "file_digest",
    "is_digest",
    "sha256_digest",
]

DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")
_CHUNK = 1 << 20


def is_digest(value: str) -> bool:
    return bool(DIGEST_RE.match(value))


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest; refuses anything else (no path tricks)."""
    if not is_digest(digest):
        raise UsageError(f"not a sha256 digest: {digest!r}", "digests look like sha256:<64 hex>")
    return digest.split(":", 1)[1]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(fh: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


class Hasher:
    """Hash bytes as they stream past; `verify` raises DigestMismatch naming `what`."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()

    def verify(self, expected: str, what: str) -> None:
        actual = self.digest
        if actual != expected:
            raise DigestMismatch(what, expected, actual)
