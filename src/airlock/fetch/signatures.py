"""Upstream signatures on release files, checked on the connected side.

The form is cosign's `sign-blob --key`: a `.sig` file beside the artifact holding the base64
of a raw signature over the file's bytes; ECDSA P-256 (SHA-256, DER) and Ed25519 public keys
(PEM) are accepted. The spec says which URL prefixes are signed and with which key
(`verify.signatures`); airlock.json then records, per file, the signature URL and the key that
verified it, and `bundle inspect` shows it. Keyless (Fulcio/Rekor) verification needs an online
transparency log and is not done here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from airlock.errors import UsageError, VerificationError

__all__ = ["load_verify_key", "public_key_id", "verify_detached"]

_CHUNK = 1 << 20


def load_verify_key(path: Path) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the signature key {path}: {exc}",
            "a PEM public key (cosign.pub, ECDSA P-256 or Ed25519)",
        ) from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise UsageError(f"{path}: unsupported key type", "use an ECDSA P-256 or Ed25519 public key")


def public_key_id(path: Path) -> str:
    der = load_verify_key(path).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def verify_detached(data: BinaryIO, signature_file: bytes, key_path: Path, *, what: str) -> str:
    """Check `signature_file` (base64) over the bytes of `data`; returns the key id."""
    try:
        signature = base64.b64decode(signature_file.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"the signature of {what} is not base64") from exc
    key = load_verify_key(key_path)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data.read())
        else:
            h = hashlib.sha256()
            while chunk := data.read(_CHUNK):
                h.update(chunk)
            key.verify(signature, h.digest(), ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        raise VerificationError(
            f"the upstream signature of {what} does not verify with {key_path}",
            hint="the file or its .sig was altered, or the spec names the wrong key; do not carry it",
        ) from None
    return public_key_id(key_path)
