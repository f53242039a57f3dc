"""Check a --json document against the envelope (docs/schemas/output.schema.json) and the
command's own schema (docs/schemas/<command words joined by ->.schema.json)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).parents[1] / "docs" / "schemas"


@cache
def schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def check_output(command: str, doc: dict[str, Any]) -> dict[str, Any]:
    """`command` as typed (`bundle verify`); returns `doc` once both schemas accept it."""
    jsonschema.validate(doc, schema("output"))
    jsonschema.validate(doc, schema(command.replace(" ", "-")))
    return doc
