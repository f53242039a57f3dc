"""write_bundle leaves outputs that already hold the bundle's bytes as they are, and never serves
a changed blob from an old output (airlock.bundle.reuse)."""

from __future__ import annotations

import os
import random
import tarfile
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.layout import blob_member
from airlock.bundle.reuse import record_path
from airlock.bundle.signing import generate_keypair
from airlock.bundle.verify import verify_bundle
from airlock.bundle.writer import OUTPUT_RECORDS, BundleContent, write_bundle
from airlock.oci.digest import sha256_digest
from airlock.trust import TrustPolicy
from airlock_lab.bundle_testing import put_file, sample_content

MiB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


@pytest.fixture
def content(store: BlobStore) -> BundleContent:
    return sample_content(store, big_file_size=3 * MiB)


def _with_kubeadm(store: BlobStore, content: BundleContent, data: bytes) -> BundleContent:
    """The same bundle with the kubeadm file's bytes replaced (a changed upstream blob)."""
    old = next(f for f in content.files if f.name == "kubeadm")
    new = put_file(store, "kubeadm", data, url=old.url, version=old.version, platform=old.platform)
    files = [new if f.name == "kubeadm" else f for f in content.files]
    return BundleContent(**{**content.__dict__, "files": files})


def _inode(path: Path) -> int:
    return path.stat().st_ino


def _member(bundle: Path, digest: str) -> bytes:
    with tarfile.open(bundle) as tar:
        fh = tar.extractfile(blob_member(digest))
        assert fh is not None
        return fh.read()


def test_unchanged_bundle_is_left_as_it_is(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    priv, pub = generate_keypair(tmp_path / "key")
    first = write_bundle(content, blobs=store, out=tmp_path / "out", sign_key=priv)
    ino, mtime = _inode(first.path), first.path.stat().st_mtime_ns
    second = write_bundle(content, blobs=store, out=tmp_path / "out", sign_key=priv)
    assert (second.path, second.size, second.sha256) == (first.path, first.size, first.sha256)
    assert (_inode(second.path), second.path.stat().st_mtime_ns) == (ino, mtime)
    assert second.sha256 == sha256_digest(second.path.read_bytes())
    assert verify_bundle(second.path, trust=TrustPolicy((pub,))).ok


def test_changed_blob_is_written_not_served_from_the_old_bundle(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    priv, pub = generate_keypair(tmp_path / "key")
    first = write_bundle(content, blobs=store, out=tmp_path / "out", sign_key=priv)
    old_kubeadm = next(f for f in content.files if f.name == "kubeadm")
    changed = _with_kubeadm(store, content, os.urandom(3 * MiB))
    new_kubeadm = next(f for f in changed.files if f.name == "kubeadm")
    second = write_bundle(changed, blobs=store, out=tmp_path / "out", sign_key=priv)
    assert second.path == first.path and second.sha256 != first.sha256
    assert second.sha256 == sha256_digest(second.path.read_bytes())
    assert _member(second.path, new_kubeadm.digest) == store.read(new_kubeadm.digest)
    with tarfile.open(second.path) as tar:
        assert blob_member(old_kubeadm.digest) not in tar.getnames()
    assert verify_bundle(second.path, trust=TrustPolicy((pub,))).ok


def test_output_edited_in_place_is_rewritten(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    """A byte changed behind airlock's back (times set back too) is not vouched for by the
    record: the comparison finds it and the bundle is written again."""
    priv, pub = generate_keypair(tmp_path / "key")
    first = write_bundle(content, blobs=store, out=tmp_path / "out", sign_key=priv)
    st = first.path.stat()
    with first.path.open("r+b") as fh:
        fh.seek(first.size // 2)
        byte = fh.read(1)
        fh.seek(first.size // 2)
        fh.write(bytes([byte[0] ^ 1]))
    os.utime(first.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = write_bundle(content, blobs=store, out=tmp_path / "out", sign_key=priv)
    assert second.sha256 == first.sha256 == sha256_digest(second.path.read_bytes())
    assert verify_bundle(second.path, trust=TrustPolicy((pub,))).ok


def test_without_a_record_equal_bytes_are_kept_by_comparison(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    first = write_bundle(content, blobs=store, out=tmp_path / "out")
    record = record_path(store.root / OUTPUT_RECORDS, first.path)
    assert record.is_file()
    record.unlink()
    ino = _inode(first.path)
    second = write_bundle(content, blobs=store, out=tmp_path / "out")
    assert _inode(second.path) == ino and second.sha256 == first.sha256
    assert record.is_file()


def test_only_changed_volumes_are_rewritten(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    """A small file whose bytes change but not its size shifts only the members between its old
    and new place (blobs are sorted by digest): the volumes past both keep their inode, the one
    holding airlock.json is new, and the result is the bundle a fresh write gives."""
    priv, pub = generate_keypair(tmp_path / "key")
    rng = random.Random(20)  # seeded: the digests, so the sort order, are the same every run
    extra = [put_file(store, f"extra-{i}.bin", rng.randbytes(3 * MiB // 2)) for i in range(4)]
    content = BundleContent(**{**content.__dict__, "files": [*content.files, *extra]})
    out = tmp_path / "out"
    first = write_bundle(content, blobs=store, out=out, sign_key=priv, split=MiB)
    assert len(first.volumes) >= 8
    before = {v.name: _inode(v) for v in first.volumes}
    old = next(f for f in content.files if f.name == "kube-flannel.yml")
    data = store.read(old.digest).replace(b"Namespace", b"NameSpace")
    new = put_file(store, old.name, data, kind=old.kind, url=old.url, version=old.version)
    files = [new if f.name == old.name else f for f in content.files]
    changed = BundleContent(**{**content.__dict__, "files": files})
    second = write_bundle(changed, blobs=store, out=out, sign_key=priv, split=MiB)
    after = {v.name: _inode(v) for v in second.volumes}
    kept = [name for name in after if before.get(name) == after[name]]
    rewritten = [name for name in after if before.get(name) != after[name]]
    assert kept and rewritten
    assert second.volumes[0].name in rewritten  # airlock.json changed
    whole = b"".join(v.read_bytes() for v in second.volumes)
    assert sha256_digest(whole) == second.sha256 != first.sha256
    fresh = write_bundle(changed, blobs=store, out=tmp_path / "fresh", sign_key=priv, split=MiB)
    assert whole == b"".join(v.read_bytes() for v in fresh.volumes)
    assert data in whole
    assert verify_bundle(second.path, trust=TrustPolicy((pub,))).ok


def test_kept_only_for_the_content_key_it_was_made_from(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    """`bundle create`'s shortcut (no airlock.json, SBOM or signature made again): taken for
    the same content, key and options only, and never once the output file was replaced; a
    changed blob (a moved tag) or another key, split or expiry goes to the writer."""
    from dataclasses import replace

    from airlock.verbs.create import CreateOptions, _kept, _remember

    priv, _ = generate_keypair(tmp_path / "key")
    other, _ = generate_keypair(tmp_path / "other")
    opts = CreateOptions(output=tmp_path / "out", sign_key=priv)
    written = write_bundle(content, blobs=store, out=tmp_path / "out", sign_key=priv)
    assert _kept(content, store, opts) is None  # no memo yet: the writer decides
    _remember(content, store, opts, written)
    kept = _kept(content, store, opts)
    assert kept is not None
    assert (kept.path, kept.size, kept.sha256, kept.signed) == (
        written.path,
        written.size,
        written.sha256,
        True,
    )
    assert kept.manifest == written.manifest
    changed = _with_kubeadm(store, content, os.urandom(MiB))
    assert _kept(changed, store, opts) is None
    assert _kept(content, store, replace(opts, sign_key=other)) is None
    assert _kept(content, store, replace(opts, split=4 * MiB)) is None
    assert _kept(replace(content, expires="2099-12-31"), store, opts) is None
    assert _kept(content, store, replace(opts, recovery=10.0)) is None
    # the file replaced by another with the same bytes: the record no longer vouches for it
    data = written.path.read_bytes()
    written.path.unlink()
    written.path.write_bytes(data)
    assert _kept(content, store, opts) is None
