"""Bundle format pieces that need no bundle: layout names, airlock.json model, spans, SBOM."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.blobstore import BlobStore
from airlock.bundle.inspect import _component_count as sbom_component_count
from airlock.bundle.layout import (
    EMPTY_CONFIG_DATA,
    EMPTY_CONFIG_DIGEST,
    file_media_type,
    parts_path_for,
    volume_name,
)
from airlock.bundle.manifest import parse_manifest
from airlock.bundle.sbom import build_sbom
from airlock.bundle.volumes import ConcatReader, spans
from airlock.bundle.writer import build_manifest
from airlock.errors import VerificationError
from airlock.oci.digest import sha256_digest
from airlock_lab.bundle_testing import sample_content


def test_layout_names() -> None:
    assert parts_path_for("lab.airlock.tar") == "lab.airlock.parts.json"
    assert parts_path_for("x.tar") == "x.parts.json"
    assert volume_name("lab.airlock.tar", 2) == "lab.airlock.tar.002"
    assert sha256_digest(EMPTY_CONFIG_DATA) == EMPTY_CONFIG_DIGEST
    assert file_media_type("wheel", "application/octet-stream").endswith("wheel.v1+zip")
    assert file_media_type("binary", "text/x-custom") == "text/x-custom"


@pytest.fixture(scope="module")
def manifest_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        content = sample_content(BlobStore(Path(d)), big_file_size=1000)
        return build_manifest(content).manifest.to_bytes()


def test_manifest_round_trips_byte_for_byte(manifest_bytes: bytes) -> None:
    m = parse_manifest(manifest_bytes)
    assert m.to_bytes() == manifest_bytes
    digests = [b.digest for b in m.blobs]
    assert digests == sorted(set(digests))
    assert m.schema_ == "airlock.bundle/v1"
    # no wall-clock time anywhere
    assert b"1970" not in manifest_bytes and b"timestamp" not in manifest_bytes


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["blobs"][0].update(digest="sha256:xyz"), "blobs.0.digest"),
        (lambda d: d["blobs"].reverse(), "sorted"),
        (lambda d: d.update(sequence="1"), "sequence"),
        (lambda d: d["files"][0].update(name="../etc/passwd"), "plain file name"),
        (lambda d: d.update(schema="airlock.bundle/v9"), "schema"),
    ],
)
def test_manifest_is_strict(manifest_bytes: bytes, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(manifest_bytes)
    mutate(doc)
    with pytest.raises(VerificationError, match="not a valid airlock.bundle/v1") as exc:
        parse_manifest(json.dumps(doc).encode())
    assert field in exc.value.message


def test_manifest_refuses_non_json() -> None:
    with pytest.raises(VerificationError, match="not a JSON object"):
        parse_manifest(b"\x00garbage")


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=6),
    data=st.data(),
)
def test_spans_cover_exactly_the_range(sizes: list[int], data: st.DataObject) -> None:
    total = sum(sizes)
    offset = data.draw(st.integers(min_value=0, max_value=total))
    length = data.draw(st.integers(min_value=0, max_value=total - offset))
    vols = [(Path(f"v{i}"), s) for i, s in enumerate(sizes)]
    pieces = spans(vols, offset, length)
    assert sum(p.length for p in pieces) == length
    assert all(p.length > 0 for p in pieces)
    # each piece stays inside its volume
    size_of = dict(vols)
    assert all(p.offset + p.length <= size_of[p.path] for p in pieces)


def test_spans_beyond_end_is_a_truncation() -> None:
    with pytest.raises(VerificationError, match="beyond the end"):
        spans([(Path("a"), 10)], 5, 10)


@settings(max_examples=30, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=5),
    data=st.data(),
)
def test_concat_reader_reads_the_concatenation(chunks: list[bytes], data: st.DataObject) -> None:
    whole = b"".join(chunks)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, c in enumerate(chunks):
            p = Path(d) / f"v{i}"
            p.write_bytes(c)
            paths.append(p)
        reader = ConcatReader(paths)
        pos = data.draw(st.integers(min_value=0, max_value=len(whole)))
        reader.seek(pos)
        got = b""
        while chunk := reader.read(7):
            got += chunk
        reader.close()
    assert got == whole[pos:]


def test_sbom_is_deterministic_and_lists_everything(tmp_path: Path) -> None:
    content = sample_content(BlobStore(tmp_path), big_file_size=100)
    args = {"bundle_name": "lab", "tool_version": "0.1.0"}
    one = build_sbom(images=content.images, files=content.files, **args)
    two = build_sbom(images=list(reversed(content.images)), files=content.files, **args)
    assert one == two
    doc = json.loads(one)
    assert "timestamp" not in doc["metadata"]
    assert sbom_component_count(one) == len(content.images) + len(content.files)
    purls = [c["purl"] for c in doc["components"] if c["type"] == "container"]
    pause = next(p for p in purls if "/pause@" in p)
    assert pause.startswith("pkg:oci/pause@sha256:")
    assert "repository_url=registry.k8s.io/pause" in pause and "tag=3.9" in pause
    kubeadm = next(c for c in doc["components"] if c["name"] == "kubeadm")
    assert kubeadm["externalReferences"][0]["url"].startswith("https://dl.k8s.io/")
    assert kubeadm["version"] == "v1.27.3"
    other = build_sbom(images=content.images[:1], files=content.files, **args)
    assert json.loads(other)["serialNumber"] != doc["serialNumber"]
