"""Which operating system a node (or a sysroot) runs: /etc/os-release -> package family.

The family decides how the node is prepared: "rpm" (Fedora, RHEL and rebuilds: firewalld,
SELinux) or "deb" (Debian, Ubuntu: ufw, AppArmor).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from airlock import system
from airlock.errors import NodeError

__all__ = ["FAMILIES", "OsInfo", "parse_os_release", "read_os_info"]

# os-release ID (or an ID_LIKE entry) -> package family.
FAMILIES: dict[str, str] = {
    "fedora": "rpm",
    "rhel": "rpm",
    "centos": "rpm",
    "rocky": "rpm",
    "almalinux": "rpm",
    "debian": "deb",
    "ubuntu": "deb",
}
_OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


@dataclass(frozen=True)
class OsInfo:
    id: str
    id_like: tuple[str, ...]
    version_id: str
    pretty_name: str
    family: str  # "rpm" | "deb"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "id_like": list(self.id_like),
            "version_id": self.version_id,
            "pretty_name": self.pretty_name,
            "family": self.family,
        }


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines (values shell-quoted or not); comments and junk lines ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip("\"'")]
        out[key.strip()] = words[0] if words else ""
    return out


def read_os_info(*, root: Path = Path("/")) -> OsInfo:
    """The node's OS and family; an unsupported or unknown OS is a NodeError."""
    for candidate in _OS_RELEASE:
        path = system.host_path(candidate, root)
        if path.is_file():
            fields = parse_os_release(path.read_text(errors="replace"))
            break
    else:
        raise NodeError(
            f"no os-release file under {root} ({', '.join(_OS_RELEASE)})",
            "is this the root of a Linux system? --root must point at one",
        )
    os_id = fields.get("ID", "").lower()
    like = tuple(fields.get("ID_LIKE", "").lower().split())
    family = next((FAMILIES[i] for i in (os_id, *like) if i in FAMILIES), None)
    if family is None:
        supported = ", ".join(sorted(FAMILIES))
        raise NodeError(
            f"unsupported operating system {fields.get('PRETTY_NAME') or os_id or '(no ID)'!r}"
            f" (ID={os_id or '-'}, ID_LIKE={' '.join(like) or '-'})",
            f"supported: {supported} (and systems whose ID_LIKE names one of them)",
        )
    return OsInfo(
        id=os_id,
        id_like=like,
        version_id=fields.get("VERSION_ID", ""),
        pretty_name=fields.get("PRETTY_NAME", os_id),
        family=family,
    )
