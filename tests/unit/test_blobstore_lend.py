"""BlobStore.lend: a blob whose only copy is a range of another file (a bundle just written)
is served from there while that file is the one lent to, and is missing once it changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore


def _store_with(tmp_path: Path, data: bytes) -> tuple[BlobStore, str, Path]:
    store = BlobStore(tmp_path / "cache", durable=False)
    digest = store.put_bytes(data)
    host = tmp_path / "bundle.tar"
    host.write_bytes(b"h" * 1000 + data + b"t" * 77)
    return store, digest, host


def test_lent_blob_is_read_from_its_range_and_the_own_copy_is_gone(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    store, digest, host = _store_with(tmp_path, data)
    store.lend(digest, host, 1000, len(data))
    assert not store.path(digest).exists()
    assert store.has(digest) and store.size(digest) == len(data)
    assert store.read(digest) == data
    with store.open(digest) as fh:
        assert fh.read(10) == data[:10]
    store.verify(digest)
    assert store.lent_to(digest) == host.resolve()
    other = BlobStore(tmp_path / "other")
    other.copy_in(store, digest)
    assert other.read(digest) == data


@pytest.mark.parametrize("change", ["replaced", "appended", "removed"])
def test_a_changed_host_file_makes_the_blob_missing(tmp_path: Path, change: str) -> None:
    data = os.urandom(64 << 10)
    store, digest, host = _store_with(tmp_path, data)
    store.lend(digest, host, 1000, len(data))
    if change == "replaced":  # the same bytes in a new file: still not the file lent to
        copy = tmp_path / "copy"
        copy.write_bytes(host.read_bytes())
        copy.replace(host)
    elif change == "appended":
        with host.open("ab") as fh:
            fh.write(b"x")
    else:
        host.unlink()
    assert not store.has(digest)
    with pytest.raises(FileNotFoundError):
        store.open(digest)
    with pytest.raises(FileNotFoundError):
        store.size(digest)
    # fetched again: the store's own copy serves it
    assert store.put_bytes(data) == digest
    assert store.has(digest) and store.read(digest) == data
    assert hashlib.sha256(store.read(digest)).hexdigest() == digest.removeprefix("sha256:")


def test_lend_to_a_missing_file_keeps_the_own_copy(tmp_path: Path) -> None:
    store, digest, _ = _store_with(tmp_path, b"abc" * 100)
    store.lend(digest, tmp_path / "nowhere.tar", 0, 300)
    assert store.path(digest).is_file() and store.read(digest) == b"abc" * 100
