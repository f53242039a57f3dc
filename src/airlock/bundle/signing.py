"""ed25519 signatures over airlock.json, interoperable with plain OpenSSL.

Keys are PEM files (private: PKCS8, mode 0600; public: SubjectPublicKeyInfo). A signature is the
raw 64-byte ed25519 signature of the exact bytes of airlock.json, so this verifies it too:

    openssl pkeyutl -verify -pubin -inkey PUB -rawin -in airlock.json -sigfile airlock.json.sig

A key is named by its key id: `sha256:<hex>` of the DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from airlock.atomic import write_atomic
from airlock.errors import AirlockError, UsageError, VerificationError

if TYPE_CHECKING:  # imported where a key is used: a create that keeps its bundle signs nothing
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "SIGNATURE_SIZE",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign",
    "verify_signature",
]

SIGNATURE_SIZE = 64


def generate_keypair(prefix: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write `PREFIX.key` (private, 0600) and `PREFIX.pub`; returns (private, public) paths."""
    priv_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    if not overwrite:
        for p in (priv_path, pub_path):
            if p.exists():
                raise UsageError(
                    f"{p} already exists", "choose another --out prefix or remove the old keys"
                )
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(priv_path, priv_pem, mode=0o600)
    write_atomic(pub_path, pub_pem, mode=0o644)
    return priv_path, pub_path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UsageError(
            f"{path} is not an unencrypted PEM private key",
            "create one with `airlock keys generate`",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an ed25519 key", "airlock signs with ed25519 keys only")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UsageError(
            f"{path} is not a PEM public key", "pass the .pub file of `airlock keys generate`"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an ed25519 public key")
    return key


def key_id(pub: Path | Ed25519PublicKey) -> str:
    """`sha256:<hex>` of the DER SubjectPublicKeyInfo (same as `openssl pkey -pubin -outform
    DER | sha256sum`)."""
    from cryptography.hazmat.primitives import serialization

    key = load_public_key(pub) if isinstance(pub, Path | str) else pub
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign(data: bytes, key_path: Path) -> bytes:
    """The raw 64-byte ed25519 signature of `data`."""
    return load_private_key(key_path).sign(data)


def verify_signature(
    data: bytes, sig: bytes, pub_keys: Sequence[Path], *, others: Sequence[Path] = ()
) -> Path:
    """Return the first key of `pub_keys` that verifies `sig` over `data`, else raise a
    VerificationError naming each key tried by its fingerprint, and which of `others` (public
    keys at hand but not trusted, e.g. beside the bundle) signed it, when one did."""
    from cryptography.exceptions import InvalidSignature

    if not pub_keys:
        raise UsageError("no public key given to verify the signature with")
    if len(sig) != SIGNATURE_SIZE:
        raise VerificationError(
            f"signature is {len(sig)} bytes, expected a raw {SIGNATURE_SIZE}-byte ed25519 signature",
            "the signature file is damaged",
        )
    for path in pub_keys:
        try:
            load_public_key(path).verify(sig, data)
        except InvalidSignature:
            continue
        return path
    names = ", ".join(os.fspath(p) for p in pub_keys)
    tried = "; ".join(f"{key_id(p)} ({os.fspath(p)})" for p in pub_keys)
    signer = _signer_among(data, sig, [p for p in others if p not in pub_keys])
    if signer is not None:
        raise VerificationError(
            f"signature of airlock.json does not verify with {names}: it was signed by "
            f"{key_id(signer)} ({os.fspath(signer)}), not by the trusted {tried}",
            f"if you trust {os.fspath(signer)}, pass it with --key (or put it in the trusted-keys "
            "directory) after checking its fingerprint with the bundle's maker",
        )
    raise VerificationError(
        f"signature of airlock.json does not verify with {names} (tried {tried})",
        "the bundle was signed with another key (compare the signer's fingerprint, "
        "`airlock keys fingerprint PUB`, with the keys tried, and pass the right one with --key), "
        "or airlock.json was changed after signing: then do not load it, ask for a new bundle",
    )


def _signer_among(data: bytes, sig: bytes, candidates: Sequence[Path]) -> Path | None:
    """The first readable ed25519 public key among `candidates` that verifies `sig`."""
    from cryptography.exceptions import InvalidSignature

    for path in candidates:
        try:
            load_public_key(path).verify(sig, data)
        except (InvalidSignature, AirlockError, OSError, ValueError):
            continue
        return path
    return None
