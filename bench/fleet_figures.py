"""Fleet figures: `airlock cluster plan|up -i` over lab nodes that are sshd-only namespaces.

- fan-out: `cluster plan -i` (Ansible check mode, stages bootstrap + node) against 1 node and
  against N nodes (default 20), wall time each; the peer, in the same run and over the same
  nodes, is `ansible -m ping` (Ansible's own floor: one module per host); ratio plan / ping.
- bytes: `cluster up` (stages bootstrap + node) on 2 nodes with a real bundle (`--bundle`,
  e.g. the seed bundle `make test`'s e2e fixture builds): the bytes the first node's share sent
  to node 2 (its access log), against the full bundle's size, which node 1 received; then the
  same command again (a converged node: what node 2 fetches on a rerun).

Writes bench/fleet_results.json. Run:
    .venv/bin/python bench/fleet_figures.py [--nodes 20] [--bundle PARTS --key PUB [--bytes-only]]
Without --bundle, the fan-out runs with a small signed bundle (the lab's sample content and
airlock's real wheelhouse) and the bytes figure is skipped (said in the results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from airlock.bundle.signing import generate_keypair
from airlock.bundle.volumes import locate_volumes
from airlock.bundle.wheelhouse import build_wheelhouse
from airlock_lab.fleet import SshFleet
from wheel_bundles import wheel_bundle

RESULTS = Path(__file__).with_name("fleet_results.json")
AIRLOCK = str(Path(sys.executable).with_name("airlock"))
ANSIBLE = str(Path(sys.executable).with_name("ansible"))
STAGES = ["--stage", "bootstrap", "--stage", "node"]


def small_bundle(work: Path) -> tuple[Path, Path]:
    wheels = build_wheelhouse(work / "wh", pythons=("3.11",), architectures=("x86_64",))
    priv, pub = generate_keypair(work / "site")
    return wheel_bundle(work, wheels.wheels, key=priv).path, pub


def timed(fleet: SshFleet, argv: list[str]) -> tuple[float, int, str]:
    start = time.monotonic()
    out = fleet.run_admin(argv, timeout=3600)
    return time.monotonic() - start, out.returncode, (out.stdout + out.stderr)[-3000:]


def fan_out(work: Path, nodes: int, bundle: Path, pub: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in (1, nodes):
        with SshFleet(work / f"fan{count}", count, tag=f"b{count}") as fleet:
            inv = fleet.inventory(work / f"fan{count}.yml")
            plan = [
                AIRLOCK,
                "cluster",
                "plan",
                "-i",
                str(inv),
                "-b",
                str(bundle),
                "--key",
                str(pub),
            ]
            plan += [*STAGES, "--forks", str(max(count, 5)), "--json"]
            plan += ["--run-dir", str(work / f"run-fan{count}")]
            secs, code, text = timed(fleet, plan)
            env_inv = ["-i", str(inv), "--forks", str(max(count, 5))]
            # no ssh master outlives the peer's run (one connection per host is all it needs)
            empty = work / "empty.cfg"  # nothing from /etc/ansible, as for airlock's run
            empty.write_text("")
            no_master = ["env", "ANSIBLE_SSH_ARGS=-o ControlMaster=no", f"ANSIBLE_CONFIG={empty}"]
            ping = [*no_master, ANSIBLE, "all", *env_inv, "-m", "ansible.builtin.ping"]
            psecs, pcode, _ = timed(fleet, ping)
            out[str(count)] = {
                "nodes": count,
                "planSeconds": round(secs, 2),
                "planExit": code,
                "pingSeconds": round(psecs, 2),
                "pingExit": pcode,
                "ratioPlanToPing": round(secs / psecs, 2) if psecs else None,
                "tail": text[-400:] if code not in (0,) else "",
            }
            print(f"fan-out {count}: plan {secs:.1f}s (exit {code}), ping {psecs:.1f}s", flush=True)
    return out


def _sent_by_client(log: Path, skip: int = 0) -> dict[str, int]:
    sent: dict[str, int] = {}
    for line in log.read_text().splitlines()[skip:] if log.exists() else []:
        entry = json.loads(line)
        sent[entry["client"]] = sent.get(entry["client"], 0) + int(entry["bytes"])
    return sent


def bytes_sent(work: Path, bundle: Path, pub: Path) -> dict[str, Any]:
    """Bytes the share sent to node 2 on the first run and on a rerun (nothing changed)."""
    volumes = locate_volumes(bundle)
    total = sum(p.stat().st_size for p in volumes.paths)
    with SshFleet(work / "bytes", 2, tag="bb") as fleet:
        inv = fleet.inventory(work / "bytes.yml")
        argv = [AIRLOCK, "cluster", "up", "-i", str(inv), "-b", str(bundle), "--key", str(pub)]
        log = fleet.nodes[0].root / "var/lib/airlock/incoming/share-access.log"
        node2 = fleet.nodes[1].address
        secs, code, text = timed(fleet, [*argv, *STAGES, "--json", "--run-dir", str(work / "r1")])
        first = _sent_by_client(log).get(node2, 0)
        before = len(log.read_text().splitlines()) if log.exists() else 0
        rsecs, rcode, rtext = timed(
            fleet, [*argv, *STAGES, "--json", "--run-dir", str(work / "r2")]
        )
        rerun = _sent_by_client(log, before).get(node2, 0)
    print(f"bytes: node2 {first} then {rerun} of {total} ({secs:.1f}s, {rsecs:.1f}s)", flush=True)
    return {
        "bundleBytes": total,
        "bytesToNode2": first,
        "share": round(first / total, 4) if total else None,
        "bytesToNode2Rerun": rerun,
        "shareRerun": round(rerun / total, 6) if total else None,
        "upSeconds2Nodes": round(secs, 2),
        "upExit": code,
        "rerunSeconds2Nodes": round(rsecs, 2),
        "rerunExit": rcode,
        "tail": (text if code else rtext if rcode else "")[-800:],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/airlock-bench-fleet"))
    parser.add_argument(
        "--bytes-only", action="store_true", help="keep the fan-out figures of the last run"
    )
    args = parser.parse_args()
    if args.bytes_only and not (args.bundle and args.key):
        parser.error("--bytes-only needs --bundle and --key")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    try:
        results: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "command": " ".join(sys.argv),
        }
        if args.bytes_only:  # the fan-out as measured before, with when and how
            last = json.loads(RESULTS.read_text())
            results["fanOut"] = last["fanOut"]
            results["fanOutMeasured"] = {"when": last["when"], "command": last["command"]}
        else:
            small, small_pub = small_bundle(args.work / "small")
            results["fanOut"] = fan_out(args.work, args.nodes, small, small_pub)
        if args.bundle and args.key:
            results["bytes"] = bytes_sent(args.work, args.bundle, args.key)
        else:
            results["bytes"] = "not measured: give --bundle PARTS --key PUB (a real bundle)"
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
