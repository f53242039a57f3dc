"""Names in machine-readable output: every --json key is camelCase (pure)."""

from __future__ import annotations

__all__ = ["camel_name"]


def camel_name(name: str) -> str:
    """`found_in` -> `foundIn`; a name without underscores stays as it is."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
