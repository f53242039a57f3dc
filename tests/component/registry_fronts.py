"""Registries as they behave on the internet, on loopback: real docker-registry daemons behind
token servers and small fronts of our own (aiohttp) that redirect, throttle and count.

- `TokenServer`: a distribution token service (ES256 JWTs with an x5c chain, the format
  docker-registry's `auth.token` verifies) for one registry service; it hands anonymous pull
  tokens for public repositories, and tokens for `private/...` only to its own users.
- `start_token_registry`: Debian's docker-registry configured to trust one token server.
- `Tap`: a pass-through front for a registry that records every Authorization header it sees,
  can answer 429 with Retry-After, add Docker Hub's rate-limit headers, and send blob GETs to a
  storage front with a signed URL (as registries send them to S3 or GCS).
- `Redirector`: answers every /v2/ request with a 307 to another registry on another port and
  repository path (registry.k8s.io does this), never serving content itself.
- `StorageFront`: object storage that answers 400 to any request carrying Authorization (as S3
  does when a signed URL also gets a header), serving blobs straight from a registry's storage.

Every front counts credentials arriving at a host they were not issued for (`foreign`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from airlock import system

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Loop:
    """An asyncio loop in a thread, for aiohttp servers that live across several tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def serve(
        self, app: web.Application, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None
    ) -> str:
        async def start() -> str:
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, host, 0, ssl_context=tls)
            await site.start()
            self.runners.append(runner)
            scheme = "https" if tls else "http"
            return f"{scheme}://{host}:{runner.addresses[0][1]}"

        url: str = self.run(start())
        return url

    def close(self) -> None:
        async def stop() -> None:
            for r in self.runners:
                await r.cleanup()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- token service ---------------------------------------------------------------------------------


@dataclass
class TokenServer:
    name: str  # the issuer
    service: str
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)  # username -> password
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # identity token -> user
    pushers: frozenset[str] = frozenset({"pusher"})
    url: str = ""
    issued: set[str] = field(default_factory=set)
    requests: list[dict[str, str]] = field(default_factory=list)
    foreign: int = 0  # credentials of a user this service does not know
    refused: int = 0  # a known user with a wrong password

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = self.workdir / f"{self.name}.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_post("/token", self.oauth)
        return app

    async def oauth(self, request: web.Request) -> web.Response:
        """OAuth2 refresh-token grant (distribution's token spec), for identity tokens."""
        form = await request.post()
        self.requests.append({k: str(v) for k, v in form.items()} | {"auth": "", "method": "POST"})
        user = self.refresh_tokens.get(str(form.get("refresh_token", "")))
        if form.get("grant_type") != "refresh_token" or user is None:
            if form.get("refresh_token"):
                self.foreign += 1  # a refresh token this service never issued
            return web.json_response({"error": "invalid_grant"}, status=401)
        scope = str(form.get("scope", ""))
        name, actions = scope.split(":")[1], scope.split(":")[2]
        access = [{"type": "repository", "name": name, "actions": actions.split(",")}]
        token = self.jwt(user, access)
        self.issued.add(token)
        return web.json_response({"access_token": token, "expires_in": 300})

    def _user(self, header: str | None) -> str | bool | None:
        """The authenticated user, None for anonymous, False for refused credentials."""
        if not header:
            return None
        if not header.startswith("Basic "):
            self.foreign += 1
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if user not in self.users:
            self.foreign += 1
            return False
        if self.users[user] != password:
            self.refused += 1
            return False
        return user

    def jwt(self, sub: str, access: list[dict[str, Any]]) -> str:
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        now = int(time.time())
        claims = {
            "iss": self.name,
            "sub": sub,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 30,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{b64url(sig)}"

    async def token(self, request: web.Request) -> web.Response:
        self.requests.append(
            dict(request.query) | {"auth": request.headers.get("Authorization", "")}
        )
        user = self._user(request.headers.get("Authorization"))
        if user is False:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        if request.query.get("service") != self.service:
            return web.json_response({"errors": [{"code": "DENIED"}]}, status=400)
        access = []
        for scope in request.query.getall("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository":
                continue
            granted = []
            for action in actions.split(","):
                if action == "pull" and (not name.startswith("private/") or user):
                    granted.append("pull")
                if action in ("push", "delete") and user in self.pushers:
                    granted.append(action)
            access.append({"type": "repository", "name": name, "actions": granted})
        token = self.jwt(str(user or ""), access)
        self.issued.add(token)
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})


def _registry_config(storage: Path, port: int, token: TokenServer) -> str:
    # JSON is YAML: docker-registry reads it as its config
    return json.dumps(
        {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": "airlock-behaviour"},
            "auth": {
                "token": {
                    "realm": f"{token.url}/token",
                    "service": token.service,
                    "issuer": token.name,
                    "rootcertbundle": str(token.bundle),
                }
            },
        }
    )


@dataclass
class TokenRegistry:
    url: str
    storage: Path
    process: system.Process

    def blob_path(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def start_token_registry(name: str, workdir: Path, token: TokenServer) -> TokenRegistry:
    """Debian's docker-registry trusting `token` (it answers /v2/ with 401 until then)."""
    from airlock_lab.distribution import free_port

    binary = system.which("docker-registry")
    assert binary, "docker-registry is required (apt-get install docker-registry)"
    storage = workdir / f"{name}-data"
    for _ in range(3):
        port = free_port()
        config = workdir / f"{name}.yml"
        config.write_text(_registry_config(storage, port, token))
        log = workdir / f"{name}.log"
        proc = system.spawn([binary, "serve", str(config)], log=log)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(150):
            if not proc.alive():
                break
            try:
                opener.open(f"http://127.0.0.1:{port}/v2/", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return TokenRegistry(f"http://127.0.0.1:{port}", storage, proc)
            except OSError:
                pass
            time.sleep(0.1)
        proc.stop()
    raise AssertionError(f"docker-registry {name} did not start: {log.read_text()[-800:]}")


# -- fronts ----------------------------------------------------------------------------------------

Admit = Callable[[str], bool]  # is this Authorization header one this host issued?


@dataclass
class StorageFront:
    """Object storage: signed URLs only; any Authorization header is a 400."""

    registry: TokenRegistry
    secret: bytes = field(default_factory=lambda: os.urandom(16))
    url: str = ""
    gets: int = 0
    foreign: int = 0

    def sign(self, digest: str) -> str:
        sig = hmac.new(self.secret, digest.encode(), hashlib.sha256).hexdigest()
        return f"{self.url}/bucket/{digest}?X-Amz-Signature={sig}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/bucket/{digest}", self.get)
        return app

    async def get(self, request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            self.foreign += 1
            body = (
                "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed"
                "</Message></Error>"
            )
            return web.Response(status=400, text=body, content_type="application/xml")
        digest = request.match_info["digest"]
        want = hmac.new(self.secret, digest.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.query.get("X-Amz-Signature", ""), want):
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")
        self.gets += 1
        data = self.registry.blob_path(digest).read_bytes()
        start = 0
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes="):
            start = int(rng[6:].split("-", 1)[0])
            return web.Response(
                status=206,
                body=data[start:],
                headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            )
        return web.Response(body=data)


@dataclass
class Tap:
    """A pass-through front for one registry: records, throttles, redirects blobs."""

    upstream: str
    admit: Admit
    url: str = ""
    storage: StorageFront | None = None
    throttle: dict[str, int] = field(default_factory=dict)  # path part -> 429s left
    retry_after: str = "1"
    rate_limit: tuple[int, int] | None = None  # (limit, remaining): Docker Hub's headers
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth
    peers: list[str] = field(default_factory=list)  # the client address of each request
    throttled: list[float] = field(default_factory=list)  # when each 429 was sent
    foreign: int = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def forward(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.seen.append((request.method, request.path, auth))
        self.peers.append(request.remote or "")
        if auth and not self.admit(auth):
            self.foreign += 1
        for part, left in self.throttle.items():
            if part in request.path and left > 0:
                self.throttle[part] = left - 1
                self.throttled.append(time.monotonic())
                return web.json_response(
                    {"errors": [{"code": "TOOMANYREQUESTS"}]},
                    status=429,
                    headers={"Retry-After": self.retry_after},
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as resp,
        ):
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            status = resp.status
        if (
            self.storage is not None
            and request.method == "GET"
            and "/blobs/sha256:" in request.path
            and status == 200
        ):
            digest = request.path.rsplit("/", 1)[1]
            raise web.HTTPTemporaryRedirect(self.storage.sign(digest))
        if self.rate_limit is not None and "/manifests/" in request.path:
            limit, remaining = self.rate_limit
            out["RateLimit-Limit"] = f"{limit};w=21600"
            out["RateLimit-Remaining"] = f"{remaining};w=21600"
        return web.Response(status=status, body=data, headers=out)


@dataclass
class Redirector:
    """Every /v2/<name>/... goes, 307, to `target`/v2/<prefix>/<name>/...; it holds nothing."""

    target: str
    prefix: str
    url: str = ""
    seen: list[tuple[str, str]] = field(default_factory=list)
    foreign: int = 0  # this host never challenges: any Authorization is one it did not issue

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v2/{tail:.*}", self.redirect)
        return app

    async def redirect(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.seen.append((request.path, auth))
        if auth:
            self.foreign += 1
        tail = request.match_info["tail"]
        if not tail:
            return web.json_response({})
        raise web.HTTPTemporaryRedirect(f"{self.target}/v2/{self.prefix}/{tail}")


def bearer_admit(token: TokenServer, basic: dict[str, str] | None = None) -> Admit:
    """Admit this token server's tokens (and, when given, Basic credentials of its users)."""
    users = basic or {}

    def admit(header: str) -> bool:
        if header.startswith("Bearer "):
            return header[7:] in token.issued
        if header.startswith("Basic "):
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            return users.get(user) == pw
        return False

    return admit
