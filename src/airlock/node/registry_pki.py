"""The node registry's TLS certificate and push credentials, written once by `node install`.

The registry unit serves pull-only; pushes (`airlock registry serve --push`) need TLS and an
htpasswd file. `node install` writes both into /etc/airlock/pki when they are missing, as
`airlock registry certs --htpasswd-user airlock` would: a CA, a server certificate for the
addresses the registry listens on, an htpasswd entry and the password, the keys and secrets
0600. The plan names the files; the password itself is never printed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from airlock.node.engine import Change, Context, Resource
from airlock.oci.certs import CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, generate_certs
from airlock.oci.htpasswd import HTPASSWD_FILE, PASSWORD_FILE, ensure_credentials

__all__ = ["PKI_DIR", "PUSH_USER", "RegistryCredentials", "certificate_addresses"]

PKI_DIR = "/etc/airlock/pki"
PUSH_USER = "airlock"
_FILES = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, HTPASSWD_FILE, PASSWORD_FILE)


def certificate_addresses(listen: Sequence[str]) -> list[str]:
    """The IP addresses of the listen list a certificate can name (not 0.0.0.0 or ::)."""
    out: list[str] = []
    for item in listen:
        host = item.rpartition(":")[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not ip.is_unspecified and host not in out:
            out.append(host)
    return out


class RegistryCredentials(Resource):
    """CA, server certificate and push credentials in PKI_DIR, written when any is missing."""

    kind = "credentials"

    def __init__(self, *, listen: Sequence[str], directory: str = PKI_DIR) -> None:
        self.directory = directory
        self.addresses = certificate_addresses(listen) or ["127.0.0.1"]

    @property
    def name(self) -> str:
        return self.directory

    def _missing(self, ctx: Context) -> list[str]:
        return [f for f in _FILES if not ctx.path(f"{self.directory}/{f}").exists()]

    def check(self, ctx: Context) -> Change:
        missing = self._missing(ctx)
        if not missing:
            return Change(False)
        files = ", ".join(f"{self.directory}/{f}" for f in _FILES)
        return Change(
            True,
            msg=f"write the registry's TLS certificate ({', '.join(self.addresses)}) and push "
            f"credentials for {PUSH_USER!r}: {files} (keys and secrets 0600)",
        )

    def apply(self, ctx: Context) -> None:
        out = ctx.path(self.directory)
        if any(not (out / f).exists() for f in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)):
            generate_certs(out, names=["localhost"], addresses=self.addresses)
        ensure_credentials(out, user=PUSH_USER)

    def writes(self) -> list[str]:
        return [f"{self.directory}/{f}" for f in _FILES]
