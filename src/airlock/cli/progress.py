"""Progress for downloads: bytes, rate and ETA per artifact on a terminal; plain lines otherwise."""

from __future__ import annotations

import types
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from airlock.cli.output import state

__all__ = ["DownloadProgress"]


class DownloadProgress:
    """A ProgressSink; use as a context manager around the fetch."""

    def __init__(self) -> None:
        self._live = state.interactive
        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=state.err,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._totals: dict[str, int] = {}

    def __enter__(self) -> DownloadProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object | types.TracebackType | None) -> None:
        if self._live:
            self._progress.stop()

    @staticmethod
    def _label(name: str) -> str:
        tail = name.rstrip("/").rsplit("/", 1)[-1]
        return tail if len(tail) <= 48 else tail[:22] + "…" + tail[-22:]

    def start(self, name: str, total: int | None) -> None:
        self._totals[name] = 0
        if self._live:
            self._tasks[name] = self._progress.add_task(self._label(name), total=total)

    def advance(self, name: str, nbytes: int) -> None:
        self._totals[name] = self._totals.get(name, 0) + nbytes
        if self._live and name in self._tasks:
            self._progress.advance(self._tasks[name], nbytes)

    def done(self, name: str) -> None:
        if self._live and name in self._tasks:
            self._progress.remove_task(self._tasks.pop(name))
        elif not state.json and state.verbose:
            state.err.print(f"fetched {name} ({self._totals.get(name, 0)} bytes)", markup=False)

    def summary(self) -> dict[str, Any]:
        return {"artifacts": len(self._totals), "bytes": sum(self._totals.values())}
