"""`airlock cluster up -i INVENTORY` brings up a real cluster through Ansible: three lab nodes
(`LabNode`: network, mount and UTS namespaces of their own, the lab's node settings in the
spec), each running Debian's sshd; the admin namespace runs airlock, which runs ansible-playbook.
A worker's link is cut in the middle of the first run (while the nodes install): it is named
unreachable, the control plane and the other worker finish (Ready); the link back, the same
command converges: one control plane and two workers Ready, podinfo from the bundle on each
worker; a third run changes nothing. Slow (real kubeadm, real kubelets): `make test-full`."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airlock import system
from airlock_lab.cluster import ADMIN_CONF
from airlock_lab.fleet import SshFleet, fleet_bundle
from airlock_lab.upstream import Upstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def _argv(fleet: SshFleet, inv: Path, bundle: Path, pub: Path, *extra: str) -> list[str]:
    argv = [AIRLOCK, "cluster", "up", "-i", str(inv), "-b", str(bundle), "--key", str(pub)]
    argv += [*extra, "--json"]
    run_dir = fleet.work / f"run-{len(list(fleet.work.glob('run-*')))}"
    return [*argv, "--run-dir", str(run_dir)]


def _doc(out: system.CommandResult) -> tuple[int, dict[str, Any]]:
    try:
        return out.returncode, json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"cluster up printed no JSON: {out.stdout}\n{out.stderr}") from None


APPS = ("--app", "podinfo", "--app-set", "replicaCount=4")


def _up(fleet: SshFleet, inv: Path, bundle: Path, pub: Path) -> tuple[int, dict[str, Any]]:
    return _doc(fleet.run_admin(_argv(fleet, inv, bundle, pub, *APPS), timeout=5400))


def _up_cutting(
    fleet: SshFleet, inv: Path, bundle: Path, pub: Path, index: int, after: str
) -> tuple[int, dict[str, Any]]:
    """`cluster up` (no apps), node `index`'s link cut as soon as its task `after` is done."""
    argv = _argv(fleet, inv, bundle, pub)
    events = Path(argv[-1]) / "events.jsonl"
    host = fleet.nodes[index - 1].name
    cut = False
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(fleet.run_admin, argv, timeout=5400)
        for _ in range(3600):  # bounded: 30 min
            if running.done():
                break
            text = events.read_text() if events.exists() else ""
            done = [json.loads(x) for x in text[: text.rfind("\n") + 1].splitlines()]
            if any(
                e.get("event") == "task" and e.get("host") == host and e.get("status") == "ok"
                and str(e.get("task")).split(" : ")[-1] == after  # "role : task"
                for e in done
            ):  # fmt: skip
                fleet.cut(index)
                cut = True
                break
            time.sleep(0.5)
        out = running.result()
    assert cut, f"{host} never finished {after!r}: {out.stdout[-3000:]}"
    return _doc(out)


@pytest.mark.timeout(7200)
def test_one_control_plane_two_workers_through_ansible(upstream: Upstream, tmp_path: Path) -> None:
    bundle, pub = fleet_bundle(upstream, tmp_path)
    with SshFleet(tmp_path / "fleet", 3, tag="full", lab_nodes=True) as fleet:
        inv = fleet.inventory(tmp_path / "hosts.yml")
        first, second, third = (node.name for node in fleet.nodes)

        # node 3's link is cut while the nodes install: named, and the others finish
        start = time.monotonic()
        code, doc = _up_cutting(fleet, inv, bundle, pub, 3, after="airlock node prepare")
        hosts = {h["host"]: h for h in doc["hosts"]}
        assert code == 1, json.dumps(doc, indent=1)[-6000:]
        assert doc["error"]["message"].startswith("1 of 3 hosts did not finish"), doc["error"]
        assert third in doc["error"]["message"]
        assert hosts[third]["status"] == "unreachable", hosts[third]
        assert hosts[first]["status"] == hosts[second]["status"] == "changed", hosts
        for _ in range(150):  # bounded: 5 min (no apps in this run: nothing waited for Ready)
            if fleet.ready() == {first: "True", second: "True"}:
                break
            time.sleep(2)
        assert fleet.ready() == {first: "True", second: "True"}
        print(f"cluster up, node 3 cut: {time.monotonic() - start:.0f} s; {hosts[third]}")

        # the link back: the same command converges, apps included
        fleet.mend(3)
        code, doc = _up(fleet, inv, bundle, pub)
        assert code == 0, json.dumps(doc, indent=1)[-6000:]
        print(f"cluster up again, 3 lab nodes: {doc['seconds']} s")
        assert fleet.ready() == {node.name: "True" for node in fleet.nodes}
        lab = fleet.labs[0]
        pods = json.loads(
            lab.run(
                ["kubectl", "--kubeconfig", ADMIN_CONF, "get", "pods", "-A", "-o", "json"]
            ).stdout
        )
        podinfo = [p for p in pods["items"] if "podinfo" in p["metadata"]["name"]]
        assert all(p["status"]["phase"] == "Running" for p in podinfo), podinfo
        # a podinfo pod on each worker, each answering node 1 across the pod network
        assert {p["spec"]["nodeName"] for p in podinfo} == {second, third}
        for pod in podinfo:
            url = f"http://{pod['status']['podIP']}:9898/"
            answer = json.loads(lab.run(["curl", "-s", "--max-time", "10", url]).stdout)
            assert answer["hostname"] == pod["metadata"]["name"], answer
            print(f"podinfo on {pod['spec']['nodeName']}: {answer['hostname']} {answer['version']}")
        # a third run changes nothing
        code, doc = _up(fleet, inv, bundle, pub)
        assert code == 0 and doc["changed"] == 0, doc
        print(f"cluster up a third time (changed=0): {doc['seconds']} s")
