"""`bundle create` with nothing changed, answered before the command line's libraries are
imported (standard library only).

A warm create (same spec, cache, output and options, nothing changed upstream) keeps its
bundle as it is (airlock.bundle.reuse), yet the full path still costs about a second: importing
typer, pydantic and aiohttp, reading the spec, and asking upstream again. Each create that
ends well leaves a record (`<cache>/outputs/<key>.replay.json`), keyed by its exact command
line and working directory (airlock.fetch.recording makes it), naming:

- every local file and directory the run read, with its identity (device, inode, size, times),
  the airlock code, the directories Python imports from, and a hash of the environment (a few
  per-session variables left out);
- every upstream request whose answer decided the content: method, URL and the request
  headers sent; the status, the response headers airlock reads and the sha256 of the body.
  Requests for content named by its digest (blobs, manifests by digest, files with a known
  checksum) are left out: their answer cannot change without failing verification;
- the outputs (bundle, volumes, bootstrap script) with their identities;
- what the command prints when it keeps the bundle unchanged, rendered by that run.

`fast_create` takes the record for this very command line and, when every identity still
holds and every recorded request gets the same answer again (http.client, a few connections
per host, each request bounded), prints that output: the full path would have resolved the
same content and kept the same bundle. Anything else (no record, a changed file, another
answer, a proxy, any error) falls through to the full path, which decides as before. Nothing
here writes a bundle or the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airlock.cachedir import default_cache_dir

__all__ = [
    "COMPARED_HEADERS",
    "cache_root",
    "code_fingerprint",
    "display_key",
    "eligible",
    "environment_key",
    "fast_create",
    "identity",
    "record_path",
    "save",
]

FORMAT = "airlock.create-replay/v1"
RECORDS = "outputs"  # in the cache root, beside the output records (airlock.bundle.reuse)
# response headers airlock reads from an answer (the body is compared by its sha256)
COMPARED_HEADERS = ("docker-content-digest", "content-type", "etag", "last-modified", "location")
# options whose meaning reaches past the command line, the files and the upstream answers
_NOT_REPLAYED = frozenset(
    {"--since", "--since-key", "--registry-auth", "--expires", "--help", "-h", "--recovery"}
)
# variables that differ between two shells of one session and that airlock never reads
_VOLATILE_ENV = frozenset(
    {
        "_",
        "OLDPWD",
        "PWD",
        "SHLVL",
        "SSH_CLIENT",
        "SSH_CONNECTION",
        "SSH_TTY",
        "SSH_AUTH_SOCK",
        "WINDOWID",
        "TERM_SESSION_ID",
        "STY",
        "TMUX_PANE",
        "GPG_TTY",
        "XDG_SESSION_ID",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
    }
)
_PROXIES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})
_MAX_REQUESTS = 20000


def eligible(argv: Sequence[str]) -> bool:
    """`bundle create` with no option whose meaning depends on more than is recorded."""
    return list(argv[:2]) == ["bundle", "create"] and not any(
        a.split("=", 1)[0] in _NOT_REPLAYED for a in argv[2:]
    )


def cache_root(argv: Sequence[str]) -> Path:
    """The download cache the command line names (`--cache`), else the default."""
    for i, arg in enumerate(argv):
        if arg == "--cache" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--cache="):
            return Path(arg.split("=", 1)[1])
    return default_cache_dir()


def record_path(root: Path, argv: Sequence[str], cwd: str) -> Path:
    key = hashlib.sha256(json.dumps([list(argv), cwd]).encode()).hexdigest()[:32]
    return root / RECORDS / f"{key}.replay.json"


def identity(path: str) -> list[int] | None:
    """What changes when a file or directory is written, replaced or truncated (None: none)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def code_fingerprint() -> list[Any]:
    """What identifies the code that runs: airlock's version and modules (size and mtime), and
    the directories Python imports from (an installed or removed package changes them)."""
    import airlock

    root = Path(airlock.__file__).parent
    out: list[Any] = [airlock.__version__]
    for p in sorted(root.rglob("*.py")):
        st = p.stat()
        out.append([str(p.relative_to(root)), st.st_size, st.st_mtime_ns])
    out.append([[d, identity(d)] for d in sys.path if d and os.path.isdir(d)])
    return out


def environment_key() -> str:
    env = sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE_ENV)
    return hashlib.sha256(json.dumps(env).encode()).hexdigest()


def display_key() -> list[Any]:
    """What the rendering depends on beyond the environment: terminals and their width."""
    out: list[Any] = []
    for fd in (1, 2):
        try:
            tty = os.isatty(fd)
            out.append(os.get_terminal_size(fd).columns if tty else False)
        except OSError:
            out.append(None)
    return out


def proxied() -> bool:
    return any(k.lower() in _PROXIES for k in os.environ)


def save(path: Path, record: Mapping[str, Any]) -> None:
    """Write a record atomically (a torn or missing record only means the full path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **record}, sort_keys=True))
    os.replace(tmp, path)


def fast_create(argv: Sequence[str]) -> bool:
    """Print the unchanged result of `airlock ARGV` when the last run of this very command
    line left a record that still holds in every respect; False: run the full path."""
    if not eligible(argv) or proxied():
        return False
    try:
        path = record_path(cache_root(argv), argv, os.getcwd())
        record = json.loads(path.read_bytes())
        if not _holds(record, argv):
            return False
        from airlock.replayask import same_answers  # http.client: only when a record holds

        if not same_answers(record["requests"], record.get("ca")):
            return False
        out, err = str(record["stdout"]), str(record["stderr"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if "--debug" in argv:
        err = f"debug: nothing changed since the run recorded in {path}: answered from it\n" + err
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()
    sys.stdout.write(out)
    sys.stdout.flush()
    return True


def _holds(record: Mapping[str, Any], argv: Sequence[str]) -> bool:
    return bool(
        record.get("format") == FORMAT
        and record["argv"] == list(argv)
        and record["cwd"] == os.getcwd()
        and record["environment"] == environment_key()
        and record["display"] == display_key()
        and record["code"] == code_fingerprint()
        and record["outputs"]
        and all(identity(p) == ident for p, ident in record["outputs"])
        and all(identity(p) == ident for p, ident in record["inputs"])
        and len(record["requests"]) <= _MAX_REQUESTS
    )
