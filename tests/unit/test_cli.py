"""The CLI's error handling: exit codes, and messages shown exactly (never read as markup)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_spec_error_exit_2_with_brackets_kept(tmp_path: Path) -> None:
    spec = tmp_path / "airlock.yaml"
    assert run("init", "-o", str(spec), cwd=tmp_path).returncode == 0
    spec.write_text(
        spec.read_text().replace(
            "  - ghcr.io/stefanprodan/podinfo:6.4.0\n",
            "  - ghcr.io/stefanprodan/podinfo:6.4.0\n  - registry:2.8.2\n",
        )
    )
    out = run("plan", "-f", str(spec), cwd=tmp_path)
    assert out.returncode == 2
    assert "images[2]: duplicate image 'registry:2.8.2' (same as images[0])" in out.stderr


def test_json_error_and_usage_codes(tmp_path: Path) -> None:
    out = run("--json", "bundle", "verify", str(tmp_path / "missing.airlock.tar"), cwd=tmp_path)
    assert out.returncode in (1, 2, 3)
    assert "error" in json.loads(out.stdout)
    assert run("no-such-command", cwd=tmp_path).returncode == 2
    assert run("init", "--preset", "nope", cwd=tmp_path).returncode == 2


def test_error_text_with_brackets_is_printed_as_is(capsys: object) -> None:
    from airlock.cli.main import _report
    from airlock.errors import AirlockError

    _report(
        AirlockError(
            "kube-flannel.yml: DaemonSet containers[kube-flannel] [from the bundle]",
            hint="see [bold]this[/bold]",
        )
    )
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "containers[kube-flannel] [from the bundle]" in err
    assert "[bold]this[/bold]" in err
