"""write_bundle: deterministic bytes, tar layout, split volumes, refusals, atomicity."""

from __future__ import annotations

import errno
import json
import os
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle import writer
from airlock.bundle.layout import AIRLOCK_JSON, INDEX_JSON, OCI_LAYOUT, SIGNATURE, blob_member
from airlock.bundle.manifest import parse_manifest
from airlock.bundle.signing import generate_keypair
from airlock.bundle.volumes import load_parts
from airlock.bundle.writer import Arrivals, BundleContent, write_bundle
from airlock.errors import AirlockError, DigestMismatch, RegistryError, UsageError
from airlock.oci.digest import sha256_digest
from airlock.oci.media import ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, ANNOTATION_TITLE
from airlock_lab.bundle_testing import put_file, sample_content

MiB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


@pytest.fixture
def content(store: BlobStore) -> BundleContent:
    return sample_content(store, big_file_size=200_000)


def test_same_content_gives_the_same_bytes(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    priv, _ = generate_keypair(tmp_path / "key")
    a = write_bundle(content, blobs=store, out=tmp_path / "a.airlock.tar", sign_key=priv)
    # a second store filled independently, content listed in another order
    store2 = BlobStore(tmp_path / "store2")
    content2 = sample_content(store2, big_file_size=200_000)
    content2 = BundleContent(
        **{
            **content2.__dict__,
            "images": list(reversed(content2.images)),
            "files": list(reversed(content2.files)),
        }
    )
    b = write_bundle(content2, blobs=store2, out=tmp_path / "b.airlock.tar", sign_key=priv)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == b.sha256 == sha256_digest(a.path.read_bytes())
    assert a.size == a.path.stat().st_size and a.size % tarfile.RECORDSIZE == 0


def test_tar_layout(tmp_path: Path, store: BlobStore, content: BundleContent) -> None:
    priv, _ = generate_keypair(tmp_path / "key")
    result = write_bundle(content, blobs=store, out=tmp_path, sign_key=priv)
    assert result.path == tmp_path / "lab.airlock.tar"
    with tarfile.open(result.path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[:6] == [
            AIRLOCK_JSON,
            SIGNATURE,
            OCI_LAYOUT,
            INDEX_JSON,
            "blobs",
            "blobs/sha256",
        ]
        blob_names = names[6:]
        assert blob_names == sorted(blob_names) and len(blob_names) == len(set(blob_names))
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
            assert m.mode == (0o755 if m.isdir() else 0o644)
            assert m.isdir() or m.isreg()
        manifest = parse_manifest(tar.extractfile(AIRLOCK_JSON).read())  # type: ignore[union-attr]
        index_bytes = tar.extractfile(INDEX_JSON).read()  # type: ignore[union-attr]
        for name in blob_names:
            data = tar.extractfile(name).read()  # type: ignore[union-attr]
            assert "sha256:" + name.rsplit("/", 1)[1] == sha256_digest(data)
    assert sha256_digest(index_bytes) == manifest.index.digest
    assert len(blob_names) == result.blob_count == len(manifest.blobs)
    assert result.unique_blob_bytes == sum(b.size for b in manifest.blobs)
    # the shared base layer is carried once though two images use it
    all_image_blobs = [d for i in content.images for d in (b.digest for b in i.blobs)]
    assert len(all_image_blobs) > len(set(all_image_blobs))
    assert set(all_image_blobs) <= {b.digest for b in manifest.blobs}

    index = json.loads(index_bytes)
    by_ref = {d["annotations"].get(ANNOTATION_REF_NAME, ""): d for d in index["manifests"]}
    pause = by_ref["registry.k8s.io/pause:3.9"]
    assert pause["annotations"][ANNOTATION_CONTAINERD_NAME] == "registry.k8s.io/pause:3.9"
    assert pause["mediaType"] == "application/vnd.oci.image.index.v1+json"
    files_desc = by_ref[""]  # no reference name: no tool takes the files for an image
    assert files_desc["annotations"] == {
        "io.airlock.bundle.name": "lab",
        "io.airlock.bundle.sequence": "1",
    }
    assert files_desc["digest"] == manifest.files_manifest
    fm = json.loads(store.read(manifest.files_manifest))
    assert fm["artifactType"] == "application/vnd.airlock.files.v1"
    assert fm["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    titles = [layer["annotations"][ANNOTATION_TITLE] for layer in fm["layers"]]
    assert set(titles) == {f.name for f in content.files} | {"sbom.cdx.json"}
    sbom_layer = next(
        x for x in fm["layers"] if x["annotations"][ANNOTATION_TITLE] == "sbom.cdx.json"
    )
    assert sbom_layer["digest"] == manifest.sbom
    kubeadm = next(f for f in manifest.files if f.name == "kubeadm")
    assert kubeadm.checksum is not None and kubeadm.checksum.source.endswith(".sha256")
    blob = manifest.blob_map()[kubeadm.digest]
    assert blob.role == "file" and blob.source == kubeadm.url and blob.checksum == kubeadm.checksum


def test_split_reassembles_to_the_single_tar(tmp_path: Path, store: BlobStore) -> None:
    content = sample_content(store, big_file_size=3 * MiB)
    single = write_bundle(content, blobs=store, out=tmp_path / "one" / "lab.airlock.tar")
    split = write_bundle(content, blobs=store, out=tmp_path / "many" / "lab.airlock.tar", split=MiB)
    assert split.path.name == "lab.airlock.parts.json"
    assert len(split.volumes) == 4
    assert [v.name for v in split.volumes] == [f"lab.airlock.tar.{i:03d}" for i in range(4)]
    assert not (tmp_path / "many" / "lab.airlock.tar").exists()
    joined = b"".join(v.read_bytes() for v in split.volumes)
    assert joined == single.path.read_bytes()
    assert all(v.stat().st_size == MiB for v in split.volumes[:-1])
    parts = load_parts(split.path)
    assert parts.sha256 == sha256_digest(joined).split(":")[1]
    assert [v.size for v in parts.volumes] == [v.stat().st_size for v in split.volumes]
    assert parts.volumes[1].sha256 == sha256_digest(split.volumes[1].read_bytes()).split(":")[1]


def test_split_removes_stale_volumes(tmp_path: Path, store: BlobStore) -> None:
    content = sample_content(store, big_file_size=2 * MiB)
    stale = tmp_path / "lab.airlock.tar.007"
    (tmp_path / "lab.airlock.tar.003").write_bytes(b"old")
    result = write_bundle(content, blobs=store, out=tmp_path, split=MiB)
    assert len(result.volumes) == 3
    assert not (tmp_path / "lab.airlock.tar.003").exists()
    assert not stale.exists()


def test_split_below_one_mib_is_refused(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    with pytest.raises(UsageError, match="at least 1 MiB"):
        write_bundle(content, blobs=store, out=tmp_path, split=MiB - 1)
    assert list(tmp_path.glob("lab*")) == []


def test_corrupt_cache_blob_is_refused_and_nothing_is_left(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    kubeadm = next(f for f in content.files if f.name == "kubeadm")
    path = store.path(kubeadm.digest)
    data = bytearray(path.read_bytes())
    data[1000] ^= 1
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DigestMismatch, match=kubeadm.digest):
        write_bundle(content, blobs=store, out=out)
    assert list(out.iterdir()) == []


def test_a_full_disk_mid_stream_is_named_and_leaves_nothing(
    tmp_path: Path, store: BlobStore, content: BundleContent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream is written on threads of their own: a write failing there (ENOSPC after
    100 KB) reaches the caller as the bundle's error, and no temp file or half bundle stays."""
    put = writer._Sink.put

    def filling(self: writer._Sink, data: bytes | memoryview) -> None:
        if self.size > 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        put(self, data)

    monkeypatch.setattr(writer._Sink, "put", filling)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AirlockError, match="cannot write bundle .*nothing was written") as err:
        write_bundle(content, blobs=store, out=out)
    assert "free space" in (err.value.hint or "")
    assert list(out.iterdir()) == []
    monkeypatch.setattr(writer._Sink, "put", put)  # space again: the same command works
    done = write_bundle(content, blobs=store, out=out)
    assert done.sha256 == sha256_digest(done.path.read_bytes())


def test_missing_blob_is_named(tmp_path: Path, store: BlobStore, content: BundleContent) -> None:
    layer = content.images[1].blobs[-1]
    store.path(layer.digest).unlink()
    with pytest.raises(AirlockError, match=layer.digest):
        write_bundle(content, blobs=store, out=tmp_path / "x.airlock.tar")
    assert not (tmp_path / "x.airlock.tar").exists()


def test_bad_content_is_refused(tmp_path: Path, store: BlobStore, content: BundleContent) -> None:
    dup = put_file(store, "kubeadm", b"other")
    with pytest.raises(UsageError, match="two files"):
        write_bundle(
            BundleContent(**{**content.__dict__, "files": [*content.files, dup]}),
            blobs=store,
            out=tmp_path,
        )
    bad = put_file(store, "x", b"x")
    bad = type(bad)(**{**bad.__dict__, "name": "../x"})
    with pytest.raises(UsageError, match="plain file name"):
        write_bundle(
            BundleContent(**{**content.__dict__, "files": [bad]}), blobs=store, out=tmp_path
        )
    with pytest.raises(UsageError, match="bundle name"):
        write_bundle(
            BundleContent(**{**content.__dict__, "name": "a b"}), blobs=store, out=tmp_path
        )


def test_omitted_blobs_are_not_carried(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    base_layer = content.images[1].blobs[2].digest  # busybox's base layer, shared with pause
    result = write_bundle(
        BundleContent(
            **{**content.__dict__, "omitted": [base_layer], "base": "sha256:" + "a" * 64}
        ),
        blobs=store,
        out=tmp_path,
    )
    with tarfile.open(result.path) as tar:
        names = tar.getnames()
        manifest = parse_manifest(tar.extractfile(AIRLOCK_JSON).read())  # type: ignore[union-attr]
    assert blob_member(base_layer) not in names
    assert manifest.omitted == (base_layer,)
    assert manifest.base is not None and manifest.base.inventory == "sha256:" + "a" * 64
    busybox = next(i for i in manifest.images if i.reference.startswith("docker.io"))
    assert base_layer in busybox.blobs  # the image still records it needs that layer


def test_tar_is_streamed_not_buffered(tmp_path: Path, store: BlobStore) -> None:
    """A 16 MiB blob goes through in 1 MiB chunks: peak memory stays far below its size."""
    content = sample_content(store, big_file_size=16 * MiB)
    tracemalloc.start()
    try:
        result = write_bundle(content, blobs=store, out=tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size > 16 * MiB
    assert peak < 4 * MiB


def test_a_blob_still_arriving_is_waited_for(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    """bundle create writes while layers download: the writer waits for a blob it reaches
    before it is in the store, and the bundle is the one a write after the download gives."""
    whole = write_bundle(content, blobs=store, out=tmp_path / "whole.airlock.tar")
    layer = content.images[1].blobs[-1]
    data = store.read(layer.digest)
    store.path(layer.digest).unlink()
    arrivals = Arrivals([layer.digest])

    def download() -> None:
        time.sleep(0.3)
        store.put_bytes(data, layer.digest)
        arrivals.arrived(layer.digest)

    thread = threading.Thread(target=download)
    thread.start()
    late = write_bundle(content, blobs=store, out=tmp_path / "late.airlock.tar", arrivals=arrivals)
    thread.join()
    assert late.path.read_bytes() == whole.path.read_bytes()


def test_a_failed_download_stops_the_writer_and_leaves_nothing(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    layer = content.images[1].blobs[-1]
    store.path(layer.digest).unlink()
    arrivals = Arrivals([layer.digest])
    arrivals.stop(RegistryError("not found: the registry lost it"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AirlockError, match=f"{layer.digest} did not arrive: not found"):
        write_bundle(content, blobs=store, out=out, arrivals=arrivals)
    assert list(out.iterdir()) == []


def test_only_blobs_hashed_in_this_run_skip_the_second_hash(
    tmp_path: Path, store: BlobStore, content: BundleContent
) -> None:
    """bundle create names the layers it downloaded (hashed as they arrived) as `hashed`;
    any other blob taken from the cache is hashed again, so a corrupt one is still refused."""
    kubeadm = next(f for f in content.files if f.name == "kubeadm")
    layer = content.images[1].blobs[-1]
    path = store.path(kubeadm.digest)
    data = bytearray(path.read_bytes())
    data[1000] ^= 1
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DigestMismatch, match=kubeadm.digest):
        write_bundle(content, blobs=store, out=out, hashed={layer.digest})
    assert list(out.iterdir()) == []
    path.write_bytes(bytes(data[:1000]) + bytes([data[1000] ^ 1]) + bytes(data[1001:]))
    whole = write_bundle(content, blobs=store, out=out, hashed={layer.digest})
    assert whole.sha256 == write_bundle(content, blobs=store, out=tmp_path / "b").sha256
