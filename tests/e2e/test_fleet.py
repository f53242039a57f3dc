"""`airlock cluster plan|up -i INVENTORY` against lab nodes that run Debian's sshd and nothing
else (network namespaces of their own, keys this test generates): the seed bundle's airlock is
bootstrapped on each node, loaded, and `node prepare` + `node install` applied into each node's
sysroot (`airlock_root`). The stages that need a kubelet (init, join, apps) run in
`make test-full` on real lab nodes. Faults: a wrong SSH key, a read-only disk, a cut link;
each is named while the other nodes finish, and a rerun converges (changed=0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from airlock import system
from airlock_lab.fleet import SshFleet
from conftest import SeedBundle

pytestmark = pytest.mark.e2e

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
STAGES = ["--stage", "bootstrap", "--stage", "node"]


def _cluster(
    fleet: SshFleet, verb: str, inventory: Path, seed: SeedBundle, *extra: str
) -> tuple[int, dict[str, Any]]:
    argv = [AIRLOCK, "cluster", verb, "-i", str(inventory), "-b", str(seed.parts)]
    argv += ["--key", str(seed.pub), *STAGES, "--json", *extra]
    argv += ["--run-dir", str(fleet.work / f"run-{len(list(fleet.work.glob('run-*')))}")]
    out = fleet.run_admin(argv, timeout=1200)
    try:
        doc = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from cluster {verb}: {out.stdout}\n{out.stderr}") from None
    return out.returncode, doc


def _hosts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in doc["hosts"]}


def _bytes_by_client(log: Path, skip: int = 0) -> dict[str, int]:
    """Bytes the share sent to each client (after the first `skip` requests)."""
    sent: dict[str, int] = {}
    for line in log.read_text().splitlines()[skip:]:
        entry = json.loads(line)
        sent[entry["client"]] = sent.get(entry["client"], 0) + int(entry["bytes"])
    return sent


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    with SshFleet(tmp_path / "fleet", 3, tag="e2e", readonly=frozenset({3})) as f:
        yield f


@pytest.mark.timeout(2400)
def test_plan_up_faults_and_rerun(fleet: SshFleet, seed_bundle: SeedBundle, tmp_path: Path) -> None:
    inv = fleet.inventory(tmp_path / "hosts.yml")
    wrong = fleet.work / "wrong_key"  # a key sshd does not know
    system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)])
    bad = fleet.inventory(
        tmp_path / "bad.ini", fmt="ini", overrides={2: {"ansible_ssh_private_key_file": str(wrong)}}
    )

    # check mode: the plan of each node, nothing changed; node2's key is named
    code, doc = _cluster(fleet, "plan", bad, seed_bundle)
    hosts = _hosts(doc)
    assert code == 1 and doc["error"]["message"].startswith("1 of 3 hosts did not finish")
    assert hosts["node2"]["status"] == "unreachable"
    assert "Permission denied" in hosts["node2"]["message"]
    assert hosts["node1"]["status"] == "changed" and hosts["node1"]["changed"] > 0
    assert doc["check"] is True
    assert not (fleet.nodes[0].root / "opt" / "airlock").exists()  # check mode changed nothing

    # apply: node3's disk is read-only and named; nodes 1 and 2 finish
    code, doc = _cluster(fleet, "up", inv, seed_bundle)
    hosts = _hosts(doc)
    assert code == 1, doc
    assert hosts["node3"]["status"] == "failed"
    assert "Read-only file system" in hosts["node3"]["message"]
    first, second = fleet.nodes[0].root, fleet.nodes[1].root
    for name, root in (("node1", first), ("node2", second)):
        assert hosts[name]["status"] == "changed", hosts[name]
        assert (root / "opt/airlock/venv/bin/airlock").is_file()
        assert (root / "etc/containerd/config.toml").is_file()
        assert (root / "usr/local/bin/kubeadm").is_file()
    assert (first / "var/lib/airlock/store/index.json").is_file()  # node 1 loaded the bundle
    # node 2 fetched only what it uses from node 1's share: no bundle, no blobs; the verified
    # airlock.json is recorded (cluster join reads the spec's node settings from it)
    assert not (second / "var/lib/airlock/store/blobs").exists()
    assert [p.name for p in (second / "var/lib/airlock/store/airlock/bundles").iterdir()] == [
        p.name for p in (first / "var/lib/airlock/store/airlock/bundles").iterdir()
    ]
    assert not list((second / "var/lib/airlock/incoming").glob("*.airlock.*"))
    sent = _bytes_by_client(first / "var/lib/airlock/incoming/share-access.log")
    bundle_bytes = sum(p.stat().st_size for p in seed_bundle.volumes)
    to_node2 = sent[fleet.nodes[1].address]
    assert 0 < to_node2 < bundle_bytes
    print(f"bytes to node2: {to_node2} of the bundle's {bundle_bytes}")

    # a rerun of the nodes that finished changes nothing (--limit as in Ansible), and node 2
    # fetches nothing it holds: airlock.json and its signature, no blob (kept ones re-hashed)
    log = first / "var/lib/airlock/incoming/share-access.log"
    before = len(log.read_text().splitlines())
    code, doc = _cluster(fleet, "up", inv, seed_bundle, "--limit", "node1:node2")
    assert code == 0, doc
    assert set(_hosts(doc)) == {"node1", "node2"}
    assert doc["changed"] == 0, doc
    rerun = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert {e["path"] for e in rerun} == {"/airlock.json", "/airlock.json.sig"}, rerun
    again = _bytes_by_client(log, before)[fleet.nodes[1].address]
    print(f"bytes to node2 on the rerun: {again}")

    # a link cut: node2 is named unreachable, node1 still finishes
    fleet.cut(2)
    code, doc = _cluster(fleet, "plan", inv, seed_bundle, "--limit", "node1:node2")
    hosts = _hosts(doc)
    assert code == 1
    assert hosts["node2"]["status"] == "unreachable"
    assert hosts["node1"]["status"] == "ok" and hosts["node1"]["changed"] == 0
