"""`airlock bundle share --unit`: the unit runs the same share with the node's own paths, is
written and enabled as a node resource (a plan first, nothing the second time), and under a
sysroot nothing is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.fleet.share_unit import (
    SHARE_UNIT,
    SHARE_UNIT_PATH,
    ShareUnit,
    install_share_unit,
    render_share_unit,
)


def _share(root: Path) -> ShareUnit:
    incoming = root / "var/lib/airlock/incoming"
    return ShareUnit(
        bundle=incoming / "seed.airlock.parts.json",
        listen="198.18.21.10:5001",
        keys=(root / "etc/airlock/trusted-keys/airlock.pub",),
        access_log=incoming / "share-access.log",
    )


def test_the_unit_names_the_node_paths(tmp_path: Path) -> None:
    text = render_share_unit(_share(tmp_path), airlock_bin="/opt/airlock/venv/bin/airlock",
                             root=tmp_path)  # fmt: skip
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert exec_start == (
        "ExecStart=/opt/airlock/venv/bin/airlock bundle share "
        "/var/lib/airlock/incoming/seed.airlock.parts.json --listen 198.18.21.10:5001 "
        "--max-clients 16 --access-log /var/lib/airlock/incoming/share-access.log "
        "--key /etc/airlock/trusted-keys/airlock.pub"
    )
    assert str(tmp_path) not in text
    assert "WantedBy=multi-user.target" in text and "Restart=on-failure" in text


def test_odd_paths_are_quoted_for_systemd(tmp_path: Path) -> None:
    share = ShareUnit(bundle=Path("/srv/my bundles/50%.tar"), listen="127.0.0.1:5001",
                      allow_unsigned=True)  # fmt: skip
    text = render_share_unit(share, airlock_bin="/opt/airlock/venv/bin/airlock")
    assert 'share "/srv/my bundles/50%%.tar" --listen' in text
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.endswith("--allow-unsigned")


def test_written_enabled_then_nothing_to_do(tmp_path: Path) -> None:
    plan = install_share_unit(_share(tmp_path), root=tmp_path, dry_run=True)
    assert [c.resource.name for c in plan.plan.changes] == [SHARE_UNIT_PATH, SHARE_UNIT]
    assert not (tmp_path / SHARE_UNIT_PATH.lstrip("/")).exists()  # a plan changes nothing
    applied = install_share_unit(_share(tmp_path), root=tmp_path, dry_run=False)
    assert applied.applied is not None and len(applied.applied.changed) == 2
    unit = tmp_path / SHARE_UNIT_PATH.lstrip("/")
    assert "bundle share /var/lib/airlock/incoming/" in unit.read_text()
    link = tmp_path / "etc/systemd/system/multi-user.target.wants" / SHARE_UNIT
    assert link.is_symlink() and str(link.readlink()) == SHARE_UNIT_PATH
    ran = [a for a in applied.applied.actions if a.ran]
    assert ran == []  # a sysroot: systemctl is recorded for the node, never run here
    again = install_share_unit(_share(tmp_path), root=tmp_path, dry_run=False)
    assert again.plan.empty and again.applied is None


def test_no_clients_is_a_usage_error(tmp_path: Path) -> None:
    share = ShareUnit(bundle=tmp_path / "b.tar", listen="127.0.0.1:5001", max_clients=0)
    with pytest.raises(UsageError, match="--max-clients"):
        install_share_unit(share, root=tmp_path, dry_run=True)
