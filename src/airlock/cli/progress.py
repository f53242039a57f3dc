"""Progress of long steps, rendered: the CLI's side of `airlock.progress.ProgressSink`.

Modes (`--progress MODE`, anywhere on the line, or AIRLOCK_PROGRESS):
- `auto` (default): a rich display (bar, bytes, rate, ETA) on stderr when stderr is a terminal,
  nothing otherwise;
- `plain`: one line per step on stderr when it starts and ends, and every few seconds while it
  runs: for CI logs and files;
- `none`: nothing.
Progress never goes to stdout, so `--json` keeps stdout for its one document.
"""

from __future__ import annotations

import threading
import time
import types
from typing import TYPE_CHECKING

from airlock.cli.output import state
from airlock.cli.sizes import format_size

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["MODES", "DownloadProgress", "StepProgress", "resolve_mode"]

MODES = ("auto", "plain", "none")
_PLAIN_EVERY = 5.0  # seconds between a running step's plain lines
_LABEL_WIDTH = 60
_BIG = 64 << 20  # plain mode: a download this big gets a line when it starts too


def resolve_mode(mode: str) -> str:
    """`auto` becomes `rich` on a terminal (stderr) and `none` elsewhere."""
    if mode == "auto":
        return "rich" if state.err.is_terminal else "none"
    return mode


def _label(name: str) -> str:
    """A URL shows its file name; anything else (an image and its layer) as it is, shortened
    in the middle when too long."""
    if "://" in name:
        name = name.rstrip("/").rsplit("/", 1)[-1]
    if len(name) <= _LABEL_WIDTH:
        return name
    half = (_LABEL_WIDTH - 1) // 2
    return name[:half] + "…" + name[-half:]


def _display(unit: str) -> Progress:
    """The live display (rich imports its progress machinery only for a terminal)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    amount: list[ProgressColumn] = (
        [DownloadColumn(), TransferSpeedColumn()]
        if unit == "bytes"
        else [MofNCompleteColumn(), TextColumn(unit)]
    )
    return Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        *amount,
        TimeRemainingColumn(),
        console=state.err,
        transient=True,
    )


class StepProgress:
    """A ProgressSink for one command; use as a context manager around the core call.

    `unit` is "bytes" (downloads, hashing, copying) or a noun for counted steps ("changes")."""

    def __init__(self, *, unit: str = "bytes", mode: str | None = None) -> None:
        self.unit = unit
        self.mode = resolve_mode(mode or state.progress)
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._totals: dict[str, int | None] = {}
        self._seen: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._last_line: dict[str, float] = {}
        self._rich = _display(unit) if self.mode == "rich" else None

    # --- context ------------------------------------------------------------------------------

    def __enter__(self) -> StepProgress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object | types.TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()

    # --- ProgressSink -------------------------------------------------------------------------

    def start(self, name: str, total: int | None) -> None:
        with self._lock:
            self._totals[name] = total
            self._seen[name] = 0
            self._started[name] = self._last_line[name] = time.monotonic()
        if self._rich is not None:
            self._tasks[name] = self._rich.add_task(_label(name), total=total)
            self._rich.refresh()  # seen at once, however short the step
        elif self.mode == "plain" and (self.unit != "bytes" or (total or 0) >= _BIG):
            self._plain(f"{_label(name)}: started, {self._amount(total)}")

    def advance(self, name: str, nbytes: int) -> None:
        with self._lock:
            self._seen[name] = self._seen.get(name, 0) + nbytes
            now = time.monotonic()
            due = now - self._last_line.get(name, now) >= _PLAIN_EVERY
            if due:
                self._last_line[name] = now
        if self._rich is not None and name in self._tasks:
            self._rich.advance(self._tasks[name], nbytes)
        elif self.mode == "plain" and due:
            self._plain(f"{_label(name)}: {self._fraction(name)}")

    def done(self, name: str) -> None:
        if self._rich is not None and name in self._tasks:
            self._rich.remove_task(self._tasks.pop(name))
        elif self.mode == "plain":
            took = time.monotonic() - self._started.get(name, time.monotonic())
            self._plain(
                f"{_label(name)}: done, {self._amount(self._seen.get(name))} in {took:.1f} s"
            )

    # --- rendering ----------------------------------------------------------------------------

    def _amount(self, n: int | None) -> str:
        if n is None:
            return "size unknown"
        return format_size(n) if self.unit == "bytes" else f"{n} {self.unit}"

    def _fraction(self, name: str) -> str:
        seen, total = self._seen.get(name, 0), self._totals.get(name)
        if not total:
            return self._amount(seen)
        return f"{100 * seen // total}% ({self._amount(seen)} of {self._amount(total)})"

    def _plain(self, line: str) -> None:
        state.err.print(line, markup=False, highlight=False, soft_wrap=True)

    def summary(self) -> dict[str, int]:
        return {"artifacts": len(self._seen), "bytes": sum(self._seen.values())}


DownloadProgress = StepProgress  # the name `bundle create` used first
