"""Three control planes (stacked etcd) behind an operator's load balancer, through Ansible: three
lab nodes (`LabNode`, each running Debian's sshd) all in `control_plane`, Debian's haproxy in a
namespace of its own in front of their API servers, and the inventory's
`airlock_control_plane_endpoint` naming it. The first control plane runs `kubeadm init` with that
controlPlaneEndpoint and `--upload-certs`; the other two join with `--control-plane` and the
certificate key, one at a time. All three Ready, three etcd members; the API still answers
through the balancer with one control plane's link cut; a rerun (link back) changes nothing.
Printed: seconds to all Ready and the machine's peak memory in use. Slow: `make test-full`."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airlock_lab.cluster import ADMIN_CONF
from airlock_lab.fleet import SshFleet, fleet_bundle
from airlock_lab.upstream import Upstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def _mem_used() -> int:
    """Bytes in use on this machine (MemTotal - MemAvailable)."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


class _Peak:
    """The highest memory in use, sampled every second while the block runs."""

    def __init__(self) -> None:
        self.peak = self.base = _mem_used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, _mem_used())

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _pods_peak(node: str) -> int:
    """The highest memory the node's pods used (etcd, the API server...: cgroup v1's
    max_usage of the kubelet's cgroupRoot, /airlock-NODE in the lab); 0 if not there."""
    path = Path(f"/sys/fs/cgroup/memory/airlock-{node}/memory.max_usage_in_bytes")
    return int(path.read_text()) if path.exists() else 0


def _up(fleet: SshFleet, inv: Path, bundle: Path, pub: Path) -> tuple[int, dict[str, Any]]:
    argv = [AIRLOCK, "cluster", "up", "-i", str(inv), "-b", str(bundle), "--key", str(pub)]
    argv += ["--json", "--run-dir", str(fleet.work / f"run-{len(list(fleet.work.glob('run-*')))}")]
    out = fleet.run_admin(argv, timeout=5400)
    try:
        return out.returncode, json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"cluster up printed no JSON: {out.stdout}\n{out.stderr}") from None


def _kubectl(fleet: SshFleet, *args: str, check: bool = True) -> Any:
    out = fleet.labs[0].run(
        ["kubectl", "--kubeconfig", ADMIN_CONF, "--request-timeout=10s", *args, "-o", "json"],
        check=check,
        timeout=60,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


@pytest.mark.timeout(7200)
def test_three_control_planes_behind_a_load_balancer(upstream: Upstream, tmp_path: Path) -> None:
    bundle, pub = fleet_bundle(upstream, tmp_path)
    with SshFleet(tmp_path / "fleet", 3, tag="ha", lab_nodes=True) as fleet:
        endpoint = fleet.load_balancer((1, 2, 3))
        inv = fleet.inventory(
            tmp_path / "hosts.yml",
            control_planes=(1, 2, 3),
            all_vars={"airlock_control_plane_endpoint": endpoint},
        )
        names = [node.name for node in fleet.nodes]
        start = time.monotonic()
        with _Peak() as memory:
            code, doc = _up(fleet, inv, bundle, pub)
            assert code == 0, json.dumps(doc, indent=1)[-6000:]
            for _ in range(300):  # bounded: 10 min
                if fleet.ready() == dict.fromkeys(names, "True"):
                    break
                time.sleep(2)
            ready_after = time.monotonic() - start
        assert fleet.ready() == dict.fromkeys(names, "True")
        gib = 1 << 30
        print(
            f"3 control planes: cluster up {doc['seconds']} s, all Ready after {ready_after:.0f} s;"
            f" memory in use (whole machine) {memory.base / gib:.1f} GiB before, peak"
            f" {memory.peak / gib:.1f} GiB; pods' peak per node (the kubelet's cgroupRoot):"
            f" {', '.join(f'{n} {_pods_peak(n) / gib:.2f} GiB' for n in names)}"
        )
        # every control plane runs an API server and an etcd member; admin.conf names the balancer
        # (the last joined node's mirror pods may still be starting: bounded wait, 2 min)
        running: dict[str, list[str]] = {}
        for _ in range(60):
            pods = _kubectl(fleet, "get", "pods", "-n", "kube-system")["items"]
            running = {
                component: sorted(
                    p["spec"]["nodeName"]
                    for p in pods
                    if p["metadata"].get("labels", {}).get("component") == component
                    and p["status"]["phase"] == "Running"
                )
                for component in ("etcd", "kube-apiserver")
            }
            if all(on == sorted(names) for on in running.values()):
                break
            time.sleep(2)
        assert all(on == sorted(names) for on in running.values()), running
        config = fleet.labs[0].run(["kubectl", "--kubeconfig", ADMIN_CONF, "config", "view"])
        assert f"server: https://{endpoint}" in config.stdout
        # a control plane's link cut: the balancer drops it, the API answers from the other two
        fleet.cut(3)
        answers = 0
        for _ in range(30):  # bounded: about 30 s plus the requests
            answers = answers + 1 if _kubectl(fleet, "get", "nodes", check=False) else 0
            if answers == 3:
                break
            time.sleep(1)
        assert answers == 3, "the API did not answer through the balancer with node 3 cut"
        fleet.mend(3)
        code, doc = _up(fleet, inv, bundle, pub)
        assert code == 0 and doc["changed"] == 0, doc
        print(f"cluster up again (changed=0): {doc['seconds']} s")
