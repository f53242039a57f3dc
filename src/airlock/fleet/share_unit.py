"""`airlock bundle share --unit`: the first node's share as a systemd unit, so it outlives the
session that started it (the admin's ssh, Ansible's run) and comes back after a reboot.

The unit runs the same `airlock bundle share` with the same arguments; writing it is a node
resource like any other (`File`, then `Service`: enabled and started, restarted when the unit
changes), so `--dry-run` is the plan and a second run changes nothing. Under `--root` (a
sysroot) paths given under the root are written as the node sees them, and nothing is started.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import UsageError
from airlock.node import engine
from airlock.node.resources import File, Service
from airlock.verbs.node import NodeResult

__all__ = ["SHARE_UNIT", "SHARE_UNIT_PATH", "ShareUnit", "install_share_unit", "render_share_unit"]

SHARE_UNIT = "airlock-share.service"
SHARE_UNIT_PATH = f"/etc/systemd/system/{SHARE_UNIT}"


@dataclass(frozen=True)
class ShareUnit:
    bundle: Path
    listen: str
    keys: Sequence[Path] = ()
    allow_unsigned: bool = False
    max_clients: int = 16
    access_log: Path | None = None


def _quote(arg: str) -> str:
    """One ExecStart word (systemd's own quoting; % and $ escaped)."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\n\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _on_node(path: Path, root: Path) -> str:
    """The node's own path for `path` (given as seen here: under the sysroot when there is one)."""
    absolute = path.absolute()
    if root == Path("/") or not absolute.is_relative_to(root):
        return str(absolute)
    return "/" + str(absolute.relative_to(root))


def render_share_unit(share: ShareUnit, *, airlock_bin: str, root: Path = Path("/")) -> str:
    argv = [airlock_bin, "bundle", "share", _on_node(share.bundle, root), "--listen", share.listen]
    argv += ["--max-clients", str(share.max_clients)]
    if share.access_log is not None:
        argv += ["--access-log", _on_node(share.access_log, root)]
    for key in share.keys:
        argv += ["--key", _on_node(key, root)]
    if share.allow_unsigned:
        argv.append("--allow-unsigned")
    exec_start = " ".join(_quote(a) for a in argv)
    return f"""\
# Managed by airlock: what the other nodes of the cluster fetch (airlock.json, its signature,
# the bootstrap script and the blobs airlock.json lists; read-only).
[Unit]
Description=airlock bundle share: the bundle's files for the cluster's other nodes
After=network-online.target local-fs.target
Wants=network-online.target

[Service]
ExecStart={exec_start}
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""


def install_share_unit(share: ShareUnit, *, root: Path, dry_run: bool) -> NodeResult:
    """The unit written, enabled and started (a plan with `dry_run`; recorded in a sysroot)."""
    if share.max_clients < 1:
        raise UsageError("--max-clients must be at least 1")
    airlock_bin = _on_node(Path(sys.executable).with_name("airlock"), root)
    text = render_share_unit(share, airlock_bin=airlock_bin, root=root)
    resources = [
        File(SHARE_UNIT_PATH, content=text),
        Service(SHARE_UNIT, unit_path=SHARE_UNIT_PATH),
    ]
    ctx = engine.Context(root=root, dry_run=dry_run)
    the_plan = engine.plan(resources, ctx)
    if dry_run or the_plan.empty:
        return NodeResult(the_plan, None)
    return NodeResult(the_plan, engine.apply(the_plan, ctx))
