"""Recovery volumes: erasure-coded redundancy across the volumes of a split bundle (zfec).

The layout is recorded in airlock.json (`recovery`, signed); the hashes that locate damage in
the recovery index `NAME.airlock.recovery.json` (schema "airlock.recovery/v1", beside the
volumes and in every boot copy; the parts file stays as it was):

- the tar stream is cut into k data volumes of `volumeSize` bytes (the last one shorter; for
  the code it is padded with zeros);
- every volume is read as `stripes` chunks of `chunkSize` bytes (the last chunk of each volume
  shorter when the volume size is not a multiple of it); stripe j is chunk j of every volume;
- m recovery volumes, each `volumeSize` bytes, hold for every stripe the shares k..k+m-1 of
  zfec's systematic Reed-Solomon code over GF(2^8) (the data volumes are shares 0..k-1), so
  any k good chunks of a stripe give back all of it;
- the recovery index lists every volume (data and recovery: name, size, sha256) and the
  sha256 of each of its chunks, so damage is located per chunk: up to m volumes may be missing or damaged anywhere, and more when the damage of each
  stripe stays within m volumes (scratches on several DVDs).

zfec (Tahoe-LAFS's erasure coder, in C) does the arithmetic; this module only lays out the
stripes, hashes them and picks which shares to hand it. The recovery index is not signed: it
only locates damage. What repair rebuilds is checked against its hashes, and then the bundle is
verified as always (signature, every digest), so a forged index cannot make a bad bundle load.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from airlock.atomic import TMP_PREFIX, fsync_dir, lock_as_live
from airlock.errors import AirlockError, UsageError, VerificationError
from airlock.oci.layout import canonical_json

__all__ = [
    "MAX_INDEX_BYTES",
    "MAX_SHARES",
    "RECOVERY_SCHEMA",
    "SCHEME",
    "ChunkedVolume",
    "Damage",
    "EncodedVolume",
    "RecoveryIndex",
    "RecoveryPlan",
    "ShareFile",
    "assess",
    "boot_copies_for",
    "decode_blocks",
    "encode",
    "parse_index",
    "parse_percent",
    "plan_recovery",
    "rebuild",
    "write_index",
    "zfec_module",
]

SCHEME: Final = "zfec"
RECOVERY_SCHEMA: Final = "airlock.recovery/v1"
MAX_INDEX_BYTES = 64 << 20
MAX_SHARES = 256  # zfec works over GF(2^8): k + m <= 256
_MAX_STRIPES = 1024  # chunks per volume: bounds the parts file (64 hex digits per chunk)
_MIN_CHUNK = 64 << 10
_MAX_CHUNK = 4 << 20
_MAX_STRIPE_MEMORY = 256 << 20  # k chunks are held at once while encoding or repairing


_Sha256 = Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class ChunkedVolume(_Model):
    """A volume of the code: its file name, size and sha256, and each chunk's sha256."""

    name: Annotated[str, Field(pattern=r"^[^/\\]+$")]
    size: Annotated[int, Field(ge=0)]
    sha256: _Sha256
    chunks: tuple[_Sha256, ...]


class RecoveryIndex(_Model):
    """`NAME.airlock.recovery.json`: where damage is (every chunk's sha256)."""

    schema_: Literal["airlock.recovery/v1"] = Field(default=RECOVERY_SCHEMA, alias="schema")
    scheme: Literal["zfec"] = SCHEME
    tar: str  # lab.airlock.tar
    volume_size: Annotated[int, Field(ge=1)]
    chunk_size: Annotated[int, Field(ge=1)]
    data: tuple[ChunkedVolume, ...]  # the data volumes, in order: shares 0..k-1
    recovery: tuple[ChunkedVolume, ...]  # shares k..k+m-1

    @property
    def plan(self) -> RecoveryPlan:
        return RecoveryPlan(len(self.data), len(self.recovery), self.volume_size, self.chunk_size)

    def shares(self, base: Path) -> list[ShareFile]:
        return [
            ShareFile(i, v.name, base / v.name, v.size, v.sha256, v.chunks)
            for i, v in enumerate((*self.data, *self.recovery))
        ]


def write_index(index: RecoveryIndex) -> bytes:
    return canonical_json(index.model_dump(mode="json", by_alias=True)) + b"\n"


def parse_index(data: bytes, where: str) -> RecoveryIndex:
    hint = "copy the recovery index (or a boot copy) again from the source media"
    if len(data) > MAX_INDEX_BYTES:
        raise VerificationError(f"{where} is larger than {MAX_INDEX_BYTES} bytes", hint)
    try:
        index = RecoveryIndex.model_validate_json(data)
    except ValidationError as exc:
        raise VerificationError(
            f"{where} is not a valid recovery index: {exc.errors()[0]['msg']}", hint
        ) from exc
    stripes = index.plan.stripes
    if (
        not index.data
        or not index.recovery
        or any(len(v.chunks) != stripes for v in (*index.data, *index.recovery))
    ):
        raise VerificationError(f"{where} is inconsistent: chunk lists do not match", hint)
    return index


def zfec_module() -> Any:
    try:
        import zfec
    except ImportError as exc:  # an optional wheel on platforms zfec publishes none for
        raise AirlockError(
            "recovery volumes need the zfec library, which is not installed",
            "pip install zfec (it builds from source where no wheel exists), or repair on an "
            "x86_64 machine where airlock's wheelhouse carries it",
        ) from exc
    return zfec


def parse_percent(text: str) -> float:
    """`20%` or `20`: recovery as a share of the data volumes (0 < N <= 100)."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise UsageError(
            f"--recovery {text!r} is not a percentage between 0 and 100",
            "e.g. --recovery 20% adds one recovery volume for every five data volumes",
        )
    return value


def boot_copies_for(recovery_volumes: int) -> int:
    """Copies of the boot volume: losing as many media as the recovery covers still leaves one."""
    return max(2, recovery_volumes + 1)


@dataclass(frozen=True)
class RecoveryPlan:
    data_volumes: int  # k
    recovery_volumes: int  # m
    volume_size: int
    chunk_size: int

    @property
    def shares(self) -> int:
        return self.data_volumes + self.recovery_volumes

    @property
    def stripes(self) -> int:
        return math.ceil(self.volume_size / self.chunk_size)

    def chunk_len(self, stripe: int) -> int:
        return min(self.chunk_size, self.volume_size - stripe * self.chunk_size)


def _chunk_size(volume_size: int, k: int) -> int:
    size = _MIN_CHUNK
    while size < _MAX_CHUNK and math.ceil(volume_size / size) > _MAX_STRIPES:
        size *= 2
    while size > _MIN_CHUNK and size * k > _MAX_STRIPE_MEMORY:
        size //= 2
    return size


def plan_recovery(tar_size: int, volume_size: int, percent: float) -> RecoveryPlan:
    k = max(1, math.ceil(tar_size / volume_size))
    m = max(1, math.ceil(k * percent / 100 - 1e-9))
    if k + m > MAX_SHARES:
        max_k = MAX_SHARES - 1
        while max_k + max(1, math.ceil(max_k * percent / 100 - 1e-9)) > MAX_SHARES:
            max_k -= 1
        need = math.ceil(tar_size / max_k)
        raise UsageError(
            f"{k} data volumes and {m} recovery volumes are more than the {MAX_SHARES} "
            "shares Reed-Solomon over bytes allows",
            f"use larger volumes (--split {math.ceil(need / (1 << 20))}M or more)",
        )
    return RecoveryPlan(k, m, volume_size, _chunk_size(volume_size, k))


@dataclass(frozen=True)
class ShareFile:
    """One volume of the code: share `index` (data volumes first), where it should be, and
    what it should hold (the size of its file, whole sha256, sha256 of every chunk)."""

    index: int
    name: str
    path: Path
    size: int
    sha256: str
    chunks: tuple[str, ...]


def _read_chunk(fh: BinaryIO | None, file_size: int, offset: int, length: int) -> bytes:
    """`length` bytes at `offset`, zero-padded past the end of the file (or all zeros)."""
    data = b""
    if fh is not None and offset < file_size:
        fh.seek(offset)
        data = fh.read(min(length, file_size - offset))
    return data + b"\0" * (length - len(data))


def _chunk_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class EncodedVolume:
    size: int
    sha256: str
    chunks: list[str] = field(default_factory=list)


def encode(
    data: Sequence[Path], outputs: Sequence[BinaryIO], plan: RecoveryPlan
) -> tuple[list[list[str]], list[EncodedVolume]]:
    """Write the recovery volumes for the data volumes; returns the chunk hashes of the data
    volumes and, for each recovery volume, its size, sha256 and chunk hashes."""
    zfec = zfec_module()
    encoder = zfec.Encoder(plan.data_volumes, plan.shares)
    wanted = tuple(range(plan.data_volumes, plan.shares))
    data_chunks: list[list[str]] = [[] for _ in data]
    whole = [hashlib.sha256() for _ in outputs]
    encoded = [EncodedVolume(plan.volume_size, "") for _ in outputs]
    sizes = [p.stat().st_size for p in data]
    handles = [p.open("rb") for p in data]
    try:
        for stripe in range(plan.stripes):
            offset, length = stripe * plan.chunk_size, plan.chunk_len(stripe)
            blocks = tuple(
                _read_chunk(fh, size, offset, length)
                for fh, size in zip(handles, sizes, strict=True)
            )
            for i, block in enumerate(blocks):
                data_chunks[i].append(_chunk_hash(block))
            for r, share in enumerate(encoder.encode(blocks, wanted)):
                outputs[r].write(share)
                whole[r].update(share)
                encoded[r].chunks.append(_chunk_hash(share))
    finally:
        for fh in handles:
            fh.close()
    for r, h in enumerate(whole):
        encoded[r].sha256 = h.hexdigest()
    return data_chunks, encoded


@dataclass(frozen=True)
class Damage:
    """What a scan of the volumes found: bad chunks per damaged volume, and the stripes that
    have fewer than k good chunks (nothing can rebuild those)."""

    plan: RecoveryPlan
    shares: tuple[ShareFile, ...]
    bad: dict[int, frozenset[int]]  # share index -> bad chunk indexes (only damaged shares)
    missing: frozenset[int]  # share indexes whose file is absent
    wrong_size: frozenset[int]
    lost_stripes: tuple[int, ...]
    bytes_read: int = 0

    @property
    def damaged(self) -> tuple[ShareFile, ...]:
        return tuple(s for s in self.shares if s.index in self.bad)

    @property
    def repairable(self) -> bool:
        return not self.lost_stripes

    def describe(self, share: ShareFile) -> str:
        if share.index in self.missing:
            return f"{share.name} missing"
        n = len(self.bad[share.index])
        if share.index in self.wrong_size and n == 0:
            return f"{share.name} has the wrong size"
        return f"{share.name} damaged ({n} of {self.plan.stripes} chunks bad)"

    def summary(self) -> str:
        damaged = self.damaged
        if not damaged:
            return f"all {len(self.shares)} volumes intact"
        what = "; ".join(self.describe(s) for s in damaged)
        count = f"{len(damaged)} volume{'s' if len(damaged) > 1 else ''} damaged"
        if self.repairable:
            return f"{count}, repairable ({what})"
        return f"{count}, NOT repairable: {self.shortfall()} ({what})"

    def shortfall(self) -> str:
        k = self.plan.data_volumes
        worst = min(self._good_in(j) for j in self.lost_stripes)
        stripes = len(self.lost_stripes)
        return (
            f"{stripes} stripe{'s' if stripes > 1 else ''} of {self.plan.chunk_size} bytes "
            f"{'have' if stripes > 1 else 'has'} only {worst} good chunks of the {k} needed; "
            f"bring back {k - worst} more of the damaged or missing volumes"
        )

    def _good_in(self, stripe: int) -> int:
        return sum(1 for s in self.shares if stripe not in self.bad.get(s.index, frozenset()))


def _scan(share: ShareFile, plan: RecoveryPlan) -> tuple[frozenset[int], bool, bool, int]:
    """(bad chunks, missing, wrong size, bytes read) of one volume."""
    try:
        fh = share.path.open("rb")
    except FileNotFoundError:
        return frozenset(range(plan.stripes)), True, True, 0
    with fh:
        size = os.fstat(fh.fileno()).st_size
        whole = hashlib.sha256()
        bad = set()
        for stripe in range(plan.stripes):
            offset, length = stripe * plan.chunk_size, plan.chunk_len(stripe)
            chunk = _read_chunk(fh, size, offset, length)
            if offset < share.size:
                whole.update(chunk[: share.size - offset])
            if stripe >= len(share.chunks) or _chunk_hash(chunk) != share.chunks[stripe]:
                bad.add(stripe)
    wrong_size = size != share.size
    if not bad and not wrong_size and whole.hexdigest() != share.sha256:
        bad = set(range(plan.stripes))  # the chunk list and the volume's hash disagree
    return frozenset(bad), False, wrong_size, min(size, share.size)


def assess(shares: Sequence[ShareFile], plan: RecoveryPlan, *, workers: int = 2) -> Damage:
    """Read every volume chunk by chunk against its hashes (volumes in parallel threads)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda s: _scan(s, plan), shares))
    bad: dict[int, frozenset[int]] = {}
    missing, wrong = set(), set()
    read = 0
    for share, (chunks, is_missing, wrong_size, n) in zip(shares, results, strict=True):
        read += n
        if chunks or wrong_size:
            bad[share.index] = chunks
        if is_missing:
            missing.add(share.index)
        if wrong_size:
            wrong.add(share.index)
    lost = tuple(
        j
        for j in range(plan.stripes)
        if sum(1 for s in shares if j not in bad.get(s.index, frozenset())) < plan.data_volumes
    )
    return Damage(
        plan, tuple(shares), bad, frozenset(missing), frozenset(wrong), lost, bytes_read=read
    )


class _Rebuilt:
    """A damaged volume being written again under a temp name beside it."""

    def __init__(self, share: ShareFile) -> None:
        self.share = share
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{share.name}.", dir=share.path.parent)
        os.fchmod(fd, 0o644)
        lock_as_live(fd)
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, chunk: bytes) -> None:
        keep = chunk[: max(0, self.share.size - self.written)]
        self.fh.write(keep)
        self.hash.update(keep)
        self.written += len(keep)

    def publish(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        if self.written != self.share.size or self.hash.hexdigest() != self.share.sha256:
            self.tmp.unlink(missing_ok=True)
            raise VerificationError(
                f"{self.share.name} was rebuilt but does not match the parts file",
                "the parts file does not belong to these volumes; copy it again",
            )
        os.replace(self.tmp, self.share.path)

    def discard(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


def rebuild(damage: Damage, *, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write every damaged volume again from the good chunks (see the module doc); returns the
    volumes rebuilt. Refuses, naming the shortfall, when a stripe cannot be rebuilt."""
    if not damage.repairable:
        raise VerificationError(
            f"cannot repair the bundle: {damage.summary()}",
            "copy the named volumes again, or any of them, until the shortfall is covered",
        )
    plan = damage.plan
    zfec = zfec_module()
    k = plan.data_volumes
    decoder = zfec.Decoder(k, plan.shares)
    encoder = zfec.Encoder(k, plan.shares)
    targets = [_Rebuilt(s) for s in damage.damaged]
    handles: dict[int, tuple[BinaryIO, int]] = {}
    for s in damage.shares:
        if s.index not in damage.missing:
            fh: BinaryIO = s.path.open("rb")
            handles[s.index] = (fh, os.fstat(fh.fileno()).st_size)

    def chunk_of(index: int, *, stripe: int) -> bytes:
        fh, size = handles[index]
        return _read_chunk(fh, size, stripe * plan.chunk_size, plan.chunk_len(stripe))

    try:
        for stripe in range(plan.stripes):
            good = [
                s.index for s in damage.shares if stripe not in damage.bad.get(s.index, frozenset())
            ]
            needs = [t for t in targets if stripe in damage.bad[t.share.index]]
            if needs:
                data = decode_blocks(decoder, k, good, functools.partial(chunk_of, stripe=stripe))
                extra = tuple(t.share.index for t in needs if t.share.index >= k)
                coded = dict(zip(extra, encoder.encode(tuple(data), extra), strict=True))
            for t in targets:
                i = t.share.index
                if stripe not in damage.bad[i]:
                    t.write(chunk_of(i, stripe=stripe))
                else:
                    t.write(data[i] if i < k else coded[i])
            if progress is not None:
                progress(stripe)
        for t in targets:
            t.publish()
        if targets:
            fsync_dir(targets[0].share.path.parent)
    except BaseException:
        for t in targets:
            t.discard()
        raise
    finally:
        for fh, _ in handles.values():
            fh.close()
    return [t.share.path for t in targets]


def decode_blocks(
    decoder: Any, k: int, good: Sequence[int], read: Callable[[int], bytes]
) -> list[bytes]:
    """The k data chunks of a stripe from any k good shares (zfec wants each data share
    present at its own position; recovery shares fill the gaps)."""
    data_present = [i for i in good if i < k]
    if len(data_present) == k:
        return [read(i) for i in range(k)]
    spare = iter(i for i in good if i >= k)
    slots = [i if i in data_present else next(spare) for i in range(k)]
    blocks = tuple(read(i) for i in slots)
    return [bytes(b) for b in decoder.decode(blocks, tuple(slots))]
