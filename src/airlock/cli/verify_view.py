"""What `airlock bundle verify` prints about a report (standard library only: the CLI command
renders through it, and so does `airlock.earlyverify`, so both print the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airlock.bundle.rules import VerifyReport
from airlock.cli.sizes import format_size

__all__ = ["verify_data", "verify_text"]


def verify_data(report: VerifyReport) -> dict[str, Any]:
    """The --json result of a verified bundle."""
    return {
        "ok": True,
        "name": report.name,
        "sequence": report.sequence,
        "signed": report.signed,
        "signedBy": report.signed_by,
        "verified": report.verified,
        "trust": report.trust,
        "expires": report.expires,
        "blobs": report.blobs_checked,
        "bytes": report.bytes_checked,
        "volumes": report.volumes_checked,
        "recoveryProblems": list(report.recovery),
        "checked": list(report.checked),
        "notChecked": list(report.not_checked),
    }


def verify_text(report: VerifyReport, bundle: Path) -> tuple[list[str], list[str]]:
    """(lines for stdout, warnings for stderr) of a verified bundle, each in its order."""
    head = "OK" if report.verified else f"OK but {report.trust}"
    lines = [
        f"{head} {bundle}: {report.blobs_checked} blobs, {format_size(report.bytes_checked)} "
        f"hashed, {report.volumes_checked} volumes; {report.trust}",
        *(f"  checked: {item}" for item in report.checked),
        *(f"  not checked: {item}" for item in report.not_checked),
    ]
    warnings = [
        f"{problem}: the bundle is intact, its protection is not (bundle repair)"
        for problem in report.recovery
    ]
    if not report.verified:
        warnings.append(f"{bundle} is {report.trust}: nobody vouched for its content")
    return lines, warnings
