"""How airlock reaches upstreams: the environment's proxies and the operator's CA bundle, the
same for every download path (release files, registries, chart repositories, OS package
repositories, and the small metadata `plan` reads).

- Proxies: HTTPS_PROXY, HTTP_PROXY and NO_PROXY (either case), as curl and the container tools
  read them. Every aiohttp request is given its proxy explicitly (`proxy_for(url)`: https
  through a CONNECT tunnel, http through the proxy, NO_PROXY honoured as urllib does); urllib
  openers use a `ProxyHandler` over the same variables. Sessions are NOT made with aiohttp's
  `trust_env`, which would also add Basic credentials from ~/.netrc to requests (a `default`
  entry to every host, object storage and redirect targets included, against the rule that a
  credential goes only where it was issued). No TLS interception is assumed: the upstream's
  certificate is checked end to end through the tunnel.
- CA bundle: a PEM file the operator names (`--ca-bundle`, or the spec's `sources.caBundle`) is
  trusted IN ADDITION to the system's roots, for every TLS connection airlock opens.
- A certificate failure is said as one (with the hint to name the CA bundle), never as a
  generic connection error.
"""

from __future__ import annotations

import base64
import functools
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from airlock.errors import UsageError
from airlock.fetch import recording

__all__ = ["TLS_HINT", "NetworkOptions", "is_certificate_error", "proxy_for", "tls_problem"]

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
        """An aiohttp session trusting this CA bundle; requests take `**proxy_for(url)`."""
        connector = aiohttp.TCPConnector(limit=limit, ssl=self.ssl_context)
        return aiohttp.ClientSession(
            connector=connector, trust_env=False, trace_configs=recording.trace_configs()
        )

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener with the environment's proxies (NO_PROXY honoured) and the CA."""
        return urllib.request.build_opener(
            urllib.request.ProxyHandler(),  # reads *_PROXY / NO_PROXY from the environment
            urllib.request.HTTPSHandler(context=self.ssl_context),
            recording.handler(),  # notes each answer while a create records (airlock.replay)
        )


def proxy_for(url: str) -> dict[str, Any]:
    """`proxy` (and `proxy_headers`) keyword arguments for an aiohttp request to `url`: the
    proxy the environment names for its scheme, unless NO_PROXY lists its host; read at each
    call. Credentials in the proxy URL go to the proxy only (Proxy-Authorization)."""
    parts = urlsplit(url)
    host = parts.hostname
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or not host or urllib.request.proxy_bypass(host):
        return {}
    purl = URL(proxy if "://" in proxy else f"http://{proxy}")
    out: dict[str, Any] = {"proxy": str(purl.with_user(None))}
    if purl.user:
        raw = f"{purl.user}:{purl.password or ''}".encode()
        out["proxy_headers"] = {"Proxy-Authorization": "Basic " + base64.b64encode(raw).decode()}
    return out


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
