"""One-way transfer of a bundle over UDP, for links that never answer (data diodes).

The sender streams every file of the bundle (volumes, recovery volumes, recovery index, boot
copies, parts file) as datagrams at a given rate; the receiver sends nothing back. Loss is met
by erasure coding at the packet level: each file is cut into blocks of BLOCK bytes, every GROUP
blocks form a group, and zfec adds m recovery packets to each group, m sized for the expected
loss (`recovery_for`): any k of a group's k + m packets rebuild it. What no group could rebuild
is reported by file and byte range; groups go out 16 at a time, interleaved, so a burst of
loss is spread over them; volumes of a bundle with recovery volumes are then rebuilt
from the rest by `bundle repair`, as after a bad DVD.

Datagram: header `!4s8sBHIB` (magic "ALK1", transfer id, kind, file, group, share) + payload.
Kind 0 is a part of the transfer manifest (file = part, group = part count), repeated through
the stream, so a receiver that missed the start still learns it; kind 1 is a share of a group.
The manifest (JSON) names each file (plain name), its size and sha256, BLOCK, GROUP and the
loss the recovery was sized for. Nothing received is trusted: names are checked, sizes bounded
by the receiver's limit, every file checked against its sha256, then the bundle verified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.atomic import TMP_PREFIX
from airlock.bundle.recovery import decode_blocks, zfec_module
from airlock.errors import UsageError

__all__ = [
    "BLOCK",
    "GROUP",
    "INTERLEAVE",
    "Receiver",
    "TransferFile",
    "TransferManifest",
    "bundle_files",
    "datagrams",
    "recovery_for",
    "send_datagrams",
]

MAGIC = b"ALK1"
HEADER = struct.Struct("!4s8sBHIB")
BLOCK = 1200  # payload: with the header and UDP/IP, one Ethernet frame
GROUP = 64
INTERLEAVE = 16  # groups sent round-robin: a burst of 16 x m lost packets is still rebuilt
KIND_MANIFEST, KIND_SHARE = 0, 1
_MANIFEST_EVERY = 512  # packets between repeats of the manifest
_NAME_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.+@=,~-]{1,255}\Z")


def recovery_for(k: int, loss: float) -> int:
    """Recovery packets for a group of k so that losing more than them is about a one in a
    million event at random loss `loss` (mean + 5 standard deviations, at least 1)."""
    m = 1
    while k + m < 256:
        n = k + m
        mean, sd = n * loss, math.sqrt(n * loss * (1 - loss))
        if mean + 5 * sd <= m:
            break
        m += 1
    return m


@dataclass(frozen=True)
class TransferFile:
    name: str
    size: int
    sha256: str

    @property
    def blocks(self) -> int:
        return max(1, math.ceil(self.size / BLOCK))

    @property
    def groups(self) -> int:
        return math.ceil(self.blocks / GROUP)

    def group_k(self, group: int) -> int:
        return min(GROUP, self.blocks - group * GROUP)


@dataclass(frozen=True)
class TransferManifest:
    files: tuple[TransferFile, ...]
    loss: float  # what the recovery packets were sized for

    def to_bytes(self) -> bytes:
        doc = {
            "schema": "airlock.oneway/v1",
            "block": BLOCK,
            "group": GROUP,
            "loss": self.loss,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def transfer_id(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()[:8]

    def recovery(self, k: int) -> int:
        return recovery_for(k, self.loss)


def parse_manifest(data: bytes, *, max_bytes: int) -> TransferManifest:
    doc = json.loads(data)
    if doc.get("schema") != "airlock.oneway/v1" or doc.get("block") != BLOCK:
        raise ValueError("not an airlock one-way manifest of this version")
    if doc.get("group") != GROUP:
        raise ValueError("group size differs")
    files = []
    for f in doc["files"]:
        name, size, digest = f["name"], f["size"], f["sha256"]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"file name {name!r} is not a plain file name")
        if not isinstance(size, int) or size < 0 or not re.fullmatch(r"[a-f0-9]{64}", digest):
            raise ValueError(f"bad size or sha256 for {name}")
        files.append(TransferFile(name, size, digest))
    if len({f.name for f in files}) != len(files) or len(files) > 10_000:
        raise ValueError("duplicate or too many files")
    if sum(f.size for f in files) > max_bytes:
        raise ValueError(f"the transfer is larger than the {max_bytes} bytes allowed")
    loss = float(doc["loss"])
    return TransferManifest(tuple(files), loss)


def bundle_files(path: Path) -> list[Path]:
    """Every file of the bundle at `path`: the tar, or the volumes, recovery volumes, recovery
    index, boot copies and the parts file (last)."""
    from airlock.bundle.bootvol import find_boot_volumes
    from airlock.bundle.layout import recovery_index_name
    from airlock.bundle.repair import bundle_tar_path, find_recovery_set
    from airlock.bundle.volumes import locate_volumes

    volumes = locate_volumes(path)
    if volumes.parts_path is None:
        return list(volumes.paths)
    tar = bundle_tar_path(volumes.parts_path)
    out = list(volumes.paths)
    rset = find_recovery_set(volumes.parts_path)
    if rset is not None:
        out += [tar.parent / v.name for v in rset.index.recovery]
        out.append(tar.with_name(recovery_index_name(tar.name)))
        out += find_boot_volumes(tar)
    return [*out, volumes.parts_path]


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def describe(paths: Sequence[Path], loss: float) -> TransferManifest:
    files = tuple(TransferFile(p.name, p.stat().st_size, _sha256(p)) for p in paths)
    return TransferManifest(files, loss)


def _manifest_packets(manifest: TransferManifest) -> list[bytes]:
    data = manifest.to_bytes()
    parts = [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)] or [b""]
    tid = manifest.transfer_id
    return [
        HEADER.pack(MAGIC, tid, KIND_MANIFEST, i, len(parts), 0) + part
        for i, part in enumerate(parts)
    ]


def _group_packets(manifest: TransferManifest, paths: Sequence[Path]) -> Iterator[list[bytes]]:
    """Every group's k + m datagrams, file by file."""
    zfec = zfec_module()
    tid = manifest.transfer_id
    for index, (f, path) in enumerate(zip(manifest.files, paths, strict=True)):
        with path.open("rb") as fh:
            for g in range(f.groups):
                k = f.group_k(g)
                blocks = []
                for _ in range(k):
                    block = fh.read(BLOCK)
                    blocks.append(block + bytes(BLOCK - len(block)))
                m = manifest.recovery(k)
                extra = zfec.Encoder(k, k + m).encode(tuple(blocks), tuple(range(k, k + m)))
                yield [
                    HEADER.pack(MAGIC, tid, KIND_SHARE, index, g, share) + bytes(payload)
                    for share, payload in enumerate([*blocks, *extra])
                ]


def _interleaved(groups: Iterator[list[bytes]], window: int) -> Iterator[bytes]:
    """Round-robin over `window` groups at a time: a burst of lost packets (a full queue on
    the link) costs each group a few packets instead of one group all of them."""
    batch: list[list[bytes]] = []
    for group in groups:
        batch.append(group)
        if len(batch) == window:
            yield from _round_robin(batch)
            batch = []
    yield from _round_robin(batch)


def _round_robin(batch: list[list[bytes]]) -> Iterator[bytes]:
    for i in range(max((len(g) for g in batch), default=0)):
        for group in batch:
            if i < len(group):
                yield group[i]


def datagrams(
    manifest: TransferManifest, paths: Sequence[Path], *, window: int = INTERLEAVE
) -> Iterator[bytes]:
    """The whole stream: the manifest, then every group's k + m shares, `window` groups
    interleaved, with the manifest repeated every few hundred packets and at the end."""
    head = _manifest_packets(manifest)
    yield from head
    for sent, packet in enumerate(_interleaved(_group_packets(manifest, paths), window), 1):
        yield packet
        if sent % _MANIFEST_EVERY == 0:
            yield from head
    for _ in range(3):
        yield from head


def send_datagrams(
    packets: Iterator[bytes], address: tuple[str, int], *, rate: int
) -> tuple[int, int, float]:
    """Send at `rate` bytes per second; returns (packets, bytes, seconds)."""
    count = total = 0
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        for packet in packets:
            ahead = total / rate - (time.monotonic() - started)
            if ahead > 0.002:
                time.sleep(ahead)
            while True:
                try:
                    sock.sendto(packet, address)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise
                    time.sleep(0.001)  # the local queue is full: wait, never drop here
            count += 1
            total += len(packet)
    return count, total, time.monotonic() - started


@dataclass
class _Incoming:
    f: TransferFile
    tmp: Path
    fd: int
    done: set[int] = field(default_factory=set)
    pending: dict[int, dict[int, bytes]] = field(default_factory=dict)


class Receiver:
    """Assembles files from datagrams in any order, any loss; see the module doc."""

    def __init__(self, out: Path, *, max_bytes: int) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.manifest: TransferManifest | None = None
        self.tid: bytes | None = None
        self._parts: dict[int, bytes] = {}
        self._early: list[bytes] = []
        self._files: list[_Incoming] = []
        self.packets = 0
        self.ignored = 0

    def feed(self, datagram: bytes) -> None:
        self.packets += 1
        if len(datagram) < HEADER.size:
            self.ignored += 1
            return
        magic, tid, kind, a, b, share = HEADER.unpack_from(datagram)
        payload = datagram[HEADER.size :]
        if magic != MAGIC or (self.tid is not None and tid != self.tid):
            self.ignored += 1
            return
        if kind == KIND_MANIFEST:
            if self.manifest is None:
                self._manifest_part(tid, a, b, payload)
            return
        if self.manifest is None:
            if len(self._early) < 8192:
                self._early.append(datagram)
            return
        self._share(a, b, share, payload)

    def _manifest_part(self, tid: bytes, part: int, count: int, payload: bytes) -> None:
        self._parts[part] = payload
        if len(self._parts) < count or any(i not in self._parts for i in range(count)):
            return
        data = b"".join(self._parts[i] for i in range(count))
        if hashlib.sha256(data).digest()[:8] != tid:
            self._parts.clear()  # parts of two different transfers: start over
            return
        try:
            manifest = parse_manifest(data, max_bytes=self.max_bytes)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"refused the transfer's manifest: {exc}") from exc
        self.manifest, self.tid = manifest, tid
        self.out.mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            tmp = self.out / f"{TMP_PREFIX}{f.name}.oneway"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fd, f.size)
            self._files.append(_Incoming(f, tmp, fd))
        early, self._early = self._early, []
        for datagram in early:
            self.feed(datagram)

    def _share(self, index: int, group: int, share: int, payload: bytes) -> None:
        if index >= len(self._files) or len(payload) != BLOCK:
            self.ignored += 1
            return
        inc = self._files[index]
        if group >= inc.f.groups or group in inc.done:
            return
        k = inc.f.group_k(group)
        assert self.manifest is not None
        if share >= k + self.manifest.recovery(k):
            self.ignored += 1
            return
        shares = inc.pending.setdefault(group, {})
        shares[share] = payload
        if len(shares) < k:
            return
        zfec = zfec_module()
        decoder = zfec.Decoder(k, k + self.manifest.recovery(k))
        blocks = decode_blocks(decoder, k, sorted(shares), shares.__getitem__)
        data = b"".join(blocks)
        offset = group * GROUP * BLOCK
        os.pwrite(inc.fd, data[: max(0, inc.f.size - offset)], offset)
        inc.done.add(group)
        del inc.pending[group]

    def finish(self, keep: Callable[[str], bool]) -> ReceiveReport:
        """Close every file: a whole one whose sha256 matches is renamed into place; a partial
        one is kept under its name only if `keep(name)` (volumes that repair can use)."""
        report = ReceiveReport(packets=self.packets, ignored=self.ignored)
        if self.manifest is None:
            report.missing.append("the transfer's manifest never arrived (nothing received?)")
            return report
        for inc in self._files:
            os.fsync(inc.fd)
            os.close(inc.fd)
            final = self.out / inc.f.name
            lost = [g for g in range(inc.f.groups) if g not in inc.done]
            if not lost and _sha256(inc.tmp) == inc.f.sha256:
                os.replace(inc.tmp, final)
                report.complete.append(inc.f.name)
                continue
            ranges = _ranges(lost, inc.f.size)
            report.missing.append(
                f"{inc.f.name}: {len(lost)} of {inc.f.groups} groups lost ({ranges})"
                if lost
                else f"{inc.f.name}: sha256 mismatch after assembly"
            )
            if keep(inc.f.name):
                os.replace(inc.tmp, final)
                report.partial.append(inc.f.name)
            else:
                inc.tmp.unlink(missing_ok=True)
        return report


def _ranges(groups: Sequence[int], size: int) -> str:
    span = GROUP * BLOCK
    shown = [f"bytes {g * span}-{min(size, (g + 1) * span) - 1}" for g in groups[:3]]
    return ", ".join(shown) + (f" and {len(groups) - 3} more" if len(groups) > 3 else "")


@dataclass
class ReceiveReport:
    packets: int = 0
    ignored: int = 0
    complete: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # kept for repair
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "ignored": self.ignored,
            "complete": self.complete,
            "partial": self.partial,
            "missing": self.missing,
        }
