"""The boot volume: what the far side needs before it can repair anything, in whole copies.

A bundle with recovery volumes also gets `NAME.airlock.boot.1.tar`, `.boot.2.tar`, ... (as many
copies as recovery volumes, plus one: put one on each medium). Each copy is a small,
deterministic tar that a bare python3 (or GNU tar) reads:

    airlock.json, airlock.json.sig     the signed manifest (its `recovery` block is the layout)
    blobs/sha256/<hex>                 airlock's wheelhouse, as in the bundle
    airlock-bootstrap.py               installs airlock from those wheels (stdlib only)
    airlock.parts.json                 every data volume's size and sha256
    airlock.recovery.json              the recovery index: every chunk's sha256
    SHA256SUMS                         sha256 of every member above: a damaged copy is skipped

airlock.json and the wheels come first, as in a bundle, so the bootstrap script reads a boot
copy as it reads a bundle and installs airlock from it alone; then `airlock bundle repair`
rebuilds the volumes from the copy's airlock.json and recovery index, never from a damaged
volume. Copies are read with the same hardened tar indexer as bundles.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock.atomic import TMP_PREFIX, lock_as_live
from airlock.bundle.layout import AIRLOCK_JSON, MAX_AIRLOCK_JSON_BYTES, SIGNATURE
from airlock.bundle.recovery import MAX_INDEX_BYTES
from airlock.errors import VerificationError
from airlock.standalone.tarindex import TarIndexError, VolumeReader, iter_entries

__all__ = [
    "BOOTSTRAP_SCRIPT",
    "BOOT_PARTS",
    "BOOT_RECOVERY",
    "BOOT_SUMS",
    "BootContent",
    "BootMember",
    "boot_volume_paths",
    "bootstrap_script",
    "find_boot_volumes",
    "read_boot_volumes",
    "write_boot_volume",
]

BOOTSTRAP_SCRIPT = "airlock-bootstrap.py"
BOOT_PARTS = "airlock.parts.json"
BOOT_RECOVERY = "airlock.recovery.json"
BOOT_SUMS = "SHA256SUMS"
_MAX_SMALL = 1 << 20  # the signature, the script, SHA256SUMS
_BOOT_RE = re.compile(r"^(?P<stem>.+)\.boot\.(?P<n>[1-9][0-9]{0,2})\.tar$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BootMember:
    name: str
    data: bytes | None = None  # small members
    path: Path | None = None  # wheels, streamed from the cache
    size: int = 0


def boot_volume_paths(tar_path: Path, copies: int) -> list[Path]:
    stem = tar_path.name.removesuffix(".tar")
    return [tar_path.with_name(f"{stem}.boot.{n}.tar") for n in range(1, copies + 1)]


def find_boot_volumes(tar_path: Path) -> list[Path]:
    """The boot copies beside a bundle's volumes, in order."""
    stem = tar_path.name.removesuffix(".tar")
    found = []
    for p in tar_path.parent.glob(f"{stem}.boot.*.tar"):
        m = _BOOT_RE.match(p.name)
        if m and m["stem"] == stem:
            found.append((int(m["n"]), p))
    return [p for _, p in sorted(found)]


def _info(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o755 if name == BOOTSTRAP_SCRIPT else 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def write_boot_volume(
    dest: Path, members: Sequence[BootMember], *, tmp_prefix: str | None = None
) -> None:
    """One copy, written under a temp name and renamed (deterministic bytes)."""
    sums: list[str] = []
    prefix = tmp_prefix or f"{TMP_PREFIX}{dest.name}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=dest.parent)
    os.fchmod(fd, 0o644)
    lock_as_live(fd)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for m in members:
                    if m.data is not None:
                        tar.addfile(_info(m.name, len(m.data)), io.BytesIO(m.data))
                        digest = hashlib.sha256(m.data).hexdigest()
                    else:
                        assert m.path is not None
                        h = hashlib.sha256()
                        with m.path.open("rb") as fh:
                            tar.addfile(_info(m.name, m.size), _Tee(fh, h))
                        digest = h.hexdigest()
                    sums.append(f"{digest}  {m.name}\n")
                data = "".join(sums).encode()
                tar.addfile(_info(BOOT_SUMS, len(data)), io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Tee:
    def __init__(self, fh: io.BufferedReader, h: hashlib._Hash) -> None:
        self._fh = fh
        self._h = h

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._h.update(data)
        return data


@dataclass(frozen=True)
class BootContent:
    path: Path  # the copy these came from
    manifest_bytes: bytes
    signature: bytes | None
    parts_bytes: bytes
    recovery_bytes: bytes
    problems: tuple[str, ...]  # copies skipped, and why


_LIMITS = {
    AIRLOCK_JSON: MAX_AIRLOCK_JSON_BYTES,
    BOOT_PARTS: MAX_AIRLOCK_JSON_BYTES,
    BOOT_RECOVERY: MAX_INDEX_BYTES,
    SIGNATURE: _MAX_SMALL,
    BOOTSTRAP_SCRIPT: _MAX_SMALL,
    BOOT_SUMS: _MAX_SMALL,
}
_WHEEL_RE = re.compile(r"blobs/sha256/[a-f0-9]{64}")


def _member_hash(reader: VolumeReader, offset: int, size: int) -> str:
    h = hashlib.sha256()
    for at in range(offset, offset + size, _CHUNK):
        h.update(reader.read_at(at, min(_CHUNK, offset + size - at)))
    return h.hexdigest()


def _read_copy(path: Path) -> dict[str, bytes]:
    """The small members of one copy, after every member matched SHA256SUMS."""
    hashes: dict[str, str] = {}
    small: dict[str, bytes] = {}
    with VolumeReader([path]) as reader:
        try:
            entries = list(iter_entries(reader.read_at, reader.size, max_members=10_000))
        except TarIndexError as exc:
            raise VerificationError(f"{path.name}: {exc.message}") from exc
        for e in entries:
            name = e.name
            if e.is_dir or name in hashes:
                raise VerificationError(f"{path.name}: unexpected or repeated entry {name!r}")
            if name not in _LIMITS and not _WHEEL_RE.fullmatch(name):
                raise VerificationError(f"{path.name}: unexpected member {name!r}")
            if e.size > _LIMITS.get(name, 1 << 40):
                raise VerificationError(f"{path.name}: {name} is too large ({e.size} bytes)")
            if name in _LIMITS:
                data = reader.read_at(e.offset, e.size)
                small[name] = data
                hashes[name] = hashlib.sha256(data).hexdigest()
            else:
                hashes[name] = _member_hash(reader, e.offset, e.size)
    sums = small.get(BOOT_SUMS)
    if sums is None:
        raise VerificationError(f"{path.name} has no {BOOT_SUMS} (truncated?)")
    listed = {}
    for line in sums.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    hashes.pop(BOOT_SUMS)
    if listed != hashes:
        bad = sorted(n for n in set(listed) | set(hashes) if listed.get(n) != hashes.get(n))
        raise VerificationError(f"{path.name}: {', '.join(bad)} do not match {BOOT_SUMS}")
    for need in (AIRLOCK_JSON, BOOT_PARTS, BOOT_RECOVERY):
        if need not in small:
            raise VerificationError(f"{path.name} has no {need}")
    return small


def read_boot_volumes(paths: Sequence[Path]) -> BootContent:
    """airlock.json, its signature and the parts file from the first good copy."""
    problems: list[str] = []
    for path in paths:
        try:
            small = _read_copy(path)
        except FileNotFoundError:
            problems.append(f"{path.name} missing")
            continue
        except OSError as exc:
            problems.append(f"{path.name} unreadable ({exc.strerror or exc})")
            continue
        except VerificationError as exc:
            problems.append(exc.message)
            continue
        return BootContent(
            path,
            small[AIRLOCK_JSON],
            small.get(SIGNATURE),
            small[BOOT_PARTS],
            small[BOOT_RECOVERY],
            tuple(problems),
        )
    raise VerificationError(
        "no good copy of the boot volume: " + ("; ".join(problems) or "none found"),
        "copy any NAME.airlock.boot.N.tar again from the source media",
    )


def bootstrap_script() -> bytes:
    """airlock-bootstrap.py: the stdlib-only installer, as `bundle create` writes it."""
    from airlock.bootstrap import render_script

    return render_script()
