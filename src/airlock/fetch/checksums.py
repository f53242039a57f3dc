"""Upstream checksum files in their real shapes, parsed into an UpstreamChecksum (pure).

Shapes seen in the wild, all handled by `parse_checksum_file`:

- hex only, one line: dl.k8s.io `kubeadm.sha256`, `.sha512`
- `hex  filename` / `hex *filename` (sha256sum text and binary mode), one or many lines: pick
  the line for our file (k9s and goreleaser `checksums.txt`, `SHA256SUMS`, `*.sha256sum`)
- BSD style `SHA256 (filename) = hex` (`shasum --tag`, `openssl dgst`)

The algorithm comes from the hex length (64 = sha256, 128 = sha512); a checksum file that does
not name our file, or names it twice with different values, is an error, never a guess.
Also here: spec values (`sha256:<hex>` or bare hex) and a streaming hasher for either algorithm.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from airlock.content import UpstreamChecksum
from airlock.errors import FetchError, UsageError

__all__ = [
    "ALGORITHMS",
    "ChecksumEntry",
    "ChecksumHasher",
    "checksum_from_spec",
    "checksum_matches_digest",
    "parse_checksum_entries",
    "parse_checksum_file",
    "url_filename",
]

# hex length -> algorithm; only these two are accepted (md5/sha1 are not integrity checks)
ALGORITHMS: dict[int, str] = {64: "sha256", 128: "sha512"}
_HEX_RE = re.compile(r"^[0-9a-fA-F]+\Z")
_BSD_RE = re.compile(r"^(SHA256|SHA512|SHA2-256|SHA2-512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\Z")
_BSD_ALGO = {"SHA256": "sha256", "SHA2-256": "sha256", "SHA512": "sha512", "SHA2-512": "sha512"}


@dataclass(frozen=True)
class ChecksumEntry:
    algorithm: str
    value: str  # lowercase hex
    filename: str | None  # None for a bare-hex file


def url_filename(url: str) -> str:
    """The last path segment of a URL, unquoted: the name a checksum file lists."""
    path = unquote(urlsplit(url).path)
    return path.rstrip("/").rsplit("/", 1)[-1]


def _algorithm_for(hexval: str, *, source: str) -> str:
    algo = ALGORITHMS.get(len(hexval))
    if algo is None or not _HEX_RE.match(hexval):
        raise FetchError(
            f"checksum file {source} holds {hexval[:80]!r}, which is not a sha256 or sha512 hex",
            "airlock accepts sha256 (64 hex) and sha512 (128 hex) checksums",
        )
    return algo


def _normalise_name(name: str) -> str:
    # sha256sum binary mode marks names with '*'; some tools write './name' or a path
    name = name.strip()
    if name.startswith("*"):
        name = name[1:]
    return name.rsplit("/", 1)[-1]


def parse_checksum_entries(text: str, *, source: str = "checksum file") -> list[ChecksumEntry]:
    """Every checksum line of a file; blank lines and `#` comments are skipped."""
    entries: list[ChecksumEntry] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        bsd = _BSD_RE.match(line)
        if bsd:
            algo = _BSD_ALGO[bsd.group(1)]
            hexval = bsd.group(3)
            if ALGORITHMS.get(len(hexval)) != algo:
                raise FetchError(f"checksum file {source}: {bsd.group(1)} value has wrong length")
            entries.append(ChecksumEntry(algo, hexval.lower(), _normalise_name(bsd.group(2))))
            continue
        parts = line.split(None, 1)
        hexval = parts[0]
        algo = _algorithm_for(hexval, source=source)
        name = _normalise_name(parts[1]) if len(parts) > 1 else None
        entries.append(ChecksumEntry(algo, hexval.lower(), name or None))
    return entries


def parse_checksum_file(text: str, *, filename: str, source: str) -> UpstreamChecksum:
    """The checksum for `filename` in a checksum file fetched from `source` (its URL).

    A bare hex file (one value, no name) applies to our file. A file with names must name ours
    exactly once (or several times with the same value).
    """
    entries = parse_checksum_entries(text, source=source)
    if not entries:
        raise FetchError(f"checksum file {source} is empty", "check the checksum URL")
    bare = [e for e in entries if e.filename is None]
    if bare:
        if len(entries) != 1:
            raise FetchError(
                f"checksum file {source} mixes bare values and named lines; cannot tell which "
                f"is for {filename}"
            )
        e = bare[0]
        return UpstreamChecksum(e.algorithm, e.value, source)
    want = _normalise_name(filename)
    mine = {(e.algorithm, e.value) for e in entries if e.filename == want}
    if not mine:
        listed = ", ".join(sorted({e.filename or "" for e in entries})[:8])
        raise FetchError(
            f"checksum file {source} has no line for {want} (it lists: {listed})",
            "the checksum URL may be for another release or platform",
        )
    if len(mine) > 1:
        raise FetchError(
            f"checksum file {source} lists {want} more than once, with different values"
        )
    algo, value = mine.pop()
    return UpstreamChecksum(algo, value, source)


def checksum_from_spec(value: str, *, source: str = "spec") -> UpstreamChecksum:
    """A checksum written in the spec: `sha256:<hex>`, `sha512:<hex>` or bare hex."""
    text = value.strip()
    algo_hint: str | None = None
    if ":" in text:
        algo_hint, text = text.split(":", 1)
        algo_hint = algo_hint.lower()
    algo = ALGORITHMS.get(len(text))
    if algo is None or not _HEX_RE.match(text) or (algo_hint is not None and algo_hint != algo):
        raise UsageError(
            f"invalid checksum {value!r}",
            "write sha256:<64 hex> or sha512:<128 hex> (or the bare hex)",
        )
    return UpstreamChecksum(algo, text.lower(), source)


def checksum_matches_digest(checksum: UpstreamChecksum, digest: str) -> bool:
    """True when a sha256 upstream checksum names exactly this `sha256:<hex>` digest."""
    return checksum.algorithm == "sha256" and digest == f"sha256:{checksum.value}"


class ChecksumHasher:
    """Hash a stream with sha256 (the blob digest) and, when needed, the upstream algorithm."""

    def __init__(self, algorithm: str | None) -> None:
        if algorithm not in (None, "sha256", "sha512"):
            raise UsageError(f"unsupported checksum algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._sha256 = hashlib.sha256()
        self._other = hashlib.sha512() if algorithm == "sha512" else None
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        if self._other is not None:
            self._other.update(chunk)
        self.size += len(chunk)

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha256.hexdigest()

    @property
    def upstream_value(self) -> str | None:
        """Hex of the upstream algorithm (sha256 or sha512), None when no algorithm was set."""
        if self.algorithm is None:
            return None
        if self._other is not None:
            return self._other.hexdigest()
        return self._sha256.hexdigest()
