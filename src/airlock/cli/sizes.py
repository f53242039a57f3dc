"""Human sizes on the command line: 700M, 4G, 4.7GB, 1MiB (pure)."""

from __future__ import annotations

import re

from airlock.errors import UsageError

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"not a size: {text!r}", hint="e.g. 700M, 4G, 4.7G, 1MiB")
    return int(float(m[1]) * _UNITS[m[2]])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
