"""Where a bundle's bytes are: the one way to find its volumes (standard library only).

A bundle is `NAME.airlock.tar`, or its volumes `NAME.airlock.tar.000, .001, ...` with the parts
file `NAME.airlock.parts.json` beside them. `locate` accepts the tar, the parts file or the first
volume (a bare tar name whose `.000` exists counts too), and returns the volumes in order. It
reads the parts file only enough to name the volumes; `airlock.bundle.volumes` validates it in
full and checks every volume's sha256. The generated bootstrap script embeds this file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

TYPE_CHECKING = False  # not typing's: importing typing costs `bundle verify` its early start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["VOLUME_DIGITS", "Located", "VolumeError", "locate", "parts_name"]

VOLUME_DIGITS = 3
_VOLUME_RE = re.compile(rf"^(?P<base>.+)\.(?P<num>\d{{{VOLUME_DIGITS}}})$")
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


def _read_parts(path: Path) -> Located:
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_PARTS_BYTES + 1)
    except OSError as exc:
        raise VolumeError(f"cannot read parts file {path}: {exc.strerror}") from exc
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
    return Located(tar, tuple(path.parent / str(n) for n in names), path, doc)


def locate(path: str | os.PathLike[str]) -> Located:
    """The volumes of the bundle at `path` (tar, parts file or first volume), in order."""
    path = Path(path)
    if path.name.endswith(".parts.json"):
        return _read_parts(path)
    m = _VOLUME_RE.match(path.name)
    if m is None and not path.exists() and path.with_name(path.name + ".000").exists():
        return locate(path.with_name(path.name + ".000"))
    if m is not None:
        if int(m["num"]) != 0:
            raise VolumeError(
                f"{path} is not the first volume",
                f"pass {m['base']}.000 or the parts file {parts_name(m['base'])}",
            )
        base = m["base"]
        parts_path = path.with_name(parts_name(base))
        if parts_path.is_file():
            return _read_parts(parts_path)
        found: list[Path] = []
        while (p := path.with_name(f"{base}.{len(found):0{VOLUME_DIGITS}d}")).is_file():
            found.append(p)
        if not found:
            raise VolumeError(f"bundle volume {path} not found")
        return Located(base, tuple(found))
    if not path.is_file():
        raise VolumeError(f"bundle {path} not found", "pass NAME.airlock.tar or its parts file")
    return Located(path.name, (path,))
