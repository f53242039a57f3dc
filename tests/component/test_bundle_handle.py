"""One Bundle handle: opened once, verified once, and everything after reads the held files.

The attacks: the bundle file replaced (renamed over) or rewritten in place between verification
and import (the handle's `on_verified` test hook runs at exactly that moment); a registry
serving a bundle whose file is swapped under it. Each loads (or serves) only verified bytes, or
refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.handle import Bundle
from airlock.bundle.layout import INDEX_JSON, blob_member
from airlock.bundle.reader import open_bundle
from airlock.bundle.serving import BundleSource
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock.errors import DigestMismatch, VerificationError
from airlock.oci.layout import OciLayout
from airlock.oci.server import RunningServer, start_server
from airlock.trust import TrustPolicy
from airlock.verbs.load import LoadOptions, load_bundle
from airlock_lab.bundle_testing import sample_content

MiB = 1 << 20


def make(
    tmp: Path, name: str, *, seq: int = 1, big: int = 2 * MiB, split: int | None = None
) -> Path:
    blobs = BlobStore(tmp / f"blobs-{name}")
    content = sample_content(blobs, name=name, sequence=seq, big_file_size=big)
    out = tmp / f"out-{name}-{split}"
    return write_bundle(content, blobs=blobs, out=out, sign_key=tmp / "site.key", split=split).path


@pytest.fixture
def trust(tmp_path: Path) -> TrustPolicy:
    _, pub = generate_keypair(tmp_path / "site")
    return TrustPolicy((pub,))


def _member(path: Path, name: str) -> tuple[int, int]:
    with open_bundle(path) as reader:
        m = reader.members[name]
        return m.offset, m.size


def _store_of(bundle: Path, tmp: Path, trust: TrustPolicy) -> OciLayout:
    """What an undisturbed load of `bundle` gives."""
    store = tmp / f"ref-{bundle.stem}"
    load_bundle(bundle, store_dir=store, options=LoadOptions(keys=trust.keys))
    return OciLayout(store)


def test_bundle_renamed_over_after_verify_still_loads_the_verified_bytes(
    tmp_path: Path, trust: TrustPolicy
) -> None:
    original = make(tmp_path, "lab")
    reference = _store_of(original, tmp_path, trust)
    other = make(tmp_path, "evil", big=3 * MiB)  # signed by the same key: a real bundle

    def swap(path: Path) -> None:
        shutil.copyfile(other, path.with_name("incoming"))
        path.with_name("incoming").replace(path)  # a new file under the bundle's name

    store = tmp_path / "store"
    with Bundle.open(original, trust=trust, hash_content=False, on_verified=swap) as bundle:
        assert original.read_bytes() == other.read_bytes()  # the swap happened
        result = load_bundle(bundle, store_dir=store, options=LoadOptions(keys=trust.keys))
    assert result.blobs_added == len(reference.digests())
    got = OciLayout(store)
    assert got.digests() == reference.digests()
    assert got.index_path.read_bytes() == reference.index_path.read_bytes()
    records = sorted(p.name for p in (store / "airlock" / "bundles").iterdir())
    assert records == ["lab.1.json"]


def test_blob_rewritten_in_place_after_verify_is_refused(
    tmp_path: Path, trust: TrustPolicy
) -> None:
    bundle_path = make(tmp_path, "lab")
    with open_bundle(bundle_path) as reader:
        kubeadm = next(f for f in reader.manifest.files if f.name == "kubeadm")
    offset, _ = _member(bundle_path, blob_member(kubeadm.digest))

    def tamper(path: Path) -> None:
        with path.open("r+b") as fh:  # the same file, changed where it lies
            fh.seek(offset + 1000)
            fh.write(b"\x00" * 64)

    store = tmp_path / "store"
    with (
        Bundle.open(bundle_path, trust=trust, hash_content=False, on_verified=tamper) as bundle,
        pytest.raises(VerificationError) as exc,
    ):
        load_bundle(bundle, store_dir=store, options=LoadOptions(keys=trust.keys))
    assert exc.value.exit_code == 3
    assert kubeadm.digest in exc.value.message and "digest mismatch" in exc.value.message
    assert not OciLayout(store).has(kubeadm.digest)
    assert not (store / "index.json").exists()  # refused before the store changed


def test_index_json_rewritten_in_place_after_verify_is_not_read_again(
    tmp_path: Path, trust: TrustPolicy
) -> None:
    bundle_path = make(tmp_path, "lab")
    reference = _store_of(bundle_path, tmp_path, trust)
    offset, size = _member(bundle_path, INDEX_JSON)

    def tamper(path: Path) -> None:
        with path.open("r+b") as fh:
            fh.seek(offset)
            fh.write(b" " * size)

    store = tmp_path / "store"
    with Bundle.open(bundle_path, trust=trust, hash_content=False, on_verified=tamper) as bundle:
        load_bundle(bundle, store_dir=store, options=LoadOptions(keys=trust.keys))
    assert OciLayout(store).index_path.read_bytes() == reference.index_path.read_bytes()


def test_verifying_reader_refuses_changed_bytes(tmp_path: Path, trust: TrustPolicy) -> None:
    bundle_path = make(tmp_path, "lab")
    with open_bundle(bundle_path) as reader:
        digest = next(f.digest for f in reader.manifest.files if f.name == "kubeadm")
    offset, _ = _member(bundle_path, blob_member(digest))
    with Bundle.open(bundle_path, trust=trust) as bundle:
        assert bundle.content_hashed
        with bundle.open_blob(digest) as fh:
            assert len(fh.read()) == bundle.blob_size(digest)
        with bundle_path.open("r+b") as fh:
            fh.seek(offset + 5)
            fh.write(b"!")
        with pytest.raises(DigestMismatch, match=digest), bundle.open_blob(digest) as fh:
            fh.read()


def test_a_missing_volume_is_named_and_nothing_stays_open(
    tmp_path: Path, trust: TrustPolicy
) -> None:
    bundle_path = make(tmp_path, "lab", split=MiB)
    parts = bundle_path.parent / "lab.airlock.parts.json"
    (bundle_path.parent / "lab.airlock.tar.001").unlink()
    with pytest.raises(VerificationError, match=r"volume lab\.airlock\.tar\.001 missing"):
        Bundle.open(parts, trust=trust)


# -- registry serve --bundle ----------------------------------------------------------------


@contextlib.contextmanager
def serving(source: BundleSource) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server: RunningServer = asyncio.run_coroutine_threadsafe(
        start_server(source, host="127.0.0.1", port=0), loop
    ).result(30)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        data: bytes = resp.read()
        return data


def test_registry_serves_the_held_volumes_even_when_swapped(
    tmp_path: Path, trust: TrustPolicy
) -> None:
    """A split bundle served in place: a blob across volumes, then every volume replaced."""
    bundle_path = make(tmp_path, "lab", split=MiB)
    parts = bundle_path.parent / "lab.airlock.parts.json"
    other = make(tmp_path, "evil", big=3 * MiB, split=MiB)
    with open_bundle(parts) as reader:
        kubeadm = next(f for f in reader.manifest.files if f.name == "kubeadm")
        expected = reader.open_blob(kubeadm.digest).read()
        busybox = next(i for i in reader.manifest.images if "busybox" in i.reference)
    with Bundle.open(parts, trust=trust) as bundle, serving(BundleSource(bundle)) as url:
        assert len(bundle.blob_spans(kubeadm.digest)) >= 2  # spans volumes
        for vol in sorted(other.parent.glob("evil.airlock.tar.*")):
            dest = parts.parent / vol.name.replace("evil", "lab")
            shutil.copyfile(vol, dest.with_name("incoming"))
            dest.with_name("incoming").replace(dest)
        repo, tag = busybox.reference.rsplit(":", 1)
        manifest = json.loads(_get(f"{url}/v2/{repo}/manifests/{tag}"))
        layer = manifest["layers"][-1]["digest"]
        assert _get(f"{url}/v2/{repo}/blobs/{layer}")
        # the file is not an image blob: it is still in the bundle, served by digest only to
        # a repository that references it; read it through the handle as install does
        with bundle.open_blob(kubeadm.digest) as fh:
            assert fh.read() == expected


def test_skopeo_pulls_from_a_bundle_served_in_place(tmp_path: Path, trust: TrustPolicy) -> None:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is missing: scripts/deps.sh installs it (apt-get install skopeo)")
    bundle_path = make(tmp_path, "lab")
    with Bundle.open(bundle_path, trust=trust) as bundle, serving(BundleSource(bundle)) as url:
        ref = next(i for i in bundle.manifest.images if "pause" in i.reference)
        out = tmp_path / "pulled"
        proc = subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--all",
                "--src-tls-verify=false",
                f"docker://{url.removeprefix('http://')}/{ref.reference}",
                f"oci:{out}:p",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        index = json.loads((out / "index.json").read_bytes())
        assert index["manifests"][0]["digest"] == ref.digest
        catalog = json.loads(_get(f"{url}/v2/_catalog"))["repositories"]
        assert catalog == sorted(i.reference.rsplit(":", 1)[0] for i in bundle.manifest.images)
        for method, path in (("POST", "blobs/uploads/"), ("PUT", "manifests/x")):
            req = urllib.request.Request(
                f"{url}/v2/registry.k8s.io/pause/{path}", method=method, data=b"{}"
            )
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)
            assert err.value.code == 405
