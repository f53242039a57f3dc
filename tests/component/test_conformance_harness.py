"""The conformance harness itself can fail: a registry that refuses deletes fails the content
management workflow, and the harness names the failed tests (the real run is `make
conformance`, part of `make test`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock_lab.conformance import airlock_registry, build_suite, make_pki, run_suite

pytestmark = pytest.mark.component


# A cold cache builds the suite from its Go module first (nice -n 19, minutes under load).
@pytest.mark.timeout(1500)
def test_a_failing_registry_fails_the_run(tmp_path: Path) -> None:
    binary = build_suite()
    pki = make_pki(tmp_path)
    with airlock_registry(tmp_path, pki, delete=False) as target:
        result = run_suite(binary, target, report_dir=tmp_path / "report")
    assert result.junit is not None and result.junit.is_file()
    assert (
        "Content Management Manifest delete GET request to tags list should reflect "
        "manifest deletion"
    ) in result.failed
    assert result.passed and result.ran == len(result.passed) + len(result.failed)
    # every skip carries a reason
    assert result.skipped and all(reason for _, reason in result.skipped)
