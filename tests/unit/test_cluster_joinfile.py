"""The join file: written 0600; reading refuses wrong permissions, an expired token and a CA
whose hash is not the pinned one, each with its reason."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airlock.cluster.joinfile import (
    JoinFile,
    ca_cert_hash,
    read_join_file,
    verify_ca,
    write_join_file,
)
from airlock.errors import UsageError, VerificationError

NOW = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)


def make_ca(name: str = "kubernetes") -> tuple[bytes, bytes]:
    """(PEM certificate, DER SubjectPublicKeyInfo) of a fresh self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert.public_bytes(serialization.Encoding.PEM), spki


def sample(ca_pem: bytes, *, expires: dt.datetime = NOW + dt.timedelta(hours=24)) -> JoinFile:
    return JoinFile(
        api_endpoint="198.18.2.2:6443",
        token="abcdef.0123456789abcdef",
        ca_cert_hash=ca_cert_hash(ca_pem),
        token_expires=expires.isoformat().replace("+00:00", "Z"),
        kubernetes_version="v1.27.3",
        certificate_key="0123456789abcdef" * 4,
        registries=("198.18.2.2:5000", "198.18.2.3:5000"),
    )


def test_ca_cert_hash_is_sha256_of_the_spki() -> None:
    pem, spki = make_ca()
    assert ca_cert_hash(pem) == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert ca_cert_hash(make_ca()[0]) != ca_cert_hash(pem)


def test_round_trip_written_0600(tmp_path: Path) -> None:
    pem, _ = make_ca()
    path = tmp_path / "etc/airlock/join.json"
    write_join_file(path, sample(pem))
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_join_file(path, now=NOW, ca_pem=pem) == sample(pem)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o400, 0o666])
def test_wrong_permissions_are_refused(tmp_path: Path, mode: int) -> None:
    pem, _ = make_ca()
    path = tmp_path / "join.json"
    write_join_file(path, sample(pem))
    path.chmod(mode)
    with pytest.raises(UsageError) as err:
        read_join_file(path, now=NOW)
    assert f"mode {mode:04o}" in err.value.message and "0600" in err.value.message
    assert err.value.hint and "chmod 600" in err.value.hint


def test_expired_token_is_refused(tmp_path: Path) -> None:
    pem, _ = make_ca()
    path = tmp_path / "join.json"
    write_join_file(path, sample(pem, expires=NOW - dt.timedelta(minutes=1)))
    with pytest.raises(UsageError) as err:
        read_join_file(path, now=NOW)
    assert "expired at 2025-01-01T11:59:00Z" in err.value.message
    assert err.value.hint and "token create" in err.value.hint
    # the same file is fine a little earlier
    assert read_join_file(path, now=NOW - dt.timedelta(hours=1)).token == "abcdef.0123456789abcdef"


def test_ca_hash_mismatch_is_refused(tmp_path: Path) -> None:
    pem, _ = make_ca()
    other, _ = make_ca("impostor")
    path = tmp_path / "join.json"
    write_join_file(path, sample(pem))
    with pytest.raises(VerificationError) as err:
        read_join_file(path, now=NOW, ca_pem=other)
    assert ca_cert_hash(other) in err.value.message and ca_cert_hash(pem) in err.value.message
    assert err.value.hint and "do not join" in err.value.hint
    verify_ca(sample(pem), pem)  # the right CA passes


def test_not_a_join_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "join.json"
    path.write_text('{"token": "abcdef.0123456789abcdef"}')
    path.chmod(0o600)
    with pytest.raises(UsageError, match="not an airlock join file"):
        read_join_file(path, now=NOW)


def test_bad_token_in_the_file_is_refused(tmp_path: Path) -> None:
    pem, _ = make_ca()
    path = tmp_path / "join.json"
    write_join_file(path, sample(pem))
    path.write_text(path.read_text().replace("abcdef.0123456789abcdef", "nope"))
    with pytest.raises(UsageError, match="token is not"):
        read_join_file(path, now=NOW)
