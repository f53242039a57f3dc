"""`make docs-check` finds what no longer matches the CLI: a subcommand or a flag that is gone,
a value of the wrong type, a missing argument; prose, diagrams and other tools are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from airlock.cli.helpstyle import tidy
from airlock.cli.main import app
from docs_check import check, find_commands, main

TREE = tidy(typer.main.get_command(app))


def problems(markdown: str, tmp_path: Path) -> list[str]:
    doc = tmp_path / "doc.md"
    doc.write_text(markdown)
    found = find_commands(doc)
    return [f"{c.where}: {p}" for c in found if (p := check(c.text, TREE, whole=c.whole))]


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("```\nairlock bundle verify b.tar --kye site.pub\n```\n", "No such option: --kye"),
        ("```\nairlock bundel create\n```\n", "has no subcommand 'bundel'"),
        ("```\nairlock load\n```\n", "Missing argument 'BUNDLE'"),
        ("```\nairlock cluster join f.json --control-plane=maybe\n```\n", "--control-plane"),
        ("```\nairlock registry gc --grace soon\n```\n", "Invalid value for '--grace'"),
        ("```\nairlock registry serve --push \\\n  --listn 127.0.0.1:5000\n```\n", "--listn"),
        ("see `airlock node install [--bogus]`\n", "has no option --bogus"),
        ("the `--splt SIZE` option\n", "no airlock command has the option --splt"),
        ("    airlock plan --json --nope\n", "--nope"),
    ],
)
def test_a_stale_command_is_named(markdown: str, expected: str, tmp_path: Path) -> None:
    found = problems(markdown, tmp_path)
    assert len(found) == 1 and expected in found[0], found
    assert found[0].startswith(f"{tmp_path / 'doc.md'}:")


def test_what_is_not_an_airlock_command_line_is_left_alone(tmp_path: Path) -> None:
    markdown = (
        "```text\nairlock bundle create --sign k  --> USB -->  airlock load\n```\n"
        "```\nctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d x\n"
        "python3 airlock-bootstrap.py lab.airlock.tar --key site.pub\n"
        "airlock --json bundle verify b.tar --key k.pub --progress plain   # a comment --x\n"
        "/opt/airlock/venv/bin/airlock load b.tar --key k.pub > out.json\n```\n"
        "prose naming `airlock bundle repair` and `airlock.yaml`, and `--json`\n"
    )
    assert problems(markdown, tmp_path) == []


def test_the_repository_docs_and_help_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main() == 0, capsys.readouterr().err
    assert " 0 problems" in capsys.readouterr().out
