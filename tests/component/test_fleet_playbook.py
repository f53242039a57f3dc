"""The shipped playbook in Ansible's check mode (`airlock cluster plan -i`), run by ansible-core on
this host (`ansible_connection: local`, each host its own sysroot): three control planes behind
a load balancer's address. The first control plane's `cluster init` names the endpoint
(kubeadm's controlPlaneEndpoint; the rendered config: tests/unit/test_cluster_config.py), the
other two join with `--control-plane` (the join file carries the certificate key kubeadm
uploaded with --upload-certs), one at a time; nothing is changed on any host."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from airlock import system
from airlock.bundle.signing import generate_keypair
from wheel_bundles import base_python, wheel_bundle

pytestmark = pytest.mark.component

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
ENDPOINT = "127.0.0.10:6443"  # never dialled: check mode runs nothing on a node


def _inventory(tmp_path: Path, workers: int = 0) -> Path:
    def host(i: int) -> dict[str, Any]:
        root = tmp_path / f"n{i}"
        (root / "etc").mkdir(parents=True)
        return {
            "ansible_host": f"127.0.0.{10 + i}",
            "ansible_connection": "local",
            "ansible_python_interpreter": base_python(),
            "airlock_root": str(root),
        }

    cps = {f"cp{i}": host(i) for i in (1, 2, 3)}
    ws = {f"w{i}": host(3 + i) for i in range(1, workers + 1)}
    doc = {
        "all": {
            "vars": {"airlock_control_plane_endpoint": ENDPOINT},
            "children": {"control_plane": {"hosts": cps}, "workers": {"hosts": ws}},
        }
    }
    path = tmp_path / "hosts.yml"
    with path.open("w") as fh:
        YAML().dump(doc, fh)
    return path


def _plan(tmp_path: Path, inventory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    priv, pub = generate_keypair(tmp_path / "site")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("airlock-0.1.0-py3-none-any.whl", "pip-24.0-py3-none-any.whl"):
        (wheels / name).write_bytes(name.encode() * 100)
    bundle = wheel_bundle(tmp_path, sorted(wheels.iterdir()), key=priv).path
    run_dir = tmp_path / "run"
    argv = [AIRLOCK, "cluster", "plan", "-i", str(inventory), "-b", str(bundle), "--key", str(pub)]
    argv += ["--stage", "init", "--stage", "join", "--json", "--run-dir", str(run_dir)]
    out = system.run(argv, check=False, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return json.loads(out.stdout), events


def _messages(events: list[dict[str, Any]], task: str) -> dict[str, str]:
    return {
        e["host"]: str(e["result"].get("msg"))
        for e in events
        if e.get("event") == "task" and e["task"].split(" : ")[-1] == task and e["status"] == "ok"
    }


def test_three_control_planes_plan_an_endpoint_and_control_plane_joins(tmp_path: Path) -> None:
    doc, events = _plan(tmp_path, _inventory(tmp_path, workers=1))
    assert doc["check"] is True and doc["inventory"]["controlPlaneEndpoint"] == ENDPOINT
    init = _messages(events, "airlock cluster init (kubeadm, the CNI, Ready)")
    assert list(init) == ["cp1"]
    assert f"--control-plane-endpoint={ENDPOINT}" in init["cp1"], init
    joins = _messages(events, "airlock cluster join --control-plane (one control plane at a time)")
    assert sorted(joins) == ["cp2", "cp3"]
    for host, msg in joins.items():
        assert msg.endswith(f"{tmp_path / host.replace('cp', 'n')}/etc/airlock/join.json "
                            f"--root={tmp_path / host.replace('cp', 'n')} --control-plane"), msg  # fmt: skip
    workers = _messages(events, "airlock cluster join")
    assert list(workers) == ["w1"] and "--control-plane" not in workers["w1"]
    assert {h["host"]: h["status"] for h in doc["hosts"]} == {
        "cp1": "changed", "cp2": "changed", "cp3": "changed", "w1": "changed"
    }  # fmt: skip
    for i in (1, 2, 3, 4):  # check mode: nothing written on any host
        assert sorted(p.name for p in (tmp_path / f"n{i}").iterdir()) == ["etc"]
        assert list((tmp_path / f"n{i}" / "etc").iterdir()) == []


def test_three_control_planes_without_an_endpoint_are_refused(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    text = inventory.read_text().replace(f"airlock_control_plane_endpoint: {ENDPOINT}", "x: 1")
    inventory.write_text(text)
    out = system.run(
        [AIRLOCK, "cluster", "plan", "-i", str(inventory), "-b", str(tmp_path / "b.tar"), "--json"],
        check=False,
        timeout=300,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert "3 control planes and no airlock_control_plane_endpoint" in error["message"]
    assert "load balancer" in error["hint"]
