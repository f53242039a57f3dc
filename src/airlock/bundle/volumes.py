"""Split bundles: the parts file, finding a bundle's volumes, and reading across them.

A split bundle is the byte-split of the one tar stream into `NAME.airlock.tar.000, .001, ...`
plus `NAME.airlock.parts.json`, which lists each volume's name, size and sha256 and the sha256
of the whole tar. Checking volumes against it names the bad, missing or swapped volume (a bad
DVD), before anything inside is read. The parts file is not signed: it only locates damage;
trust comes from airlock.json's signature and the blob digests it pins.

`ConcatReader` reads the volumes as one seekable stream; `spans` maps a byte range of the tar
onto (volume, offset, length) pieces, so a registry can sendfile a blob straight from the bundle.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from airlock.bundle.layout import parts_path_for
from airlock.errors import UsageError, VerificationError
from airlock.oci.layout import canonical_json
from airlock.rangehash import hash_ranges
from airlock.standalone.volumes import VolumeError, locate

__all__ = [
    "READ_CHUNK",
    "ConcatReader",
    "PartsFile",
    "Span",
    "VolumeInfo",
    "VolumeSet",
    "check_volumes",
    "hash_spans",
    "load_parts",
    "locate_volumes",
    "parts_file_path",
    "read_span",
    "spans",
    "volume_problem",
    "write_parts",
]

READ_CHUNK = 1 << 20


class _Model(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class VolumeInfo(_Model):
    name: Annotated[str, Field(pattern=r"^[^/\\]+$")]
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]


class PartsFile(_Model):
    schema_: Literal["airlock.parts/v1"] = Field(default="airlock.parts/v1", alias="schema")
    name: str  # bundle name
    tar: str  # the name of the whole tar (lab.airlock.tar)
    volume_size: Annotated[int, Field(ge=1)]
    size: Annotated[int, Field(ge=0)]  # of the whole tar
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]  # of the whole tar
    volumes: tuple[VolumeInfo, ...]


def parts_file_path(tar_path: Path) -> Path:
    return tar_path.parent / parts_path_for(tar_path.name)


def write_parts(parts: PartsFile) -> bytes:
    return canonical_json(parts.model_dump(mode="json", by_alias=True)) + b"\n"


def load_parts(path: Path) -> PartsFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read parts file {path}: {exc.strerror}") from exc
    try:
        return PartsFile.model_validate_json(data)
    except ValidationError as exc:
        raise VerificationError(
            f"{path} is not a valid parts file: {exc.errors()[0]['msg']}",
            "copy the parts file again from the source medium",
        ) from exc


@dataclass(frozen=True)
class VolumeSet:
    """Where a bundle's bytes are: one tar, or its volumes in order (plus the parts file)."""

    tar_name: str
    paths: tuple[Path, ...]
    parts: PartsFile | None = None
    parts_path: Path | None = None

    @property
    def split(self) -> bool:
        return self.parts is not None or len(self.paths) > 1 or self.paths[0].name != self.tar_name

    def display(self) -> str:
        return str(self.parts_path or self.paths[0])


def _from_parts(parts_path: Path) -> VolumeSet:
    parts = load_parts(parts_path)
    paths = tuple(parts_path.parent / v.name for v in parts.volumes)
    return VolumeSet(parts.tar, paths, parts, parts_path)


def locate_volumes(path: Path) -> VolumeSet:
    """Accept a tar, a parts file, or the first volume (siblings are found by number); the
    finding is `airlock.standalone.volumes.locate`, the bootstrap script's too."""
    try:
        found = locate(path)
    except VolumeError as exc:
        error = VerificationError if exc.damaged else UsageError
        raise error(exc.message, exc.hint) from exc
    if found.parts_path is not None:
        return _from_parts(found.parts_path)
    return VolumeSet(found.tar_name, found.paths)


@dataclass(frozen=True)
class Span:
    """`length` bytes at `offset` of the file `path`: one piece of a member of the tar."""

    path: Path
    offset: int
    length: int


def spans(volumes: Sequence[tuple[Path, int]], offset: int, length: int) -> list[Span]:
    """Map the byte range [offset, offset+length) of the concatenated volumes onto files."""
    out: list[Span] = []
    start = 0
    for path, size in volumes:
        end = start + size
        if size and length and offset < end and offset + length > start:
            lo = max(offset, start)
            hi = min(offset + length, end)
            out.append(Span(path, lo - start, hi - lo))
        start = end
    if sum(s.length for s in out) != length:
        raise VerificationError(
            f"byte range {offset}+{length} lies beyond the end of the bundle",
            "the bundle is truncated (a volume is missing or short)",
        )
    return out


def hash_spans(
    pieces: Sequence[Span],
    *,
    chunk: int = READ_CHUNK,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """sha256 hex and byte count of the concatenated spans (for threads: GIL released);
    `on_bytes` hears of each chunk hashed (progress)."""
    return hash_ranges(
        [(span.path, span.offset, span.length) for span in pieces], chunk=chunk, on_bytes=on_bytes
    )


def read_span(span: Span) -> bytes:
    """The bytes of one (small) span."""
    with span.path.open("rb", buffering=0) as fh:
        return os.pread(fh.fileno(), span.length, span.offset)


class ConcatReader(io.RawIOBase):
    """The volumes read as one seekable byte stream (the tar)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self.volumes: list[tuple[Path, int]] = []
        for p in paths:
            try:
                self.volumes.append((p, p.stat().st_size))
            except FileNotFoundError as exc:
                raise VerificationError(f"volume {p.name} missing", f"expected at {p}") from exc
        self.size = sum(s for _, s in self.volumes)
        self._pos = 0
        self._files: dict[int, io.FileIO] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _file(self, i: int) -> io.FileIO:
        fh = self._files.get(i)
        if fh is None:
            fh = self._files[i] = io.FileIO(self.volumes[i][0], "rb")
        return fh

    def read(self, size: int | None = -1) -> bytes:
        return super().read(size if size is not None else -1) or b""

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        start = 0
        for i, (_, size) in enumerate(self.volumes):
            if self._pos < start + size:
                fh = self._file(i)
                fh.seek(self._pos - start)
                n = fh.readinto(view[: min(len(view), start + size - self._pos)]) or 0
                self._pos += n
                return n
            start += size
        return 0

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        super().close()


def check_volumes(volumes: VolumeSet, *, workers: int = 2) -> tuple[list[str], int]:
    """Check every volume against the parts file; returns (problems, bytes hashed).

    Each problem names the volume: missing, wrong size, sha256 mismatch (and, when its bytes are
    another volume's, that the volumes are out of order).
    """
    parts = volumes.parts
    if parts is None:
        return [], 0
    problems: list[str] = []
    base = volumes.parts_path.parent if volumes.parts_path else Path(".")
    if sum(v.size for v in parts.volumes) != parts.size:
        problems.append(f"parts file {volumes.display()} is inconsistent: sizes do not add up")
    expected_by_hash = {v.sha256: v.name for v in parts.volumes}
    present: list[VolumeInfo] = []
    for v in parts.volumes:
        p = base / v.name
        if not p.is_file():
            problems.append(f"volume {v.name} missing")
        else:
            present.append(v)

    def one(v: VolumeInfo) -> tuple[VolumeInfo, int, str]:
        p = base / v.name
        size = p.stat().st_size
        digest, _ = hash_spans([Span(p, 0, size)])
        return v, size, digest

    hashed = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for v, size, digest in pool.map(one, present):
            hashed += size
            problem = volume_problem(v, size, digest, expected_by_hash)
            if problem is not None:
                problems.append(problem)
    return problems, hashed


def volume_problem(v: VolumeInfo, size: int, digest: str, by_hash: dict[str, str]) -> str | None:
    """What is wrong with volume `v` (name, size, sha256 from the parts file) that measured
    `size` bytes hashing to `digest`; `by_hash` names the volume each expected digest belongs to."""
    if digest == v.sha256 and size == v.size:
        return None
    other = by_hash.get(digest)
    if other is not None and other != v.name:
        return (
            f"volume {v.name} sha256 mismatch: it holds the bytes of {other} "
            "(volumes swapped or renamed?)"
        )
    if size != v.size:
        return f"volume {v.name} is {size} bytes, expected {v.size} (truncated or wrong file)"
    return f"volume {v.name} sha256 mismatch (damaged medium or copy)"
