"""The per-host report folded from the airlock_events callback's JSON lines, and the
ansible-playbook command line airlock builds."""

from __future__ import annotations

import json
from pathlib import Path

from airlock.fleet.playbook import playbook_dir, playbook_run
from airlock.fleet.report import read_events


def _lines(*events: dict[str, object]) -> str:
    return "\n".join(json.dumps(e) for e in events) + "\n"


def test_failed_and_unreachable_hosts_are_named_with_their_task() -> None:
    text = _lines(
        {"event": "task", "status": "ok", "host": "n1", "task": "node prepare", "result": {"changed": True, "diff": {"prepared": "sysctl: set\n"}}},
        {"event": "task", "status": "unreachable", "host": "n2", "task": "the bundle", "result": {"msg": "Failed to connect: Permission denied (publickey)."}},
        {"event": "task", "status": "failed", "host": "n3", "task": "airlock load", "result": {"msg": "airlock load: Read-only file system"}},
        {"event": "stats", "hosts": {"n1": {"ok": 3, "changed": 1}, "n2": {"unreachable": 1}, "n3": {"ok": 2, "failures": 1}}},
    )  # fmt: skip
    report = read_events(text + '{"event": "task", "cut')  # a line cut by a killed run
    assert not report.ok
    assert [h.host for h in report.problems()] == ["n2", "n3"]
    n2, n3 = report.hosts["n2"], report.hosts["n3"]
    assert (n2.status, n2.failed_task) == ("unreachable", "the bundle")
    assert "publickey" in (n2.message or "")
    assert (n3.status, n3.failed, n3.message) == (
        "failed",
        1,
        "airlock load: Read-only file system",
    )
    assert report.hosts["n1"].changes == ["node prepare"]
    assert report.diffs == {"n1": ["node prepare:\nsysctl: set\n"]}
    assert report.changed == 1


def test_converged_run_is_ok_with_nothing_changed() -> None:
    report = read_events(_lines({"event": "stats", "hosts": {"a": {"ok": 9}, "b": {"ok": 9}}}))
    assert report.ok and report.changed == 0
    assert {h.status for h in report.hosts.values()} == {"ok"}


def test_playbook_command_line(tmp_path: Path) -> None:
    pb = playbook_run(
        ansible_playbook="/venv/bin/ansible-playbook",
        inventory=tmp_path / "inv.ini",
        extra_vars=tmp_path / "vars.json",
        events=tmp_path / "events.jsonl",
        config=tmp_path / "ansible.cfg",
        check=True,
        diff=True,
        limit="node2",
        tags=["bootstrap", "node"],
    )
    assert pb.argv[-1] == str(playbook_dir() / "site.yml")
    assert [a for a in pb.argv if a in ("--check", "--diff")] == ["--check", "--diff"]
    assert pb.argv[pb.argv.index("--limit") + 1] == "node2"
    assert pb.argv[pb.argv.index("--tags") + 1] == "bootstrap,node"
    assert pb.env["ANSIBLE_CONFIG"] == str(tmp_path / "ansible.cfg")  # nothing from /etc/ansible
    assert pb.env["ANSIBLE_CALLBACKS_ENABLED"] == "airlock_events"
    for key in ("ANSIBLE_LIBRARY", "ANSIBLE_ROLES_PATH", "ANSIBLE_CALLBACK_PLUGINS"):
        assert Path(pb.env[key]).is_dir(), key  # shipped as package data
    assert "ANSIBLE_HOST_KEY_CHECKING" not in pb.env  # host keys stay checked
