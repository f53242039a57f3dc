"""How airlock reaches upstreams: the environment's proxies and the operator's CA bundle, the
same for every download path (release files, registries, chart repositories, OS package
repositories, and the small metadata `plan` reads).

- Proxies: HTTPS_PROXY, HTTP_PROXY and NO_PROXY (either case), as curl and the container tools
  read them. aiohttp sessions are made with `trust_env=True` (https through a CONNECT tunnel,
  http through the proxy); urllib openers with a `ProxyHandler` over the same variables, which
  honours NO_PROXY the same way. No TLS interception is assumed: the upstream's certificate is
  checked end to end through the tunnel.
- CA bundle: a PEM file the operator names (`--ca-bundle`, or the spec's `sources.caBundle`) is
  trusted IN ADDITION to the system's roots, for every TLS connection airlock opens.
- A certificate failure is said as one (with the hint to name the CA bundle), never as a
  generic connection error.
"""

from __future__ import annotations

import functools
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from airlock.errors import UsageError

__all__ = ["TLS_HINT", "NetworkOptions", "is_certificate_error", "tls_problem"]

TLS_HINT = (
    "the server's TLS certificate is not trusted here: if it comes from a private CA, name "
    "that CA's PEM bundle with --ca-bundle FILE or the spec's sources.caBundle"
)


@dataclass(frozen=True)
class NetworkOptions:
    ca_bundle: Path | None = None

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.ca_bundle is not None:
            try:
                ctx.load_verify_locations(cafile=str(self.ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(
                    f"cannot read the CA bundle {self.ca_bundle}: {exc}",
                    "name a PEM file holding the CA certificate(s) your upstreams use",
                ) from None
        return ctx

    @classmethod
    def choose(
        cls, *, flag: Path | None, spec_value: str | None, spec_dir: Path | None
    ) -> NetworkOptions:
        """`--ca-bundle` wins over the spec's `sources.caBundle` (relative to the spec)."""
        if flag is not None:
            return cls(flag)
        if spec_value:
            path = Path(spec_value).expanduser()
            return cls(path if path.is_absolute() or spec_dir is None else spec_dir / path)
        return cls()

    def session(self, *, limit: int = 100) -> aiohttp.ClientSession:
        """An aiohttp session with the environment's proxies and this CA bundle."""
        connector = aiohttp.TCPConnector(limit=limit, ssl=self.ssl_context)
        return aiohttp.ClientSession(connector=connector, trust_env=True)

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener with the environment's proxies (NO_PROXY honoured) and the CA."""
        return urllib.request.build_opener(
            urllib.request.ProxyHandler(),  # reads *_PROXY / NO_PROXY from the environment
            urllib.request.HTTPSHandler(context=self.ssl_context),
        )


def is_certificate_error(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, ssl.SSLCertVerificationError)
    return False


def tls_problem(exc: BaseException) -> str:
    """The certificate problem in words (`certificate verify failed: self-signed ...`)."""
    inner: BaseException | None = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        inner = exc.certificate_error
    elif isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        inner = exc.reason
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {inner.verify_message}"
    return f"TLS: {inner}"
