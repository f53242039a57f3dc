"""ed25519 keys and signatures (the OpenSSL interop test is in tests/component)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from airlock.bundle.signing import generate_keypair, key_id, sign, verify_signature
from airlock.errors import UsageError, VerificationError


def test_keypair_files(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "k" / "airlock")
    assert priv.name == "airlock.key" and pub.name == "airlock.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(UsageError, match="already exists"):
        generate_keypair(tmp_path / "k" / "airlock")


def test_sign_and_verify(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "a")
    _, other = generate_keypair(tmp_path / "b")
    sig = sign(b"data", priv)
    assert len(sig) == 64
    assert verify_signature(b"data", sig, [other, pub]) == pub
    with pytest.raises(VerificationError, match="does not verify"):
        verify_signature(b"datA", sig, [pub])
    with pytest.raises(VerificationError, match="does not verify"):
        verify_signature(b"data", sig, [other])
    with pytest.raises(VerificationError, match="64-byte"):
        verify_signature(b"data", sig[:10], [pub])
    assert key_id(pub) != key_id(other)
    assert key_id(pub).startswith("sha256:") and len(key_id(pub)) == 71


def test_bad_key_files(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("not a key")
    with pytest.raises(UsageError, match="not a PEM public key"):
        verify_signature(b"x", b"\0" * 64, [bogus])
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        sign(b"x", bogus)
    with pytest.raises(UsageError, match="cannot read"):
        sign(b"x", tmp_path / "missing.key")
