"""`airlock load`: verify first, then merge atomically; trust policy, rollback guard, scanner
hook, tampering, and kill -9 at random points followed by a rerun."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock.errors import VerificationError
from airlock.oci.layout import OciLayout
from airlock.verbs.load import LoadOptions, load_bundle
from airlock_lab.bundle_testing import flip_byte, sample_content

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def make_bundle(
    tmp: Path,
    *,
    sequence: int = 1,
    key: Path | None = None,
    big: int = 3 << 20,
    split: int | None = None,
    expires: str | None = None,
    name: str = "lab",
) -> Path:
    blobs = BlobStore(tmp / f"blobs-{sequence}-{big}")
    content = sample_content(blobs, name=name, sequence=sequence, big_file_size=big)
    content = dataclasses.replace(content, expires=expires)
    out = tmp / f"out-{sequence}-{big}-{split}-{expires}-{key is not None}"
    return write_bundle(content, blobs=blobs, out=out, sign_key=key, split=split).path


def store_state(store: Path) -> tuple[list[str], bytes]:
    layout = OciLayout(store)
    return layout.digests(), layout.index_path.read_bytes()


def leftovers(store: Path) -> list[Path]:
    return [
        p for p in store.rglob("*") if p.name.startswith(".tmp-") or p.name.startswith(".scan-")
    ]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "site")


def test_load_twice_changes_nothing(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    bundle = make_bundle(tmp_path, key=keys[0])
    store = tmp_path / "store"
    first = load_bundle(bundle, store_dir=store, options=LoadOptions(keys=[keys[1]]))
    assert first.blobs_added > 0 and first.changed
    before = store_state(store)
    second = load_bundle(bundle, store_dir=store, options=LoadOptions(keys=[keys[1]]))
    assert not second.changed and second.blobs_added == 0
    assert store_state(store) == before
    assert "registry.k8s.io/pause:3.9" in OciLayout(store).images()


def test_second_bundle_adds_only_new_blobs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    load_bundle(make_bundle(tmp_path), store_dir=store, options=LoadOptions(allow_unsigned=True))
    before = set(OciLayout(store).digests())
    bigger = make_bundle(tmp_path, sequence=2, big=4 << 20)  # only the big file differs
    result = load_bundle(bigger, store_dir=store, options=LoadOptions(allow_unsigned=True))
    assert result.blobs_added == len(set(OciLayout(store).digests()) - before)
    assert 1 <= result.blobs_added <= 4  # the file, the files manifest, airlock's SBOM...


def _member_offset(bundle: Path, name: str) -> int:
    import tarfile

    with tarfile.open(bundle) as tar:
        return tar.getmember(name).offset_data


def test_tampered_layer_refused_before_the_store_changes(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    from airlock.bundle.reader import open_bundle

    with open_bundle(bundle) as r:
        layer = next(b.digest for b in r.manifest.blobs if b.role == "image-layer")
    flip_byte(bundle, _member_offset(bundle, "blobs/sha256/" + layer.split(":")[1]) + 10, 0xFF)
    store = tmp_path / "store"
    with pytest.raises(VerificationError) as err:
        load_bundle(bundle, store_dir=store, options=LoadOptions(allow_unsigned=True))
    assert layer in str(err.value)
    assert not store.exists()


def test_tampered_index_and_airlock_json(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    bundle = make_bundle(tmp_path, key=keys[0])
    copy = tmp_path / "copy.airlock.tar"
    copy.write_bytes(bundle.read_bytes())
    flip_byte(copy, _member_offset(copy, "index.json") + 5, 0xFF)
    with pytest.raises(VerificationError, match="index.json"):
        load_bundle(copy, store_dir=tmp_path / "s1", options=LoadOptions(keys=[keys[1]]))
    copy.write_bytes(bundle.read_bytes())
    flip_byte(copy, _member_offset(copy, "airlock.json") + 40, 0xFF)
    with pytest.raises(VerificationError):
        load_bundle(copy, store_dir=tmp_path / "s2", options=LoadOptions(keys=[keys[1]]))
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_missing_and_swapped_volumes_named(tmp_path: Path) -> None:
    parts = make_bundle(tmp_path, split=1 << 20)
    vols = sorted(parts.parent.glob("*.airlock.tar.[0-9]*"))
    assert len(vols) >= 3
    a, b = vols[1], vols[2]
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    with pytest.raises(VerificationError) as err:
        load_bundle(parts, store_dir=tmp_path / "s", options=LoadOptions(allow_unsigned=True))
    assert a.name in str(err.value)
    b.unlink()
    with pytest.raises(VerificationError) as err:
        load_bundle(parts, store_dir=tmp_path / "s", options=LoadOptions(allow_unsigned=True))
    assert b.name in str(err.value)
    assert not (tmp_path / "s").exists()


def test_rollback_and_same_sequence_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    load_bundle(
        make_bundle(tmp_path, sequence=2), store_dir=store, options=LoadOptions(allow_unsigned=True)
    )
    older = make_bundle(tmp_path, sequence=1)
    with pytest.raises(VerificationError, match="rollback refused"):
        load_bundle(older, store_dir=store, options=LoadOptions(allow_unsigned=True))
    other_same_seq = make_bundle(tmp_path, sequence=2, big=2 << 20)
    with pytest.raises(VerificationError, match="sequence 2 was already loaded"):
        load_bundle(other_same_seq, store_dir=store, options=LoadOptions(allow_unsigned=True))
    load_bundle(
        older, store_dir=store, options=LoadOptions(allow_unsigned=True, allow_downgrade=True)
    )
    channels = json.loads((store / "airlock" / "channels.json").read_text())
    assert channels["stable"]["sequence"] == 2  # a downgrade does not lower the mark


def test_expired_bundle_refused(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="expired on 2020-01-01"):
        load_bundle(
            make_bundle(tmp_path, expires="2020-01-01"),
            store_dir=tmp_path / "s",
            options=LoadOptions(allow_unsigned=True),
        )
    load_bundle(
        make_bundle(tmp_path, expires="2999-12-31"),
        store_dir=tmp_path / "s",
        options=LoadOptions(allow_unsigned=True),
    )


def test_trusted_keys_dir_requires_a_signature(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "site.pub").write_bytes(keys[1].read_bytes())
    other = generate_keypair(tmp_path / "rotated-out")
    (trusted / "old.pub").write_bytes(other[1].read_bytes())  # several keys: any may verify
    unsigned = make_bundle(tmp_path)
    env = {**os.environ, "AIRLOCK_TRUSTED_KEYS": str(trusted)}

    def load(bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRLOCK, "load", str(bundle), "--store", str(tmp_path / "s"), *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    refused = load(unsigned)
    assert refused.returncode == 3, refused.stderr
    assert "sign" in refused.stderr.lower()
    assert load(unsigned, "--allow-unsigned").returncode == 0
    signed = make_bundle(tmp_path, key=keys[0], sequence=2)
    ok = load(signed, "--json")
    assert ok.returncode == 0, ok.stderr
    inspect = subprocess.run(
        [AIRLOCK, "bundle", "inspect", str(signed), "--key", str(keys[1]), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(inspect.stdout)["keyId"].startswith("sha256:")


def test_scanner_hook(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    seen = tmp_path / "seen.txt"
    scanner = tmp_path / "scanner.sh"
    scanner.write_text(f'#!/bin/sh\nls "$1" > {seen}\ngrep -rq EICAR "$1" && exit 1\nexit 0\n')
    scanner.chmod(0o755)
    store = tmp_path / "store"
    load_bundle(
        bundle, store_dir=store, options=LoadOptions(allow_unsigned=True, scan=[str(scanner)])
    )
    names = seen.read_text().split()
    assert "kube-flannel.yml" in names and "kubeadm" in names
    assert any(n.endswith(".layer.tar.gz") for n in names)
    refusing = tmp_path / "refuse.sh"
    refusing.write_text("#!/bin/sh\necho 'FOUND: Eicar-Test-Signature'\nexit 1\n")
    refusing.chmod(0o755)
    store2 = tmp_path / "store2"
    with pytest.raises(VerificationError, match="Eicar-Test-Signature"):
        load_bundle(
            bundle, store_dir=store2, options=LoadOptions(allow_unsigned=True, scan=[str(refusing)])
        )
    assert OciLayout(store2).digests() == [] and leftovers(store2) == []


def test_kill_9_at_random_points_then_rerun(tmp_path: Path) -> None:
    """Fault injection: load killed at random moments converges to the uninterrupted result."""
    bundle = make_bundle(tmp_path, big=24 << 20)
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run(
        [AIRLOCK, "load", str(bundle), "--store", str(reference), "--allow-unsigned"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    duration = time.monotonic() - started  # an uninterrupted run, start-up included
    rng = random.Random(7)
    kills = 0
    store = tmp_path / "store"
    for _ in range(8):  # bounded; kill at a random moment within a run's duration
        proc = subprocess.Popen(
            [AIRLOCK, "load", str(bundle), "--store", str(store), "--allow-unsigned"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(0.05, 0.95) * duration)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(30)
        if (store / "index.json").exists():  # whatever moment it died at, the index is whole
            json.loads((store / "index.json").read_text())
        if kills >= 3:
            break
    final = subprocess.run(
        [AIRLOCK, "load", str(bundle), "--store", str(store), "--allow-unsigned"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert final.returncode == 0, final.stderr
    assert store_state(store) == store_state(reference)
    assert leftovers(store) == [] and not (store / ".staging").exists()
    assert kills >= 1  # the harness really interrupted something


def test_newest_bundle_record_is_the_highest_sequence(tmp_path: Path) -> None:
    from airlock.store import Store

    store = tmp_path / "store"
    assert Store.open(store).newest_bundle_record() is None
    load_bundle(
        make_bundle(tmp_path, sequence=10),
        store_dir=store,
        options=LoadOptions(allow_unsigned=True),
    )
    load_bundle(
        make_bundle(tmp_path, sequence=9, big=2 << 20),
        store_dir=store,
        options=LoadOptions(allow_unsigned=True, allow_downgrade=True),
    )
    newest = Store.open(store).newest_bundle_record()
    assert newest is not None and newest["sequence"] == 10  # not "lab.9" > "lab.10" by name
