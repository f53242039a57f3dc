"""Bootstrap figures: how long airlock-bootstrap.py takes on each real target, and what each
(Python, architecture) pair adds to the wheelhouse.

- wheelhouse bytes: airlock's own wheel, then the bytes each target of the default spec
  (3.11, 3.12, 3.13 x x86_64, aarch64) adds (`airlock.bundle.wheelhouse.measure_wheelhouse`);
- bootstrap wall time per target: the debootstrap sysroots the tests use (Debian 12 and 13
  amd64; Debian 12 arm64 under qemu-user with --arm64), each offline in its own network
  namespace, from the carried split bundle to an installed airlock;
- the peer, on this host in the same run: `python3 -m venv` (with ensurepip) and
  `pip install --no-index` of the same wheels with no signature or digest check; the ratio is
  bootstrap / peer (what checking first costs, venv without ensurepip included).

Writes bench/bootstrap_results.json. Run: `.venv/bin/python bench/bootstrap_figures.py [--arm64]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from airlock.bundle.signing import generate_keypair
from airlock.bundle.wheelhouse import build_wheelhouse, measure_wheelhouse
from sysroots import CARRY, offline_node, sysroot_tar
from wheel_bundles import base_python, run_script, wheel_bundle, write_script

RESULTS = Path(__file__).with_name("bootstrap_results.json")


def medium(work: Path, pythons: tuple[str, ...], arch: str) -> Path:
    wheels = build_wheelhouse(work / f"wh-{arch}", pythons=pythons, architectures=(arch,))
    priv, pub = generate_keypair(work / f"site-{arch}")
    built = wheel_bundle(
        work / arch, wheels.wheels, key=priv, split=16 << 20, pythons=pythons,
        architectures=(arch,),
    )  # fmt: skip
    out = work / f"medium-{arch}"
    out.mkdir()
    for p in (*built.paths, pub):
        shutil.copy(p, out / p.name.replace(f"site-{arch}", "site"))
    write_script(out)
    return out


def on_target(suite: str, arch: str, carried: Path, work: Path) -> float:
    with offline_node(sysroot_tar(suite, arch), work / f"{suite}-{arch}", f"boot-b-{suite}") as n:
        parts = n.carry(carried)
        seconds, out, err, code = n.bootstrap(parts, "--key", f"{CARRY}/site.pub")
        if code != 0:
            raise SystemExit(f"bootstrap on {suite} {arch} failed: {out}{err}")
        return seconds


def on_host(carried: Path, work: Path) -> tuple[float, float]:
    """(bootstrap, peer) seconds on this host's Python."""
    parts = next(carried.glob("*.parts.json"))
    env = {"PATH": os.environ["PATH"], "AIRLOCK_TRUSTED_KEYS": str(work / "none")}
    start = time.monotonic()
    proc = run_script(carried / "airlock-bootstrap.py", parts, "--key", carried / "site.pub",
                      "--venv", work / "host-venv", env=env)  # fmt: skip
    ours = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    wheels = work / "wh-x86_64"
    start = time.monotonic()
    subprocess.run([base_python(), "-m", "venv", work / "peer-venv"], check=True)
    names = sorted({w.name.split("-")[0].lower() for w in wheels.glob("*.whl")})
    subprocess.run(
        [work / "peer-venv/bin/pip", "install", "-q", "--no-index", "--no-deps",
         "--find-links", wheels, *names],
        check=True, env={**env, "PIP_CONFIG_FILE": os.devnull},
    )  # fmt: skip
    return ours, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arm64", action="store_true", help="also Debian 12 arm64 (qemu-user)")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
    }
    sizes = measure_wheelhouse()
    results["wheelhouse_bytes_added"] = sizes
    results["wheelhouse_bytes_total"] = sum(sizes.values())
    with tempfile.TemporaryDirectory(prefix="airlock-bench-boot-") as tmp:
        work = Path(tmp)
        amd64 = medium(work, ("3.11", "3.13"), "x86_64")
        times = {
            "debian-12-amd64": on_target("bookworm", "amd64", amd64, work),
            "debian-13-amd64": on_target("trixie", "amd64", amd64, work),
        }
        if args.arm64:
            arm64 = medium(work, ("3.11",), "aarch64")
            times["debian-12-arm64-qemu"] = on_target("bookworm", "arm64", arm64, work)
        ours, peer = on_host(amd64, work)
    results["bootstrap_seconds"] = {k: round(v, 1) for k, v in times.items()}
    results["host_bootstrap_vs_plain_pip"] = {
        "bootstrap_seconds": round(ours, 1),
        "peer_seconds": round(peer, 1),
        "ratio": round(ours / peer, 2),
        "peer": "python3 -m venv (ensurepip) + pip install --no-index, no checks",
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
