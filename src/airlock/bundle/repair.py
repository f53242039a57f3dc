"""Find a bundle's recovery set and judge its damage: what `bundle verify` reports and what
`bundle repair` rebuilds (recovery.py holds the code, bootvol.py the boot volume).

The layout and the hashes come from a good boot copy first (airlock.json, the parts file and
the recovery index travel there in several whole copies), else from the recovery index beside
the volumes; never from a volume that may be the damaged one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from airlock.bundle.bootvol import BootContent, find_boot_volumes, read_boot_volumes
from airlock.bundle.layout import PARTS_SUFFIX, parts_path_for, recovery_index_name
from airlock.bundle.manifest import BundleManifest, parse_manifest
from airlock.bundle.recovery import Damage, RecoveryIndex, assess, parse_index
from airlock.bundle.volumes import Span, hash_spans
from airlock.errors import VerificationError
from airlock.standalone.volumes import VOLUME_DIGITS

__all__ = [
    "RecoverySet",
    "assess_set",
    "bundle_tar_path",
    "find_recovery_set",
    "recovery_problems",
]

_VOLUME_RE = re.compile(rf"^(?P<tar>.+\.tar)\.\d{{{VOLUME_DIGITS}}}$")
_STEM_RES = (
    re.compile(rf"^(?P<stem>.+)\.recovery\.\d{{{VOLUME_DIGITS}}}$"),
    re.compile(r"^(?P<stem>.+)\.recovery\.json$"),
    re.compile(r"^(?P<stem>.+)\.boot\.\d+\.tar$"),
)


def bundle_tar_path(path: Path) -> Path:
    """The name of the whole tar (`lab.airlock.tar`) from any file of a split bundle: the parts
    file, a data or recovery volume, the recovery index, a boot copy, or the tar's own name."""
    name = path.name
    if name.endswith(PARTS_SUFFIX):
        return path.with_name(name.removesuffix(PARTS_SUFFIX) + ".airlock.tar")
    if name.endswith(".parts.json"):
        return path.with_name(name.removesuffix(".parts.json") + ".tar")
    m = _VOLUME_RE.match(name)
    if m:
        return path.with_name(m["tar"])
    for pattern in _STEM_RES:
        m = pattern.match(name)
        if m:
            return path.with_name(m["stem"] + ".tar")
    return path


@dataclass(frozen=True)
class RecoverySet:
    """A split bundle with recovery volumes, as its boot copy (or recovery index) tells it."""

    tar: Path  # lab.airlock.tar (need not exist)
    index: RecoveryIndex
    index_bytes: bytes
    manifest: BundleManifest | None  # from the boot copy (None: only the index was found)
    boot: BootContent | None
    boot_paths: tuple[Path, ...]

    @property
    def parts_path(self) -> Path:
        return self.tar.with_name(parts_path_for(self.tar.name))

    @property
    def index_path(self) -> Path:
        return self.tar.with_name(recovery_index_name(self.tar.name))


def _check_agree(index: RecoveryIndex, manifest: BundleManifest, where: str) -> None:
    """The signed layout (airlock.json `recovery`) and the index must tell the same."""
    layout = manifest.recovery
    if layout is None:
        raise VerificationError(f"airlock.json in {where} has no recovery layout")
    told = (len(index.data), len(index.recovery), index.volume_size, index.chunk_size)
    signed = (
        layout.data_volumes,
        layout.recovery_volumes,
        layout.volume_size,
        layout.chunk_size,
    )
    if told != signed:
        raise VerificationError(
            f"the recovery index in {where} does not match airlock.json's recovery layout",
            "copy the boot volume again from the source media",
        )


def find_recovery_set(path: Path) -> RecoverySet | None:
    """The recovery set of the bundle at `path` (any of its files), or None when the bundle has
    no recovery volumes. A set whose boot copies and index are all unusable is refused."""
    tar = bundle_tar_path(Path(path))
    boot_paths = tuple(find_boot_volumes(tar))
    index_path = tar.with_name(recovery_index_name(tar.name))
    boot_error: VerificationError | None = None
    if boot_paths:
        try:
            boot = read_boot_volumes(boot_paths)
        except VerificationError as exc:
            boot_error = exc
        else:
            where = boot.path.name
            index = parse_index(boot.recovery_bytes, f"the recovery index of {where}")
            manifest = parse_manifest(boot.manifest_bytes, what=f"airlock.json of {where}")
            _check_agree(index, manifest, where)
            return RecoverySet(tar, index, boot.recovery_bytes, manifest, boot, boot_paths)
    if not index_path.is_file():
        if boot_error is not None:
            raise boot_error
        return None
    data = index_path.read_bytes()
    return RecoverySet(tar, parse_index(data, str(index_path)), data, None, None, boot_paths)


def assess_set(rset: RecoverySet, *, workers: int = 2) -> Damage:
    return assess(rset.index.shares(rset.tar.parent), rset.index.plan, workers=workers)


def recovery_problems(rset: RecoverySet) -> list[str]:
    """The recovery volumes and boot copies that are missing or damaged (whole-file hashes):
    the bundle itself may be intact, but its protection is not."""
    problems = []
    for share in rset.index.shares(rset.tar.parent)[len(rset.index.data) :]:
        if not share.path.is_file():
            problems.append(f"recovery volume {share.name} missing")
            continue
        size = share.path.stat().st_size
        digest, _ = hash_spans([Span(share.path, 0, size)])
        if size != share.size or digest != share.sha256:
            problems.append(f"recovery volume {share.name} damaged")
    if rset.boot is not None:
        problems += [f"boot copy {p}" for p in rset.boot.problems]
    return problems
