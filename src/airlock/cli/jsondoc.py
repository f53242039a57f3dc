"""The one JSON document a command prints with --json (standard library only: `airlock.cli.output`
renders through it, and so does `airlock.earlyverify` before any library is imported)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SCHEMA_VERSION", "document", "json_text"]

SCHEMA_VERSION = 1


def document(result: dict[str, Any], error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document of a command that produced `result` (camelCased)."""
    doc: dict[str, Any] = {"schemaVersion": SCHEMA_VERSION, **result, "ok": error is None}
    if error is not None:
        doc["error"] = error
    return doc


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
