"""Registry credentials, read where users already keep them; never stored, never printed.

Where they come from, first match wins:

1. the spec: `sources.registries.<host>.credentials` names an environment variable (`env`) or a
   file (`file`) holding `username:secret`, or only the secret when `username` is given too.
   The secret itself is never written in the spec (the spec is recorded in airlock.json).
2. `--registry-auth FILE`: a Docker `config.json` or a containers `auth.json`.
3. The files containerd, skopeo, podman and helm read: `$REGISTRY_AUTH_FILE`,
   `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
   `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`) and helm's
   `~/.config/helm/registry/config.json`.

In one config file, as Docker's CLI reads it: `credHelpers[host]` names a helper program
(`docker-credential-<name> get`, the server on stdin, `{"Username", "Secret"}` on stdout); else
`credsStore` names one for every host (a host it does not know falls back to `auths`); else
`auths[host]` holds `auth` (base64 `user:password`), `username`/`password`, or an
`identitytoken` (an OAuth2 refresh token, exchanged at the token realm). Keys are matched
by host[:port] whatever the scheme or path written (`https://index.docker.io/v1/`).

Credentials are looked up by the host actually contacted (a mirror's own host:port, the host a
redirect leads to), so one host's secret never reaches another. Nothing is read before a
registry asks (a 401), and a helper runs at most once per host.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.errors import RegistryError, UsageError
from airlock.oci.auth import Credentials

__all__ = [
    "DOCKER_HUB_KEYS",
    "CredentialRef",
    "CredentialStore",
    "config_paths",
    "load_credential_ref",
    "normalise_host",
]

# the names Docker's own tools file Docker Hub's credentials under
DOCKER_HUB_KEYS = ("index.docker.io", "docker.io", "registry-1.docker.io")
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_HELPER_TIMEOUT = 30


def normalise_host(key: str) -> str:
    """`https://index.docker.io/v1/` -> `index.docker.io`; `HOST:5000/x` -> `host:5000`."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower()


def _aliases(host: str) -> list[str]:
    h = normalise_host(host)
    return list(DOCKER_HUB_KEYS) if h in DOCKER_HUB_KEYS else [h]


def config_paths(env: Mapping[str, str], home: Path) -> list[Path]:
    """The credential files the container tools read, in the order they read them."""
    out: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "containers/auth.json")
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    out.append(config_home / "containers/auth.json")
    out.append(Path(env.get("DOCKER_CONFIG") or home / ".docker") / "config.json")
    out.append(config_home / "helm/registry/config.json")
    return out


@dataclass(frozen=True)
class CredentialRef:
    """The spec's pointer to a secret: an environment variable or a file, never the value."""

    env: str | None = None
    file: str | None = None
    username: str | None = None


def _split_secret(text: str, username: str | None, *, where: str) -> Credentials:
    value = text.strip()
    if username is not None:
        if not value:
            raise UsageError(f"{where} is empty", "it must hold the registry secret")
        return Credentials(username, value)
    user, sep, secret = value.partition(":")
    if not sep or not user or not secret:
        raise UsageError(
            f"{where} does not hold `username:secret`",
            "write username:secret there, or give `username` beside it in the spec",
        )
    return Credentials(user, secret)


def load_credential_ref(
    ref: CredentialRef, *, host: str, env: Mapping[str, str], base: Path | None = None
) -> Credentials:
    """Read the secret the spec points at (errors name the variable or file, never a value)."""
    if ref.env:
        if ref.env not in env:
            raise UsageError(
                f"sources.registries.{host}.credentials: environment variable {ref.env} is not set",
                f"export {ref.env}=username:secret (or only the secret, with `username` set)",
            )
        return _split_secret(env[ref.env], ref.username, where=f"environment variable {ref.env}")
    assert ref.file is not None
    path = Path(ref.file).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(
            f"sources.registries.{host}.credentials: cannot read {path}: {exc.strerror}",
            "the file must exist and be readable by this user",
        ) from None
    return _split_secret(text, ref.username, where=f"credentials file {path}")


def _decode_auth(value: str, *, where: str) -> Credentials | None:
    try:
        raw = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise UsageError(f"{where}: the `auth` value is not base64 of username:password") from None
    user, sep, secret = raw.partition(":")
    return Credentials(user, secret) if sep and user else None


RunHelper = Callable[[str, str], str | None]  # (program, server) -> stdout, None: not found


def run_helper(program: str, server: str) -> str | None:
    """`docker-credential-<name> get` with the server on stdin; None when it knows no entry."""
    from airlock import system

    exe = system.which(program)
    if exe is None:
        raise RegistryError(
            f"credential helper {program} is not installed",
            "install it, or remove it from credHelpers/credsStore in the config file",
        )
    result = system.run([exe, "get"], input=server, check=False, timeout=_HELPER_TIMEOUT)
    if result.returncode != 0:
        if "not found" in (result.stdout + result.stderr).lower():
            return None
        raise RegistryError(
            f"credential helper {program} failed for {server} (exit {result.returncode})",
            "run it by hand (`echo HOST | " + program + " get`) to see why",
        )
    return result.stdout


@dataclass
class _ConfigFile:
    path: Path
    auths: dict[str, Any]
    helpers: dict[str, str]
    store: str | None


def _read_config(path: Path) -> _ConfigFile | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the registry credentials file {path}: {exc}",
            "it must be a Docker config.json / containers auth.json (JSON)",
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a JSON object", "expected a Docker config.json")
    auths = doc.get("auths") if isinstance(doc.get("auths"), dict) else {}
    helpers = doc.get("credHelpers") if isinstance(doc.get("credHelpers"), dict) else {}
    store = doc.get("credsStore") if isinstance(doc.get("credsStore"), str) else None
    return _ConfigFile(
        path,
        {normalise_host(k): v for k, v in (auths or {}).items()},
        {normalise_host(k): str(v) for k, v in (helpers or {}).items()},
        store or None,
    )


@dataclass
class CredentialStore:
    """Credentials per host, from the spec's references and the users' config files."""

    spec_refs: Mapping[str, CredentialRef] = field(default_factory=dict)  # by upstream host
    files: Sequence[Path] = ()
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    base: Path | None = None  # relative `file:` references are read from here (the spec's dir)
    helper: RunHelper = run_helper
    _configs: list[_ConfigFile] | None = field(default=None, init=False, repr=False)
    _cache: dict[str, Credentials | None] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def default(
        cls,
        *,
        spec_refs: Mapping[str, CredentialRef] | None = None,
        auth_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        base: Path | None = None,
    ) -> CredentialStore:
        environ = dict(os.environ if env is None else env)
        home = Path(environ.get("HOME") or Path.home())
        files = ([auth_file] if auth_file else []) + config_paths(environ, home)
        if auth_file is not None and not auth_file.is_file():
            raise UsageError(f"--registry-auth {auth_file}: no such file")
        return cls(spec_refs=dict(spec_refs or {}), files=files, env=environ, base=base)

    def for_registry(self, upstream: str, contacted: str) -> Credentials | None:
        """The home registry's credentials: the spec's for `upstream`, else the files' for the
        host actually contacted (`contacted`, host[:port])."""
        ref = self.spec_refs.get(upstream)
        if ref is not None:
            key = f"spec:{upstream}"
            if key not in self._cache:
                self._cache[key] = load_credential_ref(
                    ref, host=upstream, env=self.env, base=self.base
                )
            return self._cache[key]
        return self.for_host(contacted)

    def for_host(self, host: str) -> Credentials | None:
        """Credentials the config files hold for `host` (host[:port]); None when none do."""
        key = normalise_host(host)
        if key not in self._cache:
            self._cache[key] = self._lookup(_aliases(key))
        return self._cache[key]

    def _lookup(self, names: Iterable[str]) -> Credentials | None:
        names = list(names)
        for cfg in self._load():
            for name in names:
                helper = cfg.helpers.get(name)
                if helper is not None:
                    return self._from_helper(helper, name)
            if cfg.store:
                for name in names:
                    if (c := self._from_helper(cfg.store, name)) is not None:
                        return c
            for name in names:
                entry = cfg.auths.get(name)
                if isinstance(entry, dict) and (c := self._from_entry(entry, cfg.path)):
                    return c
        return None

    def _load(self) -> list[_ConfigFile]:
        if self._configs is None:
            self._configs = [c for p in self.files if (c := _read_config(p)) is not None]
        return self._configs

    def _from_entry(self, entry: Mapping[str, Any], path: Path) -> Credentials | None:
        token = entry.get("identitytoken")
        if isinstance(token, str) and token:
            return Credentials(str(entry.get("username") or ""), "", identity_token=token)
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            return _decode_auth(entry["auth"], where=str(path))
        user, secret = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(secret, str) and user:
            return Credentials(user, secret)
        return None

    def _from_helper(self, name: str, server: str) -> Credentials | None:
        if not _HELPER_NAME.match(name):
            raise UsageError(f"invalid credential helper name {name!r}")
        program = f"docker-credential-{name}"
        out = self.helper(program, server)
        if out is None:
            return None
        try:
            doc = json.loads(out)
            user, secret = str(doc["Username"]), str(doc["Secret"])
        except (ValueError, KeyError, TypeError):
            raise RegistryError(
                f"credential helper {program} answered something other than "
                '{"Username": ..., "Secret": ...} for ' + server
            ) from None
        if user == "<token>":  # the helper protocol's mark of an identity (refresh) token
            return Credentials("", "", identity_token=secret)
        return Credentials(user, secret)
