"""open_bundle: indexing in place, volumes, and hostile archives refused before use."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.layout import AIRLOCK_JSON, INDEX_JSON, OCI_LAYOUT, blob_member
from airlock.bundle.reader import bundle_paths, open_bundle
from airlock.bundle.writer import build_manifest, write_bundle
from airlock.errors import UsageError, VerificationError
from airlock.oci.layout import OCI_LAYOUT_CONTENT
from airlock_lab.bundle_testing import sample_content

MiB = 1 << 20


def test_reader_indexes_single_and_split_alike(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    content = sample_content(store, big_file_size=3 * MiB)
    single = write_bundle(content, blobs=store, out=tmp_path / "one")
    split = write_bundle(content, blobs=store, out=tmp_path / "many", split=MiB)
    kubeadm = next(f for f in content.files if f.name == "kubeadm")
    expected = store.read(kubeadm.digest)
    for path in (single.path, split.path, split.volumes[0], tmp_path / "many" / "lab.airlock.tar"):
        with open_bundle(path) as reader:
            assert reader.manifest.name == "lab"
            assert reader.signature is None
            assert next(iter(reader.members)) == AIRLOCK_JSON
            assert reader.blob_digests() == [b.digest for b in reader.manifest.blobs]
            assert reader.missing_blobs() == []
            with reader.open_blob(kubeadm.digest) as fh:
                fh.seek(100)
                assert fh.read(1000) == expected[100:1100]
                fh.seek(0)
                assert fh.read() == expected
            spans = reader.blob_spans(kubeadm.digest)
            assert sum(s.length for s in spans) == len(expected)
            got = b""
            for s in spans:
                with s.path.open("rb") as fh:
                    fh.seek(s.offset)
                    got += fh.read(s.length)
            assert got == expected
            if path != single.path:
                assert len(spans) > 1  # the 3 MiB blob crosses volume boundaries
    assert set(bundle_paths(split.volumes[0])) == {*split.volumes, split.path}


def test_reader_needs_the_first_volume(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    result = write_bundle(
        sample_content(store, big_file_size=2 * MiB), blobs=store, out=tmp_path, split=MiB
    )
    with pytest.raises(UsageError, match="not the first volume"):
        open_bundle(result.volumes[1])
    with pytest.raises(UsageError, match="not found"):
        open_bundle(tmp_path / "nope.airlock.tar")


# --- hostile archives ---------------------------------------------------------------------------

Entry = tuple[tarfile.TarInfo, bytes]


def _reg(name: str, data: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def _hostile(tmp_path: Path, make: Callable[[list[str]], list[Entry]]) -> Path:
    """A tar whose airlock.json is genuine, followed by the entries `make` returns."""
    store = BlobStore(tmp_path / "store")
    gen = build_manifest(sample_content(store, big_file_size=1000))
    blob_names = [blob_member(b.digest) for b in gen.manifest.blobs]
    entries = [_reg(AIRLOCK_JSON, gen.manifest.to_bytes()), *make(blob_names)]
    path = tmp_path / "hostile.airlock.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda b: [_reg("/etc/passwd", b"x")], "'/etc/passwd': absolute path"),
        (lambda b: [_reg("blobs/../../x", b"x")], "path contains '..'"),
        (lambda b: [_special(b[0], tarfile.SYMTYPE, "/etc/shadow")], "is a symbolic link"),
        (lambda b: [_special(b[0], tarfile.LNKTYPE, "airlock.json")], "is a hard link"),
        (lambda b: [_special("dev", tarfile.CHRTYPE)], "is a character device"),
        (lambda b: [_special("fifo", tarfile.FIFOTYPE)], "is a FIFO"),
        (
            lambda b: [_reg(OCI_LAYOUT, OCI_LAYOUT_CONTENT), _reg(OCI_LAYOUT, OCI_LAYOUT_CONTENT)],
            "'oci-layout': duplicate entry",
        ),
        (lambda b: [_reg("extra.txt", b"x")], "'extra.txt': is not listed in airlock.json"),
        (lambda b: [_reg(b[0], b"wrong size")], "size mismatch"),
        (lambda b: [_reg(INDEX_JSON, b"{}")], "'index.json': is 2 bytes but airlock.json says"),
        (lambda b: [_reg("blobs", b"")], "wrong entry type"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "symlink",
        "hardlink",
        "chardev",
        "fifo",
        "duplicate",
        "unlisted",
        "blob-size",
        "index-size",
        "dir-as-file",
    ],
)
def test_hostile_entries_are_refused(
    tmp_path: Path, make: Callable[[list[str]], list[Entry]], message: str
) -> None:
    path = _hostile(tmp_path, make)
    with pytest.raises(VerificationError, match="unsafe bundle entry") as exc:
        open_bundle(path)
    assert message in exc.value.message
    assert exc.value.hint and "do not extract" in exc.value.hint


def test_signature_right_after_airlock_json_is_read(tmp_path: Path) -> None:
    path = _hostile(tmp_path, lambda b: [_reg("airlock.json.sig", b"x" * 64)])
    with open_bundle(path) as reader:
        assert reader.signature == b"x" * 64


def test_signature_out_of_place_is_refused(tmp_path: Path) -> None:
    path = _hostile(
        tmp_path, lambda b: [_reg(OCI_LAYOUT, OCI_LAYOUT_CONTENT), _reg("airlock.json.sig", b"s")]
    )
    with pytest.raises(VerificationError, match="must directly follow airlock.json"):
        open_bundle(path)


def test_first_member_must_be_airlock_json(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        info, data = _reg("index.json", b"{}")
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(VerificationError, match="first member is 'index.json'"):
        open_bundle(path)
    path.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(VerificationError, match="not a"):
        open_bundle(path)


def test_huge_pax_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = _hostile(tmp_path, lambda b: [])
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        first = tar.getmembers()[0]
    end = first.offset_data + first.size + (-first.size % tarfile.BLOCKSIZE)
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 4 << 30  # 4 GiB of "extended header"
    header = pax.tobuf(tarfile.USTAR_FORMAT)
    path.write_bytes(bytes(data[:end]) + header + bytes(10240))
    with pytest.raises(VerificationError, match="pax header at offset .* is 4294967296 bytes"):
        open_bundle(path)


def test_entry_count_is_bounded(tmp_path: Path) -> None:
    path = _hostile(tmp_path, lambda b: [_reg(OCI_LAYOUT, OCI_LAYOUT_CONTENT)])
    with pytest.raises(VerificationError, match="more entries than"):
        open_bundle(path, max_members=1)


def test_truncated_archive_is_named(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    result = write_bundle(sample_content(store, big_file_size=200_000), blobs=store, out=tmp_path)
    data = result.path.read_bytes()
    result.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VerificationError, match="truncated|not a readable tar"):
        open_bundle(result.path)
