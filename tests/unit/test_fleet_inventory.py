"""Inventories read by ansible-core's own parser (INI and YAML), then checked for what airlock
needs; bad inventories name the file, and the host when one host is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.fleet.inventory import check_inventory, load_inventory

INI = """\
[control_plane]
cp1 ansible_host=198.18.21.10

[workers]
w1 ansible_host=198.18.21.11 airlock_root=/srv/w1
w2 ansible_host=198.18.21.12

[all:vars]
ansible_user=root
"""

YAML = """\
all:
  vars: {ansible_user: root, airlock_control_plane_endpoint: "198.18.21.2:6443"}
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 198.18.21.10}
        cp2: {ansible_host: 198.18.21.13, airlock_advertise_address: 198.18.21.13}
    workers:
      hosts:
        w1: {ansible_host: 198.18.21.11}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ini_inventory_roles_addresses_and_vars(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, "hosts.ini", INI))
    assert [h.name for h in inv.control_planes] == ["cp1"]
    assert [(h.name, h.address) for h in inv.workers] == [
        ("w1", "198.18.21.11"),
        ("w2", "198.18.21.12"),
    ]
    assert inv.first.name == "cp1"
    assert inv.workers[0].vars["airlock_root"] == "/srv/w1"
    assert inv.workers[1].vars["ansible_user"] == "root"  # group vars reach the host


def test_yaml_inventory_keeps_inventory_order(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, "hosts.yml", YAML))
    assert [h.name for h in inv.control_planes] == ["cp1", "cp2"]
    assert [h.role for h in inv.hosts] == ["control-plane", "control-plane", "worker"]
    assert inv.control_plane_endpoint == "198.18.21.2:6443"  # all:vars reach every host
    assert inv.to_json()["firstControlPlane"] == "cp1"


def test_children_of_workers_count_as_workers(tmp_path: Path) -> None:
    text = (
        "[control_plane]\ncp1 ansible_host=198.18.21.10\n[gpu]\ng1 ansible_host=198.18.21.20\n"
        "[workers:children]\ngpu\n"
    )
    inv = load_inventory(_write(tmp_path, "hosts", text))
    assert [h.name for h in inv.workers] == ["g1"]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.ini", "[control_plane\ncp1\n", "bad.ini"),
        ("bad.yml", "all:\n  children:\n    control_plane:\n      hosts: {cp1: {a: 1\n", "bad.yml"),
        (
            "noroles.ini",
            "[nodes]\nn1 ansible_host=198.18.21.10\n",
            "no host in group control_plane",
        ),
    ],
)
def test_unparsable_or_roleless_inventory_names_the_file(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(UsageError) as err:
        load_inventory(path)
    assert str(path) in err.value.message
    assert expected in err.value.message


def test_yaml_syntax_error_gives_ansibles_reason(tmp_path: Path) -> None:
    path = _write(tmp_path, "hosts.yaml", "all:\n  hosts: {cp1: {ansible_host: 198.18.21.10\n")
    with pytest.raises(UsageError) as err:
        load_inventory(path)
    assert "YAML" in err.value.message


def test_missing_inventory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_inventory(tmp_path / "nope.ini")


def _data(**hostvars: dict[str, object]) -> dict[str, object]:
    names = list(hostvars)
    return {
        "_meta": {"hostvars": hostvars},
        "control_plane": {"hosts": names[:1]},
        "workers": {"hosts": names[1:]},
    }


@pytest.mark.parametrize(
    ("hostvars", "expected"),
    [
        ({"cp1": {"ansible_host": "198.18.21.10", "airlock_rot": "/x"}}, "host cp1: unknown variable airlock_rot"),
        ({"cp1": {"ansible_host": "not an address!"}}, "host cp1: 'not an address!'"),
        ({"cp1": {"ansible_host": "198.18.21.10", "airlock_advertise_address": "x"}}, "host cp1: airlock_advertise_address"),
        ({"cp1": {"ansible_host": "198.18.21.10", "airlock_root": "rel/dir"}}, "host cp1: airlock_root"),
        ({"cp1": {"ansible_host": "198.18.21.10"}, "w1": {"ansible_host": "198.18.21.10"}}, "hosts cp1 and w1 share"),
    ],
)  # fmt: skip
def test_bad_host_is_named(hostvars: dict[str, dict[str, object]], expected: str) -> None:
    with pytest.raises(UsageError) as err:
        check_inventory(Path("inv.yml"), _data(**hostvars))
    assert err.value.message.startswith("inventory inv.yml: ")
    assert expected in err.value.message


def test_host_in_both_groups_is_named() -> None:
    data = {
        "_meta": {"hostvars": {"n1": {}}},
        "control_plane": {"hosts": ["n1"]},
        "workers": {"hosts": ["n1"]},
    }
    with pytest.raises(UsageError, match="host n1 is in both"):
        check_inventory(Path("inv.ini"), data)


def test_host_name_is_the_address_without_ansible_host() -> None:
    inv = check_inventory(Path("i"), _data(**{"cp1.lab.example": {}}))
    assert inv.first.address == "cp1.lab.example"


def _control_planes(*endpoints: str | None) -> dict[str, object]:
    hostvars: dict[str, dict[str, object]] = {}
    for i, endpoint in enumerate(endpoints, start=1):
        hostvars[f"cp{i}"] = {"ansible_host": f"198.18.21.{10 + i}"}
        if endpoint is not None:
            hostvars[f"cp{i}"]["airlock_control_plane_endpoint"] = endpoint
    return {"_meta": {"hostvars": hostvars}, "control_plane": {"hosts": list(hostvars)}}


def test_three_control_planes_take_the_one_endpoint() -> None:
    lb = "198.18.21.2:6443"
    inv = check_inventory(Path("inv.yml"), _control_planes(lb, lb, lb))
    assert inv.control_plane_endpoint == lb
    assert inv.to_json()["controlPlaneEndpoint"] == lb
    assert check_inventory(Path("i"), _control_planes(None)).control_plane_endpoint is None


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ((None, None, None), "3 control planes and no airlock_control_plane_endpoint"),
        (("198.18.21.2:6443", None, "198.18.21.3:6443"), "differs between hosts (cp1: 198.18.21.2:6443, cp3: 198.18.21.3:6443)"),
        (("198.18.21.2", "198.18.21.2", "198.18.21.2"), "'198.18.21.2' is not HOST:PORT"),
        (("lb.lab:70000",), "'lb.lab:70000' is not HOST:PORT"),
    ],
)  # fmt: skip
def test_control_plane_endpoint_mistakes_are_named(
    endpoints: tuple[str | None, ...], expected: str
) -> None:
    with pytest.raises(UsageError) as err:
        check_inventory(Path("inv.yml"), _control_planes(*endpoints))
    assert err.value.message.startswith("inventory inv.yml: ")
    assert expected in err.value.message
