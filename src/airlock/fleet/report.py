"""What a run did on each host, from the JSON lines the `airlock_events` callback wrote (pure).

A host's outcome: Ansible's counts (ok, changed, failed, unreachable, skipped) and, when it
failed or could not be reached, the task and Ansible's message: what an operator reads first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FleetReport", "HostOutcome", "read_events"]


@dataclass
class HostOutcome:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failed_task: str | None = None
    message: str | None = None
    changes: list[str] = field(default_factory=list)  # tasks that changed (or would)

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status,
            "ok": self.ok,
            "changed": self.changed,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "skipped": self.skipped,
            "failedTask": self.failed_task,
            "message": self.message,
            "changes": self.changes,
        }


@dataclass
class FleetReport:
    hosts: dict[str, HostOutcome]
    diffs: dict[str, list[str]] = field(default_factory=dict)  # host -> prepared diffs

    @property
    def ok(self) -> bool:
        return all(h.status in ("ok", "changed") for h in self.hosts.values())

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    def problems(self) -> list[HostOutcome]:
        return [h for h in self.hosts.values() if h.status in ("failed", "unreachable")]


def _message(result: dict[str, Any]) -> str:
    msg = str(result.get("msg") or "").strip()
    stderr = str(result.get("stderr") or "").strip()
    if stderr and stderr not in msg:
        msg = f"{msg}: {stderr[-1500:]}" if msg else stderr[-1500:]
    return msg or "failed (no message)"


def _task(outcome: HostOutcome, event: dict[str, Any], diffs: list[str]) -> None:
    status, result = event.get("status"), event.get("result") or {}
    task = str(event.get("task") or "")
    if status in ("failed", "unreachable") and outcome.failed_task is None:
        outcome.failed_task, outcome.message = task, _message(result)
    elif status == "ok" and result.get("changed"):
        outcome.changes.append(task)
    diff = result.get("diff")
    if isinstance(diff, dict) and diff.get("prepared"):
        diffs.append(f"{task}:\n{diff['prepared']}")


def read_events(text: str) -> FleetReport:
    """Fold the callback's lines into one outcome per host (the stats line gives the counts)."""
    hosts: dict[str, HostOutcome] = {}
    diffs: dict[str, list[str]] = {}
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a killed run
        if not isinstance(event, dict):
            continue
        if event.get("event") == "task":
            name = str(event.get("host"))
            outcome = hosts.setdefault(name, HostOutcome(name))
            _task(outcome, event, diffs.setdefault(name, []))
        elif event.get("event") == "stats":
            for name, counts in (event.get("hosts") or {}).items():
                outcome = hosts.setdefault(name, HostOutcome(name))
                for key in ("ok", "changed", "failed", "unreachable", "skipped"):
                    count = counts.get("failures" if key == "failed" else key, 0)
                    setattr(outcome, key, int(count or 0))
    return FleetReport(dict(sorted(hosts.items())), {h: d for h, d in diffs.items() if d})
