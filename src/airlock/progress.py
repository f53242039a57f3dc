"""Progress events from long steps (downloads, verify, load, write, push, install).

Core code never renders anything: a verb takes an optional `ProgressSink` and reports to it at
a few narrow points (a blob hashed, a blob copied, a resource applied); the CLI decides how to
show it (a rich display on a terminal, plain lines for logs, or nothing). Each unit of work is
named by a label a person can read (`ghcr.io/stefanprodan/podinfo:6.4.0 layer 2/3`,
`verify lab.airlock.tar`); the amounts are bytes unless the renderer was told otherwise.
Sinks may be called from worker threads.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ProgressSink", "report_done", "report_start"]


class ProgressSink(Protocol):
    """Progress events; `name` labels one unit of work and is unique while it runs."""

    def start(self, name: str, total: int | None) -> None: ...
    def advance(self, name: str, nbytes: int) -> None: ...
    def done(self, name: str) -> None: ...


def report_start(progress: ProgressSink | None, name: str, total: int | None) -> None:
    if progress is not None:
        progress.start(name, total)


def report_done(progress: ProgressSink | None, name: str) -> None:
    if progress is not None:
        progress.done(name)
