"""Fuzzing: hostile or random input must end in a clean AirlockError (or an HTTP 4xx), never a
crash. Bounded here; `make fuzz` runs the same properties with a larger budget."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import assume, given
from hypothesis import strategies as st

from airlock.blobstore import BlobStore
from airlock.bundle.reader import open_bundle
from airlock.bundle.signing import generate_keypair
from airlock.bundle.verify import verify_bundle
from airlock.bundle.writer import write_bundle
from airlock.errors import AirlockError
from airlock.oci.layout import OciLayout
from airlock.oci.limits import Limits
from airlock.oci.ref import parse_reference
from airlock.oci.server import RegistryOptions, make_app
from airlock.oci.sources import StoreSource
from airlock.trust import TrustPolicy
from airlock_lab.bundle_testing import sample_content

_TMP = Path(tempfile.mkdtemp(prefix="airlock-fuzz-"))
_BLOBS = BlobStore(_TMP / "blobs")
_KEY, _PUB = generate_keypair(_TMP / "k")
_BUNDLE = write_bundle(
    sample_content(_BLOBS, big_file_size=64 << 10), blobs=_BLOBS, out=_TMP / "b", sign_key=_KEY
).path
_BYTES = _BUNDLE.read_bytes()


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> object:
    yield
    shutil.rmtree(_TMP, ignore_errors=True)


@given(st.text(max_size=120))
def test_fuzz_reference_parsing(text: str) -> None:
    try:
        ref = parse_reference(text)
    except AirlockError:
        return
    assert parse_reference(str(ref)) == ref  # what parses, round-trips


@given(
    st.lists(
        st.tuples(st.integers(0, len(_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    st.one_of(st.none(), st.integers(0, len(_BYTES))),
)
def test_fuzz_bundle_reader_mutations(flips: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(_BYTES)
    for offset, value in flips:
        data[offset] = value
    if cut is not None:
        del data[cut:]
    path = _TMP / "mutant.airlock.tar"
    path.write_bytes(bytes(data))
    try:
        with open_bundle(path) as reader:
            reader.blob_digests()
        verify_bundle(path, trust=TrustPolicy((_PUB,)))
    except AirlockError:
        return
    # accepted with the key: the signed manifest and every blob are the original's (the
    # mutation hit tar padding or header fields that carry no content)
    with open_bundle(path) as reader, open_bundle(_BUNDLE) as original:
        assert reader.manifest == original.manifest
        for digest in original.blob_digests():
            with reader.open_blob(digest) as a, original.open_blob(digest) as b:
                assert a.read() == b.read()


_STORE = OciLayout(_TMP / "store")
_STORE.init()
# every handler reachable: pushes and deletes on, no free-space floor (the disk is not fuzzed)
_OPTIONS = RegistryOptions(push=True, delete=True, limits=Limits(floor_bytes=0, floor_percent=0))

_segments = st.sampled_from(
    [
        "v2",
        "",
        "..",
        "registry.k8s.io",
        "pause",
        "manifests",
        "blobs",
        "tags",
        "list",
        "_catalog",
        "uploads",
        "3.9",
        "sha256:zz",
        "%2e%2e",
        "A",
    ]
)


@given(
    st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
    st.lists(_segments, min_size=1, max_size=7),
    st.dictionaries(
        st.sampled_from(["Range", "Content-Range", "Content-Length", "Accept"]),
        st.text(alphabet="bytes=-0123456789,*/ abc", max_size=20),
        max_size=3,
    ),
    st.binary(max_size=64),
)
def test_fuzz_registry_requests_never_5xx(
    method: str, parts: list[str], headers: dict[str, str], body: bytes
) -> None:
    assume(parts[0] != "")  # `//x` is a scheme-relative URL, not a path

    async def one() -> int:
        app = make_app(StoreSource(_STORE), upload_dir=_TMP / "uploads", options=_OPTIONS)
        async with TestClient(TestServer(app)) as client:
            headers.pop("Content-Length", None)  # aiohttp sets it from the body
            resp = await client.request(method, "/" + "/".join(parts), headers=headers, data=body)
            return resp.status

    status = asyncio.run(one())
    assert status < 500, (method, parts, headers)
