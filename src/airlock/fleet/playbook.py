"""The ansible-playbook command line and environment for one run (pure).

The playbook, its roles, the `airlock_verb` module and the `airlock_events` callback ship in
this package (`airlock/fleet/ansible/`); nothing is read from /etc/ansible or ~/.ansible.cfg
(ANSIBLE_CONFIG points at an empty file), so a run means the same everywhere.

ssh keeps Ansible's own arguments (compression, a master per host) and adds keep-alives: a node
whose link is cut while a task runs on it is named unreachable within about half a minute,
instead of holding the run until its timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["SSH_ARGS", "PlaybookRun", "playbook_dir", "playbook_run"]

SSH_ARGS = (
    "-C -o ControlMaster=auto -o ControlPersist=60s -o ServerAliveInterval=10 "
    "-o ServerAliveCountMax=3"
)


def playbook_dir() -> Path:
    return Path(str(resources.files("airlock.fleet") / "ansible"))


@dataclass(frozen=True)
class PlaybookRun:
    argv: list[str]
    env: dict[str, str]


def playbook_run(
    *,
    ansible_playbook: str,
    inventory: Path,
    extra_vars: Path,
    events: Path,
    config: Path,
    check: bool,
    diff: bool,
    limit: str | None = None,
    tags: Sequence[str] = (),
    forks: int = 10,
    private_key: Path | None = None,
    timeout: int = 30,
    control_dir: Path | None = None,
) -> PlaybookRun:
    data = playbook_dir()
    argv = [ansible_playbook, "-i", str(inventory), "-e", f"@{extra_vars}", "--forks", str(forks)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if limit:
        argv += ["--limit", limit]
    if tags:
        argv += ["--tags", ",".join(tags)]
    if private_key is not None:
        argv += ["--private-key", str(private_key)]
    argv.append(str(data / "site.yml"))
    env = {
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_LIBRARY": str(data / "library"),
        "ANSIBLE_ROLES_PATH": str(data / "roles"),
        "ANSIBLE_CALLBACK_PLUGINS": str(data / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "airlock_events",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_TIMEOUT": str(timeout),
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
        "ANSIBLE_INVENTORY_ENABLED": "yaml,ini",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_SSH_ARGS": SSH_ARGS,
        "AIRLOCK_FLEET_EVENTS": str(events),
    }
    if control_dir is not None:  # this run's own ssh masters: none is shared with another run
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)
    return PlaybookRun(argv, env)
