"""The demo prints what happened in a line or two per command (never the tail of a JSON
document) and keeps every command's whole output in its work directory; node prepare/install
name the changes applied and the commands they ran as two different counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airlock_lab import demo

AIRLOCK = Path(sys.executable).with_name("airlock")


def test_a_json_command_prints_one_summary_line_and_keeps_the_whole_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr(demo, "_say", said.append)
    demo._log.start(tmp_path / "logs")
    result = demo._airlock(AIRLOCK, "version", "--json")
    assert result.returncode == 0
    assert said[0] == "   $ airlock version --json"
    assert said[1].startswith("     ok: ") and "{" not in said[1] and "]" not in said[1]
    saved = tmp_path / "logs" / "01-version.log"
    assert said[2] == f"     (all of it: {saved})"
    assert '"schemaVersion": 1' in saved.read_text()  # the whole document, kept


def test_a_text_command_prints_its_first_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr(demo, "_say", said.append)
    demo._log.start(tmp_path / "logs")
    demo._airlock(AIRLOCK, "--help")
    body = said[1:-1]
    assert len(body) <= demo._SHOWN_LINES + 1 and body[-1].startswith("     … ")


def test_json_summary_of_failures_and_lists() -> None:
    failed = {"ok": False, "error": {"code": "VERIFICATION_FAILED", "message": "bad blob"}}
    assert demo.json_summary(failed) == "FAILED VERIFICATION_FAILED: bad blob"
    ok = {"ok": True, "bundle": "out/lab.airlock.tar", "volumes": ["a", "b"], "size": 10}
    assert demo.json_summary(ok) == "ok: bundle out/lab.airlock.tar, size 10, volumes 2 items"
    node = {"ok": True, "applied": None, "plan": {"changes": [{}, {}, {}], "root": "/"}}
    assert demo.json_summary(node) == "ok: plan 3 changes"


def test_applied_changes_and_commands_are_counted_apart(tmp_path: Path) -> None:
    root = tmp_path / "sysroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    out = subprocess.run(
        [str(AIRLOCK), "node", "prepare", "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines()[0] == f"2 changes to apply on {root} (1 modules, 1 sysctl):"
    applied = next(line for line in out.splitlines() if line.startswith("applied "))
    n_changes = int(applied.split()[1])
    assert applied.count(":/etc/") == n_changes  # each change named
    recorded = next(line for line in out.splitlines() if "commands recorded" in line)
    n_commands = int(recorded.split()[0])
    listed = out.split(recorded, 1)[1].strip("\n").splitlines()
    assert len(listed) == n_commands and all(line.startswith("    ") for line in listed)
