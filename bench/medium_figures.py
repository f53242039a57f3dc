"""Medium figures: what compression saves, what recovery volumes cost and buy, how long a
repair takes against carrying a volume again.

Builds the seed bundle against the simulated upstream (as `bundle create` does, wheelhouse
included) with `--compress none` and with the default `--compress zstd`, then splits the
compressed one with recovery at several percentages. Writes bench/medium_results.json:

- bundle_bytes_raw / bundle_bytes_zstd and their ratio, files bytes as fetched and as stored;
- per recovery percentage: data and recovery volumes, recovery bytes / data bytes (overhead),
  volumes recoverable, boot copy bytes;
- repair: seconds to rebuild one lost data volume (`bundle repair`, without the final verify,
  and with it), against re-copying that volume at an assumed USB 2.0 speed of 30 MB/s
  (a measured copy on this machine's disk is recorded too);
- one-way: `bundle send` / `bundle receive` of the 20 % set between two network namespaces of
  its own (medium-tx, medium-rx; 198.19.222.0/30) with iptables dropping 1, 5 and 20 % of the
  datagrams, the recovery packets sized for each: bytes of the bundle per second end to end,
  at a sender rate cap of 30 MB/s (needs root; skipped with --no-oneway).

    .venv/bin/python bench/medium_figures.py [--work bench/work/medium] [--out bench/medium_results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from airlock.bundle.compression import Compression
from airlock.presets import preset_text
from airlock.spec import Spec, load_spec
from airlock.verbs.create import CreateOptions, CreateResult, create_bundle
from airlock.verbs.repair import RepairOptions, repair_bundle
from airlock_lab.upstream import Upstream

USB_BYTES_PER_SECOND = 30_000_000  # USB 2.0 stick, sustained write (assumed, stated)
MiB = 1 << 20


def seed_spec(path: Path, up: Upstream) -> Spec:
    doc = YAML().load(preset_text("seed"))
    doc["sources"] = up.sources()
    with path.open("w") as fh:
        YAML().dump(doc, fh)
    return load_spec(path)


def build(spec: Spec, out: Path, cache: Path, **kw: Any) -> CreateResult:
    return create_bundle(spec, options=CreateOptions(output=out, cache=cache, **kw))


def total_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


TX, RX, RX_ADDR, PORT = "medium-tx", "medium-rx", "198.19.222.2", 7600


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    full = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv] if netns else list(argv)
    return subprocess.run(full, capture_output=True, text=True, check=check, timeout=600).stdout


def oneway_figures(parts: Path, work: Path) -> list[dict[str, Any]]:
    airlock = str(Path(sys.executable).with_name("airlock"))
    for ns in (TX, RX):
        sh("ip", "netns", "del", ns, check=False)
    rows = []
    try:
        for ns in (TX, RX):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        sh("ip", "link", "add", "medium-a", "netns", TX, "type", "veth", "peer", "name",
           "medium-b", "netns", RX)  # fmt: skip
        sh("ip", "addr", "add", "198.19.222.1/30", "dev", "medium-a", netns=TX)
        sh("ip", "addr", "add", f"{RX_ADDR}/30", "dev", "medium-b", netns=RX)
        sh("ip", "link", "set", "medium-a", "up", netns=TX)
        sh("ip", "link", "set", "medium-b", "up", netns=RX)
        for loss in (0.01, 0.05, 0.20):
            sh("iptables", "-F", "INPUT", netns=RX)
            drop = ["iptables", "-A", "INPUT", "-p", "udp", "--dport", str(PORT)]
            drop += ["-m", "statistic", "--mode", "random", "--probability", str(loss)]
            sh(*drop, "-j", "DROP", netns=RX)
            out = work / f"oneway-{loss}"
            started = time.monotonic()
            recv = ["nsenter", f"--net=/run/netns/{RX}", "--", airlock, "bundle", "receive"]
            recv += ["--listen", f"{RX_ADDR}:{PORT}", "-o", str(out), "--idle", "3"]
            receiver = subprocess.Popen(
                [*recv, "--timeout", "600", "--allow-unsigned", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(2)
            send = [airlock, "bundle", "send", str(parts), "--to", f"{RX_ADDR}:{PORT}"]
            sent = json.loads(
                sh(*send, "--rate", "30M", "--loss", f"{loss * 100:g}%", "--json", netns=TX)
            )
            got, err = receiver.communicate(timeout=900)
            ended = time.monotonic() - started - 2 - 3  # less the head start and the idle end
            bundle_bytes = sum((parts.parent / n).stat().st_size for n in sent["files"])
            result = json.loads(got) if receiver.returncode == 0 else {"error": err[-500:]}
            rows.append(
                {
                    "loss": loss,
                    "bundle_bytes": bundle_bytes,
                    "wire_bytes": sent["bytesSent"],
                    "send_seconds": sent["seconds"],
                    "goodput_bytes_per_second": round(bundle_bytes / sent["seconds"]),
                    "end_to_end_seconds": round(ended, 2),
                    "verified": result.get("verified", False),
                    "rate_cap_bytes_per_second": 30 * MiB,
                }
            )
    finally:
        for ns in (TX, RX):
            sh("ip", "netns", "del", ns, check=False)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("bench/work/medium"))
    ap.add_argument("--out", type=Path, default=Path("bench/medium_results.json"))
    ap.add_argument("--split-mib", type=int, default=16)
    ap.add_argument("--no-oneway", action="store_true")
    args = ap.parse_args()
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cache_dir = Path(os.environ.get("AIRLOCK_TEST_CACHE", "/tmp/airlock-test-cache")) / "upstream"
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
    with Upstream.start(cache_dir) as up:
        spec = seed_spec(work / "seed.yaml", up)
        cache = work / "cache"
        raw = build(spec, work / "raw", cache, compression=Compression(codec=None))
        started = time.monotonic()
        packed = build(spec, work / "zstd", cache)
        first_zstd_seconds = time.monotonic() - started
        files_raw = sum(f.size for f in packed.files)
        files_stored = sum(f.stored.size if f.stored else f.size for f in packed.files)
        results["compression"] = {
            "preset": "seed (simulated upstream: real kubectl, stand-in kubeadm/kubelet)",
            "bundle_bytes_raw": raw.write.size,
            "bundle_bytes_zstd": packed.write.size,
            "bundle_ratio_zstd_vs_raw": round(packed.write.size / raw.write.size, 4),
            "files_bytes": files_raw,
            "files_stored_bytes": files_stored,
            "files_ratio": round(files_raw / files_stored, 3),
            "files_compressed": sum(1 for f in packed.files if f.stored),
            "files_total": len(packed.files),
            "create_seconds_with_compression_cold": round(first_zstd_seconds, 2),
        }
        split = args.split_mib * MiB
        recovery_rows = []
        for percent in (10, 20, 34, 50):
            out = work / f"rec-{percent}"
            made = build(spec, out, cache, split=split, recovery=float(percent))
            w = made.write
            data = total_bytes(list(w.volumes))
            rec = total_bytes(list(w.recovery_volumes))
            recovery_rows.append(
                {
                    "percent": percent,
                    "volume_bytes": split,
                    "data_volumes": len(w.volumes),
                    "recovery_volumes": len(w.recovery_volumes),
                    "volumes_recoverable": len(w.recovery_volumes),
                    "overhead": round(rec / data, 4),
                    "overhead_with_boot_copies": round(
                        (rec + total_bytes(list(w.boot_volumes))) / data, 4
                    ),
                    "boot_copies": len(w.boot_volumes),
                    "boot_copy_bytes": w.boot_volumes[0].stat().st_size,
                    "recovery_index_bytes": w.recovery_index.stat().st_size
                    if w.recovery_index
                    else 0,
                }
            )
        results["recovery"] = recovery_rows
        # repair one lost data volume of the 20 % set, against carrying it again
        out = work / "rec-20"
        victim = sorted(out.glob("*.airlock.tar.0*"))[1]
        saved = work / "victim.copy"
        started = time.monotonic()
        shutil.copyfile(victim, saved)
        copy_seconds = time.monotonic() - started
        victim.unlink()
        parts = next(out.glob("*.airlock.parts.json"))
        started = time.monotonic()
        repair_bundle(parts, options=RepairOptions(verify=False, allow_unsigned=True))
        rebuild_seconds = time.monotonic() - started
        assert victim.read_bytes() == saved.read_bytes()
        victim.unlink()
        started = time.monotonic()
        repair_bundle(parts, options=RepairOptions(verify=True, allow_unsigned=True))
        repair_verify_seconds = time.monotonic() - started
        usb_seconds = split / USB_BYTES_PER_SECOND
        results["repair"] = {
            "volume_bytes": split,
            "rebuild_seconds": round(rebuild_seconds, 2),
            "rebuild_and_verify_seconds": round(repair_verify_seconds, 2),
            "assumed_usb_bytes_per_second": USB_BYTES_PER_SECOND,
            "recopy_at_usb_seconds": round(usb_seconds, 2),
            "rebuild_vs_usb_recopy_ratio": round(rebuild_seconds / usb_seconds, 3),
            "local_disk_copy_seconds": round(copy_seconds, 3),
            "note": "re-copying needs the source medium, i.e. another trip across the gap",
        }
        if not args.no_oneway:
            results["oneway"] = oneway_figures(parts, work)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
