"""zstd for the files artifact (bundle format 1.1): which files are stored compressed, that
image blobs never are, that the bundle stays deterministic and verifiable, and that every
reader gets the file's own bytes back (checked against its own digest)."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.compression import (
    ANNOTATION_CONTENT_DIGEST,
    CompressAhead,
    Compression,
    compress_files,
    open_content,
    parse_compression,
)
from airlock.bundle.handle import Bundle
from airlock.bundle.layout import AIRLOCK_JSON, FORMAT_VERSION, blob_member
from airlock.bundle.manifest import parse_manifest
from airlock.bundle.reader import open_bundle
from airlock.bundle.verify import BundleVerificationError, verify_bundle
from airlock.bundle.writer import BundleContent, write_bundle
from airlock.content import FileArtifact
from airlock.errors import UsageError, VerificationError
from airlock.node.install import BundleSource, StoreSource, store_source
from airlock.oci.digest import sha256_digest
from airlock.oci.layout import canonical_json
from airlock.oci.media import ANNOTATION_TITLE
from airlock.trust import TrustPolicy
from airlock.verbs.load import LoadOptions, load_bundle
from airlock_lab.bundle_testing import put_file, sample_content

UNSIGNED_OK = TrustPolicy((), allow_unsigned=True)

# Like a Go binary: long runs of structure with some noise (zstd gets ~5:1 on this).
_BINARY = b"".join(
    b"\x7fELF" + i.to_bytes(4, "little") * 8 + bytes(random.Random(i).randbytes(8)) * 2
    for i in range(6000)
)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def _content(store: BlobStore, compression: Compression = Compression()) -> BundleContent:
    base = sample_content(store, big_file_size=200_000)
    kubelet = put_file(store, "kubelet", _BINARY, url="https://dl.k8s.io/kubelet")
    wheel = put_file(store, "airlock-0-py3-none-any.whl", _BINARY + b"w", kind="wheel")
    package = put_file(store, "socat_1.deb", _BINARY + b"p", kind="package")
    files = compress_files([*base.files, kubelet, package], store, compression)
    return dataclasses.replace(base, files=files, wheelhouse=[wheel])


def test_parse_compression() -> None:
    assert parse_compression("zstd") == Compression("zstd", 3)
    assert parse_compression("ZSTD:19") == Compression("zstd", 19)
    assert parse_compression("none").codec is None
    for bad in ("gzip", "zstd:0", "zstd:23", "zstd:x", "none:3"):
        with pytest.raises(UsageError, match="--compress"):
            parse_compression(bad)


def test_only_files_worth_it_are_compressed(store: BlobStore) -> None:
    content = _content(store)
    by_name = {f.name: f for f in (*content.files, *content.wheelhouse)}
    kubelet = by_name["kubelet"]
    assert kubelet.stored is not None and kubelet.stored.compression == "zstd"
    assert kubelet.stored.size * 3 < kubelet.size
    assert by_name["kubeadm"].stored is None  # random bytes do not shrink
    assert by_name["kube-flannel.yml"].stored is None  # too small to bother
    assert by_name["podinfo-6.4.0.tgz"].stored is None  # already gzip
    # the stdlib-only bootstrap reads these: never compressed
    assert by_name["airlock-0-py3-none-any.whl"].stored is None
    assert by_name["socat_1.deb"].stored is None
    raw = store.path(kubelet.stored.digest).open("rb")
    with open_content(raw, "zstd", size=kubelet.size, what="kubelet") as fh:
        assert fh.read() == _BINARY
    assert raw.closed


def test_compressing_is_paid_once(store: BlobStore) -> None:
    kubelet = put_file(store, "kubelet", _BINARY)
    (first,) = compress_files([kubelet], store, Compression())
    assert first.stored is not None
    store.path(first.stored.digest).unlink()  # the memo alone is not trusted
    (again,) = compress_files([kubelet], store, Compression())
    assert again.stored == first.stored and store.has(first.stored.digest)
    memo = list((store.root / "compressed").rglob("*"))
    assert any(p.is_file() for p in memo)
    (raw,) = compress_files([kubelet], store, Compression(codec=None))
    assert raw.stored is None


def test_bundle_with_compressed_files(tmp_path: Path, store: BlobStore) -> None:
    content = _content(store)
    written = write_bundle(content, blobs=store, out=tmp_path / "a.airlock.tar")
    kubelet = next(f for f in content.files if f.name == "kubelet")
    assert kubelet.stored is not None
    with open_bundle(written.path) as reader:
        m = reader.manifest
        assert m.format_version == "1.1"
        entry = next(f for f in m.files if f.name == "kubelet")
        assert entry.digest == kubelet.digest and entry.size == len(_BINARY)
        assert entry.stored is not None and entry.stored.digest == kubelet.stored.digest
        assert reader.has_blob(kubelet.stored.digest) and not reader.has_blob(kubelet.digest)
        blob = m.blob_map()[kubelet.stored.digest]
        assert blob.media_type.endswith("+zstd") and blob.role == "file"
        assert blob.checksum is None  # the upstream checksum is the file's, on its entry
        assert entry.checksum is not None
        # image blobs are carried exactly as upstream made them
        for image in content.images:
            for b in image.blobs:
                assert reader.has_blob(b.digest) and m.blob_map()[b.digest].size == b.size
        files_manifest = json.loads(reader.read_member(blob_member(m.files_manifest)))
        layer = next(
            x for x in files_manifest["layers"] if x["annotations"][ANNOTATION_TITLE] == "kubelet"
        )
        assert layer["digest"] == kubelet.stored.digest
        assert layer["mediaType"].endswith("+zstd")
        assert layer["annotations"][ANNOTATION_CONTENT_DIGEST] == kubelet.digest
    with (
        Bundle.open(written.path, trust=UNSIGNED_OK) as bundle,
        BundleSource(bundle).open(kubelet.digest) as fh,
    ):
        assert fh.read() == _BINARY
    report = verify_bundle(written.path, trust=UNSIGNED_OK)
    assert report.ok
    # deterministic: the same content from another cache gives the same bytes
    store2 = BlobStore(tmp_path / "store2")
    again = write_bundle(_content(store2), blobs=store2, out=tmp_path / "b.airlock.tar")
    assert again.path.read_bytes() == written.path.read_bytes()


def test_a_bundle_without_compression_keeps_the_1_0_bytes(tmp_path: Path, store: BlobStore) -> None:
    content = _content(store, Compression(codec=None))
    written = write_bundle(content, blobs=store, out=tmp_path / "a.airlock.tar")
    with tarfile.open(written.path) as tar:
        fh = tar.extractfile(AIRLOCK_JSON)
        assert fh is not None
        doc = json.loads(fh.read())
    assert "formatVersion" not in doc and all("stored" not in f for f in doc["files"])


def test_the_store_gives_the_file_back(tmp_path: Path, store: BlobStore) -> None:
    written = write_bundle(_content(store), blobs=store, out=tmp_path / "a.airlock.tar")
    target = tmp_path / "target"
    load_bundle(written.path, store_dir=target, options=LoadOptions(allow_unsigned=True))
    source = store_source(target)
    kubelet = next(f for f in source.files() if f.name == "kubelet")
    assert kubelet.digest == sha256_digest(_BINARY) and kubelet.size == len(_BINARY)
    with source.open(kubelet.digest) as fh:
        assert fh.read() == _BINARY
    path = source.materialize(kubelet, tmp_path / "unpacked")
    assert path.read_bytes() == _BINARY
    flannel = next(f for f in source.files() if f.name == "kube-flannel.yml")
    assert source.materialize(flannel, tmp_path / "unpacked") == target / (
        "blobs/sha256/" + flannel.digest.split(":")[1]
    )


def _rewrite(content: BundleContent, store: BlobStore, kubelet: FileArtifact) -> BundleContent:
    files = [kubelet if f.name == "kubelet" else f for f in content.files]
    return dataclasses.replace(content, files=files)


def test_a_stored_blob_that_is_not_the_file_is_named(tmp_path: Path, store: BlobStore) -> None:
    """airlock.json signs both digests. verify checks the stored bytes (the blob) against the
    stored digest and says the content is checked at install; node install refuses a stored
    blob that decompresses to other bytes, naming the file."""
    from backports import zstd

    content = _content(store)
    kubelet = next(f for f in content.files if f.name == "kubelet")
    assert kubelet.stored is not None
    other = zstd.compress(_BINARY[:-1] + b"X", level=3)
    digest = store.put_bytes(other)
    forged = dataclasses.replace(
        kubelet, stored=dataclasses.replace(kubelet.stored, digest=digest, size=len(other))
    )
    written = write_bundle(
        _rewrite(content, store, forged), blobs=store, out=tmp_path / "a.airlock.tar"
    )
    report = verify_bundle(written.path, trust=UNSIGNED_OK)
    assert any("compressed files' content" in n for n in report.not_checked)
    with Bundle.open(written.path, trust=UNSIGNED_OK, hash_content=False) as bundle:
        from airlock.node.install import _verify_stream

        entry = next(f for f in bundle.manifest.files if f.name == "kubelet")
        with pytest.raises(VerificationError, match="kubelet"):
            _verify_stream(BundleSource(bundle), entry)


@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_a_damaged_byte_of_a_compressed_file_is_named(
    tmp_path: Path, store: BlobStore, where: float
) -> None:
    """verify hashes a compressed file's stored bytes (never decompresses them): one flipped
    byte anywhere in them fails verify, naming the blob and the file it stores."""
    written = write_bundle(_content(store), blobs=store, out=tmp_path / "a.airlock.tar")
    kubelet = next(f for f in open_bundle(written.path).manifest.files if f.name == "kubelet")
    assert kubelet.stored is not None
    member = open_bundle(written.path).member(blob_member(kubelet.stored.digest))
    at = member.offset + (member.size - 1 if where == -1 else int(member.size * where))
    with written.path.open("r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(BundleVerificationError) as err:
        verify_bundle(written.path, trust=UNSIGNED_OK)
    assert kubelet.stored.digest in err.value.message and "kubelet" in err.value.message


def test_a_bomb_stops_at_the_recorded_size() -> None:
    from backports import zstd

    bomb = zstd.compress(b"\0" * (4 << 20))
    bomb_reader = open_content(io.BytesIO(bomb), "zstd", size=1000, what="kubelet")
    with pytest.raises(VerificationError, match="more bytes than airlock.json records"):
        bomb_reader.read()
    junk = open_content(io.BytesIO(b"not zstd at all"), "zstd", size=10, what="x")
    with pytest.raises(VerificationError, match="does not decompress"):
        junk.read()


def test_a_newer_format_is_refused_by_name() -> None:
    doc = {"schema": "airlock.bundle/v1", "formatVersion": "1.9", "something": "new"}
    v = FORMAT_VERSION.replace(".", r"\.")
    with pytest.raises(VerificationError, match=rf"format 1\.9; this airlock reads up to {v}"):
        parse_manifest(canonical_json(doc))


def test_store_source_without_compression_is_unchanged(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "s")
    f = put_file(store, "x", b"data")
    src = StoreSource(store, [])
    with src.open(f.digest) as fh:
        assert fh.read() == b"data"


def test_deltas_know_compressed_files_by_their_own_digest(tmp_path: Path, store: BlobStore) -> None:
    """`plan --since` names files by the digest upstream publishes; the far side holds them
    compressed: an old bundle and an inventory both map one to the other."""
    from airlock.node.inventory import collect_inventory
    from airlock.verbs.delta import read_baseline, write_inventory

    content = _content(store)
    kubelet = next(f for f in content.files if f.name == "kubelet")
    assert kubelet.stored is not None
    written = write_bundle(content, blobs=store, out=tmp_path / "a.airlock.tar")
    old = read_baseline(written.path)
    assert kubelet.digest in old.contents and kubelet.digest not in old.blobs
    assert kubelet.stored.digest in old.blobs
    target = tmp_path / "target"
    load_bundle(written.path, store_dir=target, options=LoadOptions(allow_unsigned=True))
    inventory = collect_inventory(root=tmp_path / "root", store=target)
    assert inventory["store"]["compressedFiles"] == {kubelet.digest: kubelet.stored.digest}
    write_inventory(inventory, tmp_path / "inventory.json")
    assert read_baseline(tmp_path / "inventory.json").contents == {kubelet.digest}


def test_large_incompressible_file_is_probed_not_compressed_whole(tmp_path: Path) -> None:
    """A large file whose probes barely shrink (random, already gzip'd) stays raw; a large
    compressible one is stored compressed as before."""
    from airlock_lab.bundle_testing import put_file

    store = BlobStore(tmp_path / "store")
    rng = random.Random(5)
    noise = put_file(store, "noise.bin", rng.randbytes(9 << 20), kind="file")
    text = put_file(store, "text.bin", b"kubeadm config images list\n" * 400_000, kind="file")
    stored = {f.name: f.stored for f in compress_files([noise, text], store, Compression())}
    assert stored["noise.bin"] is None
    assert stored["text.bin"] is not None and stored["text.bin"].size < text.size // 10


def test_a_torn_cache_blob_is_named_not_compressed(tmp_path: Path) -> None:
    """The create cache is not fsync'd: the bytes compressed are checked against the digest."""
    from airlock.errors import DigestMismatch
    from airlock_lab.bundle_testing import put_file

    store = BlobStore(tmp_path / "store")
    text = put_file(store, "text.bin", b"kubeadm config images list\n" * 4000, kind="file")
    path = store.path(text.digest)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DigestMismatch, match=r"text\.bin"):
        compress_files([text], store, Compression())


def test_files_compressed_ahead_are_not_compressed_again(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bundle create compresses each file as it arrives; compress_files then only reads the
    remembered forms, and gives the same result as compressing them itself."""
    import airlock.bundle.compression as compression

    kubelet = put_file(store, "kubelet", _BINARY)
    kubectl = put_file(store, "kubectl", _BINARY + b"ctl")
    wheel = put_file(store, "airlock-0-py3-none-any.whl", _BINARY + b"w", kind="wheel")
    calls: list[str] = []
    real = compression._compress

    def counted(cache: BlobStore, f: FileArtifact, level: int, *, fresh: bool) -> object:
        calls.append(f.name)
        return real(cache, f, level, fresh=fresh)

    monkeypatch.setattr(compression, "_compress", counted)
    ahead = CompressAhead(store, Compression())
    try:
        for f in (kubelet, kubectl, wheel, kubelet):  # a wheel stays raw; kubelet once
            ahead.offer(f, fresh=False)
        ahead.wait()
    finally:
        ahead.close()
    assert sorted(calls) == ["kubectl", "kubelet"]
    files = compress_files([kubelet, kubectl, wheel], store, Compression())
    assert sorted(calls) == ["kubectl", "kubelet"]  # nothing compressed twice
    monkeypatch.setattr(compression, "_compress", real)
    fresh_store = BlobStore(store.root.parent / "fresh")
    again = [put_file(fresh_store, f.name, store.read(f.digest), kind=f.kind) for f in files]
    assert [f.stored for f in compress_files(again, fresh_store, Compression())] == [
        f.stored for f in files
    ]
    assert files[2].stored is None


def test_a_failure_ahead_is_met_again_by_compress_files(tmp_path: Path) -> None:
    """A torn cache blob fails the compression ahead silently; compress_files names it."""
    from airlock.errors import DigestMismatch

    store = BlobStore(tmp_path / "store")
    text = put_file(store, "text.bin", b"kubeadm config images list\n" * 4000, kind="file")
    path = store.path(text.digest)
    path.write_bytes(path.read_bytes()[:-100])
    ahead = CompressAhead(store, Compression())
    ahead.offer(text, fresh=False)
    ahead.wait()  # no error here: only a head start
    ahead.close()
    with pytest.raises(DigestMismatch, match=r"text\.bin"):
        compress_files([text], store, Compression())


def test_nothing_is_compressed_ahead_without_compression(store: BlobStore) -> None:
    kubelet = put_file(store, "kubelet", _BINARY)
    ahead = CompressAhead(store, Compression(codec=None))
    ahead.offer(kubelet, fresh=True)
    ahead.wait()
    ahead.close()
    assert not (store.root / "compressed").exists()
