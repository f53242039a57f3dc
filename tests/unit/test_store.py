"""The Store: its operations in random order against a model (hypothesis), read-only opening,
and the inter-process lock (re-entrant in a thread, exclusive across threads and processes)."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from airlock.errors import UsageError, VerificationError
from airlock.locking import FileLock, LockTimeout
from airlock.oci.digest import sha256_digest
from airlock.oci.layout import image_descriptor
from airlock.oci.media import OCI_MANIFEST
from airlock.store import BundleCommit, Store

_refs = st.sampled_from([f"example.com/app{i}:{t}" for i in range(3) for t in ("1", "2")])
_payloads = st.binary(min_size=1, max_size=64)
_channels = st.sampled_from(["stable", "edge"])


class StoreMachine(RuleBasedStateMachine):
    """Blobs, index entries, bundle commits (with the rollback guard) and reopenings, in any
    order; after each step the store on disk equals the model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="airlock-store-"))
        self.store = Store.open(self.dir / "store", write=True)
        self.blobs: set[str] = set()
        self.index: dict[str, str] = {}  # ref -> digest
        self.channels: dict[str, tuple[int, str]] = {}  # channel -> (sequence, bundle digest)
        self.records: set[str] = set()

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(data=_payloads)
    def put_blob(self, data: bytes) -> None:
        self.blobs.add(self.store.put_bytes(data, sha256_digest(data)))

    @rule(ref=_refs, data=_payloads)
    def tag(self, ref: str, data: bytes) -> None:
        digest = self.store.put_bytes(data)
        self.blobs.add(digest)
        changed = self.store.merge_index([image_descriptor(ref, OCI_MANIFEST, digest, len(data))])
        assert changed == (self.index.get(ref) != digest)
        self.index[ref] = digest

    @rule(
        channel=_channels,
        sequence=st.integers(1, 4),
        refs=st.lists(_refs, max_size=2, unique=True),
        salt=st.integers(0, 1),
        downgrade=st.booleans(),
    )
    def commit_bundle(
        self, channel: str, sequence: int, refs: list[str], salt: int, downgrade: bool
    ) -> None:
        name = f"{channel}-b{salt}"
        manifest = json.dumps({"name": name, "sequence": sequence, "salt": salt}).encode()
        mdigest = sha256_digest(manifest)
        descs = []
        for ref in refs:
            body = f"{ref}@{sequence}".encode()
            digest = self.store.put_bytes(body)
            self.blobs.add(digest)
            descs.append(image_descriptor(ref, OCI_MANIFEST, digest, len(body)))
        commit = BundleCommit(
            name=name,
            channel=channel,
            sequence=sequence,
            manifest_bytes=manifest,
            manifest_digest=mdigest,
            index_manifests=descs,
            allow_downgrade=downgrade,
        )
        seen = self.channels.get(channel)
        refused = (
            not downgrade
            and seen is not None
            and (sequence < seen[0] or (sequence == seen[0] and mdigest != seen[1]))
        )
        if refused:
            with pytest.raises(VerificationError):
                self.store.commit_bundle(commit)
            return
        self.store.commit_bundle(commit)
        self.records.add(f"{name}.{sequence}.json")
        for d in descs:
            self.index[d["annotations"]["org.opencontainers.image.ref.name"]] = d["digest"]
        if seen is None or sequence >= seen[0]:  # a downgrade never lowers the mark
            self.channels[channel] = (sequence, mdigest)

    @rule()
    def reopen(self) -> None:
        self.store = Store.open(self.store.root, write=True)

    @rule(data=_payloads)
    def read_only_refuses_writes(self, data: bytes) -> None:
        ro = Store.open(self.store.root)
        with pytest.raises(UsageError, match="read-only"):
            ro.put_bytes(data)
        with pytest.raises(UsageError, match="read-only"):
            ro.merge_index([])

    @invariant()
    def matches_the_model(self) -> None:
        ro = Store.open(self.store.root)
        assert set(ro.digests()) == self.blobs
        assert {ref: d["digest"] for ref, d in ro.images().items()} == self.index
        got = {ch: (st.sequence, st.manifest_digest) for ch, st in ro.channels().items()}
        assert got == self.channels
        bundles = ro.meta_dir / "bundles"
        names = {p.name for p in bundles.iterdir()} if bundles.is_dir() else set()
        assert names == self.records
        if ro.layout.index_path.exists():
            index = json.loads(ro.layout.index_path.read_bytes())
            assert index["schemaVersion"] == 2
            refs = [
                d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]
            ]
            assert refs == sorted(refs)


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def test_newest_bundle_record(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", write=True)
    assert store.newest_bundle_record() is None
    for seq in (10, 9):
        manifest = json.dumps({"name": "lab", "sequence": seq}).encode()
        store.commit_bundle(
            BundleCommit(
                name="lab",
                channel="stable",
                sequence=seq,
                manifest_bytes=manifest,
                manifest_digest=sha256_digest(manifest),
                index_manifests=[],
                allow_downgrade=True,
            )
        )
    newest = store.newest_bundle_record()
    assert newest is not None and newest["sequence"] == 10


# --- the lock -------------------------------------------------------------------------------


def test_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "l")
    order: list[str] = []
    with lock, lock:  # re-entrant: no deadlock
        t = threading.Thread(
            target=lambda: (lock.__enter__(), order.append("other"), lock.__exit__())
        )
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(10)
    assert order == ["first", "other"]
    assert not lock.held


def _hold(path: str, seconds: float, ready: Any) -> None:
    with FileLock(Path(path)):
        ready.set()
        time.sleep(seconds)


def test_lock_excludes_another_process_and_times_out_with_a_hint(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path / "l"), 3.0, ready))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(LockTimeout) as exc, FileLock(tmp_path / "l", timeout=0.3):
            pass
        assert exc.value.hint is not None and "wait" in exc.value.hint
        started = time.monotonic()
        with FileLock(tmp_path / "l", timeout=30):  # taken once the holder lets go
            assert time.monotonic() - started > 0.5
    finally:
        proc.join(30)


def test_lock_of_a_killed_holder_is_free(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path / "l"), 60.0, ready))
    proc.start()
    assert ready.wait(30)
    proc.kill()  # SIGKILL
    proc.join(30)
    with FileLock(tmp_path / "l", timeout=5):
        pass


def _writer(root: str, worker: int, count: int) -> None:
    store = Store.open(Path(root), write=True)
    for i in range(count):
        body = f"{worker}-{i}".encode()
        digest = store.put_bytes(body)
        store.merge_index(
            [image_descriptor(f"example.com/w{worker}:{i}", OCI_MANIFEST, digest, len(body))]
        )
        manifest = json.dumps({"worker": worker, "sequence": i + 1}).encode()
        store.commit_bundle(
            BundleCommit(
                name=f"w{worker}",
                channel=f"w{worker}",
                sequence=i + 1,
                manifest_bytes=manifest,
                manifest_digest=sha256_digest(manifest),
                index_manifests=[],
                allow_downgrade=False,
            )
        )


def test_writers_in_several_processes_lose_no_tag_and_no_sequence(tmp_path: Path) -> None:
    """Four processes tagging and recording sequences in one store as fast as they can: every
    read-modify-write of index.json and of the sequence record holds the store's lock."""
    ctx = multiprocessing.get_context("spawn")
    workers, count = 4, 40
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path / "s"), w, count)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store.open(tmp_path / "s")
    want = {f"example.com/w{w}:{i}" for w in range(workers) for i in range(count)}
    assert set(store.images()) == want
    assert {ch: st.sequence for ch, st in store.channels().items()} == {
        f"w{w}": count for w in range(workers)
    }
