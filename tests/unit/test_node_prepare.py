"""os-release -> family, and the prepare plan on hand-made Fedora-like and Debian-like trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.errors import NodeError, UsageError
from airlock.node.engine import Context, apply, plan
from airlock.node.osinfo import parse_os_release, read_os_info
from airlock.node.prepare import (
    DEFAULT_PORTS,
    PrepareOptions,
    firewalld_add_ports,
    parse_port,
    prepare_resources,
    ufw_add_ports,
)

ZONE = """<?xml version="1.0" encoding="utf-8"?>
<zone>
  <short>FedoraServer</short>
  <service name="ssh"/>
  <port protocol="tcp" port="6443"/>
</zone>
"""

UFW_RULES = """*filter
:ufw-user-input - [0:0]
### RULES ###

### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 22 -j ACCEPT

### END RULES ###
COMMIT
"""


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def fedora_tree(root: Path) -> None:
    write(
        root,
        "/etc/os-release",
        'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=38\n'
        'PRETTY_NAME="Fedora Linux 38 (Server Edition)"\n',
    )
    write(root, "/etc/fstab", "UUID=abc / xfs defaults 0 0\n/dev/zram0 none swap defaults 0 0\n")
    write(root, "/usr/lib/systemd/zram-generator.conf", "[zram0]\nzram-size = min(ram, 8192)\n")
    write(root, "/etc/firewalld/firewalld.conf", "DefaultZone=FedoraServer\n")
    write(root, "/usr/lib/firewalld/zones/FedoraServer.xml", ZONE)
    write(root, "/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    write(root, "/etc/resolv.conf", "")
    (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin/iptables").symlink_to("/etc/alternatives/iptables")
    (root / "etc/alternatives").mkdir(parents=True, exist_ok=True)
    (root / "etc/alternatives/iptables").symlink_to("/usr/sbin/iptables-nft")
    write(root, "/usr/sbin/iptables-nft", "")


def test_os_release_parsing_and_families(tmp_path: Path) -> None:
    assert parse_os_release('ID="rocky"\nID_LIKE="rhel centos fedora"\n# c\nbad\n') == {
        "ID": "rocky",
        "ID_LIKE": "rhel centos fedora",
    }
    write(tmp_path, "/usr/lib/os-release", "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=22.04\n")
    info = read_os_info(root=tmp_path)
    assert (info.id, info.family, info.version_id) == ("ubuntu", "deb", "22.04")
    write(tmp_path, "/etc/os-release", "ID=linuxmint\nID_LIKE=ubuntu\n")
    assert read_os_info(root=tmp_path).family == "deb"


def test_unknown_family_names_supported(tmp_path: Path) -> None:
    write(tmp_path, "/etc/os-release", 'ID=alpine\nPRETTY_NAME="Alpine Linux v3.19"\n')
    with pytest.raises(NodeError) as err:
        read_os_info(root=tmp_path)
    assert "Alpine Linux v3.19" in err.value.message
    assert err.value.hint is not None and "debian" in err.value.hint and "fedora" in err.value.hint
    with pytest.raises(NodeError, match="no os-release"):
        read_os_info(root=tmp_path / "empty")


def test_firewalld_zone_edit_keeps_text_and_is_idempotent() -> None:
    out = firewalld_add_ports(ZONE, ["6443/tcp", "2379-2380/tcp", "8472/udp"])
    assert out == ZONE.replace(
        "</zone>",
        '  <port protocol="tcp" port="2379-2380"/>\n  <port protocol="udp" port="8472"/>\n</zone>',
    )
    assert firewalld_add_ports(out, ["6443/tcp", "2379-2380/tcp", "8472/udp"]) == out


def test_ufw_rules_edit_like_ufw_allow() -> None:
    out = ufw_add_ports(UFW_RULES, ["2379-2380/tcp", "8472/udp"], any_addr="0.0.0.0/0", chain="ufw")
    assert (
        "### tuple ### allow tcp 2379:2380 0.0.0.0/0 any 0.0.0.0/0 in\n"
        "-A ufw-user-input -p tcp -m multiport --dports 2379:2380 -j ACCEPT\n\n"
        "### tuple ### allow udp 8472 0.0.0.0/0 any 0.0.0.0/0 in\n"
        "-A ufw-user-input -p udp --dport 8472 -j ACCEPT\n\n"
        "### END RULES ###"
    ) in out
    assert ufw_add_ports(out, ["8472/udp"], any_addr="0.0.0.0/0", chain="ufw") == out


@given(st.integers(1, 65535), st.integers(0, 100), st.sampled_from(["tcp", "udp"]))
def test_parse_port(first: int, span: int, proto: str) -> None:
    last = min(first + span, 65535)
    spec = f"{first}/{proto}" if first == last else f"{first}-{last}/{proto}"
    assert parse_port(spec) == (first, last, proto)


@pytest.mark.parametrize("bad", ["6443", "0/tcp", "10-5/tcp", "70000/tcp", "22/sctp", "a/tcp"])
def test_parse_port_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_port(bad)


def test_fedora_prepare_plan_exact_and_converges(tmp_path: Path) -> None:
    fedora_tree(tmp_path)
    info = read_os_info(root=tmp_path)
    opts = PrepareOptions(selinux_permissive=True)
    resources = prepare_resources(root=tmp_path, os_info=info, options=opts)
    p = plan(resources, Context(root=tmp_path, dry_run=True))
    text = p.render()
    assert [i.resource.id for i in p.changes] == [
        "modules:/etc/modules-load.d/k8s.conf",
        "sysctl:/etc/sysctl.d/99-k8s-cri.conf",
        "swap:off",
        "firewalld:/etc/firewalld/zones/FedoraServer.xml",
        "selinux:/etc/selinux/config",
    ]
    for line in [
        "+net.bridge.bridge-nf-call-iptables = 1",
        "+net.bridge.bridge-nf-call-ip6tables = 1",
        "+net.ipv4.ip_forward = 1",
        "-/dev/zram0 none swap defaults 0 0",
        "+#/dev/zram0 none swap defaults 0 0",
        '+  <port protocol="tcp" port="2379-2380"/>',
        '+  <port protocol="udp" port="8472"/>',
        '+  <port protocol="tcp" port="5000"/>',
        "-SELINUX=enforcing",
        "+SELINUX=permissive",
        "~ swap:off: /etc/fstab: update; /etc/systemd/zram-generator.conf: create; then swapoff -a",
    ]:
        assert line in text.splitlines(), line
    # The /etc zone file is new (copied from /usr/lib with the ports); 6443 was open: once.
    assert "--- /dev/null\n+++ /etc/firewalld/zones/FedoraServer.xml" in text
    assert text.count('<port protocol="tcp" port="6443"/>') == 1
    assert any("SELinux is set to permissive" in w for w in p.warnings)
    assert any("iptables backend: nft" in w for w in p.warnings)
    assert not any("resolv.conf" in w for w in p.warnings)
    assert not (tmp_path / "etc/sysctl.d").exists()  # dry run wrote nothing

    ctx = Context(root=tmp_path)
    result = apply(plan(resources, ctx), ctx)
    assert "firewall-cmd --reload" in result.recorded and "setenforce 0" in result.recorded
    again = plan(
        prepare_resources(root=tmp_path, os_info=info, options=opts), Context(root=tmp_path)
    )
    assert again.empty, again.render()


def test_firewall_disable_only_when_asked(tmp_path: Path) -> None:
    fedora_tree(tmp_path)
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "firewalld.service").symlink_to("/usr/lib/systemd/system/firewalld.service")
    info = read_os_info(root=tmp_path)
    default = plan(prepare_resources(root=tmp_path, os_info=info), Context(root=tmp_path))
    assert "service-disabled:firewalld.service" not in [i.resource.id for i in default.changes]
    opts = PrepareOptions(firewall="disable")
    p = plan(prepare_resources(root=tmp_path, os_info=info, options=opts), Context(root=tmp_path))
    assert "service-disabled:firewalld.service" in [i.resource.id for i in p.changes]
    assert not any(i.resource.kind == "firewalld" for i in p.items)


def test_debian_ufw_and_warnings(tmp_path: Path) -> None:
    write(tmp_path, "/etc/os-release", "ID=debian\nVERSION_ID=12\n")
    write(tmp_path, "/etc/ufw/ufw.conf", "ENABLED=yes\n")
    write(tmp_path, "/etc/ufw/user.rules", UFW_RULES)
    write(
        tmp_path,
        "/etc/ufw/user6.rules",
        UFW_RULES.replace("ufw-", "ufw6-").replace("0.0.0.0/0", "::/0"),
    )
    info = read_os_info(root=tmp_path)
    resources = prepare_resources(root=tmp_path, os_info=info)
    ctx = Context(root=tmp_path)
    p = plan(resources, ctx)
    assert any("/etc/resolv.conf is missing" in w for w in p.warnings)
    assert any("iptables is not installed" in w for w in p.warnings)
    result = apply(p, ctx)
    assert result.recorded.count("ufw reload") == 2
    six = (tmp_path / "etc/ufw/user6.rules").read_text()
    assert "### tuple ### allow tcp 6443 ::/0 any ::/0 in" in six
    assert "-A ufw6-user-input -p tcp --dport 6443 -j ACCEPT" in six
    assert plan(resources, Context(root=tmp_path)).empty
    for spec in DEFAULT_PORTS:
        port = spec.split("/")[0].replace("-", ":")
        assert f" {port} 0.0.0.0/0 any" in (tmp_path / "etc/ufw/user.rules").read_text()
