"""Trust fails closed: with no trusted key, `bundle verify`, `load` and `registry serve --bundle`
refuse (exit 3) and say how to name a key; `--allow-unsigned` lets them go on, and every summary
then says UNVERIFIED."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock_lab.bundle_testing import sample_content

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


@pytest.fixture
def altered(tmp_path: Path) -> Path:
    """A signed bundle whose airlock.json was changed after signing (still valid JSON)."""
    priv, _ = generate_keypair(tmp_path / "site")
    blobs = BlobStore(tmp_path / "blobs")
    path = write_bundle(
        sample_content(blobs, big_file_size=4096), blobs=blobs, out=tmp_path / "out", sign_key=priv
    ).path
    data = bytearray(path.read_bytes())
    at = data.index(b'"channel":"stable"') + len(b'"channel":"st')
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def airlock(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "trusted-keys"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [AIRLOCK, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRLOCK_TRUSTED_KEYS": str(empty)},
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _refused(out: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert out.returncode == 3, out.stdout + out.stderr
    assert "no trusted key" in out.stderr
    assert "--key PUB" in out.stderr and str(tmp_path / "trusted-keys") in out.stderr
    assert "--allow-unsigned" in out.stderr


def test_altered_airlock_json_with_no_key_is_refused_everywhere(
    tmp_path: Path, altered: Path
) -> None:
    store = tmp_path / "store"
    _refused(airlock(tmp_path, "bundle", "verify", str(altered)), tmp_path)
    _refused(airlock(tmp_path, "load", str(altered), "--store", str(store)), tmp_path)
    assert not store.exists()
    serve = ["registry", "serve", "--bundle", str(altered), "--listen", "127.0.0.1:0"]
    _refused(airlock(tmp_path, *serve), tmp_path)


def test_allow_unsigned_goes_on_and_says_unverified(tmp_path: Path, altered: Path) -> None:
    out = airlock(tmp_path, "bundle", "verify", str(altered), "--allow-unsigned")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK but UNVERIFIED")
    assert "not checked: signature: no trusted key to check it" in out.stdout
    assert "checked: blobs: " in out.stdout and "UNVERIFIED" in out.stderr
    data = json.loads(
        airlock(tmp_path, "bundle", "verify", str(altered), "--allow-unsigned", "--json").stdout
    )
    assert data["trust"] == "UNVERIFIED" and data["verified"] is False
    assert any(c.startswith("index.json") for c in data["checked"])
    store = tmp_path / "store"
    loaded = airlock(tmp_path, "load", str(altered), "--store", str(store), "--allow-unsigned")
    assert loaded.returncode == 0, loaded.stderr
    assert "(UNVERIFIED)" in loaded.stdout and "UNVERIFIED" in loaded.stderr
    again = airlock(
        tmp_path, "load", str(altered), "--store", str(store), "--allow-unsigned", "--json"
    )
    assert json.loads(again.stdout)["trust"] == "UNVERIFIED"


def test_altered_airlock_json_with_the_key_fails_the_signature(
    tmp_path: Path, altered: Path
) -> None:
    out = airlock(tmp_path, "bundle", "verify", str(altered), "--key", str(tmp_path / "site.pub"))
    assert out.returncode == 3
    assert "signature of airlock.json does not verify" in out.stderr
    # --allow-unsigned never excuses a signature that is there and wrong
    out = airlock(
        tmp_path,
        "load",
        str(altered),
        "--store",
        str(tmp_path / "s"),
        "--key",
        str(tmp_path / "site.pub"),
        "--allow-unsigned",
    )
    assert out.returncode == 3 and "does not verify" in out.stderr


def test_inspect_shows_the_expiry(tmp_path: Path) -> None:
    import dataclasses

    blobs = BlobStore(tmp_path / "blobs")
    content = dataclasses.replace(sample_content(blobs, big_file_size=10), expires="2020-01-01")
    path = write_bundle(content, blobs=blobs, out=tmp_path / "out").path
    out = airlock(tmp_path, "bundle", "inspect", str(path))
    assert "EXPIRED on 2020-01-01" in out.stdout
    data = json.loads(airlock(tmp_path, "bundle", "inspect", str(path), "--json").stdout)
    assert data["expires"] == "2020-01-01" and data["expired"] is True
    refused = airlock(tmp_path, "bundle", "verify", str(path), "--allow-unsigned")
    assert refused.returncode == 3 and "expired on 2020-01-01" in refused.stderr
