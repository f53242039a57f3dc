"""verify_bundle names what is wrong: a volume, the signature, index.json, a blob, the graph."""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.inspect import inspect_bundle
from airlock.bundle.layout import INDEX_JSON, blob_member
from airlock.bundle.reader import open_bundle
from airlock.bundle.signing import generate_keypair, key_id
from airlock.bundle.verify import BundleVerificationError, verify_bundle
from airlock.bundle.writer import BundleContent, WriteResult, write_bundle
from airlock.errors import EXIT_VERIFY, VerificationError
from airlock.trust import TrustPolicy, trust_policy
from airlock_lab.bundle_testing import Layer, flip_byte, put_image, put_index, sample_content

MiB = 1 << 20


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys" / "airlock")


@pytest.fixture
def content(tmp_path: Path) -> tuple[BlobStore, BundleContent]:
    store = BlobStore(tmp_path / "store")
    return store, sample_content(store, big_file_size=3 * MiB)


def _write(
    tmp_path: Path,
    content: tuple[BlobStore, BundleContent],
    *,
    key: Path | None = None,
    split: int | None = None,
) -> WriteResult:
    store, c = content
    return write_bundle(c, blobs=store, out=tmp_path / "out", sign_key=key, split=split)


def _member_offset(bundle: Path, name: str) -> int:
    with open_bundle(bundle) as reader:
        return reader.members[name].offset


UNSIGNED_OK = TrustPolicy((), allow_unsigned=True)


def _problems(path: Path, keys: Sequence[Path] = (), **kwargs: object) -> tuple[str, ...]:
    trust = TrustPolicy(tuple(keys)) if keys else UNSIGNED_OK
    with pytest.raises(BundleVerificationError) as exc:
        verify_bundle(path, trust=trust, **kwargs)  # type: ignore[arg-type]
    assert exc.value.exit_code == EXIT_VERIFY
    assert exc.value.report.problems[0] in exc.value.message
    return exc.value.report.problems


def test_good_signed_bundle_verifies(tmp_path: Path, content, keys) -> None:  # type: ignore[no-untyped-def]
    priv, pub = keys
    result = _write(tmp_path, content, key=priv)
    _, other = generate_keypair(tmp_path / "other")
    report = verify_bundle(result.path, trust=TrustPolicy((other, pub)), workers=2)
    assert report.ok and report.signed and report.signed_by == key_id(pub)
    assert report.verified and report.trust == f"signed by {key_id(pub)}"
    assert any(c.startswith("signature of airlock.json: ed25519") for c in report.checked)
    assert any(c.startswith("blobs: ") for c in report.checked)
    assert any(n.startswith("rollback") for n in report.not_checked)
    assert report.blobs_checked == result.blob_count
    assert report.bytes_checked >= result.unique_blob_bytes
    unchecked = verify_bundle(result.path, trust=UNSIGNED_OK)
    assert unchecked.signed and unchecked.signed_by is None
    assert not unchecked.verified and unchecked.trust == "UNVERIFIED"
    assert any("UNVERIFIED" in n for n in unchecked.not_checked)
    summary = inspect_bundle(result.path, keys=[pub])
    assert summary.signature_valid and summary.key_id == key_id(pub)
    assert summary.sbom_components == 2 + 3
    assert summary.unique_size == result.unique_blob_bytes
    assert summary.total_size > summary.unique_size - 5000  # shared base layer counted twice
    assert {i.reference for i in summary.images} == {
        "registry.k8s.io/pause:3.9",
        "docker.io/library/busybox:1.36",
    }
    assert inspect_bundle(result.path, keys=[other]).signature_valid is False


def test_flipped_byte_in_a_blob_is_named(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    result = _write(tmp_path, content)
    kubeadm = next(f for f in content[1].files if f.name == "kubeadm")
    flip_byte(result.path, _member_offset(result.path, blob_member(kubeadm.digest)) + 12345)
    problems = _problems(result.path)
    assert len(problems) == 1
    assert kubeadm.digest in problems[0] and "sha256 mismatch" in problems[0]
    assert kubeadm.url in problems[0]


def test_flipped_byte_in_a_layer_names_the_image(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    result = _write(tmp_path, content)
    layer = content[1].images[1].blobs[-1]
    flip_byte(result.path, _member_offset(result.path, blob_member(layer.digest)) + 3)
    (problem,) = _problems(result.path)
    assert layer.digest in problem and "docker.io/library/busybox:1.36" in problem


def test_flipped_byte_in_index_json(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    result = _write(tmp_path, content)
    flip_byte(result.path, _member_offset(result.path, INDEX_JSON) + 40)
    problems = _problems(result.path)
    assert problems[0].startswith("index.json sha256 mismatch")


def test_flipped_byte_in_airlock_json_fails_the_signature(tmp_path: Path, content, keys) -> None:  # type: ignore[no-untyped-def]
    priv, pub = keys
    result = _write(tmp_path, content, key=priv)
    data = result.path.read_bytes()
    at = data.index(b'"channel":"stable"') + len('"channel":"st')
    flip_byte(result.path, at)  # still valid JSON: only the signature can tell
    problems = _problems(result.path, keys=[pub])
    assert len(problems) == 1
    assert problems[0].startswith(
        f"signature of airlock.json does not verify with {pub} (tried sha256:"
    )


def test_unsigned_bundle_with_a_key_is_refused(tmp_path: Path, content, keys) -> None:  # type: ignore[no-untyped-def]
    _, pub = keys
    result = _write(tmp_path, content)
    assert "not signed" in _problems(result.path, keys=[pub])[0]
    report = verify_bundle(result.path, trust=TrustPolicy((pub,), allow_unsigned=True))
    assert report.ok and not report.signed and report.signed_by is None
    assert report.trust == "UNVERIFIED"


def test_no_trusted_key_is_refused_unless_allow_unsigned(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "trusted-keys"
    empty.mkdir()
    with pytest.raises(VerificationError, match="no trusted key") as exc:
        trust_policy([], allow_unsigned=False, directory=empty)
    assert exc.value.exit_code == EXIT_VERIFY
    assert exc.value.hint is not None and "--key" in exc.value.hint
    assert str(empty) in exc.value.hint and "--allow-unsigned" in exc.value.hint
    assert trust_policy([], allow_unsigned=True, directory=empty).keys == ()
    (empty / "site.pub").write_text("x")
    assert trust_policy([], allow_unsigned=False, directory=empty).keys == (empty / "site.pub",)


def test_expired_bundle_fails_verify(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    store, c = content
    result = write_bundle(
        BundleContent(**{**c.__dict__, "expires": "2020-01-01"}), blobs=store, out=tmp_path / "e"
    )
    (problem,) = _problems(result.path)
    assert problem == "the bundle expired on 2020-01-01"
    assert inspect_bundle(result.path).expired
    fresh = write_bundle(
        BundleContent(**{**c.__dict__, "expires": "2999-12-31"}), blobs=store, out=tmp_path / "f"
    )
    report = verify_bundle(fresh.path, trust=UNSIGNED_OK)
    assert report.expires == "2999-12-31" and "expiry: valid until 2999-12-31" in report.checked
    summary = inspect_bundle(fresh.path)
    assert summary.expires == "2999-12-31" and not summary.expired


def test_missing_volume_is_named(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    result = _write(tmp_path, content, split=MiB)
    result.volumes[2].unlink()
    problems = _problems(result.path)
    assert problems == ("volume lab.airlock.tar.002 missing",)


def test_swapped_volumes_are_named(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    result = _write(tmp_path, content, split=MiB)
    one, two = result.volumes[1], result.volumes[2]
    tmp = one.with_name("swap")
    one.rename(tmp)
    two.rename(one)
    tmp.rename(two)
    problems = _problems(result.path)
    # the volumes first (hashed once something inside failed), then what failed inside
    assert problems[0].startswith("volume lab.airlock.tar.001 sha256 mismatch")
    assert "holds the bytes of lab.airlock.tar.002" in problems[0]
    assert problems[1].startswith("volume lab.airlock.tar.002 sha256 mismatch")
    assert len(problems) > 2 and not any(p.startswith("volume ") for p in problems[2:])


def test_damaged_volume_is_named(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    result = _write(tmp_path, content, split=MiB)
    flip_byte(result.volumes[3], 10)
    problems = _problems(result.volumes[0])
    assert problems[0] == "volume lab.airlock.tar.003 sha256 mismatch (damaged medium or copy)"
    (blob,) = problems[1:]  # and the blob the byte is in, with its volumes
    assert "sha256 mismatch (in volume " in blob and "lab.airlock.tar.003" in blob
    report_ok = _write(tmp_path / "again", content, split=MiB)
    assert verify_bundle(report_ok.path, trust=UNSIGNED_OK).volumes_checked == 4


def test_graph_names_a_layer_missing_from_a_manifest(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    """A manifest whose layer airlock.json does not carry (and does not list as omitted)."""
    store, c = content
    busybox = c.images[1]
    layer = busybox.blobs[-1]
    broken = type(busybox)(**{**busybox.__dict__, "blobs": busybox.blobs[:-1]})
    result = write_bundle(
        BundleContent(**{**c.__dict__, "images": [c.images[0], broken]}),
        blobs=store,
        out=tmp_path / "g",
    )
    (problem,) = _problems(result.path)
    assert problem == (
        f"image docker.io/library/busybox:1.36: layer {layer.digest} is missing from the bundle"
    )
    # the same gap is fine when a delta bundle lists the layer as omitted
    result = write_bundle(
        BundleContent(**{**c.__dict__, "omitted": [layer.digest]}), blobs=store, out=tmp_path / "d"
    )
    assert verify_bundle(result.path, trust=UNSIGNED_OK).ok


def test_platforms_not_carried_are_not_required(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    amd64 = put_image(store, "example.com/app:1", [Layer({"a": b"a"})])
    index = put_index(store, "example.com/app:1", [amd64], extra_platforms=2)
    c = sample_content(store, big_file_size=10)
    result = write_bundle(
        BundleContent(**{**c.__dict__, "images": [index]}), blobs=store, out=tmp_path
    )
    assert verify_bundle(result.path, trust=UNSIGNED_OK).ok


def test_archive_missing_a_listed_blob(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    """Rewrite the tar without one blob: verify names it as missing (not a crash)."""
    result = _write(tmp_path, content)
    victim = content[1].files[1].digest
    cut = tmp_path / "cut.airlock.tar"
    with tarfile.open(result.path) as src, tarfile.open(cut, "w") as dst:
        for m in src.getmembers():
            if m.name != blob_member(victim):
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    problems = _problems(cut)
    assert f"blob {victim} (file of" in problems[0] and "missing from the archive" in problems[0]


def _byte_places(result: WriteResult) -> list[tuple[int, str]]:
    """Tar offsets worth damaging, with the kind of byte: the first, middle and last byte of
    every member, the tar padding after it, its header, and the end of the archive."""
    places: list[tuple[int, str]] = []
    with open_bundle(result.path) as reader:
        members = sorted(reader.members.values(), key=lambda m: m.offset)
        size = reader.size
    for m in members:
        places.append((m.offset - 512 + 100, f"header of {m.name}"))
        if m.size:
            for at in (m.offset, m.offset + m.size // 2, m.offset + m.size - 1):
                places.append((at, f"{m.name}"))
        if (m.offset + m.size) % 512:
            places.append((m.offset + m.size, f"padding after {m.name}"))
    places += [(size - 1, "end of archive"), (size - 2000, "end of archive")]
    return places


@pytest.mark.parametrize("signed", [True, False])
def test_a_damaged_byte_anywhere_in_a_split_bundle_names_its_volume(
    tmp_path: Path,
    content,  # type: ignore[no-untyped-def]
    keys: tuple[Path, Path],
    signed: bool,
) -> None:
    """Volumes of a signed bundle are not hashed up front: every byte of the tar is still
    checked once (blobs by digest, airlock.json by its signature, headers by checksum, padding
    and the end as zeros), and a damaged one fails verify with its volume named first (and the
    blob, when it is in one). Unsigned, airlock.json is checked by the volumes' digests."""
    priv, pub = keys
    result = _write(tmp_path, content, split=MiB, key=priv if signed else None)
    trust = TrustPolicy((pub,)) if signed else UNSIGNED_OK
    names = [v.name for v in result.volumes]
    sizes = [v.stat().st_size for v in result.volumes]
    for at, what in _byte_places(result):
        i, local = 0, at
        while local >= sizes[i]:
            local -= sizes[i]
            i += 1
        flip_byte(result.volumes[i], local)
        try:
            with pytest.raises(BundleVerificationError) as exc:
                verify_bundle(result.path, trust=trust)
        finally:
            flip_byte(result.volumes[i], local)
        problems = exc.value.report.problems
        assert problems[0] == f"volume {names[i]} sha256 mismatch (damaged medium or copy)", what
        assert problems[0] in exc.value.message
        if what.startswith("blobs/sha256/"):
            digest = what.removeprefix("blobs/sha256/")
            assert any(digest in p and names[i] in p for p in problems[1:]), (what, problems)
    assert verify_bundle(result.path, trust=trust).ok


def test_a_good_signed_split_bundle_is_read_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, content, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A good signed split bundle's volumes are sized, not hashed as wholes (the blobs are)."""
    from airlock.bundle import handle

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("volumes hashed as wholes")

    priv, pub = keys
    result = _write(tmp_path, content, split=MiB, key=priv)
    monkeypatch.setattr(handle, "_check_held_volumes", refuse)
    report = verify_bundle(result.path, trust=TrustPolicy((pub,)))
    assert report.volumes_checked == len(result.volumes)
    assert report.bytes_checked < result.size


def test_a_truncated_volume_is_named_by_its_size(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    result = _write(tmp_path, content, split=MiB)
    with result.volumes[1].open("r+b") as fh:
        fh.truncate(1000)
    assert _problems(result.path) == (
        f"volume lab.airlock.tar.001 is 1000 bytes, expected {MiB} (truncated or wrong file)",
    )
