"""The join file: everything another node needs to join this cluster, as one 0600 JSON file.

It holds a bootstrap token (a credential), the CA cert hash kubeadm pins
(`sha256:<hex of the CA's DER SubjectPublicKeyInfo>`, the same value
`openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum` gives), the certificate
key a control-plane join needs, the API endpoint, the registries the node's mirrors point at,
and when the token expires. Reading refuses, each with its reason: a file others can read
(not 0600), an expired token, and a CA whose hash is not the pinned one.

The CA a joining node checks is the cluster's own: `fetch_cluster_ca` reads it from the
cluster-info ConfigMap the way kubeadm does (without trusting TLS, because the pinned hash is
what establishes trust); tests hand the CA file in directly.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import ssl
import stat
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from airlock.atomic import write_atomic
from airlock.errors import FetchError, UsageError, VerificationError

__all__ = [
    "JOIN_FILE_FORMAT",
    "JoinFile",
    "ca_cert_hash",
    "fetch_cluster_ca",
    "read_join_file",
    "verify_ca",
    "write_join_file",
]

JOIN_FILE_FORMAT = "airlock/join/v1"
_TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}\Z")
_KEY_RE = re.compile(r"^[a-f0-9]{64}\Z")
_HASH_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")


@dataclass(frozen=True)
class JoinFile:
    api_endpoint: str  # host:port joiners dial
    token: str
    ca_cert_hash: str  # sha256:<hex>
    token_expires: str  # RFC 3339, UTC
    kubernetes_version: str
    certificate_key: str | None = None  # only for control-plane joins
    registries: tuple[str, ...] = ()  # host:port of the registries the mirrors point at

    def expires_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.token_expires.replace("Z", "+00:00"))

    def to_json(self) -> str:
        data: dict[str, Any] = {"format": JOIN_FILE_FORMAT, **asdict(self)}
        data["registries"] = list(self.registries)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's `--discovery-token-ca-cert-hash` for a PEM CA certificate."""
    try:
        cert = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise UsageError(f"not a PEM certificate: {exc}") from None
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def write_join_file(path: Path, join: JoinFile) -> None:
    """Write it readable by its owner only (it holds a bootstrap token)."""
    write_atomic(path, join.to_json().encode(), mode=0o600)


def _field(data: dict[str, Any], key: str, path: Path, *, optional: bool = False) -> Any:
    if key not in data or data[key] is None:
        if optional:
            return None
        raise UsageError(
            f"join file {path} has no {key!r}", hint="write it again on the control plane"
        )
    return data[key]


def read_join_file(
    path: Path,
    *,
    now: dt.datetime | None = None,
    ca_pem: bytes | None = None,
) -> JoinFile:
    """Read and check a join file; `ca_pem` (the cluster's CA) is checked against the hash."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"cannot read join file {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o600:
        raise UsageError(
            f"join file {path} has mode {mode:04o}; it holds a bootstrap token, so it must be"
            " 0600 (readable by its owner only)",
            hint=f"chmod 600 {path} if you trust its content, or write a fresh one",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"join file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != JOIN_FILE_FORMAT:
        raise UsageError(f"{path} is not an airlock join file (format {JOIN_FILE_FORMAT})")
    token = str(_field(data, "token", path))
    if not _TOKEN_RE.match(token):
        raise UsageError(f"join file {path}: the token is not [a-z0-9]{{6}}.[a-z0-9]{{16}}")
    ca_hash = str(_field(data, "ca_cert_hash", path))
    if not _HASH_RE.match(ca_hash):
        raise UsageError(f"join file {path}: ca_cert_hash is not sha256:<64 hex>")
    key = _field(data, "certificate_key", path, optional=True)
    if key is not None and not _KEY_RE.match(str(key)):
        raise UsageError(f"join file {path}: certificate_key is not 64 hex characters")
    registries = _field(data, "registries", path, optional=True) or []
    join = JoinFile(
        api_endpoint=str(_field(data, "api_endpoint", path)),
        token=token,
        ca_cert_hash=ca_hash,
        token_expires=str(_field(data, "token_expires", path)),
        kubernetes_version=str(_field(data, "kubernetes_version", path)),
        certificate_key=str(key) if key is not None else None,
        registries=tuple(str(r) for r in registries),
    )
    try:
        expires = join.expires_at()
    except ValueError:
        raise UsageError(
            f"join file {path}: token_expires {join.token_expires!r} is not a time"
        ) from None
    current = now or dt.datetime.now(dt.UTC)
    if expires <= current:
        raise UsageError(
            f"the token in join file {path} expired at {join.token_expires}",
            hint="on the control plane run `kubeadm token create` (or `airlock cluster init"
            " --force` on a fresh cluster) and write a new join file",
        )
    if ca_pem is not None:
        verify_ca(join, ca_pem)
    return join


def verify_ca(join: JoinFile, ca_pem: bytes) -> None:
    """The cluster's CA must be the one the join file pins."""
    got = ca_cert_hash(ca_pem)
    if got != join.ca_cert_hash:
        raise VerificationError(
            f"the cluster's CA does not match the join file: its hash is {got}, the join file"
            f" pins {join.ca_cert_hash}",
            hint="the join file is from another cluster, or something answers for the API"
            f" server at {join.api_endpoint}; do not join; get the join file again",
        )


def fetch_cluster_ca(endpoint: str, *, timeout: float = 10.0) -> bytes:
    """The CA from the cluster-info ConfigMap (anonymous, TLS unchecked: the pin decides)."""
    url = f"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=insecure)
    )
    try:
        with opener.open(url, timeout=timeout) as resp:
            body = resp.read(1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(
            f"cannot read the cluster CA from {url}: {exc}",
            hint="is the control plane reachable from this node? (or pass the CA file)",
        ) from None
    try:
        kubeconfig = YAML(typ="safe").load(json.loads(body)["data"]["kubeconfig"])
        data = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
        return base64.b64decode(data)
    except (ValueError, KeyError, IndexError, TypeError, YAMLError) as exc:
        raise FetchError(f"the cluster-info ConfigMap at {url} has no CA: {exc}") from None
