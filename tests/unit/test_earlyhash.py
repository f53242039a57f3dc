"""airlock.earlyhash: blobs hashed before the CLI's imports are used by verify only while the
files are the ones hashed; a damaged blob is found either way."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock import earlyhash
from airlock.blobstore import BlobStore
from airlock.bundle import verify as verify_mod
from airlock.bundle.layout import blob_member
from airlock.bundle.reader import open_bundle
from airlock.bundle.signing import generate_keypair
from airlock.bundle.verify import BundleVerificationError, verify_bundle
from airlock.bundle.writer import write_bundle
from airlock.earlyhash import Key
from airlock.trust import TrustPolicy
from airlock_lab.bundle_testing import flip_byte, sample_content

MiB = 1 << 20
UNSIGNED_OK = TrustPolicy((), allow_unsigned=True)


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("_jobs", "_identity", "_results", "_state", "_reals", "_index"):
        monkeypatch.setattr(earlyhash, name, {})
    monkeypatch.setattr(earlyhash, "_pending", [b""])
    monkeypatch.delenv("AIRLOCK_NO_EARLY_HASH", raising=False)
    yield
    earlyhash.stop()  # the child ended and reaped


def _bundle(tmp_path: Path, split: int | None = None, key: Path | None = None) -> Path:
    store = BlobStore(tmp_path / "store")
    content = sample_content(store, big_file_size=3 * MiB)
    w = write_bundle(content, blobs=store, out=tmp_path / "out", split=split, sign_key=key)
    return w.path  # the tar, or the parts file when split


def _count_own_hashing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = verify_mod.hash_spans

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(verify_mod, "hash_spans", counting)
    return calls


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["bundle", "verify", "x.tar"], "x.tar"),
        (["bundle", "verify", "x.tar", "--key", "k.pub"], "x.tar"),
        (["--json", "bundle", "verify", "--key", "k.pub", "--progress", "none", "x.tar"], "x.tar"),
        (["bundle", "create", "-f", "x.yaml"], None),
        (["registry", "serve", "--bundle", "x.tar"], None),
        (["lab", "bundle", "verify", "x.tar"], None),
        (["bundle", "verify"], None),
    ],
)
def test_only_bundle_verify_starts_early(argv: list[str], path: str | None) -> None:
    assert earlyhash._bundle_arg(argv) == path


@pytest.mark.parametrize("split", [None, 1 * MiB])
def test_verify_takes_the_early_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: int | None
) -> None:
    priv, pub = generate_keypair(tmp_path / "keys" / "k")
    bundle = _bundle(tmp_path, split, key=priv)
    calls = _count_own_hashing(monkeypatch)
    earlyhash.start(["bundle", "verify", str(bundle)])
    assert earlyhash._jobs and "pid" in earlyhash._state  # every blob member, in a child
    report = verify_bundle(bundle, trust=TrustPolicy((pub,)))
    assert report.blobs_checked > 0 and calls == []  # none hashed twice


def _first_blob_offset(bundle: Path) -> tuple[str, int]:
    with open_bundle(bundle) as reader:
        digest = max(reader.manifest.blobs, key=lambda b: b.size).digest
        return digest, reader.members[blob_member(digest)].offset


def test_a_blob_damaged_before_the_early_hash_is_named(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    digest, offset = _first_blob_offset(bundle)
    flip_byte(bundle, offset + 7)
    earlyhash.start(["bundle", "verify", str(bundle)])
    with pytest.raises(BundleVerificationError) as exc:
        verify_bundle(bundle, trust=UNSIGNED_OK)
    assert digest in exc.value.message and "mismatch" in exc.value.message


def test_a_blob_damaged_after_the_early_hash_is_hashed_again_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle(tmp_path)
    digest, offset = _first_blob_offset(bundle)
    earlyhash.start(["bundle", "verify", str(bundle)])
    with earlyhash._lock:
        earlyhash._read_until(-1)  # every early hash done (the child closed its pipe): good bytes
    assert len(earlyhash._results) == len(earlyhash._jobs) and "pid" not in earlyhash._state
    flip_byte(bundle, offset + 7)  # the file changed since: its early hashes say nothing
    calls = _count_own_hashing(monkeypatch)
    with pytest.raises(BundleVerificationError) as exc:
        verify_bundle(bundle, trust=UNSIGNED_OK)
    assert digest in exc.value.message and "mismatch" in exc.value.message
    assert calls  # verify hashed the blobs itself


def test_no_early_hash_for_a_path_that_is_not_a_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "x.tar"
    junk.write_bytes(b"not a tar" * 100)
    earlyhash.start(["bundle", "verify", str(junk)])
    assert earlyhash._jobs == {}
    earlyhash.start(["bundle", "verify", str(tmp_path / "missing.tar")])
    assert earlyhash._jobs == {}


def test_the_index_is_given_again_only_for_the_files_indexed_while_unchanged(
    tmp_path: Path,
) -> None:
    """The early verify takes the tar headers earlyhash read before its fork, for the same
    files only, and only while they are the ones read (inode, size and times)."""
    bundle = _bundle(tmp_path)
    earlyhash.start(["bundle", "verify", str(bundle)])
    with tarfile.open(bundle) as tf:
        names = [(m.name, m.offset_data, m.size) for m in tf.getmembers()]
    every = earlyhash.index([str(bundle)])
    assert every is not None
    assert [(e.name, e.offset, e.size) for e in every] == names
    link = tmp_path / "link.tar"
    link.symlink_to(bundle)
    assert earlyhash.index([str(link)]) is every  # the same file by another name
    assert earlyhash.index([str(tmp_path / "store" / "other.tar")]) is None
    with earlyhash._lock:
        earlyhash._read_until(-1)  # the child is done with the file
    st = bundle.stat()
    os.utime(bundle, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # written since, as far as we know
    assert earlyhash.index([str(bundle)]) is None


def test_every_result_reaches_the_parent_however_they_are_batched(tmp_path: Path) -> None:
    datas = [os.urandom(i * 97) for i in range(60)]
    keys = []
    for i, data in enumerate(datas):
        (tmp_path / f"f{i}").write_bytes(data)
        keys.append(((str(tmp_path / f"f{i}"), 0, len(data)),))
    read_fd, write_fd = os.pipe()
    earlyhash._child(keys, write_fd)  # 60 lines: within the pipe's buffer
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        lines = pipe.read().decode().splitlines()
    got = {int(i): (hexd, int(n)) for i, hexd, n in (line.split(" ") for line in lines)}
    assert len(lines) == len(datas)
    assert got == {i: (hashlib.sha256(d).hexdigest(), len(d)) for i, d in enumerate(datas)}


def test_the_child_stops_hashing_when_the_parent_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hashed: list[Key] = []

    def slow(key: Key) -> tuple[str, int]:
        hashed.append(key)
        time.sleep(0.005)
        return "0" * 64, 1

    monkeypatch.setattr(earlyhash, "_hash", slow)
    keys = [((str(tmp_path / f"f{i}"), 0, 1),) for i in range(400)]
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the parent is gone: a write fails (EPIPE)
    earlyhash._child(keys, write_fd)
    os.close(write_fd)
    assert len(hashed) < 50  # 400 took a second; the first write failed at about 20 ms
    assert "Exception" not in capsys.readouterr().err


def test_nothing_heavy_is_imported_before_the_fork(tmp_path: Path) -> None:
    """What `start` imports delays the hashing by its import time: no re, json, pathlib,
    typing, threading or contextlib before the fork."""
    bundle = _bundle(tmp_path)
    code = (
        "import sys\n"
        "from airlock import earlyhash\n"
        f"earlyhash.start(['bundle', 'verify', {str(bundle)!r}])\n"
        "print('forked' if earlyhash._state else 'no head start', *sorted(sys.modules))\n"
        "earlyhash.stop()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out[0] == "forked"
    heavy = {"re", "json", "pathlib", "typing", "threading", "contextlib", "dataclasses", "enum"}
    assert heavy.isdisjoint(out)
