"""Where a bundle's bytes are: the one way to find its volumes (standard library only).

A bundle is `NAME.airlock.tar`, or its volumes `NAME.airlock.tar.000, .001, ...` with the parts
file `NAME.airlock.parts.json` beside them. `locate` accepts the tar, the parts file or the first
volume (a bare tar name whose `.000` exists counts too), and returns the volumes in order. It
reads the parts file only enough to name the volumes; `airlock.bundle.volumes` validates it in
full and checks every volume's sha256. The generated bootstrap script embeds this file.

It imports neither pathlib nor json (both import re) until asked: `airlock.earlyhash` finds a
tar's volumes with `volume_paths` before it forks its hashing, and every module imported before
that fork delays the hashing by its import time (about 11 ms for these three).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: importing typing costs `bundle verify` its early start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    Found = tuple[str, list[str], str | None, dict[str, Any] | None]  # Located, in strings

__all__ = ["VOLUME_DIGITS", "Located", "VolumeError", "locate", "parts_name", "volume_paths"]

VOLUME_DIGITS = 3
_TAR_SUFFIX = ".airlock.tar"
_PARTS_SUFFIX = ".airlock.parts.json"
_MAX_PARTS_BYTES = 1 << 20


class VolumeError(ValueError):
    """The bundle or one of its volumes cannot be found; `hint` says what to pass instead."""

    def __init__(self, message: str, hint: str | None = None, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.damaged = damaged  # the parts file is there but unreadable as one


class Located:
    """Where a bundle's bytes are (a plain class, as `tarindex.TarEntry`: no dataclasses import
    before `bundle verify` forks its hashing)."""

    __slots__ = ("parts", "parts_path", "paths", "tar_name")

    def __init__(
        self,
        tar_name: str,
        paths: tuple[Path, ...],
        parts_path: Path | None = None,
        parts: dict[str, Any] | None = None,
    ) -> None:
        self.tar_name = tar_name  # the name of the whole tar (lab.airlock.tar)
        self.paths = paths  # the tar, or its volumes in order
        self.parts_path = parts_path
        self.parts = parts  # the parts file as read (unvalidated beyond names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Located) and (
            self.tar_name,
            self.paths,
            self.parts_path,
            self.parts,
        ) == (other.tar_name, other.paths, other.parts_path, other.parts)

    __hash__ = None  # type: ignore[assignment]  # holds a dict

    def __repr__(self) -> str:
        return f"Located({self.tar_name!r}, {self.paths!r}, {self.parts_path!r})"


def parts_name(tar_name: str) -> str:
    """`lab.airlock.tar` -> `lab.airlock.parts.json`; any other name gets `.parts.json` added."""
    if tar_name.endswith(_TAR_SUFFIX):
        return tar_name[: -len(_TAR_SUFFIX)] + _PARTS_SUFFIX
    if tar_name.endswith(".tar"):
        return tar_name[: -len(".tar")] + ".parts.json"
    return tar_name + ".parts.json"


def _read_parts(path: str) -> Found:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_PARTS_BYTES + 1)
    except OSError as exc:
        raise VolumeError(f"cannot read parts file {path}: {exc.strerror}") from exc
    import json  # here, not at import: json imports re (see the module's docstring)

    hint = "copy the parts file again from the source medium"
    try:
        doc = json.loads(data) if len(data) <= _MAX_PARTS_BYTES else None
    except ValueError:
        doc = None
    volumes = doc.get("volumes") if isinstance(doc, dict) else None
    tar = doc.get("tar") if isinstance(doc, dict) else None
    if not isinstance(volumes, list) or not volumes or not isinstance(tar, str):
        raise VolumeError(f"{path} is not a valid parts file", hint, damaged=True)
    names = [v.get("name") if isinstance(v, dict) else None for v in volumes]
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise VolumeError(
                f"{path} names a volume {name!r} that is not a plain file name", hint, damaged=True
            )
    here = os.path.dirname(path)
    return tar, [os.path.join(here, str(n)) for n in names], path, doc


def _volume_name(name: str) -> tuple[str, int] | None:
    """(BASE, N) of a volume's file name `BASE.NNN`; None for any other name."""
    base, dot, number = name.rpartition(".")
    if not dot or not base or len(number) != VOLUME_DIGITS or not number.isdecimal():
        return None
    return base, int(number)


def _find(path: str) -> Found:
    name = os.path.basename(path)
    if name.endswith(".parts.json"):
        return _read_parts(path)
    here = os.path.dirname(path)
    volume = _volume_name(name)
    first = os.path.join(here, f"{name}.{0:0{VOLUME_DIGITS}d}")
    if volume is None and not os.path.exists(path) and os.path.exists(first):
        return _find(first)
    if volume is not None:
        base, number = volume
        if number != 0:
            raise VolumeError(
                f"{path} is not the first volume",
                f"pass {base}.{0:0{VOLUME_DIGITS}d} or the parts file {parts_name(base)}",
            )
        parts_path = os.path.join(here, parts_name(base))
        if os.path.isfile(parts_path):
            return _read_parts(parts_path)
        found: list[str] = []
        while os.path.isfile(p := os.path.join(here, f"{base}.{len(found):0{VOLUME_DIGITS}d}")):
            found.append(p)
        if not found:
            raise VolumeError(f"bundle volume {path} not found")
        return base, found, None, None
    if not os.path.isfile(path):
        raise VolumeError(f"bundle {path} not found", "pass NAME.airlock.tar or its parts file")
    return name, [path], None, None


def locate(path: str | os.PathLike[str]) -> Located:
    """The volumes of the bundle at `path` (tar, parts file or first volume), in order."""
    from pathlib import Path  # here, not at import (see the module's docstring)

    tar_name, paths, parts_path, doc = _find(str(Path(path)))
    parts = Path(parts_path) if parts_path is not None else None
    return Located(tar_name, tuple(Path(p) for p in paths), parts, doc)


def volume_paths(path: str) -> list[str]:
    """The paths of `locate(path)`'s volumes, as strings, found without importing pathlib or json
    for a single tar (`airlock.earlyhash`, before its fork). Raises VolumeError as `locate`."""
    return _find(path)[1]
