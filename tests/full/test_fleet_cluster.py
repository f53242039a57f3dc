"""`airlock cluster up -i INVENTORY` brings up a real cluster through Ansible: three lab nodes
(`LabNode`: network, mount and UTS namespaces of their own, the lab's node settings in the
spec), each running Debian's sshd; the admin namespace runs airlock, which runs ansible-playbook.
One control plane and two workers Ready, podinfo from the bundle, and a second run that changes
nothing. Slow (real kubeadm, real kubelets): `make test-full`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from airlock import system
from airlock_lab.cluster import ADMIN_CONF, LAB_NODE_SETTINGS
from airlock_lab.fleet import SshFleet
from airlock_lab.upstream import Upstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def _airlock(*args: str, timeout: float = 1800) -> str:
    return system.run([AIRLOCK, *args], timeout=timeout).stdout


def _bundle(upstream: Upstream, work: Path) -> tuple[Path, Path]:
    """The seed bundle, with the lab's node settings in its spec."""
    sources = work / "sources.yaml"
    with sources.open("w") as fh:
        YAML().dump({"sources": upstream.sources()}, fh)
    spec = work / "airlock.yaml"
    _airlock("init", "--sources", str(sources), "-o", str(spec))
    yaml = YAML()
    doc = yaml.load(spec.read_text())
    doc["node"] = LAB_NODE_SETTINGS
    with spec.open("w") as fh:
        yaml.dump(doc, fh)
    _airlock("keys", "generate", "-o", str(work / "site"))
    out = work / "out"
    created = json.loads(
        _airlock("bundle", "create", "-f", str(spec), "--cache", str(work / "cache"),
                 "--sign", str(work / "site.key"), "-o", str(out), "--json")
    )  # fmt: skip
    return Path(created["bundle"]), work / "site.pub"


def _up(fleet: SshFleet, inv: Path, bundle: Path, pub: Path) -> tuple[int, dict[str, Any]]:
    argv = [AIRLOCK, "cluster", "up", "-i", str(inv), "-b", str(bundle), "--key", str(pub)]
    argv += ["--app", "podinfo", "--app-set", "replicaCount=4", "--json"]
    argv += ["--run-dir", str(fleet.work / f"run-{len(list(fleet.work.glob('run-*')))}")]
    out = fleet.run_admin(argv, timeout=5400)
    try:
        return out.returncode, json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"cluster up printed no JSON: {out.stdout}\n{out.stderr}") from None


@pytest.mark.timeout(7200)
def test_one_control_plane_two_workers_through_ansible(upstream: Upstream, tmp_path: Path) -> None:
    bundle, pub = _bundle(upstream, tmp_path)
    with SshFleet(tmp_path / "fleet", 3, tag="full", lab_nodes=True) as fleet:
        inv = fleet.inventory(tmp_path / "hosts.yml")
        code, doc = _up(fleet, inv, bundle, pub)
        assert code == 0, json.dumps(doc, indent=1)[-6000:]
        print(f"cluster up, 3 lab nodes: {doc['seconds']} s")
        first = fleet.labs[0]
        nodes = json.loads(
            first.run(["kubectl", "--kubeconfig", ADMIN_CONF, "get", "nodes", "-o", "json"]).stdout
        )
        ready = {
            n["metadata"]["name"]: next(
                c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"
            )
            for n in nodes["items"]
        }
        assert ready == {node.name: "True" for node in fleet.nodes}, ready
        pods = json.loads(
            first.run(
                ["kubectl", "--kubeconfig", ADMIN_CONF, "get", "pods", "-A", "-o", "json"]
            ).stdout
        )
        podinfo = [p for p in pods["items"] if "podinfo" in p["metadata"]["name"]]
        assert all(p["status"]["phase"] == "Running" for p in podinfo), podinfo
        # a podinfo pod on each worker, each answering node 1 across the pod network
        workers = {node.name for node in fleet.nodes[1:]}
        assert {p["spec"]["nodeName"] for p in podinfo} == workers
        for pod in podinfo:
            url = f"http://{pod['status']['podIP']}:9898/"
            answer = json.loads(first.run(["curl", "-s", "--max-time", "10", url]).stdout)
            assert answer["hostname"] == pod["metadata"]["name"], answer
            print(f"podinfo on {pod['spec']['nodeName']}: {answer['hostname']} {answer['version']}")
        # a second run changes nothing
        code, doc = _up(fleet, inv, bundle, pub)
        assert code == 0 and doc["changed"] == 0, doc
        print(f"cluster up again (changed=0): {doc['seconds']} s")
