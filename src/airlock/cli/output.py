"""Rendering: rich text on a terminal, plain lines otherwise, stable JSON with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["Output", "json_option", "state", "use_json"]


@dataclass
class Output:
    json: bool = False
    debug: bool = False
    verbose: int = 0
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )

    @property
    def interactive(self) -> bool:
        return not self.json and sys.stdout.isatty()

    def emit(self, data: Any, text: Callable[[], None] | None = None) -> None:
        """JSON of `data` with --json, else the text renderer (or a JSON dump as a fallback)."""
        if self.json or text is None:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        else:
            text()

    def line(self, message: str) -> None:
        if not self.json:
            self.console.print(escape(message))

    def info(self, message: str) -> None:
        """Progress notes go to stderr so stdout stays clean for data."""
        if self.verbose or not self.json:
            self.err.print(escape(message))

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/] {escape(message)}")

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
    ) -> None:
        t = Table(*columns, title=title, show_lines=False, header_style="bold")
        for row in rows:
            t.add_row(*("" if c is None else escape(str(c)) for c in row))
        self.console.print(t)


state = Output()


def json_option() -> Any:
    return typer.Option(False, "--json", help="Machine-readable output.")


def use_json(flag: bool) -> None:
    if flag:
        state.json = True
