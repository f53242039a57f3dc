"""Upstream detached signatures (cosign `sign-blob --key` form): ECDSA P-256 and Ed25519."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from airlock.errors import UsageError, VerificationError
from airlock.fetch.signatures import public_key_id, verify_detached

DATA = b"kubeadm binary bytes" * 1000


def _pub(tmp: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path = tmp / "cosign.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_ecdsa_p256(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sig = base64.b64encode(key.sign(DATA, ec.ECDSA(hashes.SHA256())))
    pub = _pub(tmp_path, key)
    assert verify_detached(io.BytesIO(DATA), sig, pub, what="x") == public_key_id(pub)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_detached(io.BytesIO(DATA + b"!"), sig, pub, what="x")


def test_ed25519_and_bad_input(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = _pub(tmp_path, key)
    sig = base64.b64encode(key.sign(DATA))
    assert verify_detached(io.BytesIO(DATA), sig, pub, what="x").startswith("sha256:")
    with pytest.raises(VerificationError, match="not base64"):
        verify_detached(io.BytesIO(DATA), b"%%%", pub, what="x")
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(VerificationError):
        verify_detached(io.BytesIO(DATA), base64.b64encode(other.sign(DATA)), pub, what="x")
    bad = tmp_path / "not-a-key.pub"
    bad.write_text("hello")
    with pytest.raises(UsageError, match="cannot read the signature key"):
        verify_detached(io.BytesIO(DATA), sig, bad, what="x")
