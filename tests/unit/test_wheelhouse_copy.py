"""The wheelhouse is rebuilt on every create: a wheel already there with the same bytes is not
written again; different bytes (even of the same size) are."""

from __future__ import annotations

from pathlib import Path

from airlock.bundle.wheelhouse import copy_if_changed


def test_same_bytes_are_left_different_bytes_are_copied(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.whl", tmp_path / "out.whl"
    src.write_bytes(b"wheel-1" * 1000)
    assert copy_if_changed(src, dst) is True
    ino, mtime = dst.stat().st_ino, dst.stat().st_mtime_ns
    assert copy_if_changed(src, dst) is False
    assert (dst.stat().st_ino, dst.stat().st_mtime_ns) == (ino, mtime)
    src.write_bytes(b"wheel-2" * 1000)  # same size, other bytes
    assert copy_if_changed(src, dst) is True
    assert dst.read_bytes() == src.read_bytes()
