"""Rendering: rich text on a terminal, plain lines otherwise, stable JSON with --json.

The JSON contract: with --json a command prints exactly one JSON object on stdout, whether it
succeeds or fails, once it ends (`finish`). Its keys are camelCase; `schemaVersion` names the
contract's version; `ok` says whether the command succeeded; a failure adds
`error: {code, message, hint}` (codes from `airlock.errors`) beside whatever result the command
had already produced. A list result is carried under `items`. Long-running servers print their
readiness object when they listen (`ready`), and their logs on stderr. Human output never goes
to stdout under --json. The schema: `schemas/output.schema.json` in the source tree.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from airlock.cli.jsondoc import SCHEMA_VERSION, document, json_text
from airlock.naming import camel_name

__all__ = [
    "SCHEMA_VERSION",
    "Output",
    "camel",
    "json_option",
    "json_text",
    "state",
    "use_json",
]


@dataclass
class Output:
    json: bool = False
    debug: bool = False
    verbose: int = 0
    progress: str = "auto"  # auto, plain or none (airlock.cli.progress)
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )
    result: dict[str, Any] = field(default_factory=dict)
    written: bool = False

    def emit(self, data: Any, text: Callable[[], None] | None = None) -> None:
        """The command's result: kept for the one JSON document with --json, else rendered as
        text (a JSON dump when a command has no text form)."""
        if self.json:
            data = camel(data)
            self.result.update(data if isinstance(data, dict) else {"items": data})
        elif text is None:
            _write(data)
        else:
            text()

    def ready(self, data: dict[str, Any]) -> None:
        """A server's readiness document, printed at once (it then runs until stopped)."""
        if self.json:
            _write({"schemaVersion": SCHEMA_VERSION, "ok": True, **data})
            self.written = True

    def finish(self, error: dict[str, Any] | None = None) -> None:
        """Print the one JSON document (with --json), success or failure, exactly once."""
        if not self.json or self.written:
            return
        _write(self.document(self.result, error))
        self.written = True

    document = staticmethod(document)

    def rendered(self, data: dict[str, Any], text: Callable[[], None]) -> tuple[str, str]:
        """What `emit(data, text)` and the end of the command would print (stdout, stderr),
        as these consoles would show it (with --json: the document)."""
        if self.json:
            return json_text(self.document({**self.result, **camel(data)})), ""
        saved = self.console, self.err
        out, err = io.StringIO(), io.StringIO()
        self.console, self.err = (
            Console(
                file=buf,
                force_terminal=real.is_terminal,
                color_system=real.color_system,  # type: ignore[arg-type]
                width=real.width,
                highlight=False,
                soft_wrap=True,
            )
            for buf, real in ((out, saved[0]), (err, saved[1]))
        )
        try:
            text()
        finally:
            self.console, self.err = saved
        return out.getvalue(), err.getvalue()

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
        from rich.table import Table  # here: most commands print no table

        t = Table(*columns, title=title, show_lines=False, header_style="bold")
        for row in rows:
            t.add_row(*("" if c is None else escape(str(c)) for c in row))
        self.console.print(t)


state = Output()


def camel(obj: Any) -> Any:
    """JSON data with every snake_case key camelCased, dataclasses included (`found_in` ->
    `foundIn`); keys that are data (image references, paths, versions) never look like that."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {camel_name(f.name): camel(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {camel_name(k) if _SNAKE.match(k) else k: camel(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [camel(v) for v in obj]
    return obj


_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


def _write(data: Any) -> None:
    sys.stdout.write(json_text(data))
    sys.stdout.flush()


def json_option() -> Any:
    return typer.Option(False, "--json", help="Machine-readable output.")


def use_json(flag: bool) -> None:
    if flag:
        state.json = True
