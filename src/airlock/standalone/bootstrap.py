"""Install airlock on an offline node from the wheelhouse a bundle carries (standard library only).

    python3 airlock-bootstrap.py BUNDLE [--key PUB ...] [--allow-unsigned] [--venv DIR]
    python3 airlock-bootstrap.py --from http://FIRST-NODE:PORT/ [--key PUB ...] [--venv DIR]
        [--cache DIR]

Nothing in the bundle is trusted before its signature: the bundle's headers are indexed (the
hardened indexer, no extraction), airlock.json's Ed25519 signature is checked against the keys
named with `--key`, else every `*.pub` in /etc/airlock/trusted-keys/; then each wheel for this
Python and machine is copied out and checked against the digest airlock.json pins. Only then is a
venv made (without ensurepip: pip runs from its own wheel in the wheelhouse) and airlock installed
with `pip install --no-index` from those wheels alone. Any refusal happens before the install
directory exists. No key: refused, unless `--allow-unsigned`, and then every line says UNVERIFIED.

`airlock bootstrap-script` writes this module, with the indexer, the volume finder and the Ed25519
check it imports, as one file (`airlock-bootstrap.py`); `bundle create` writes it beside the bundle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.standalone import ed25519, tarindex, volumes

__all__ = [
    "BootstrapError",
    "Bundle",
    "listed_wheels",
    "main",
    "parse_manifest",
    "run",
    "run_from",
]

EXIT_FAILED, EXIT_USAGE, EXIT_VERIFY = 1, 2, 3
DEFAULT_VENV = Path("/opt/airlock/venv")
DEFAULT_CACHE = Path("/var/lib/airlock/fetched")  # as `node install --from` keeps its blobs
TRUSTED_KEYS_DIR = Path(os.environ.get("AIRLOCK_TRUSTED_KEYS", "/etc/airlock/trusted-keys"))
MIN_PYTHON = (3, 11)

_AIRLOCK_JSON = "airlock.json"
_SIGNATURE = "airlock.json.sig"
_MAX_AIRLOCK_JSON = 64 << 20
_MAX_SIGNATURE = 4096
_CHUNK = 1 << 20
_WHEEL_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.+!]+)(-\d[^-]*)?"
    r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class BootstrapError(Exception):
    def __init__(self, message: str, *, code: int = EXIT_VERIFY) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Wheel:
    name: str
    digest: str
    size: int


def _say(text: str) -> None:
    print(f"bootstrap: {text}", flush=True)


# --- reading the bundle ------------------------------------------------------------------------


class Bundle:
    """The bundle's volumes, indexed; members read by offset, never extracted whole."""

    def __init__(self, path: Path) -> None:
        try:
            found = volumes.locate(path)
        except volumes.VolumeError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            raise BootstrapError(f"{exc.message}{hint}", code=EXIT_USAGE) from exc
        self.where = str(found.parts_path or found.paths[0])
        self._check_present(found)
        self.reader = tarindex.VolumeReader(found.paths)
        self.members: dict[str, tarindex.TarEntry] = {}

    @staticmethod
    def _check_present(found: volumes.Located) -> None:
        listed = found.parts.get("volumes", []) if found.parts else []
        for path, info in zip(found.paths, listed or [None] * len(found.paths), strict=True):
            if not path.is_file():
                raise BootstrapError(f"volume {path.name} missing (expected at {path})")
            size = info.get("size") if isinstance(info, dict) else None
            if isinstance(size, int) and path.stat().st_size != size:
                raise BootstrapError(
                    f"volume {path.name} is {path.stat().st_size} bytes, the parts file says "
                    f"{size} (truncated or wrong file)"
                )

    def index(self) -> tuple[bytes, bytes | None]:
        """Index every header; returns airlock.json and its signature (None when unsigned)."""
        entries = tarindex.iter_entries(self.reader.read_at, self.reader.size)
        manifest: bytes | None = None
        signature: bytes | None = None
        limit = tarindex.MAX_MEMBERS
        try:
            for count, entry in enumerate(entries, start=1):
                if count == 1:
                    if entry.name != _AIRLOCK_JSON or entry.is_dir:
                        raise BootstrapError(
                            f"{self.where} is not an airlock bundle (it does not start with "
                            f"{_AIRLOCK_JSON})"
                        )
                    manifest = self.read(entry, _MAX_AIRLOCK_JSON)
                    limit = _entry_limit(manifest)
                elif count > limit:
                    raise BootstrapError(f"{self.where} has more entries than airlock.json lists")
                elif entry.name in self.members:
                    raise BootstrapError(f"{self.where} holds {entry.name!r} twice")
                if count == 2 and entry.name == _SIGNATURE:
                    signature = self.read(entry, _MAX_SIGNATURE)
                self.members[entry.name] = entry
        except tarindex.TarIndexError as exc:
            hint = "; a volume is missing or short" if exc.truncated else ""
            raise BootstrapError(f"{self.where}: {exc.message}{hint}") from exc
        if manifest is None:
            raise BootstrapError(f"{self.where} is empty")
        return manifest, signature

    def read(self, entry: tarindex.TarEntry, limit: int) -> bytes:
        if entry.size > limit:
            raise BootstrapError(f"{entry.name} is {entry.size} bytes (at most {limit} allowed)")
        return self.reader.read_at(entry.offset, entry.size)

    def copy_checked(self, member: str, wheel: Wheel, dest: Path) -> None:
        entry = self.members.get(member)
        if entry is None or entry.is_dir:
            raise BootstrapError(f"wheel {wheel.name} ({wheel.digest}) is missing from the bundle")
        if entry.size != wheel.size:
            raise BootstrapError(
                f"wheel {wheel.name} is {entry.size} bytes, airlock.json says {wheel.size}"
            )
        digest = hashlib.sha256()
        with dest.open("wb") as out:
            done = 0
            while done < entry.size:
                chunk = self.reader.read_at(entry.offset + done, min(_CHUNK, entry.size - done))
                if not chunk:
                    raise BootstrapError(f"{self.where} is truncated inside wheel {wheel.name}")
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
        if "sha256:" + digest.hexdigest() != wheel.digest:
            raise BootstrapError(
                f"wheel {wheel.name} does not match airlock.json: sha256 {digest.hexdigest()}, "
                f"expected {wheel.digest.split(':', 1)[1]} (the bundle was altered or damaged)"
            )

    def close(self) -> None:
        self.reader.close()


def _entry_limit(manifest: bytes) -> int:
    """airlock.json, its signature, oci-layout, index.json, two directories and the blobs."""
    try:
        blobs = json.loads(manifest).get("blobs", [])
    except (ValueError, AttributeError):
        return 8  # parse errors are reported after the signature check
    return len(blobs) + 8 if isinstance(blobs, list) else 8


# --- trust -------------------------------------------------------------------------------------


def trusted_keys(named: Sequence[Path]) -> list[Path]:
    if named:
        return list(named)
    if TRUSTED_KEYS_DIR.is_dir():
        return sorted(TRUSTED_KEYS_DIR.glob("*.pub"))
    return []


def check_signature(
    manifest: bytes, signature: bytes | None, keys: Sequence[Path], *, allow_unsigned: bool
) -> str:
    """The key that verified airlock.json, or "UNVERIFIED" (only with allow_unsigned)."""
    if not keys:
        if allow_unsigned:
            return "UNVERIFIED"
        raise BootstrapError(
            f"no trusted key: name the bundle's public key with --key PUB, or put it in "
            f"{TRUSTED_KEYS_DIR}/ (--allow-unsigned installs UNVERIFIED)"
        )
    if signature is None:
        raise BootstrapError(
            "airlock.json is not signed, but a key was given: refusing an unsigned bundle"
        )
    for path in keys:
        try:
            raw = ed25519.public_key_from_pem(path.read_bytes())
        except OSError as exc:
            raise BootstrapError(
                f"cannot read key {path}: {exc.strerror}", code=EXIT_USAGE
            ) from exc
        except ed25519.BadPublicKey as exc:
            raise BootstrapError(f"key {path}: {exc}", code=EXIT_USAGE) from exc
        if ed25519.verify(raw, manifest, signature):
            return str(path)
    names = ", ".join(str(p) for p in keys)
    raise BootstrapError(
        f"the signature of airlock.json does not verify with {names} "
        "(airlock.json was altered, or signed with another key)"
    )


# --- choosing the wheels -----------------------------------------------------------------------


def parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BootstrapError(f"airlock.json is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != "airlock.bundle/v1":
        raise BootstrapError("airlock.json is not an airlock.bundle/v1 manifest")
    return doc


def listed_wheels(doc: dict[str, Any]) -> list[Wheel]:
    out = []
    for f in doc.get("files") or []:
        if not isinstance(f, dict) or f.get("kind") != "wheel":
            continue
        name, digest, size = f.get("name"), f.get("digest"), f.get("size")
        if not (isinstance(name, str) and _WHEEL_RE.match(name) and "/" not in name):
            raise BootstrapError(f"airlock.json lists a wheel with a bad name: {name!r}")
        if not (isinstance(digest, str) and _DIGEST_RE.match(digest) and isinstance(size, int)):
            raise BootstrapError(f"airlock.json lists wheel {name} without a sha256 digest")
        out.append(Wheel(name, digest, size))
    if not out:
        raise BootstrapError("this bundle carries no wheelhouse (created with --no-wheelhouse?)")
    return out


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def fits(wheel_name: str, version: tuple[int, int], arch: str) -> bool:
    """Whether a wheel may install on CPython `version` on `arch` (pip makes the final choice;
    this only keeps other targets' wheels out of the copy)."""
    m = _WHEEL_RE.match(wheel_name)
    if m is None:
        return False
    plats = m["plat"].split(".")
    if not any(p == "any" or p.endswith("_" + arch) for p in plats):
        return False
    cp = f"cp{version[0]}{version[1]}"
    for py in m["py"].split("."):
        if py in ("py3", f"py{version[0]}{version[1]}", cp):
            return True
        abi3 = m["abi"] == "abi3" and py.startswith("cp3") and py[3:].isdigit()
        if abi3 and int(py[3:]) <= version[1]:
            return True
    return False


def select(wheels: Sequence[Wheel], doc: dict[str, Any]) -> list[Wheel]:
    version = sys.version_info[:2]
    arch = machine()
    chosen = [w for w in wheels if fits(w.name, (version[0], version[1]), arch)]
    carried = (doc.get("resolved") or {}).get("wheelhouse") or {}
    pythons = carried.get("pythons") or []
    arches = carried.get("architectures") or []
    here = f"{version[0]}.{version[1]}"
    if (pythons and here not in pythons) or (arches and arch not in arches):
        raise BootstrapError(
            f"this bundle's wheelhouse is for Python {', '.join(pythons)} on "
            f"{', '.join(arches)}, not Python {here} on {arch}: add them to the spec's "
            "wheelhouse (pythons, architectures) and create the bundle again",
            code=EXIT_FAILED,
        )
    names = {_WHEEL_RE.match(w.name)["name"].lower() for w in chosen}  # type: ignore[index]
    for needed in ("airlock", "pip"):
        if needed not in names:
            raise BootstrapError(
                f"this bundle carries no {needed} wheel for Python {here} on {arch}",
                code=EXIT_FAILED,
            )
    return chosen


# --- installing --------------------------------------------------------------------------------


def _pip_wheel(directory: Path) -> Path:
    return next(p for p in sorted(directory.glob("pip-*.whl")))


def _airlock_version(wheels: Sequence[Wheel]) -> str:
    for w in wheels:
        m = _WHEEL_RE.match(w.name)
        if m and m["name"].lower() == "airlock":
            return m["version"]
    raise BootstrapError("no airlock wheel", code=EXIT_FAILED)


def _distributions(wheels: Sequence[Wheel]) -> list[str]:
    names = set()
    for w in wheels:
        m = _WHEEL_RE.match(w.name)
        if m:
            names.add(m["name"].lower().replace("_", "-"))
    return sorted(names)


def install(wheel_dir: Path, venv_dir: Path, wheels: Sequence[Wheel]) -> str:
    """A venv without ensurepip, then pip (run from its own wheel) installs airlock offline.

    `--no-deps`: the wheelhouse holds exactly what the node runs (dependencies only the connected
    side uses are left out), so every distribution carried for this target is named instead.
    A python3 without the venv module gets `pip install --target DIR/lib` and a launcher
    `DIR/bin/airlock` instead.
    """
    try:
        import venv
    except ImportError:
        venv = None  # type: ignore[assignment]
    version = _airlock_version(wheels)
    created = not venv_dir.exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1")
    lib = venv_dir / "lib"
    target: list[str] = []
    try:
        if venv is not None:
            venv.EnvBuilder(with_pip=False, symlinks=True).create(venv_dir)
            python = str(venv_dir / "bin" / "python")
        else:
            _say(f"this python3 has no venv module: installing into {lib} with a launcher")
            python, target = sys.executable, ["--target", str(lib), "--upgrade"]
        pip = [python, str(_pip_wheel(wheel_dir) / "pip"), "install", "--no-index", "--no-deps"]
        pip += ["--find-links", str(wheel_dir), "--no-cache-dir", "--disable-pip-version-check"]
        pip += ["--no-warn-script-location", "--quiet", *target]
        wanted = [d if d != "airlock" else f"airlock=={version}" for d in _distributions(wheels)]
        _run([*pip, *wanted], env, f"pip could not install airlock {version} from the wheelhouse")
        if venv is None:
            _write_launcher(venv_dir / "bin" / "airlock", lib)
            env["PYTHONPATH"] = str(lib)
        _run([python, "-c", "import airlock.cli.main"], env, "the installed airlock does not start")
    except BaseException:
        if created:
            shutil.rmtree(venv_dir, ignore_errors=True)
        raise
    return version


def _write_launcher(path: Path, lib: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{sys.executable} -s\nimport sys\n\nsys.path.insert(0, {str(lib)!r})\n"
        "from airlock.cli.entry import run\n\nsys.exit(run())\n"
    )
    path.chmod(0o755)


def _run(cmd: Sequence[str], env: dict[str, str], failure: str) -> None:
    proc = subprocess.run(list(cmd), env=env, check=False)
    if proc.returncode != 0:
        raise BootstrapError(
            f"{failure} (exit {proc.returncode}); see the message above", code=EXIT_FAILED
        )


def run(
    bundle_path: Path,
    *,
    keys: Sequence[Path] = (),
    allow_unsigned: bool = False,
    venv_dir: Path = DEFAULT_VENV,
) -> str:
    """Check, then install; returns the summary line."""
    bundle = Bundle(bundle_path)
    try:
        manifest, signature = bundle.index()
        trusted = check_signature(
            manifest, signature, trusted_keys(keys), allow_unsigned=allow_unsigned
        )
        if trusted == "UNVERIFIED":
            _say("UNVERIFIED: no trusted key; airlock.json's signature is not checked")
        else:
            _say(f"airlock.json's signature verified with {trusted}")
        doc = parse_manifest(manifest)
        wheels = select(listed_wheels(doc), doc)
        with tempfile.TemporaryDirectory(prefix="airlock-wheels-") as tmp:
            for w in wheels:
                bundle.copy_checked(
                    f"blobs/sha256/{w.digest.split(':', 1)[1]}", w, Path(tmp) / w.name
                )
            checked = "UNVERIFIED (digests checked against an unsigned airlock.json)"
            if trusted != "UNVERIFIED":
                checked = "checked against the signed airlock.json"
            _say(
                f"{len(wheels)} wheels for Python {sys.version_info[0]}.{sys.version_info[1]} on {machine()} {checked}"
            )
            version = install(Path(tmp), venv_dir, wheels)
    finally:
        bundle.close()
    note = " UNVERIFIED" if trusted == "UNVERIFIED" else ""
    return f"airlock {version} installed{note} in {venv_dir}; next: {venv_dir}/bin/airlock bundle verify {bundle_path}"


# --- from another node's share (`airlock bundle share`) ------------------------------------------


def _fetch(url: str, limit: int) -> bytes | None:
    """The body at `url` (None on 404), at most `limit` bytes."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise BootstrapError(f"{url}: HTTP {exc.code}", code=EXIT_FAILED) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BootstrapError(f"{url}: {reason}", code=EXIT_FAILED) from exc
    if len(data) > limit:
        raise BootstrapError(f"{url} is larger than {limit} bytes")
    return data


def _download_checked(url: str, wheel: Wheel, dest: Path) -> None:
    digest = hashlib.sha256()
    data = _fetch(url, wheel.size)
    if data is None:
        raise BootstrapError(f"wheel {wheel.name} ({wheel.digest}) is missing from {url}")
    digest.update(data)
    if len(data) != wheel.size or "sha256:" + digest.hexdigest() != wheel.digest:
        raise BootstrapError(
            f"wheel {wheel.name} from {url} does not match airlock.json: sha256 "
            f"{digest.hexdigest()}, {len(data)} bytes; expected {wheel.digest}, {wheel.size}"
        )
    dest.write_bytes(data)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _from_cache(cache: Path | None, wheel: Wheel, dest: Path) -> bool:
    """A wheel fetched before (cache/blobs/sha256/<hex>), copied to `dest` and used when the
    copy (what pip installs) matches airlock.json; one that does not is removed."""
    if cache is None:
        return False
    blob = cache / "blobs" / "sha256" / wheel.digest.split(":", 1)[1]
    if not blob.is_file():
        return False
    shutil.copyfile(blob, dest)
    if _file_sha256(dest) == wheel.digest:
        return True
    _say(f"the kept {wheel.name} does not match airlock.json: fetching it again")
    blob.unlink()
    dest.unlink()
    return False


def _keep(cache: Path | None, wheel: Wheel, checked: Path) -> None:
    """Keep a checked wheel for a later run (written aside, then renamed into place)."""
    if cache is None:
        return
    blobs = cache / "blobs" / "sha256"
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=blobs)
        with os.fdopen(fd, "wb") as out, checked.open("rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
        os.replace(tmp, blobs / wheel.digest.split(":", 1)[1])
    except OSError as exc:  # only a later run's speed depends on it
        _say(f"could not keep {wheel.name} in {cache}: {exc.strerror or exc}")


def run_from(
    url: str,
    *,
    keys: Sequence[Path] = (),
    allow_unsigned: bool = False,
    venv_dir: Path = DEFAULT_VENV,
    cache: Path | None = None,
) -> str:
    """As `run`, with airlock.json, its signature and this node's wheels fetched from a share.

    With `cache`, wheels fetched by an earlier run (and still matching the signed airlock.json)
    are used instead of fetched again, and wheels fetched now are kept there."""
    base = url.rstrip("/") + "/"
    manifest = _fetch(base + _AIRLOCK_JSON, _MAX_AIRLOCK_JSON)
    if manifest is None:
        raise BootstrapError(f"{base}{_AIRLOCK_JSON}: not found", code=EXIT_FAILED)
    signature = _fetch(base + _SIGNATURE, _MAX_SIGNATURE)
    trusted = check_signature(
        manifest, signature, trusted_keys(keys), allow_unsigned=allow_unsigned
    )
    if trusted == "UNVERIFIED":
        _say("UNVERIFIED: no trusted key; airlock.json's signature is not checked")
    else:
        _say(f"airlock.json's signature verified with {trusted}")
    doc = parse_manifest(manifest)
    wheels = select(listed_wheels(doc), doc)
    fetched = len(manifest) + len(signature or b"")
    reused = 0
    with tempfile.TemporaryDirectory(prefix="airlock-wheels-") as tmp:
        for w in wheels:
            dest = Path(tmp) / w.name
            if _from_cache(cache, w, dest):
                reused += 1
                continue
            blob = f"{base}blobs/sha256/{w.digest.split(':', 1)[1]}"
            _download_checked(blob, w, dest)
            _keep(cache, w, dest)
            fetched += w.size
        kept = f", {reused} already here" if reused else ""
        _say(f"{len(wheels)} wheels ({fetched} bytes fetched from {base}{kept}), each checked")
        version = install(Path(tmp), venv_dir, wheels)
    note = " UNVERIFIED" if trusted == "UNVERIFIED" else ""
    return f"airlock {version} installed{note} in {venv_dir}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="airlock-bootstrap.py", description="install airlock offline from a bundle"
    )
    parser.add_argument(
        "bundle", type=Path, nargs="?", help="NAME.airlock.tar, its parts file or first volume"
    )
    parser.add_argument("--from", dest="source", help="another node's share, http://ADDR:PORT/")
    parser.add_argument("--key", type=Path, action="append", default=[], help="trusted public key")
    parser.add_argument("--allow-unsigned", action="store_true", help="install UNVERIFIED")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="where to install")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="with --from: wheels kept between runs"
    )
    args = parser.parse_args(argv)
    if (args.bundle is None) == (args.source is None):
        parser.error("give a BUNDLE or --from URL (one of them)")
    try:
        if args.source is not None:
            summary = run_from(
                args.source,
                keys=args.key,
                allow_unsigned=args.allow_unsigned,
                venv_dir=args.venv,
                cache=args.cache,
            )
        else:
            summary = run(
                args.bundle, keys=args.key, allow_unsigned=args.allow_unsigned, venv_dir=args.venv
            )
    except BootstrapError as exc:
        verdict = "refused" if exc.code == EXIT_VERIFY else "failed"
        print(f"bootstrap: {verdict}: {exc.message}", file=sys.stderr)
        return exc.code
    _say(summary)
    return 0
