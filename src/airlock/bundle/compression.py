"""zstd for the files artifact: which files are stored compressed, and reading them back.

Only the layers of the files artifact (binaries, archives, manifests...) are ever compressed;
image manifests, configs and layers are carried exactly as upstream made them, so every image
digest and the OCI layout stay upstream's. A file is stored compressed when

- the stdlib-only bootstrap never reads it (wheels and OS packages stay as fetched: a bare
  python3 must install airlock from them, and Python 3.11 has no zstd), and
- it is at least MIN_SIZE bytes and zstd saves at least a tenth of it (release tarballs,
  charts and other gzip data do not shrink, and stay as fetched).

The stored form is one zstd frame with the content size in its header, made with a fixed level
and a pledged size: the same bytes and the same zstd library give the same frame, so bundles
stay reproducible. A compressed file is its own blob (digest of the stored bytes); airlock.json
records both digests (`digest` = the upstream file, `stored.digest` = the blob) and the files
manifest's layer carries the content digest in `io.airlock.file.content.digest` with the media
type suffixed `+zstd`.

Compressing is paid once per file and level: the result (or "stays raw") is remembered in the
download cache under `compressed/zstd-L<level>-<zstd version>/<content hex>`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from airlock.atomic import remove_dead_temps, write_atomic
from airlock.blobstore import BlobStore
from airlock.content import FileArtifact, StoredForm
from airlock.errors import DigestMismatch, UsageError, VerificationError
from airlock.oci.digest import digest_hex, is_digest

__all__ = [
    "ANNOTATION_CONTENT_DIGEST",
    "ANNOTATION_CONTENT_SIZE",
    "CODEC_ZSTD",
    "DEFAULT_LEVEL",
    "MEDIA_SUFFIX",
    "RAW_KINDS",
    "CompressAhead",
    "Compression",
    "compress_files",
    "open_content",
    "parse_compression",
    "stored_media_type",
]

CODEC_ZSTD = "zstd"
# 3.5:1 on Go binaries at ~190 MiB/s a core; level 9 gains 9 % (3.8:1) at a fifth of the
# speed (~40 MiB/s), which made zstd half of a cold create's time (bench/scale.py)
DEFAULT_LEVEL = 3
MEDIA_SUFFIX = "+zstd"
RAW_KINDS = frozenset({"wheel", "package"})  # read by the stdlib-only bootstrap
MIN_SIZE = 4096
_KEEP_RATIO = 0.9  # stored compressed only if it saves at least a tenth
_CHUNK = 1 << 20

ANNOTATION_CONTENT_DIGEST = "io.airlock.file.content.digest"
ANNOTATION_CONTENT_SIZE = "io.airlock.file.content.size"


def _zstd() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        from backports import zstd
    return zstd


@dataclass(frozen=True)
class Compression:
    """How files are stored: `codec` None means as fetched."""

    codec: str | None = CODEC_ZSTD
    level: int = DEFAULT_LEVEL

    def describe(self) -> str:
        return f"{self.codec} level {self.level}" if self.codec else "none"


def parse_compression(text: str) -> Compression:
    """`zstd`, `zstd:LEVEL` (1-22) or `none`."""
    name, _, level = text.strip().lower().partition(":")
    if name in ("none", "no", "off") and not level:
        return Compression(codec=None)
    if name == CODEC_ZSTD:
        if not level:
            return Compression()
        if level.isdigit() and 1 <= int(level) <= 22:
            return Compression(level=int(level))
    raise UsageError(
        f"--compress {text!r} is not a compression this airlock writes",
        "use zstd (level 3), zstd:LEVEL with LEVEL 1-22, or none",
    )


def stored_media_type(media_type: str, compression: str) -> str:
    return media_type + MEDIA_SUFFIX if compression == CODEC_ZSTD else media_type


def _memo_path(cache: BlobStore, digest: str, level: int) -> Path:
    version = _zstd().zstd_version
    return cache.root / "compressed" / f"zstd-L{level}-{version}" / digest_hex(digest)


def _remembered(cache: BlobStore, memo: Path) -> StoredForm | bool | None:
    """The stored form remembered for a file, False if it stays raw, True if not known."""
    try:
        doc = json.loads(memo.read_bytes())
    except (OSError, ValueError):
        return True
    if doc.get("raw") is True:
        return False
    digest, size = doc.get("digest"), doc.get("size")
    known = isinstance(digest, str) and is_digest(digest) and isinstance(size, int)
    if known and cache.has(digest) and cache.size(digest) == size:
        return StoredForm(CODEC_ZSTD, digest, size)
    return True


_PROBE = 1 << 20  # bytes read at each probe point of a large file
_PROBE_MIN_SIZE = 8 << 20  # smaller files are simply compressed
_PROBE_GIVE_UP = 0.97  # probes that shrink less than 3 %: incompressible (gzip'd, random)


def _incompressible(cache: BlobStore, f: FileArtifact, level: int) -> bool:
    """Whether probes at the start, middle and end of a large file barely compress: then the
    whole would not save a tenth either (archives already gzip'd, encrypted or random data),
    and compressing it all would cost CPU seconds per hundred MB for nothing."""
    if f.size < _PROBE_MIN_SIZE:
        return False
    zstd = _zstd()
    total = packed = 0
    with cache.path(f.digest).open("rb") as src:
        for offset in (0, f.size // 2 - _PROBE // 2, f.size - _PROBE):
            src.seek(offset)
            chunk = src.read(_PROBE)
            total += len(chunk)
            packed += len(zstd.compress(chunk, level=level))
    return total > 0 and packed > total * _PROBE_GIVE_UP


def _check_seen(f: FileArtifact, cache: BlobStore, seen: Any) -> None:
    if "sha256:" + seen.hexdigest() != f.digest:
        raise DigestMismatch(
            f"{f.name} in {cache.root}",
            f.digest,
            "sha256:" + seen.hexdigest(),
            hint="the cache is corrupt; remove that blob and fetch again",
        )


def _compress(cache: BlobStore, f: FileArtifact, level: int, *, fresh: bool) -> StoredForm | None:
    """`fresh`: this run downloaded the file and hashed it as it arrived: not hashed again."""
    zstd = _zstd()
    if _incompressible(cache, f, level):
        return None
    compressor = zstd.ZstdCompressor(level=level)
    compressor.set_pledged_input_size(f.size)
    seen = hashlib.sha256()  # the cache is not fsync'd: what is compressed must be the file
    with cache.path(f.digest).open("rb") as src, cache.writer() as out:
        try:
            while chunk := src.read(_CHUNK):
                if not fresh:
                    seen.update(chunk)
                out.write(compressor.compress(chunk))
            out.write(compressor.flush())
        except Exception:  # zstd's own error (a size other than pledged): was it the file?
            if not fresh:
                while chunk := src.read(_CHUNK):
                    seen.update(chunk)
                _check_seen(f, cache, seen)
            raise
        if not fresh:
            _check_seen(f, cache, seen)
        if out.size > f.size * _KEEP_RATIO:
            return None  # not worth it: the temp file is dropped
        digest = out.commit(f"{f.name} compressed")
        return StoredForm(CODEC_ZSTD, digest, out.size)


def _stored_form(
    cache: BlobStore, f: FileArtifact, level: int, fresh: Collection[str]
) -> StoredForm | None:
    memo = _memo_path(cache, f.digest, level)
    known = _remembered(cache, memo)
    if known is False:
        return None
    if isinstance(known, StoredForm):
        return known
    stored = _compress(cache, f, level, fresh=f.digest in fresh)
    record = {"raw": True} if stored is None else {"digest": stored.digest, "size": stored.size}
    write_atomic(memo, json.dumps(record, sort_keys=True).encode(), durable=False)
    return stored


class CompressAhead:
    """Files compressed as each one arrives (bundle create), one at a time on a thread of its
    own, while the others still download: `compress_files`, which needs them all, then finds
    each one's form remembered. It took 1.3 s after the last file on the seed at 4x, before
    the bundle's write could start. Only a head start: a failure here is dropped, and
    `compress_files` meets it again and says so."""

    def __init__(self, cache: BlobStore, compression: Compression) -> None:
        self._cache, self._compression = cache, compression
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="airlock-zstd")
        self._started: dict[str, Future[StoredForm | None]] = {}

    def offer(self, f: FileArtifact, *, fresh: bool) -> None:
        """`fresh`: downloaded and hashed as it arrived in this run (see `compress_files`)."""
        level = self._compression.level
        if self._compression.codec is None or not _eligible(f) or f.digest in self._started:
            return
        done = () if not fresh else (f.digest,)
        self._started[f.digest] = self._pool.submit(_stored_form, self._cache, f, level, done)

    def wait(self) -> None:
        """Every file offered is compressed, or failed (to be met again)."""
        for started in self._started.values():
            with contextlib.suppress(Exception):
                started.result()

    def close(self) -> None:
        """Files not started are dropped (a failure elsewhere, Ctrl-C); one running ends."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _eligible(f: FileArtifact) -> bool:
    return f.kind not in RAW_KINDS and f.size >= MIN_SIZE


def compress_files(
    files: Sequence[FileArtifact],
    cache: BlobStore,
    compression: Compression,
    fresh: Collection[str] = (),
) -> list[FileArtifact]:
    """`files` with `stored` set on each one worth storing compressed (blobs put in `cache`).
    `fresh`: digests of files this run downloaded, hashed as they arrived (not hashed again
    while compressed; any other file is, as the cache is not fsync'd)."""
    if compression.codec is None:
        return [replace(f, stored=None) for f in files]
    eligible = [f for f in files if _eligible(f)]
    if eligible:  # memo temp files a killed run left (a live writer's are locked)
        remove_dead_temps(_memo_path(cache, eligible[0].digest, compression.level).parent)
    workers = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # zstd releases the GIL
        forms = dict(
            zip(
                [f.digest for f in eligible],
                pool.map(lambda f: _stored_form(cache, f, compression.level, fresh), eligible),
                strict=True,
            )
        )
    return [replace(f, stored=forms.get(f.digest)) for f in files]


class _Bounded(io.RawIOBase):
    """Decompressed bytes, refused past the size airlock.json gives (a zstd bomb stops)."""

    def __init__(self, inner: BinaryIO, stored: BinaryIO, limit: int, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._stored = stored
        self._left = limit
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        try:
            n = int(self._inner.readinto(view[: max(1, min(len(view), self._left + 1))]))  # type: ignore[attr-defined]
        except Exception as exc:  # the zstd library's own error type: a damaged frame
            raise VerificationError(
                f"{self._what} does not decompress: {exc}",
                "the bundle is damaged; airlock bundle verify names the bad volume",
            ) from exc
        if n > self._left:
            raise VerificationError(
                f"{self._what} decompresses to more bytes than airlock.json records",
                "the bundle is damaged or altered; do not install from it",
            )
        self._left -= n
        return n

    def close(self) -> None:
        self._inner.close()
        self._stored.close()
        super().close()


def open_content(stored: BinaryIO, compression: str, *, size: int, what: str) -> BinaryIO:
    """The file's own bytes from its stored blob (`stored` is closed with the result)."""
    if compression != CODEC_ZSTD:
        stored.close()
        raise VerificationError(
            f"{what} is stored with {compression!r}, which this airlock cannot read",
            "use the airlock version that wrote the bundle, or a newer one",
        )
    inner = _zstd().ZstdFile(stored, mode="rb")
    return io.BufferedReader(_Bounded(inner, stored, size, what), buffer_size=_CHUNK)
