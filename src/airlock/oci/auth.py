"""Registry authentication: WWW-Authenticate challenges, bearer tokens, basic credentials.

The distribution token flow: a request without credentials gets `401` with
`WWW-Authenticate: Bearer realm="...",service="...",scope="repository:x:pull"`; a GET on the
realm (with basic credentials when configured) returns `{"token": ...}`; the request is sent
again with `Authorization: Bearer <token>`. Tokens are cached per (realm, service, scope) until
they expire; a `Basic` challenge is answered with the configured credentials.
Parsing is pure; `Authenticator` holds the state of ONE origin (scheme, host, port): a client
keeps one per origin it meets, so a token or password is only ever sent to the origin whose
challenge asked for it (and to the realm that origin named). Credentials are loaded lazily, on
the first challenge, so a public pull never reads a config file or runs a helper.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

import aiohttp

from airlock.errors import RegistryError
from airlock.fetch.network import proxy_for
from airlock.fetch.retry import (
    RetryPolicy,
    TransientError,
    is_transient_status,
    retry_after_seconds,
    with_retries,
)

__all__ = [
    "Authenticator",
    "Challenge",
    "CredentialLoader",
    "Credentials",
    "basic_authorization",
    "parse_www_authenticate",
    "pull_scope",
]

_TOKEN_RE = re.compile(r"\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)")
_PARAM_RE = re.compile(r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*')
_DEFAULT_TOKEN_TTL = 60.0
_TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    # an OAuth2 refresh token (`docker login` to registries that hand one out stores it as
    # `identitytoken`): exchanged at the realm with a POST, as distribution's token spec says
    identity_token: str | None = field(default=None, repr=False)


CredentialLoader = Callable[[], "Credentials | None"]


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "bearer" | "basic" | ...
    params: dict[str, str]


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse one WWW-Authenticate value into its challenges (quoted commas kept intact)."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _TOKEN_RE.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while True:
            pm = _PARAM_RE.match(header, pos)
            if not pm:
                break
            value = pm.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[pm.group(1).lower()] = value
            pos = pm.end()
            if pos < len(header) and header[pos] == ",":
                pos += 1
            else:
                break
        out.append(Challenge(scheme, params))
        while pos < len(header) and header[pos] in ", ":
            pos += 1
    return out


def basic_authorization(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Authorization for one registry: what to send per scope, and how to answer a 401."""

    def __init__(
        self,
        *,
        host: str,
        session: aiohttp.ClientSession,
        credentials: Credentials | CredentialLoader | None,
        policy: RetryPolicy,
        ssl: bool | SSLContext,
    ) -> None:
        self.host = host
        self.session = session
        self._loader = credentials if callable(credentials) else None
        self._credentials = None if callable(credentials) else credentials
        self.policy = policy
        self.ssl = ssl
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._by_scope: dict[str, tuple[str, str, str] | None] = {}  # None = basic
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self.token_requests = 0

    @property
    def sent_credentials(self) -> bool:
        """Whether credentials were loaded (a challenge asked for them) and exist; never loads."""
        return self._loader is None and self._credentials is not None

    @property
    def credentials(self) -> Credentials | None:
        if self._loader is not None:
            self._credentials, self._loader = self._loader(), None
        return self._credentials

    def headers(self, scope: str) -> dict[str, str]:
        """The Authorization header already known for `scope` (none before any challenge)."""
        if scope not in self._by_scope:
            return {}
        key = self._by_scope[scope]
        if key is None:
            creds = self.credentials
            return {"Authorization": basic_authorization(creds)} if creds else {}
        tok = self._tokens.get(key)
        if tok is None or tok.expires <= time.monotonic():
            return {}
        return {"Authorization": f"Bearer {tok.value}"}

    def forget(self, scope: str) -> None:
        key = self._by_scope.pop(scope, None)
        if key is not None:
            self._tokens.pop(key, None)

    async def answer(self, header: str | None, scope: str, *, what: str) -> bool:
        """Get credentials for `scope` from a 401's challenge; False when none can help."""
        challenges = parse_www_authenticate(header or "")
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and bearer.params.get("realm"):
            key = (
                bearer.params["realm"],
                bearer.params.get("service", ""),
                bearer.params.get("scope") or scope,
            )
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:  # one token request per key, even with many blobs waiting
                tok = self._tokens.get(key)
                if tok is None or tok.expires <= time.monotonic():
                    self._tokens[key] = await self._fetch_token(key, what=what)
            self._by_scope[scope] = key
            return True
        creds = self.credentials
        if any(c.scheme == "basic" for c in challenges) and creds and not creds.identity_token:
            if scope in self._by_scope and self._by_scope[scope] is None:
                return False  # the credentials were sent and refused
            self._by_scope[scope] = None
            return True
        return False

    async def _fetch_token(self, key: tuple[str, str, str], *, what: str) -> _Token:
        realm, service, scope = key
        params = {"scope": scope}
        if service:
            params["service"] = service
        headers = {}
        creds = self.credentials
        form: dict[str, str] | None = None
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "airlock",
                **params,
            }
        elif creds is not None:
            headers["Authorization"] = basic_authorization(creds)

        async def attempt(_n: int) -> dict[str, Any]:
            self.token_requests += 1
            request = (
                self.session.post(
                    realm, data=form, ssl=self.ssl, timeout=_TOKEN_TIMEOUT, **proxy_for(realm)
                )
                if form is not None
                else self.session.get(
                    realm,
                    params=params,
                    headers=headers,
                    ssl=self.ssl,
                    timeout=_TOKEN_TIMEOUT,
                    **proxy_for(realm),
                )
            )
            async with request as resp:
                if resp.status == 200:
                    data = await resp.json(content_type=None)
                    if not isinstance(data, dict):
                        raise RegistryError(f"token service {realm} answered non-JSON for {what}")
                    return data
                if is_transient_status(resp.status):
                    raise TransientError(
                        f"token service HTTP {resp.status}",
                        retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                    )
                raise RegistryError(
                    f"access denied: {what}: the token service {realm} answered HTTP {resp.status}",
                    f"check the registry credentials for {self.host} (the spec's "
                    f"sources.registries.<host>.credentials, --registry-auth, or "
                    "docker/podman login)"
                    if resp.status in (401, 403)
                    else "the registry's token service refused the request",
                )

        try:
            data = await with_retries(
                attempt, policy=self.policy, what=f"token for {what}", error=RegistryError
            )
        except aiohttp.ClientError as exc:
            raise RegistryError(f"token service {realm} for {what}: {exc}") from exc
        except ValueError as exc:
            raise RegistryError(f"token service {realm} answered invalid JSON for {what}") from exc
        value = data.get("token") or data.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"token service {realm} returned no token for {what}")
        ttl = data.get("expires_in")
        ttl_s = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else _DEFAULT_TOKEN_TTL
        # renew a little early so a token does not expire between check and use
        return _Token(value, time.monotonic() + max(1.0, ttl_s - 5.0))
