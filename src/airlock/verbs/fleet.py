"""`airlock cluster up|plan -i INVENTORY`: the whole cluster from one Ansible inventory.

airlock checks the inventory (ansible-core's parser) and the bundle (structure and signature:
nothing unverified is sent), writes the bootstrap script and the run's variables into a run
directory, then runs ansible-playbook with the playbook airlock ships. `plan` is the same run
under Ansible's check and diff modes: each node's airlock plan, nothing changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.bootstrap import SCRIPT_NAME, render_script
from airlock.bundle.handle import Bundle
from airlock.bundle.volumes import locate_volumes
from airlock.errors import AirlockError, SystemCommandError, UsageError
from airlock.fleet.inventory import FleetInventory, ansible_tool, load_inventory
from airlock.fleet.playbook import playbook_run
from airlock.fleet.report import FleetReport, read_events
from airlock.system import run
from airlock.trust import trust_policy

__all__ = ["FleetOptions", "FleetResult", "cluster_up", "failure_summary"]

STAGES = ("bootstrap", "node", "init", "join", "apps")


@dataclass(frozen=True)
class FleetOptions:
    bundle: Path
    keys: Sequence[Path] = ()
    allow_unsigned: bool = False
    check: bool = False  # `cluster plan`: Ansible's check and diff modes
    limit: str | None = None
    stages: Sequence[str] = ()  # playbook tags; empty: every stage
    apps: Sequence[str] = ()
    app_sets: Sequence[str] = ()  # Helm values (KEY=VALUE) for every app deployed
    private_key: Path | None = None
    forks: int = 10
    run_dir: Path | None = None  # where the log, events and variables go (default: a new temp dir)
    timeout: float = 3600


@dataclass
class FleetResult:
    inventory: FleetInventory
    check: bool
    report: FleetReport
    run_dir: Path
    log: Path
    seconds: float
    trust: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.report.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "inventory": self.inventory.to_json(),
            "check": self.check,
            "trust": self.trust,
            "ok": self.ok,
            "changed": self.report.changed,
            "hosts": [h.to_json() for h in self.report.hosts.values()],
            "diffs": self.report.diffs if self.check else {},
            "runDir": str(self.run_dir),
            "log": str(self.log),
            "seconds": round(self.seconds, 2),
        }


def _check_stages(stages: Sequence[str]) -> None:
    for s in stages:
        if s not in STAGES:
            raise UsageError(f"--stage {s!r}: choose from {', '.join(STAGES)}")


@dataclass(frozen=True)
class _Checked:
    trust: str
    key: Path | None  # the key that verified the bundle (placed on every node)
    files: tuple[Path, ...]  # what a node receives: the tar, or the parts file and volumes
    first: Path  # the file that starts with airlock.json


def _check_bundle(options: FleetOptions) -> _Checked:
    """The bundle's structure and signature, checked here before any node receives it."""
    if not options.bundle.is_file():
        raise UsageError(
            f"bundle {options.bundle} does not exist",
            "give NAME.airlock.tar, or the parts file of a split bundle",
        )
    volumes = locate_volumes(options.bundle)
    trust = trust_policy(options.keys, allow_unsigned=options.allow_unsigned)
    with Bundle.open(options.bundle, trust=trust, hash_content=False) as opened:
        report = opened.report
    parts = (volumes.parts_path,) if volumes.parts_path else ()
    return _Checked(report.trust, report.signed_by_path, parts + volumes.paths, volumes.paths[0])


def _variables(options: FleetOptions, run_dir: Path, checked: _Checked) -> Path:
    script = run_dir / SCRIPT_NAME
    script.write_bytes(render_script())
    variables = {
        "airlock_bundle_src": str(options.bundle.resolve()),
        "airlock_bundle_files": [str(p.resolve()) for p in checked.files],
        "airlock_bundle_first": checked.first.name,
        "airlock_script_src": str(script),
        "airlock_script_sha256": hashlib.sha256(script.read_bytes()).hexdigest(),
        "airlock_key_src": str(checked.key.resolve()) if checked.key else "",
        "airlock_allow_unsigned": checked.key is None,
        "airlock_apps": list(options.apps),
        "airlock_app_sets": list(options.app_sets),
    }
    path = run_dir / "variables.json"
    path.write_text(json.dumps(variables, indent=2, sort_keys=True) + "\n")
    return path


@contextlib.contextmanager
def _ssh_masters() -> Iterator[Path]:
    """A control-socket directory for this run only (a master left by another run may talk to
    a node that is gone), short enough for a socket path; every master is closed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="alcp-"))
    try:
        yield directory
    finally:
        for sock in sorted(directory.iterdir()):
            run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "master"],
                check=False,
                timeout=15,
            )
        shutil.rmtree(directory, ignore_errors=True)


def cluster_up(inventory_path: Path, *, options: FleetOptions) -> FleetResult:
    """Run the playbook (check mode with `options.check`); the per-host report, never raising
    for a node that failed (the CLI names it); raises for what stops the run as a whole."""
    _check_stages(options.stages)
    inventory = load_inventory(inventory_path)
    checked = _check_bundle(options)
    run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="airlock-cluster-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o700)
    events = run_dir / "events.jsonl"
    events.unlink(missing_ok=True)
    config = run_dir / "ansible.cfg"
    config.write_text("# empty: airlock sets everything it needs in the environment\n")
    pb = playbook_run(
        ansible_playbook=ansible_tool("ansible-playbook"),
        inventory=inventory_path,
        extra_vars=_variables(options, run_dir, checked),
        events=events,
        config=config,
        check=options.check,
        diff=options.check,
        limit=options.limit,
        tags=options.stages,
        forks=options.forks,
        private_key=options.private_key,
    )
    start = time.monotonic()
    try:
        with _ssh_masters() as control_dir:
            pb.env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)
            out = run(pb.argv, env=pb.env, check=False, timeout=options.timeout, cwd=run_dir)
    except SystemCommandError as exc:
        raise AirlockError(exc.message, "the run's log is in " + str(run_dir)) from exc
    seconds = time.monotonic() - start
    log = run_dir / "ansible.log"
    log.write_text(out.stdout + out.stderr)
    report = read_events(events.read_text() if events.exists() else "")
    if out.returncode != 0 and not report.problems():
        tail = (out.stderr or out.stdout).strip()[-1500:]
        raise AirlockError(
            f"ansible-playbook exited with {out.returncode}: {tail}",
            f"the whole log: {log}",
        )
    return FleetResult(inventory, options.check, report, run_dir, log, seconds, checked.trust)


def failure_summary(result: FleetResult) -> AirlockError:
    """One error naming every host that failed or could not be reached, and what to do."""
    problems = result.report.problems()
    lines = [f"{h.host} ({h.status} at {h.failed_task!r}): {h.message}" for h in problems]
    finished = len(result.report.hosts) - len(problems)
    return AirlockError(
        f"{len(problems)} of {len(result.report.hosts)} hosts did not finish "
        f"({finished} did):\n  " + "\n  ".join(lines),
        "fix what is named and run the same command again: finished steps are not redone; "
        f"--limit HOST reruns only some hosts (log: {result.log})",
    )
