"""The one-way stream's coding: a bundle sent as datagrams with recovery packets sized for the
loss arrives whole through random loss, in any order; with too few recovery packets the lost
groups are named, and the volumes they belong to are rebuilt from the recovery volumes."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from airlock.blobstore import BlobStore
from airlock.bundle.oneway import (
    Receiver,
    TransferManifest,
    bundle_files,
    datagrams,
    describe,
    recovery_for,
)
from airlock.bundle.writer import write_bundle
from airlock.verbs.repair import RepairOptions, repair_bundle
from airlock_lab.bundle_testing import sample_content

MiB = 1 << 20


def _bundle(tmp: Path) -> Path:
    store = BlobStore(tmp / "store")
    content = sample_content(store, big_file_size=3 * MiB)
    return write_bundle(content, blobs=store, out=tmp / "src", split=MiB, recovery=50).path


def _deliver(manifest: TransferManifest, paths: list[Path], out: Path, loss: float) -> Receiver:
    rng = random.Random(7)
    packets = [p for p in datagrams(manifest, paths) if rng.random() >= loss]
    rng.shuffle(packets)  # any order
    receiver = Receiver(out, max_bytes=1 << 30)
    for p in packets:
        receiver.feed(p)
    return receiver


def test_recovery_sizing() -> None:
    assert recovery_for(64, 0.0) == 1
    assert recovery_for(64, 0.01) < recovery_for(64, 0.05) < recovery_for(64, 0.20)
    assert recovery_for(64, 0.20) < 64


def test_whole_through_twenty_percent_loss(tmp_path: Path) -> None:
    parts = _bundle(tmp_path)
    paths = bundle_files(parts)
    assert paths[-1] == parts and any(".recovery." in p.name for p in paths)
    manifest = describe(paths, 0.20)
    receiver = _deliver(manifest, paths, tmp_path / "dst", 0.20)
    report = receiver.finish(keep=lambda _: True)
    assert not report.missing and len(report.complete) == len(paths)
    for p in paths:
        assert (tmp_path / "dst" / p.name).read_bytes() == p.read_bytes()


def test_too_little_recovery_names_the_loss_and_repair_rebuilds(tmp_path: Path) -> None:
    parts = _bundle(tmp_path)
    paths = bundle_files(parts)
    manifest = describe(paths, 0.001)  # sized for almost no loss
    volume = next(p for p in paths if p.name.endswith(".tar.001"))
    # 20 % loss, but only on one volume: its groups are lost, everything else arrives
    rng = random.Random(3)
    index = paths.index(volume)
    receiver = Receiver(tmp_path / "dst", max_bytes=1 << 30)
    for packet in datagrams(manifest, paths):
        file_index = int.from_bytes(packet[13:15], "big")
        if packet[12] == 1 and file_index == index and rng.random() < 0.2:
            continue
        receiver.feed(packet)
    report = receiver.finish(keep=lambda name: ".tar." in name)
    assert report.partial == [volume.name]
    assert (
        report.missing[0].startswith(f"{volume.name}: ")
        and "groups lost (bytes " in (report.missing[0])
    )
    repaired = repair_bundle(
        tmp_path / "dst" / parts.name, options=RepairOptions(allow_unsigned=True)
    )
    assert [p.name for p in repaired.rebuilt] == [volume.name]
    assert repaired.verify is not None and repaired.verify.ok


def test_a_foreign_or_short_datagram_is_ignored(tmp_path: Path) -> None:
    parts = _bundle(tmp_path)
    paths = bundle_files(parts)
    manifest = describe(paths, 0.05)
    receiver = Receiver(tmp_path / "dst", max_bytes=1 << 30)
    receiver.feed(b"hello")
    receiver.feed(b"XXXX" + bytes(40))
    for p in datagrams(manifest, paths):
        receiver.feed(p)
    report = receiver.finish(keep=lambda _: False)
    assert report.ignored == 2 and not report.missing


def test_a_manifest_larger_than_allowed_is_refused(tmp_path: Path) -> None:
    import pytest

    from airlock.errors import UsageError

    parts = _bundle(tmp_path)
    paths = bundle_files(parts)
    manifest = dataclasses.replace(describe(paths, 0.05))
    receiver = Receiver(tmp_path / "dst", max_bytes=1000)
    with pytest.raises(UsageError, match="larger than the 1000 bytes allowed"):
        for p in datagrams(manifest, paths):
            receiver.feed(p)


def test_a_burst_of_loss_is_spread_over_interleaved_groups(tmp_path: Path) -> None:
    """A full queue on the link drops a run of packets: interleaved, each group loses a few
    and is rebuilt; sent group by group, the same burst takes whole groups."""
    parts = _bundle(tmp_path)
    paths = bundle_files(parts)
    manifest = describe(paths, 0.05)  # m = 12 for a group of 64

    def burst(window: int, out: Path) -> list[str]:
        receiver = Receiver(out, max_bytes=1 << 30)
        for n, packet in enumerate(datagrams(manifest, paths, window=window)):
            if not 1000 <= n < 1150:  # 150 packets in a row lost
                receiver.feed(packet)
        return receiver.finish(keep=lambda _: False).missing

    assert burst(16, tmp_path / "interleaved") == []
    assert any("groups lost" in m for m in burst(1, tmp_path / "in-order"))
