"""Ansible callback: every task result and the final stats as JSON lines, for airlock's report.

Written to the file named by AIRLOCK_FLEET_EVENTS; the operator still sees Ansible's own output
(the default stdout callback) in the run's log.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: airlock_events
type: notification
short_description: task results as JSON lines for airlock
"""

_KEEP = ("msg", "rc", "stderr", "changed", "skipped", "unreachable", "failed", "diff")


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "airlock_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("AIRLOCK_FLEET_EVENTS")

    def _write(self, event: dict[str, Any]) -> None:
        if not self._path:
            return
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, default=str, sort_keys=True) + "\n")

    def _result(self, status: str, result: Any) -> None:
        raw = dict(result._result)
        if raw.get("_ansible_no_log"):
            raw = {"msg": "(output hidden: no_log)"}
        items = [r for r in raw.get("results") or [] if isinstance(r, dict)]
        bad = [r for r in items if r.get("failed") or r.get("unreachable")]
        if bad:  # a loop: the first item that failed says why
            raw["msg"] = bad[0].get("msg", raw.get("msg"))
        self._write(
            {
                "event": "task",
                "status": status,
                "host": result._host.get_name(),
                "task": result._task.get_name(),
                "result": {k: raw[k] for k in _KEEP if k in raw},
            }
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = sorted(stats.processed.keys())
        self._write({"event": "stats", "hosts": {h: stats.summarize(h) for h in hosts}})
