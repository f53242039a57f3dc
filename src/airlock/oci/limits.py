"""The registry's limits on what pushes may take, and the distribution-spec errors they give.

- a manifest larger than `manifest_bytes` (4 MiB, distribution's own limit): 413 SIZE_INVALID;
- one blob upload larger than `upload_bytes` (16 GiB), declared or streamed: 413 SIZE_INVALID;
- more than `uploads_in_flight` (32) uploads open at once: 429 TOOMANYREQUESTS with Retry-After;
- less free space on the store's filesystem than the floor, max(`floor_bytes` (2 GiB),
  `floor_percent` (5 %) of the filesystem): 403 DENIED. The floor is checked when an upload
  starts and again as its bytes arrive, so a body with no declared length cannot pass it.

A refused upload is removed at once: nothing partial stays in the store or its upload area.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_LIMITS", "Limits", "free_space", "parse_size"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Limits:
    manifest_bytes: int = 4 << 20
    upload_bytes: int = 16 << 30
    uploads_in_flight: int = 32
    floor_bytes: int = 2 << 30
    floor_percent: float = 5.0
    # An upload session nobody touched for this long is dropped (and stops counting).
    idle_upload_seconds: float = 3600.0

    def floor_for(self, total: int) -> int:
        """The free-space floor on a filesystem of `total` bytes."""
        return max(self.floor_bytes, int(total * self.floor_percent / 100))


DEFAULT_LIMITS = Limits()


def free_space(path: Path) -> tuple[int, int]:
    """(free bytes, total bytes) of the filesystem holding `path` (or its nearest parent)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return usage.free, usage.total


def parse_size(text: str) -> int:
    """`4MiB`, `16G`, `512k`, `1024` -> bytes (binary units); ValueError names the input."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS and not raw[-1:].isdigit() else ""
    number = raw[: len(raw) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 4MiB, 16GiB, 512KiB)") from None
    if value < 0:
        raise ValueError(f"not a size: {text!r} (negative)")
    return int(value * _UNITS[unit])
