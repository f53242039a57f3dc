"""Where airlock keeps its caches on this machine (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/airlock`, else `~/.cache/airlock`: the download cache by default."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airlock"
