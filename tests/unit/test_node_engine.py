"""Every node resource in a temp sysroot: plan, apply, plan again is empty; exact dry-run text;
read-only targets refused before anything is written (an injected writability probe here; the
component tests use a real read-only tmpfs)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.errors import DigestMismatch, NodeError
from airlock.node.engine import Context, Resource, apply, plan
from airlock.node.resources import (
    Absent,
    BytesPayload,
    Command,
    Directory,
    File,
    KernelModule,
    Probe,
    Service,
    ServiceDisabled,
    Swap,
    Symlink,
    Sysctl,
    comment_swap_lines,
    render_diff,
)


def converge(resources: list[Resource], root: Path, **kw: object) -> Context:
    """Plan (changes expected), apply, then the second plan must be empty."""
    ctx = Context(root=root, **kw)  # type: ignore[arg-type]
    first = plan(resources, ctx)
    assert not first.empty, first.render()
    apply(first, ctx)
    second = plan(resources, Context(root=root, **kw))  # type: ignore[arg-type]
    assert second.empty, second.render()
    return ctx


def test_file_text_create_then_update_diff(tmp_path: Path) -> None:
    f = File("/etc/demo.conf", content="a = 1\nb = 2\n")
    converge([f], tmp_path)
    assert (tmp_path / "etc/demo.conf").read_text() == "a = 1\nb = 2\n"
    assert (tmp_path / "etc/demo.conf").stat().st_mode & 0o777 == 0o644
    g = File("/etc/demo.conf", content="a = 1\nb = 3\n")
    p = plan([g], Context(root=tmp_path))
    assert p.render() == (
        "~ file:/etc/demo.conf: update\n"
        "--- /etc/demo.conf\n"
        "+++ /etc/demo.conf\n"
        "@@ -1,2 +1,2 @@\n"
        " a = 1\n"
        "-b = 2\n"
        "+b = 3\n"
        "1 change\n"
    )
    js = p.to_json()
    assert js["changes"][0]["resource"] == "file:/etc/demo.conf"
    assert "+b = 3" in js["changes"][0]["diff"]


def test_file_mode_and_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "etc/x"
    target.parent.mkdir(parents=True)
    target.write_text("same\n")
    os.chmod(target, 0o600)
    os.chown(target, 1000, 1000)
    f = File("/etc/x", content="same\n", mode=0o640, owner=(0, 0))
    p = plan([f], Context(root=tmp_path))
    assert p.changes[0].change.msg == "mode 0600 -> 0640, owner 1000:1000 -> 0:0"
    assert p.changes[0].change.diff == ""
    apply(p, Context(root=tmp_path))
    st_ = target.stat()
    assert (st_.st_mode & 0o777, st_.st_uid, st_.st_gid) == (0o640, 0, 0)
    assert plan([f], Context(root=tmp_path)).empty


def test_file_keeps_owner_of_replaced_file(tmp_path: Path) -> None:
    target = tmp_path / "etc/owned"
    target.parent.mkdir(parents=True)
    target.write_text("old\n")
    os.chown(target, 1234, 4321)
    converge([File("/etc/owned", content="new\n")], tmp_path)
    assert (target.stat().st_uid, target.stat().st_gid) == (1234, 4321)


def test_file_binary_source_diff_and_verification(tmp_path: Path) -> None:
    blob = b"\x7fELF\0\0binary"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    f = File("/usr/local/bin/tool", source=BytesPayload(blob, "tool"), mode=0o755)
    p = plan([f], Context(root=tmp_path))
    assert p.changes[0].change.diff == f"binary /usr/local/bin/tool: absent -> {digest}\n"
    converge([f], tmp_path)
    assert (tmp_path / "usr/local/bin/tool").read_bytes() == blob
    old = digest
    new_blob = b"\x7fELF\0\0binary2"
    g = File("/usr/local/bin/tool", source=BytesPayload(new_blob), mode=0o755)
    new = "sha256:" + hashlib.sha256(new_blob).hexdigest()
    assert plan([g], Context(root=tmp_path)).changes[0].change.diff == (
        f"binary /usr/local/bin/tool: {old} -> {new}\n"
    )


def test_file_payload_that_lies_about_its_digest_never_lands(tmp_path: Path) -> None:
    class Liar(BytesPayload):
        def digest(self) -> str:
            return "sha256:" + "0" * 64

    f = File("/usr/local/bin/evil", source=Liar(b"tampered", "evil"), mode=0o755)
    ctx = Context(root=tmp_path)
    with pytest.raises(DigestMismatch, match="evil"):
        apply(plan([f], ctx), ctx)
    assert not (tmp_path / "usr/local/bin/evil").exists()
    assert not [p for p in (tmp_path / "usr/local/bin").iterdir()]  # no temp file left


def test_text_vs_binary_diff() -> None:
    assert render_diff("/x", None, b"hi\n") == "--- /dev/null\n+++ /x\n@@ -0,0 +1 @@\n+hi\n"
    bin_diff = render_diff("/x", b"a\0", b"b\0")
    assert bin_diff.startswith("binary /x: sha256:") and " -> sha256:" in bin_diff
    assert "No newline at end of file" in render_diff("/x", b"a\n", b"a\nb")


def test_file_transform_and_directory_refusal(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/app.conf").write_text("x=1\n")
    f = File("/etc/app.conf", transform=lambda t: t.replace("x=1", "x=2"), mode=None)
    converge([f], tmp_path)
    assert (tmp_path / "etc/app.conf").read_text() == "x=2\n"
    (tmp_path / "etc/dir").mkdir()
    with pytest.raises(NodeError, match="/etc/dir is a directory"):
        plan([File("/etc/dir", content="x")], Context(root=tmp_path))


def test_directory_symlink_absent(tmp_path: Path) -> None:
    converge([Directory("/opt/cni/bin", mode=0o750)], tmp_path)
    assert (tmp_path / "opt/cni/bin").stat().st_mode & 0o777 == 0o750
    converge([Symlink("/etc/alternatives/x", target="/usr/sbin/x-nft")], tmp_path)
    assert os.readlink(tmp_path / "etc/alternatives/x") == "/usr/sbin/x-nft"
    p = plan([Symlink("/etc/alternatives/x", target="/usr/sbin/x-legacy")], Context(root=tmp_path))
    assert p.changes[0].change.msg == "retarget /usr/sbin/x-nft -> /usr/sbin/x-legacy"
    converge([Absent("/etc/alternatives/x")], tmp_path)
    assert not (tmp_path / "etc/alternatives/x").is_symlink()


def test_sysctl_and_modules_record_live_actions_in_sysroot(tmp_path: Path) -> None:
    values = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
    ctx = converge(
        [
            KernelModule("/etc/modules-load.d/k8s.conf", ["overlay", "br_netfilter"]),
            Sysctl("/etc/sysctl.d/99-k8s-cri.conf", values),
        ],
        tmp_path,
    )
    assert [str(a) for a in ctx.actions] == [
        "modprobe overlay",
        "modprobe br_netfilter",
        "sysctl -w net.ipv4.ip_forward=1",
        "sysctl -w net.bridge.bridge-nf-call-iptables=1",
    ]
    assert not any(a.ran for a in ctx.actions)
    assert (tmp_path / "etc/sysctl.d/99-k8s-cri.conf").read_text().splitlines()[1:] == [
        "net.ipv4.ip_forward = 1",
        "net.bridge.bridge-nf-call-iptables = 1",
    ]


def test_swap_fstab_and_zram(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/fstab").write_text(
        "UUID=1 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n# /old none swap sw 0 0\n"
    )
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    (tmp_path / "usr/lib/systemd/zram-generator.conf").write_text("[zram0]\n")
    ctx = converge([Swap()], tmp_path)
    assert (tmp_path / "etc/fstab").read_text().splitlines()[1] == "#/swap.img none swap sw 0 0"
    assert (tmp_path / "etc/systemd/zram-generator.conf").read_text().startswith("#")
    assert [str(a) for a in ctx.actions] == ["swapoff -a"]


@given(
    st.lists(
        st.sampled_from(
            [
                "UUID=1 / ext4 defaults 0 1",
                "/dev/sda2 none swap sw 0 0",
                "#/x none swap sw 0 0",
                "  /dev/zram0   none   swap  defaults 0 0",
                "tmpfs /tmp tmpfs defaults 0 0",
                "",
            ]
        )
    )
)
def test_comment_swap_lines_is_idempotent_and_total(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    once = comment_swap_lines(text)
    assert comment_swap_lines(once) == once
    for line in once.splitlines():
        fields = line.split()
        assert line.lstrip().startswith("#") or len(fields) < 3 or fields[2] != "swap"
    assert len(once.splitlines()) == len(text.splitlines())


def test_service_enable_then_restart_when_its_unit_changes(tmp_path: Path) -> None:
    unit = "/etc/systemd/system/demo.service"
    resources: list[Resource] = [
        File(unit, content="[Service]\nExecStart=/bin/true\n"),
        Service("demo.service", unit_path=unit),
    ]
    ctx = converge(resources, tmp_path)
    link = tmp_path / "etc/systemd/system/multi-user.target.wants/demo.service"
    assert os.readlink(link) == unit
    assert [str(a) for a in ctx.actions] == [
        "systemctl daemon-reload",
        "systemctl restart demo.service",
    ]
    changed: list[Resource] = [
        File(unit, content="[Service]\nExecStart=/bin/false\n"),
        Service("demo.service", unit_path=unit),
    ]
    p = plan(changed, Context(root=tmp_path))
    assert [i.change.msg for i in p.changes] == ["update", "daemon-reload, restart"]
    ctx2 = Context(root=tmp_path)
    apply(plan(changed, ctx2), ctx2)
    assert [str(a) for a in ctx2.actions] == [
        "systemctl daemon-reload",
        "systemctl restart demo.service",
    ]
    assert plan(changed, Context(root=tmp_path)).empty


def test_service_disabled(tmp_path: Path) -> None:
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "firewalld.service").symlink_to("/usr/lib/systemd/system/firewalld.service")
    ctx = converge([ServiceDisabled("firewalld.service")], tmp_path)
    assert not (wants / "firewalld.service").is_symlink()
    assert [str(a) for a in ctx.actions] == ["systemctl stop firewalld.service"]


def test_command_creates_guard_live(tmp_path: Path) -> None:
    marker = tmp_path / "var/lib/done"
    marker.parent.mkdir(parents=True)
    cmd = Command(["sh", "-c", f"echo ran >> {marker}"], creates="/var/lib/done", label="init")
    ctx = converge([cmd], tmp_path, live=True)
    assert marker.read_text() == "ran\n"
    assert ctx.actions[0].ran
    p = plan([cmd], Context(root=tmp_path))
    assert p.empty


def test_probe_warns_but_never_changes(tmp_path: Path) -> None:
    p = plan([Probe("x", lambda ctx: ["look out"])], Context(root=tmp_path))
    assert p.empty and p.warnings == ["look out"]
    assert p.render() == "! warning: look out\nno changes\n"


def test_read_only_target_refused_before_any_write(tmp_path: Path) -> None:
    """Injected probe: /etc/locked is 'read-only'; the other file must not be written."""
    locked = tmp_path / "etc/locked"

    def probe(path: Path) -> str | None:
        return "Read-only file system" if path == locked else None

    resources: list[Resource] = [File("/etc/a", content="a\n"), File("/etc/locked", content="b\n")]
    ctx = Context(root=tmp_path, writable=probe)
    with pytest.raises(NodeError) as err:
        apply(plan(resources, ctx), ctx)
    assert "/etc/locked: Read-only file system" in err.value.message
    assert "nothing was changed" in err.value.message
    assert not (tmp_path / "etc/a").exists()


def test_dry_run_applies_nothing(tmp_path: Path) -> None:
    ctx = Context(root=tmp_path, dry_run=True)
    result = apply(plan([File("/etc/a", content="a\n")], ctx), ctx)
    assert result.dry_run and result.changed == ()
    assert not (tmp_path / "etc/a").exists()


def test_duplicate_resources_refused(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match="twice"):
        plan([File("/etc/a", content="1"), File("/etc/a", content="2")], Context(root=tmp_path))
