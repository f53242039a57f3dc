"""`airlock bundle repair`: rebuild damaged or missing volumes from the recovery volumes, then
verify the bundle as `bundle verify` does (signature, every volume, every digest).

What it needs on the far side: this airlock (installed from any good boot copy with
`python3 airlock-bootstrap.py NAME.airlock.boot.N.tar`), one good boot copy (or the recovery
index `NAME.airlock.recovery.json`), and, for every stripe, as many good chunks as there are
data volumes: any k of the k + m volumes, or more volumes each damaged in different places.

With keys, airlock.json's signature (from the boot copy) is checked before anything is written.
The parts file, the recovery index and missing or damaged boot copies are written again from
the good copy.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.atomic import write_atomic
from airlock.bundle.bootvol import boot_volume_paths
from airlock.bundle.recovery import Damage, rebuild
from airlock.bundle.repair import RecoverySet, assess_set, find_recovery_set
from airlock.bundle.signing import verify_signature
from airlock.bundle.verify import VerifyReport, verify_bundle
from airlock.errors import UsageError, VerificationError
from airlock.progress import ProgressSink, report_done, report_start
from airlock.trust import trust_policy

__all__ = ["RepairOptions", "RepairResult", "repair_bundle"]


@dataclass(frozen=True)
class RepairOptions:
    keys: Sequence[Path] = ()  # none: the trusted-keys directory, if it has keys
    allow_unsigned: bool = False
    verify: bool = True  # `load --repair` verifies by itself while it loads
    workers: int = 2
    progress: ProgressSink | None = None  # bytes rebuilt, then the verification


@dataclass
class RepairResult:
    bundle: Path
    before: str  # what the scan found
    rebuilt: list[Path] = field(default_factory=list)
    restored: list[Path] = field(default_factory=list)  # parts file, boot copies
    verify: VerifyReport | None = None

    @property
    def changed(self) -> bool:
        return bool(self.rebuilt or self.restored)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "found": self.before,
            "rebuilt": [str(p) for p in self.rebuilt],
            "restored": [str(p) for p in self.restored],
            "verified": bool(self.verify and self.verify.ok),
            "signedBy": self.verify.signed_by if self.verify else None,
        }


def _check_signature(rset: RecoverySet, keys: Sequence[Path], allow_unsigned: bool) -> None:
    boot = rset.boot
    if boot is None or not keys:
        return  # checked by the verification that follows the repair
    if boot.signature is None:
        if not allow_unsigned:
            raise VerificationError(
                f"airlock.json in {boot.path.name} is not signed, but a key was given",
                "pass --allow-unsigned to repair an unsigned bundle",
            )
        return
    verify_signature(boot.manifest_bytes, boot.signature, keys)


def _sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _restore(path: Path, data: bytes) -> list[Path]:
    if path.is_file() and path.read_bytes() == data:
        return []
    write_atomic(path, data, mode=0o644)
    return [path]


def _restore_metadata(rset: RecoverySet) -> list[Path]:
    """The parts file, the recovery index and every boot copy, made whole again from the good
    boot copy (the index alone when no boot copy is left)."""
    restored = _restore(rset.index_path, rset.index_bytes)
    boot = rset.boot
    if boot is None or rset.manifest is None or rset.manifest.recovery is None:
        return restored
    restored += _restore(rset.parts_path, boot.parts_bytes)
    good = _sha256(boot.path)
    for path in boot_volume_paths(rset.tar, rset.manifest.recovery.boot_copies):
        if path != boot.path and _sha256(path) != good:
            tmp = path.with_name(f".tmp-{path.name}")
            shutil.copyfile(boot.path, tmp)
            tmp.replace(path)
            restored.append(path)
    return restored


def repair_bundle(path: Path, *, options: RepairOptions) -> RepairResult:
    """Rebuild what is damaged or missing (nothing when all is intact), then verify."""
    path = Path(path)
    rset = find_recovery_set(path)
    if rset is None:
        raise UsageError(
            f"{path} has no recovery volumes: there is nothing to rebuild it from",
            "copy the damaged volume again; next time create it with --split SIZE --recovery N%",
        )
    trust = trust_policy(options.keys, allow_unsigned=options.allow_unsigned)
    keys = list(trust.keys)
    _check_signature(rset, keys, options.allow_unsigned)
    damage = assess_set(rset, workers=options.workers)
    result = RepairResult(bundle=rset.parts_path, before=damage.summary())
    result.rebuilt = _rebuild(damage, options.progress)
    result.restored = _restore_metadata(rset)
    if not rset.parts_path.is_file():
        raise VerificationError(
            f"the volumes are whole again, but the parts file {rset.parts_path} is missing and "
            "no boot copy was found to restore it",
            "copy the parts file or any NAME.airlock.boot.N.tar from the source media",
        )
    if options.verify:
        result.verify = verify_bundle(rset.parts_path, trust=trust, progress=options.progress)
    return result


def _rebuild(damage: Damage, progress: ProgressSink | None) -> list[Path]:
    """`rebuild`, its stripes reported as the bytes of the damaged volumes written."""
    if progress is None or not damage.repairable or not damage.damaged:
        return rebuild(damage)
    plan, volumes = damage.plan, len(damage.damaged)
    label = f"rebuild {volumes} volume{'s' if volumes > 1 else ''}"
    report_start(progress, label, volumes * sum(map(plan.chunk_len, range(plan.stripes))))
    rebuilt = rebuild(
        damage, progress=lambda s: progress.advance(label, volumes * plan.chunk_len(s))
    )
    report_done(progress, label)
    return rebuilt
