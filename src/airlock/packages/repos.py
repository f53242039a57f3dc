"""OS package repository metadata: fetched, checksum-verified, optionally signature-verified.

Two formats, each read the way its own tools read it:

- Debian/Ubuntu: `dists/<suite>/InRelease` (or `Release` + `Release.gpg`), then
  `<component>/binary-<arch>/Packages(.xz|.gz)`, whose sha256 and size must match the Release.
  A repository is named in the spec by its suite URL, `<archive>/dists/<suite>`, with the
  components after `#` (`.../dists/bookworm#main,contrib`; `main` when none).
- RPM: `repodata/repomd.xml`, then the `primary` data (`.gz`, `.xz`, `.zst`, `.bz2`), whose
  checksum must match repomd. A repository is named by the URL of the directory holding
  `repodata/`.

Signatures: when keys are given, `InRelease` / `Release.gpg` / `repomd.xml.asc` are checked with
Debian's `gpgv` against a keyring made from exactly those keys, and a missing or bad signature is
refused (SignatureError). Only the bytes gpgv reports as signed are used. Without keys the
metadata is used unsigned and `RepoMetadata.signed` says so.

`load_apt_lists` reads what `apt-get update` left in /var/lib/apt/lists (the same checks: the
InRelease signature and the Release's sha256 of the uncompressed Packages).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import lzma
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from airlock import system
from airlock.errors import DigestMismatch, FetchError, UsageError, VerificationError
from airlock.fetch.network import TLS_HINT, is_certificate_error, tls_problem
from airlock.resolve.urls import apply_mirror

__all__ = [
    "Fetch",
    "ReleaseEntry",
    "ReleaseFile",
    "RepoMetadata",
    "SignatureError",
    "build_keyring",
    "clearsigned_body",
    "dearmor",
    "debian_arch",
    "gpg_verify",
    "load_apt_lists",
    "load_debian_repository",
    "load_rpm_repository",
    "parse_debian_repo_url",
    "parse_release",
    "parse_repomd",
    "rpm_arch",
    "url_reader",
]

Fetch = Callable[[str], bytes]
PackageFormat = Literal["deb", "rpm"]

_MAX_METADATA = 512 << 20
_DEB_ARCH = {
    "amd64": "amd64",
    "arm64": "arm64",
    "arm": "armhf",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
}
_RPM_ARCH = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm": "armv7hl",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
_REPO_NS = "{http://linux.duke.edu/metadata/repo}"


class SignatureError(VerificationError):
    """Repository metadata is not signed by any of the keys given."""


@dataclass(frozen=True)
class RepoMetadata:
    """One verified package index, ready for the solver."""

    format: PackageFormat
    name: str  # shown to users: "https://.../debian bookworm main" or the rpm repo URL
    base_url: str  # package locations (Filename / location href) are relative to this
    index_path: Path  # decompressed, verified Packages file or primary.xml
    signed: bool  # a signature was verified against the given keys


@dataclass(frozen=True)
class ReleaseEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class ReleaseFile:
    fields: dict[str, str]
    files: dict[str, ReleaseEntry] = field(default_factory=dict)

    @property
    def architectures(self) -> list[str]:
        return self.fields.get("architectures", "").split()

    @property
    def components(self) -> list[str]:
        return self.fields.get("components", "").split()


def debian_arch(platform: str) -> str:
    """`linux/amd64` -> `amd64`, `linux/arm/v7` -> `armhf`."""
    arch = platform.split("/")[1] if "/" in platform else platform
    return _DEB_ARCH.get(arch, arch)


def rpm_arch(platform: str) -> str:
    """`linux/amd64` -> `x86_64`, `linux/arm64` -> `aarch64`."""
    arch = platform.split("/")[1] if "/" in platform else platform
    return _RPM_ARCH.get(arch, arch)


# ---------------------------------------------------------------------------- reading bytes


def url_reader(
    mirrors: Mapping[str, str] | None = None,
    *,
    attempts: int = 3,
    opener: urllib.request.OpenerDirector | None = None,
) -> Fetch:
    """Read `file://` URLs and plain paths from disk, http(s) through the spec's mirrors (and
    `opener`: the environment's proxies and the operator's CA, see airlock.fetch.network)."""
    mirror_map = dict(mirrors or {})
    open_url = (opener or urllib.request.build_opener()).open

    def read(url: str) -> bytes:
        if url.startswith("file://"):
            return _read_local(Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)), url)
        if not url.startswith(("http://", "https://")):
            return _read_local(Path(url), url)
        target = apply_mirror(url, mirror_map)
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                with open_url(target, timeout=30) as resp:
                    data: bytes = resp.read(_MAX_METADATA + 1)
                if len(data) > _MAX_METADATA:
                    raise FetchError(f"{url}: metadata larger than {_MAX_METADATA} bytes")
                return data
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise _NotFound(url, exc.code) from None
                last = exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if is_certificate_error(exc):
                    raise FetchError(f"{url}: {tls_problem(exc)}", hint=TLS_HINT) from None
                last = exc
            time.sleep(min(0.2 * 2**attempt, 2))
        raise FetchError(
            f"{url}: unreachable after {attempts} attempts ({last})"
            + (f" (fetched as {target})" if target != url else ""),
            hint="on a machine without internet, point `sources.files` at a mirror",
        )

    return read


class _NotFound(FetchError):
    def __init__(self, url: str, status: int = 404) -> None:
        super().__init__(f"{url}: HTTP {status}", hint="check the repository URL in the spec")
        self.url = url


def _read_local(path: Path, url: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _NotFound(url) from None
    except OSError as exc:
        raise FetchError(f"{url}: {exc.strerror}") from None


def _try(fetch: Fetch, url: str) -> bytes | None:
    try:
        return fetch(url)
    except _NotFound:
        return None


# ----------------------------------------------------------------------------- signatures


def dearmor(data: bytes) -> bytes:
    """OpenPGP ASCII armor (any number of blocks) -> binary packets; binary input unchanged."""
    text = data.decode("ascii", errors="replace")
    if "-----BEGIN PGP" not in text:
        return data
    out = b""
    for block in re.findall(r"-----BEGIN PGP [^-]+-----\r?\n(.*?)-----END PGP", text, re.S):
        # armor headers end at the first blank line; the `=XXXX` line is the CRC24
        _headers, _, body = block.partition("\n\n") if "\n\n" in block else ("", "", block)
        lines = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.startswith("=")]
        out += base64.b64decode("".join(lines))
    return out


def build_keyring(keys: Sequence[Path | bytes], dest: Path) -> Path:
    """A gpgv keyring holding exactly the given public keys (armored or binary)."""
    blobs = [k if isinstance(k, bytes) else Path(k).read_bytes() for k in keys]
    dest.write_bytes(b"".join(dearmor(b) for b in blobs))
    return dest


def gpg_verify(
    signed: bytes,
    *,
    keyring: Path,
    what: str,
    signature: bytes | None = None,
) -> bytes:
    """Check a clearsigned document (or `signed` + detached `signature`); return the signed bytes.

    Raises SignatureError naming `what` when no key in `keyring` made a good signature.
    """
    with tempfile.TemporaryDirectory(prefix="airlock-gpgv-") as tmp:
        t = Path(tmp)
        data = t / "data"
        data.write_bytes(signed)
        argv = [
            "gpgv",
            "--homedir",
            str(t),
            "--keyring",
            str(keyring.resolve()),
            "--status-fd",
            "1",
        ]
        if signature is None:
            out = t / "out"
            argv += ["--output", str(out), str(data)]
        else:
            sig = t / "sig"
            sig.write_bytes(dearmor(signature))
            argv += [str(sig), str(data)]
        result = system.run(argv, check=False, timeout=120)
        good = result.returncode == 0 and "[GNUPG:] VALIDSIG" in result.stdout
        if not good:
            detail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise SignatureError(
                f"{what}: signature does not verify against the given keys ({detail[0]})",
                hint="the metadata was changed or is signed by another key; check the keys "
                "given for this repository",
            )
        return (t / "out").read_bytes() if signature is None else signed


def clearsigned_body(text: str) -> str:
    """The text of a clearsigned message, without verifying it (for repositories with no key)."""
    if "-----BEGIN PGP SIGNED MESSAGE-----" not in text:
        return text
    _head, _, rest = text.partition("-----BEGIN PGP SIGNED MESSAGE-----")
    _hashes, _, rest = rest.partition("\n\n")
    body, _, _sig = rest.partition("-----BEGIN PGP SIGNATURE-----")
    lines = [ln[2:] if ln.startswith("- ") else ln for ln in body.split("\n")]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------- Debian


def parse_release(text: str) -> ReleaseFile:
    """Fields (lower-cased keys) and the SHA256 file list of a Debian Release file."""
    fields: dict[str, str] = {}
    files: dict[str, ReleaseEntry] = {}
    current = ""
    for line in clearsigned_body(text).splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if current == "sha256":
                parts = line.split()
                if len(parts) == 3 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
                    files[parts[2]] = ReleaseEntry(parts[0].lower(), int(parts[1]))
            continue
        key, _, value = line.partition(":")
        current = key.strip().lower()
        fields[current] = value.strip()
    return ReleaseFile(fields, files)


def parse_debian_repo_url(url: str) -> tuple[str, str, list[str]]:
    """`<archive>/dists/<suite>[#comp,comp]` -> (archive URL, suite, components)."""
    base, _, frag = url.partition("#")
    m = re.match(r"^(.*?)/dists/([^/]+)/?$", base)
    if m is None:
        raise UsageError(
            f"not a Debian repository URL: {url}",
            hint="name the suite: https://MIRROR/debian/dists/bookworm#main",
        )
    comps = [c for c in frag.split(",") if c] or ["main"]
    return m.group(1).rstrip("/") + "/", m.group(2), comps


def _verify_bytes(data: bytes, entry: ReleaseEntry, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256 or len(data) != entry.size:
        raise DigestMismatch(
            what,
            f"sha256:{entry.sha256} ({entry.size} bytes)",
            f"sha256:{actual} ({len(data)} bytes)",
            hint="the index does not match its signed Release: a mirror is mid-sync or the file "
            "was tampered with; retry later or use another mirror",
        )


def _decompress(data: bytes, name: str) -> bytes:
    try:
        if name.endswith(".gz"):
            return gzip.decompress(data)
        if name.endswith(".xz"):
            return lzma.decompress(data)
        if name.endswith(".bz2"):
            return bz2.decompress(data)
        if name.endswith(".zst"):
            from backports import zstd

            out: bytes = zstd.decompress(data)
            return out
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise VerificationError(f"{name}: cannot decompress ({exc})") from None
    return data


def _release_text(fetch: Fetch, suite_url: str, *, keyring: Path | None) -> tuple[str, bool]:
    inrelease = _try(fetch, suite_url + "InRelease")
    if inrelease is not None:
        if keyring is not None:
            body = gpg_verify(inrelease, keyring=keyring, what=suite_url + "InRelease")
            return body.decode("utf-8", errors="replace"), True
        return clearsigned_body(inrelease.decode("utf-8", errors="replace")), False
    release = _try(fetch, suite_url + "Release")
    if release is None:
        raise FetchError(
            f"{suite_url}: neither InRelease nor Release found",
            hint="check the repository URL (…/dists/<suite>) in the spec",
        )
    if keyring is not None:
        sig = _try(fetch, suite_url + "Release.gpg")
        if sig is None:
            raise SignatureError(
                f"{suite_url}Release.gpg: missing, but keys were given for this repository",
                hint="a repository given keys must be signed",
            )
        gpg_verify(release, keyring=keyring, what=suite_url + "Release.gpg", signature=sig)
        return release.decode("utf-8", errors="replace"), True
    return release.decode("utf-8", errors="replace"), False


def load_debian_repository(
    url: str,
    *,
    arch: str,
    workdir: Path,
    keys: Sequence[Path | bytes] = (),
    fetch: Fetch | None = None,
) -> list[RepoMetadata]:
    """Fetch and verify one Debian suite's Release and Packages index (one per component)."""
    fetch = fetch or url_reader()
    archive, suite, components = parse_debian_repo_url(url)
    suite_url = f"{archive}dists/{suite}/"
    workdir.mkdir(parents=True, exist_ok=True)
    keyring = build_keyring(keys, workdir / "keyring.gpg") if keys else None
    text, signed = _release_text(fetch, suite_url, keyring=keyring)
    release = parse_release(text)
    if release.architectures and arch not in release.architectures:
        raise UsageError(
            f"{suite_url}: no packages for architecture {arch} "
            f"(the Release lists {' '.join(release.architectures)})"
        )
    out = []
    for comp in components:
        stem = f"{comp}/binary-{arch}/Packages"
        name = next((stem + ext for ext in (".xz", ".gz", "") if stem + ext in release.files), None)
        if name is None:
            raise UsageError(
                f"{suite_url}: the Release lists no {stem} index",
                hint=f"components here: {' '.join(release.components) or '(none listed)'}",
            )
        data = fetch(suite_url + name)
        _verify_bytes(data, release.files[name], suite_url + name)
        dest = workdir / f"{_slug(suite_url + stem)}"
        dest.write_bytes(_decompress(data, name))
        out.append(RepoMetadata("deb", f"{archive} {suite} {comp}", archive, dest, signed))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def _apt_uri(prefix: str) -> str:
    """apt's list-file prefix (`host_path_to_archive`) back to a URI, scheme from sources."""
    path = urllib.parse.unquote(prefix.replace("_", "/"))
    schemes = ("https", "http")
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        try:
            text = src.read_text(errors="replace")
        except OSError:
            continue
        for scheme in schemes:
            if f"{scheme}://{path}" in text:
                return f"{scheme}://{path}/"
    return f"http://{path}/"


def load_apt_lists(
    lists_dir: Path,
    *,
    arch: str,
    workdir: Path,
    keys: Sequence[Path | bytes] = (),
) -> list[RepoMetadata]:
    """The Packages indexes `apt-get update` stored, verified against their InRelease."""
    workdir.mkdir(parents=True, exist_ok=True)
    keyring = build_keyring(keys, workdir / "keyring.gpg") if keys else None
    out = []
    for rel in sorted(lists_dir.glob("*_dists_*_InRelease")):
        prefix, _, suite = rel.name[: -len("_InRelease")].rpartition("_dists_")
        raw = rel.read_bytes()
        if keyring is not None:
            text = gpg_verify(raw, keyring=keyring, what=str(rel)).decode("utf-8", "replace")
        else:
            text = clearsigned_body(raw.decode("utf-8", errors="replace"))
        release = parse_release(text)
        archive = _apt_uri(prefix)
        head = rel.name[: -len("InRelease")]
        for pk in sorted(lists_dir.glob(f"{glob_escape(head)}*_binary-{arch}_Packages*")):
            comp = pk.name[len(head) : pk.name.index(f"_binary-{arch}_")].replace("_", "/")
            stem = f"{comp}/binary-{arch}/Packages"
            if stem not in release.files:
                raise VerificationError(f"{pk}: {stem} is not listed in {rel.name}")
            data = _read_apt_list(pk, workdir)
            _verify_bytes(data, release.files[stem], str(pk))
            dest = workdir / _slug(pk.name.split("_Packages")[0] + "_Packages")
            dest.write_bytes(data)
            out.append(
                RepoMetadata("deb", f"{archive} {suite} {comp}", archive, dest, keyring is not None)
            )
    if not out:
        raise UsageError(
            f"{lists_dir}: no Packages index for {arch}",
            hint="run `apt-get update` first",
        )
    return out


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _read_apt_list(path: Path, workdir: Path) -> bytes:
    if path.name.endswith(".lz4"):
        # apt re-compresses lists with lz4; the stdlib has no lz4, Debian's `lz4` tool does
        out = workdir / (path.name + ".out")
        system.run(["lz4", "-d", "-f", "-q", str(path), str(out)], timeout=300)
        data = out.read_bytes()
        out.unlink()
        return data
    return _decompress(path.read_bytes(), path.name)


# ------------------------------------------------------------------------------------ RPM


@dataclass(frozen=True)
class RepomdData:
    type: str
    href: str
    algorithm: str
    checksum: str
    size: int | None


def parse_repomd(xml: bytes) -> dict[str, RepomdData]:
    """repomd.xml -> {data type: location and checksum}."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise VerificationError(f"repomd.xml is not valid XML ({exc})") from None
    out: dict[str, RepomdData] = {}
    for data in root.iter(f"{_REPO_NS}data"):
        loc = data.find(f"{_REPO_NS}location")
        chk = data.find(f"{_REPO_NS}checksum")
        size = data.find(f"{_REPO_NS}size")
        if loc is None or chk is None or chk.text is None:
            continue
        out[data.get("type", "")] = RepomdData(
            data.get("type", ""),
            loc.get("href", ""),
            (chk.get("type") or "sha256").replace("sha", "sha", 1),
            chk.text.strip().lower(),
            int(size.text) if size is not None and size.text else None,
        )
    return out


def load_rpm_repository(
    url: str,
    *,
    workdir: Path,
    keys: Sequence[Path | bytes] = (),
    fetch: Fetch | None = None,
) -> RepoMetadata:
    """Fetch and verify one rpm-md repository's repomd.xml and primary data."""
    fetch = fetch or url_reader()
    base = url.rstrip("/") + "/"
    workdir.mkdir(parents=True, exist_ok=True)
    repomd_url = base + "repodata/repomd.xml"
    repomd = _try(fetch, repomd_url)
    if repomd is None:
        raise FetchError(
            f"{repomd_url}: not found",
            hint="name the directory that holds repodata/ in the spec's packages.repositories",
        )
    signed = False
    if keys:
        keyring = build_keyring(keys, workdir / "keyring.gpg")
        sig = _try(fetch, repomd_url + ".asc")
        if sig is None:
            raise SignatureError(
                f"{repomd_url}.asc: missing, but keys were given for this repository",
                hint="a repository given keys must be signed",
            )
        gpg_verify(repomd, keyring=keyring, what=repomd_url + ".asc", signature=sig)
        signed = True
    primary = parse_repomd(repomd).get("primary")
    if primary is None:
        raise VerificationError(f"{repomd_url}: no primary data listed")
    data = fetch(base + primary.href)
    algo = {"sha": "sha1"}.get(primary.algorithm, primary.algorithm)
    try:
        actual = hashlib.new(algo, data).hexdigest()
    except ValueError:
        raise VerificationError(
            f"{repomd_url}: unsupported checksum type {primary.algorithm}"
        ) from None
    if actual != primary.checksum:
        raise DigestMismatch(
            base + primary.href,
            f"{algo}:{primary.checksum}",
            f"{algo}:{actual}",
            hint="the primary data does not match repomd.xml: a mirror is mid-sync or the file "
            "was tampered with",
        )
    dest = workdir / (_slug(base) + "-primary.xml")
    dest.write_bytes(_decompress(data, primary.href))
    return RepoMetadata("rpm", base, base, dest, signed)
