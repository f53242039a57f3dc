"""Hints that fit the mistake: a wrong key names the fingerprints (and the signer when its key
is at hand), a missing store is named as missing, a missing tool says how an operator gets it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airlock import system
from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair, key_id
from airlock.bundle.writer import write_bundle
from airlock.errors import SystemCommandError
from airlock_lab.bundle_testing import sample_content

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = generate_keypair(tmp_path / "keys" / "site")
    store = BlobStore(tmp_path / "blobs")
    result = write_bundle(
        sample_content(store, big_file_size=1 << 12),
        blobs=store,
        out=tmp_path / "out",
        sign_key=priv,
    )
    return result.path, pub


def test_wrong_key_names_fingerprints_not_a_volume(
    tmp_path: Path, signed: tuple[Path, Path]
) -> None:
    path, pub = signed
    _, other = generate_keypair(tmp_path / "other")
    out = run("bundle", "verify", str(path), "--key", str(other), cwd=tmp_path)
    assert out.returncode == 3
    assert f"tried {key_id(other)} ({other})" in out.stderr
    assert "airlock keys fingerprint" in out.stderr
    assert "copy the named volume" not in out.stderr
    # the signer's key beside the bundle: named as the one that signed it, still not trusted
    shutil.copy(pub, path.parent / "maker.pub")
    out = run(
        "load",
        str(path),
        "--key",
        str(other),
        "--store",
        str(tmp_path / "s"),
        "--json",
        cwd=tmp_path,
    )
    assert out.returncode == 3
    doc = json.loads(out.stdout)
    assert doc["error"]["code"] == "VERIFICATION_FAILED"
    assert f"signed by {key_id(pub)} ({path.parent / 'maker.pub'})" in doc["error"]["message"]
    assert f"not by the trusted {key_id(other)}" in doc["error"]["message"]
    assert "pass it with --key" in doc["error"]["hint"]
    assert not (tmp_path / "s").exists()


def test_keys_fingerprint_and_generate_output(tmp_path: Path) -> None:
    made = json.loads(
        run("keys", "generate", "-o", str(tmp_path / "a"), "--json", cwd=tmp_path).stdout
    )
    shown = json.loads(
        run("keys", "fingerprint", str(tmp_path / "a.pub"), "--json", cwd=tmp_path).stdout
    )
    assert shown["keys"] == [{"key": str(tmp_path / "a.pub"), "keyId": made["keyId"]}]
    # the first spelling still works, hidden from --help
    assert run("keys", "generate", "--out", str(tmp_path / "b"), cwd=tmp_path).returncode == 0
    assert (tmp_path / "b.pub").exists()
    assert "--out " not in run("keys", "generate", "--help", cwd=tmp_path).stdout


def test_serve_refuses_a_missing_store(tmp_path: Path) -> None:
    for store in (tmp_path / "nostore", tmp_path):  # missing; a directory without a store
        out = run(
            "registry", "serve", "--store", str(store), "--listen", "127.0.0.1:0", cwd=tmp_path
        )
        assert out.returncode == 2, out.stderr
        assert f"--store {store}" in out.stderr and "nothing to serve" in out.stderr
        assert "airlock load BUNDLE --store" in out.stderr
    assert not (tmp_path / "nostore").exists()


def test_node_install_names_a_missing_store(tmp_path: Path) -> None:
    out = run(
        "node", "install", "--store", str(tmp_path / "nostore"), "--root", str(tmp_path / "root"),
        "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"the store {tmp_path / 'nostore'} does not exist" in out.stderr
    assert "kubeadm" not in out.stderr
    assert "airlock load BUNDLE" in out.stderr


def test_a_missing_tool_says_what_an_operator_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no helm here
    with pytest.raises(SystemCommandError) as caught:
        system.run(["helm", "version"])
    assert caught.value.message == "command not found: helm"
    assert "airlock node install" in (caught.value.hint or "")
    assert "make test" not in (caught.value.hint or "")
    assert "package manager" in system.missing_command_hint("socat")


def test_debug_anywhere_shows_the_traceback(tmp_path: Path) -> None:
    for args in (["--debug", "load", "nothing.tar"], ["load", "nothing.tar", "--debug"]):
        out = run(*args, cwd=tmp_path)
        assert out.returncode != 0 and "Traceback" in out.stderr, args
    assert "Traceback" not in run("load", "nothing.tar", cwd=tmp_path).stderr
