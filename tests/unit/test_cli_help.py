"""--help in plain words: no Python types, every option explained, an example per command;
-o/--output wherever a command writes a file; `airlock version`; shell completion."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from airlock.cli.helpstyle import tidy
from airlock.cli.main import app

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
# what typer writes when nobody chose words: `<bool>`, `<list[Path]>`, `{bundle}`, `<path>`
PYTHON_TYPES = re.compile(r"<(bool|int|str|float|path|list\[[^\]]*\])>|\{[a-z_]+\}|list\[")


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = getattr(command, "commands", None)
    if not subs:
        return [(path, command)]
    return [leaf for name, sub in sorted(subs.items()) for leaf in _leaves(sub, (*path, name))]


LEAVES = _leaves(tidy(typer.main.get_command(app)))


def _help(*path: str) -> str:
    out = subprocess.run(
        [AIRLOCK, *path, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_option_and_argument_has_help_and_a_plain_metavar() -> None:
    missing, typed = [], []
    for path, command in LEAVES:
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            where = f"airlock {' '.join(path)} {param.opts[-1] if param.opts else param.name}"
            if not param.help:
                missing.append(where)
            if param.metavar is None or PYTHON_TYPES.search(param.metavar):
                typed.append(where)
    assert not missing, f"options without help: {missing}"
    assert not typed, f"options shown by their Python type: {typed}"


def test_every_command_has_an_example() -> None:
    bare = [" ".join(path) for path, command in LEAVES if "airlock " not in (command.epilog or "")]
    assert not bare, f"commands without an example: {bare}"


@pytest.mark.parametrize(
    "path",
    [("bundle", "verify"), ("registry", "serve"), ("inventory",), ("bundle", "create"), ()],
    ids=lambda p: " ".join(p) or "airlock",
)
def test_rendered_help_shows_no_python_types(path: tuple[str, ...]) -> None:
    text = _help(*path)
    assert not PYTHON_TYPES.search(text), PYTHON_TYPES.search(text)
    if path:
        assert "Example" in text and "airlock " in text.split("Example", 1)[1]


def test_output_is_dash_o_everywhere() -> None:
    """Every command that writes a file or prefix takes -o/--output; the first spellings (--out)
    still work but are hidden."""
    writers = {
        ("init",), ("bundle", "create"), ("bundle", "bootstrap-script"), ("bundle", "receive"),
        ("keys", "generate"), ("inventory",), ("registry", "certs"),
    }  # fmt: skip
    for path, command in LEAVES:
        if path not in writers:
            continue
        output = [p for p in command.params if "--output" in getattr(p, "opts", ())]
        assert output and "-o" in output[0].opts, path
        assert all(getattr(p, "hidden", False) for p in command.params if "--out" in p.opts), path


def test_version_text_and_json() -> None:
    text = subprocess.run([AIRLOCK, "version"], capture_output=True, text=True, check=True).stdout
    assert text.startswith("airlock ") and "python 3." in text
    doc = json.loads(
        subprocess.run([AIRLOCK, "version", "--json"], capture_output=True, text=True).stdout
    )
    assert doc["ok"] and doc["schemaVersion"] == 1 and doc["version"] and doc["bundleFormats"]


def test_shell_completion_scripts_and_answers() -> None:
    for shell in ("bash", "zsh", "fish"):
        script = subprocess.run(
            [AIRLOCK, "completion", shell], capture_output=True, text=True, check=True
        ).stdout
        assert "_AIRLOCK_COMPLETE" in script
    bad = subprocess.run([AIRLOCK, "completion", "tcsh"], capture_output=True, text=True)
    assert bad.returncode == 2 and "choose one of bash, zsh, fish" in bad.stderr
    asked = subprocess.run(
        [AIRLOCK],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "_AIRLOCK_COMPLETE": "complete_bash",
            "COMP_WORDS": "airlock bundle verify --k",
            "COMP_CWORD": "3",
        },
    )
    assert asked.stdout.split() == ["--key"]


def test_inventory_without_output_is_a_summary_not_a_document(tmp_path: Path) -> None:
    out = subprocess.run(
        [AIRLOCK, "inventory", "--root", str(tmp_path), "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert not out.stdout.lstrip().startswith("{")
    assert "no store at" in out.stdout and "airlock inventory -o" in out.stdout
    doc = json.loads(
        subprocess.run(
            [AIRLOCK, "inventory", "--root", str(tmp_path), "--store", str(tmp_path), "--json"],
            capture_output=True,
            text=True,
        ).stdout
    )
    assert doc["ok"] and doc["schemaVersion"] == 1 and "packages" in doc
