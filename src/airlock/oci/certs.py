"""A private CA and a server certificate for the offline registry (`airlock registry certs`).

ECDSA P-256 keys: Go's crypto/tls (containerd, skopeo, kubelet) and OpenSSL all accept them.
The server certificate carries every name and address the nodes use as SANs (Go ignores the
CN). An existing CA in the output directory is reused, so nodes that already trust it keep
trusting the new server certificate; the server certificate is always written anew.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airlock.atomic import write_atomic
from airlock.errors import UsageError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "SERVER_CERT",
    "SERVER_KEY",
    "CertPaths",
    "generate_certs",
    "server_ssl_context",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "registry.crt"
SERVER_KEY = "registry.key"


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    ca_reused: bool


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the CA in {cert_path.parent}: {exc}",
            f"remove {cert_path.name} and {key_path.name} to create a new CA",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{key_path} is not an ECDSA key", "remove it to create a new CA")
    return cert, key


def _new_ca(now: dt.datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock registry CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _sans(names: list[str], addresses: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise UsageError(f"invalid DNS name for the certificate: {name!r}")
        out.append(x509.DNSName(name))
    for addr in addresses:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError as exc:
            raise UsageError(f"invalid IP address for the certificate: {addr!r}") from exc
    return out


def generate_certs(
    out_dir: Path,
    *,
    names: list[str],
    addresses: list[str],
    days: int = 3650,
) -> CertPaths:
    """Write (or reuse) `ca.crt`/`ca.key` and write `registry.crt`/`registry.key` in `out_dir`."""
    if not names and not addresses:
        raise UsageError(
            "a server certificate needs at least one name or address",
            "pass the node's host names and IP addresses the nodes use to reach the registry",
        )
    sans = _sans(names, addresses)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(
        out_dir / CA_CERT, out_dir / CA_KEY, out_dir / SERVER_CERT, out_dir / SERVER_KEY, False
    )
    now = dt.datetime.now(dt.UTC)
    reused = paths.ca_cert.exists() and paths.ca_key.exists()
    if reused:
        ca_cert, ca_key = _load_ca(paths.ca_cert, paths.ca_key)
    else:
        ca_cert, ca_key = _new_ca(now, days)
        write_atomic(paths.ca_key, _key_pem(ca_key), mode=0o600)
        write_atomic(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))

    key = ec.generate_private_key(ec.SECP256R1())
    subject = names[0] if names else addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(paths.key, _key_pem(key), mode=0o600)
    write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    return CertPaths(paths.ca_cert, paths.ca_key, paths.cert, paths.key, reused)


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context from PEM files; unreadable or mismatched files name the file."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in (cert, key):
        if not os.access(path, os.R_OK):
            raise UsageError(f"cannot read TLS file {path}", "check the path and its permissions")
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise UsageError(
            f"cannot use TLS certificate {cert} with key {key}: {exc.reason or exc}",
            "the key must match the certificate; both PEM (see `airlock registry certs`)",
        ) from exc
    return ctx
