"""`airlock bundle send` / `bundle receive`: a bundle across a one-way link (see
bundle/oneway.py). The receiver assembles whatever arrives, rebuilds lost volumes from the
recovery volumes when the bundle has them, verifies the bundle, and otherwise names exactly
what is missing."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.bundle.oneway import (
    Receiver,
    ReceiveReport,
    bundle_files,
    datagrams,
    describe,
    send_datagrams,
)
from airlock.bundle.verify import VerifyReport, verify_bundle
from airlock.errors import AirlockError, UsageError, VerificationError
from airlock.trust import trust_policy

__all__ = [
    "ReceiveOptions",
    "ReceiveResult",
    "SendOptions",
    "SendResult",
    "parse_address",
    "receive_bundle",
    "send_bundle",
]

_VOLUME_RE = re.compile(r"\.(tar|recovery)\.\d{3}$")


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r} is not ADDRESS:PORT", "e.g. 198.18.0.2:7600")
    return host, int(port)


@dataclass(frozen=True)
class SendOptions:
    rate: int  # bytes per second
    loss: float = 0.05  # the loss the recovery packets are sized for


@dataclass
class SendResult:
    files: list[str]
    packets: int
    bytes_sent: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "packets": self.packets,
            "bytesSent": self.bytes_sent,
            "seconds": round(self.seconds, 3),
        }


def send_bundle(bundle: Path, *, to: tuple[str, int], options: SendOptions) -> SendResult:
    if options.rate <= 0:
        raise UsageError("--rate must be above 0", "e.g. --rate 10M (bytes per second)")
    if not 0 <= options.loss < 0.9:
        raise UsageError("--loss must be between 0% and 90%")
    paths = bundle_files(Path(bundle))
    manifest = describe(paths, options.loss)
    packets, sent, seconds = send_datagrams(datagrams(manifest, paths), to, rate=options.rate)
    return SendResult([p.name for p in paths], packets, sent, seconds)


@dataclass(frozen=True)
class ReceiveOptions:
    listen: tuple[str, int]
    idle: float = 5.0  # seconds without a packet, after the first, that end the transfer
    timeout: float = 3600.0  # overall, from start
    max_bytes: int = 64 << 30
    keys: Sequence[Path] = ()
    allow_unsigned: bool = False


@dataclass
class ReceiveResult:
    out: Path
    report: ReceiveReport
    repaired: list[str] = field(default_factory=list)
    verify: VerifyReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.report.to_json(),
            "out": str(self.out),
            "repaired": self.repaired,
            "verified": bool(self.verify and self.verify.ok),
        }


def _listen(options: ReceiveOptions, receiver: Receiver) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        try:
            sock.bind(options.listen)
        except OSError as exc:
            raise AirlockError(
                f"cannot listen on {options.listen[0]}:{options.listen[1]}: {exc.strerror}"
            ) from exc
        deadline = time.monotonic() + options.timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, options.idle) if receiver.packets else left)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            receiver.feed(data)


def receive_bundle(out: Path, *, options: ReceiveOptions) -> ReceiveResult:
    """Listen until the stream goes quiet, assemble, repair if it must, verify."""
    receiver = Receiver(Path(out), max_bytes=options.max_bytes)
    _listen(options, receiver)
    report = receiver.finish(keep=lambda name: bool(_VOLUME_RE.search(name)))
    result = ReceiveResult(Path(out), report)
    manifest = receiver.manifest
    if manifest is None:
        raise VerificationError(
            f"nothing usable arrived on {options.listen[0]}:{options.listen[1]}",
            "is the sender sending to this address, and the link up?",
        )
    names = [f.name for f in manifest.files]
    parts = next((n for n in names if n.endswith(".parts.json")), None)
    target = Path(out) / (parts or names[0])
    trust = trust_policy(options.keys, allow_unsigned=options.allow_unsigned)
    keys = list(trust.keys)
    if report.missing:
        from airlock.bundle.repair import find_recovery_set
        from airlock.verbs.repair import RepairOptions, repair_bundle

        try:
            rset = find_recovery_set(target)
        except VerificationError:
            rset = None
        if rset is None:
            raise VerificationError(
                "the transfer is incomplete and the bundle has no usable recovery data: "
                + "; ".join(report.missing),
                "send again with a higher --loss (more recovery packets), or with "
                "--split --recovery so lost volumes can be rebuilt",
            )
        try:
            repaired = repair_bundle(
                target, options=RepairOptions(keys=keys, allow_unsigned=options.allow_unsigned)
            )
        except VerificationError as exc:
            raise VerificationError(
                f"{exc.message}; lost in transit: " + "; ".join(report.missing), exc.hint
            ) from exc
        result.repaired = [p.name for p in repaired.rebuilt]
        result.verify = repaired.verify
        return result
    result.verify = verify_bundle(target, trust=trust)
    return result
