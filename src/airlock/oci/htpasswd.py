"""htpasswd files for the registry's Basic auth: parse, verify, and write entries.

The same file docker-registry accepts works here: bcrypt entries (`$2y$`, also `$2a$`/`$2b$`),
which is what distribution requires and what `htpasswd -B` writes. `{SHA}` entries (unsalted
SHA-1, `htpasswd -s`) are read as well, for files carried over from older setups; new entries
are always bcrypt. Lines are `user:hash`; blank lines and `#` comments are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from airlock.atomic import write_atomic
from airlock.errors import UsageError

__all__ = [
    "HTPASSWD_FILE",
    "PASSWORD_FILE",
    "Credentials",
    "Htpasswd",
    "ensure_credentials",
    "hash_password",
    "load_htpasswd",
    "parse_htpasswd",
]

HTPASSWD_FILE = "htpasswd"
PASSWORD_FILE = "registry-password"

_BCRYPT_PREFIXES = ("$2y$", "$2a$", "$2b$")
_SHA_PREFIX = "{SHA}"
# Verifying an unknown user still costs one bcrypt, so timing does not reveal which names exist.
_DUMMY_HASH = b"$2b$10$h.7JoAMD0VyOvs0MZBRVb.B7VH63Ihq2DsJx4vyDRIsr/C.MPbY8a"


def _bcrypt_input(password: str) -> bytes:
    # bcrypt reads at most 72 bytes; Apache and Go truncate, the bcrypt package refuses.
    return password.encode()[:72]


def hash_password(password: str, *, rounds: int = 10) -> str:
    """A bcrypt entry in the `$2y$` form docker-registry and `htpasswd -B` use."""
    hashed = bcrypt.hashpw(_bcrypt_input(password), bcrypt.gensalt(rounds=rounds)).decode()
    return "$2y$" + hashed[4:]


@dataclass
class Htpasswd:
    """Users and their password hashes; `verify` is constant-time per scheme."""

    entries: dict[str, str]
    source: str = "htpasswd"
    # Successful checks, keyed by a SHA-256 of user, password and stored hash: containerd sends
    # credentials on every request and bcrypt costs tens of milliseconds each time.
    _verified: set[bytes] = field(default_factory=set, repr=False)

    def _key(self, user: str, password: str, stored: str) -> bytes:
        return hashlib.sha256(f"{user}\0{password}\0{stored}".encode()).digest()

    def known_good(self, user: str, password: str) -> bool:
        """True when these credentials already verified (cheap: no bcrypt, fine on an event
        loop); False means "not known", call `verify`."""
        stored = self.entries.get(user)
        return stored is not None and self._key(user, password, stored) in self._verified

    def verify(self, user: str, password: str) -> bool:
        stored = self.entries.get(user)
        if stored is None:
            bcrypt.checkpw(_bcrypt_input(password), _DUMMY_HASH)
            return False
        key = self._key(user, password, stored)
        if key in self._verified:
            return True
        ok = _check(password, stored)
        if ok:
            self._verified.add(key)
        return ok

    def line(self, user: str) -> str:
        return f"{user}:{self.entries[user]}"


def _check(password: str, stored: str) -> bool:
    if stored.startswith(_BCRYPT_PREFIXES):
        # The bcrypt package understands $2a$/$2b$; $2y$ is the same algorithm (PHP's name).
        normalised = "$2b$" + stored[4:] if stored.startswith("$2y$") else stored
        try:
            return bcrypt.checkpw(_bcrypt_input(password), normalised.encode())
        except ValueError:
            return False
    if stored.startswith(_SHA_PREFIX):
        expected = stored[len(_SHA_PREFIX) :].encode()
        actual = base64.b64encode(hashlib.sha1(password.encode()).digest())
        return hmac.compare_digest(expected, actual)
    return False


def parse_htpasswd(text: str, *, source: str = "htpasswd") -> Htpasswd:
    """Parse htpasswd text; an unsupported scheme (crypt, MD5 `$apr1$`) is an error naming the line."""
    entries: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise UsageError(
                f"{source}:{lineno}: not a `user:hash` line",
                "create entries with `htpasswd -B FILE USER` (bcrypt)",
            )
        if not hashed.startswith((*_BCRYPT_PREFIXES, _SHA_PREFIX)):
            raise UsageError(
                f"{source}:{lineno}: user {user!r} has an unsupported password hash",
                "use bcrypt (`htpasswd -B`), as docker-registry requires; {SHA} is also read",
            )
        entries[user] = hashed
    if not entries:
        raise UsageError(f"{source}: no users", "add one with `htpasswd -B FILE USER`")
    return Htpasswd(entries, source)


def load_htpasswd(path: Path) -> Htpasswd:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read htpasswd file {path}: {exc.strerror}") from exc
    return parse_htpasswd(text, source=str(path))


@dataclass(frozen=True)
class Credentials:
    """Push credentials: the htpasswd file the registry reads, the password file for clients
    (both 0600). The password is never part of the repr, so it cannot reach a log."""

    user: str
    htpasswd: Path
    password_file: Path
    created: bool
    password: str = field(repr=False)


def ensure_credentials(out_dir: Path, *, user: str) -> Credentials:
    """A random password for `user` in `out_dir/registry-password` and its bcrypt entry in
    `out_dir/htpasswd`, both 0600; an existing pair is kept (a rerun does not lock clients out).
    """
    if not user or ":" in user or any(c.isspace() for c in user):
        raise UsageError(f"invalid user name {user!r}", "use letters, digits, `-` or `_`")
    htpasswd, password_file = out_dir / HTPASSWD_FILE, out_dir / PASSWORD_FILE
    if htpasswd.exists() and password_file.exists():
        password = password_file.read_text().strip()
        users = load_htpasswd(htpasswd)
        if users.verify(user, password):
            return Credentials(user, htpasswd, password_file, False, password)
    out_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    write_atomic(password_file, (password + "\n").encode(), mode=0o600)
    write_atomic(htpasswd, f"{user}:{hash_password(password)}\n".encode(), mode=0o600)
    return Credentials(user, htpasswd, password_file, True, password)
