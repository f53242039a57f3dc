"""Cluster figures: from the medium to a Ready node and to podinfo answering, airlock's way and
the blog's way ("Bootstrap an Air Gapped Cluster With Kubeadm", Kubernetes blog), side by side
in the same run, on the same real components (Kubernetes v1.27.3 built from source, served by
the lab's simulated upstream), in interleaved rounds.

Each round, for each way (the order alternates between rounds):

- connected side, on the host: airlock `init` (seed preset, the lab's node settings),
  `keys generate`, `bundle create --sign` with an empty cache / the blog's way by hand,
  bench/blog/connected.sh (curl per file, `kubeadm config images list`, one docker-archive per
  image with skopeo: there is no docker daemon here, skopeo stands in for `docker save`);
- carry: the outputs copied onto a medium directory (seconds, bytes);
- the gap: a fresh lab node (network, mount and UTS namespaces of its own, a blackholed default
  route, a daemonless systemctl; `airlock_lab.node.LabNode`), timed from the medium:
  airlock: `airlock-bootstrap.py`, `load`, `node prepare`, `node install`, `cluster init`,
  `app deploy podinfo` / the blog's way: bench/blog/gap.sh `install` (kernel settings,
  binaries by hand, units, containerd config, Debian's docker-registry, load/tag/push every
  archive), `init` (kubeadm init with imageRepository, Flannel with its images renamed by sed,
  wait for Ready and CoreDNS), `podinfo` (helm install with the image overridden);
- the milestones, the same for both: "ready" = the node Ready and CoreDNS available (airlock's
  `cluster init` returns then; the blog's way waits with kubectl), "podinfo" = podinfo's pods
  ready and its Service answering through kube-proxy (checked by this harness for both);
- peak memory (VmHWM) of the control plane's processes (kube-apiserver, etcd,
  kube-controller-manager, kube-scheduler), the kubelet, containerd and the local registry, and
  the pods' cgroup peak, read after podinfo answered;
- the image digests the pods run against the upstream's; then reset (`airlock cluster reset` /
  `kubeadm reset -f`), the lab node down, and the host checked: no mounts, cgroups, namespaces
  or KUBE-* chains left, the kernel settings the kubelet changes as they were (after the blog's
  way, which leaves them changed, this harness restores them and records which).

Writes bench/blog_results.json: per-round figures, medians and spread, and per-round ratios
airlock / blog (lower is better) with their median. Needs root and the lab lock:

    flock /tmp/airlock-lab.lock .venv/bin/python bench/blog_figures.py [--rounds 3]
        [--work bench/work/blog] [--out bench/blog_results.json] [--only airlock|blog]

(`make bench-cluster` runs exactly that.) `touch WORK/STOP` ends the run after the current round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support import manifest_digest, say

from airlock import system
from airlock.cluster.hoststate import KERNEL_SETTINGS
from airlock_lab.cluster import LAB_NODE_SETTINGS, ClusterNode, build_cluster_bundle, gap_routes
from airlock_lab.netns import create_netns, delete_netns
from airlock_lab.node import CGROUP_FS, LabNode
from airlock_lab.upstream import Upstream

HERE = Path(__file__).resolve().parent
AIRLOCK = Path(sys.executable).with_name("airlock")
CONNECTED_SH = HERE / "blog" / "connected.sh"
GAP_SH = HERE / "blog" / "gap.sh"
SWITCH, BRIDGE, NODE, NET = "bw-sw", "br0", "bw-n1", "198.18.93"
ADDRESS = f"{NET}.1"
REGISTRY = f"{ADDRESS}:5000"
CGROUP_ROOT = f"/airlock-{NODE}"
PODINFO = ("default", "app.kubernetes.io/name=podinfo", 9898)
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")
OTHERS = ("kubelet", "containerd")
MiB = 1 << 20
# airlock's gap-side commands, as ClusterNode announces them ("[node] $ ...")
AIRLOCK_CONNECTED_COMMANDS = (
    "airlock init --preset seed --sources FILE -o airlock.yaml",
    "(edit airlock.yaml: the node: block of the lab's settings)",
    "airlock keys generate --out site",
    "airlock bundle create -f airlock.yaml --sign site.key -o out",
)


# --- the lab node -----------------------------------------------------------------------------


@contextlib.contextmanager
def lab_node() -> Iterator[LabNode]:
    """One lab node on a bridge of its own (bw-sw), with the gap's routes; down afterwards."""
    node = LabNode(NODE, netns=NODE, cgroup_root=CGROUP_ROOT)
    teardown(node)
    try:
        create_netns(SWITCH)
        system.run(["ip", "-n", SWITCH, "link", "add", BRIDGE, "type", "bridge"], timeout=30)
        system.run(["ip", "-n", SWITCH, "link", "set", BRIDGE, "up"], timeout=30)
        create_netns(NODE)
        system.run(
            ["ip", "-n", SWITCH, "link", "add", "bwsw1", "type", "veth", "peer", "name", "eth0",
             "netns", NODE],
            timeout=30,
        )  # fmt: skip
        system.run(["ip", "-n", SWITCH, "link", "set", "bwsw1", "master", BRIDGE, "up"])
        system.run(["ip", "-n", NODE, "addr", "add", f"{ADDRESS}/24", "dev", "eth0"])
        system.run(["ip", "-n", NODE, "link", "set", "eth0", "up"])
        gap_routes(NODE, "eth0")
        yield node.up()
    finally:
        teardown(node)


def teardown(node: LabNode) -> None:
    node.down()
    for name in (NODE, SWITCH):
        delete_netns(name)


def kernel_settings() -> dict[str, str]:
    return {k: Path("/proc/sys", k.replace(".", "/")).read_text().strip() for k in KERNEL_SETTINGS}


def restore_kernel(before: dict[str, str]) -> dict[str, str]:
    """Write back what differs from `before`; returns what had changed (key -> value found)."""
    changed = {}
    for key, value in kernel_settings().items():
        if value != before[key]:
            changed[key] = value
            Path("/proc/sys", key.replace(".", "/")).write_text(before[key] + "\n")
    return changed


def host_traces() -> dict[str, list[str]]:
    """What a lab node could leave on the host: all lists must be empty after teardown."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    netns = system.run(["ip", "netns", "list"], timeout=30).stdout.split()
    rules = system.run(["iptables-save"], timeout=30).stdout.splitlines()
    return {
        "mounts": [m for m in mounts if NODE in m],
        "cgroups": [str(p) for p in CGROUP_FS.glob(f"*/{CGROUP_ROOT.strip('/')}")],
        "netns": [n for n in (NODE, SWITCH) if n in netns],
        "kube chains on the host": [r for r in rules if "KUBE-" in r or "FLANNEL" in r],
    }


# --- measurements on the node -----------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _process_name(pid: int) -> str:
    """The role of a node process we measure ("" for the rest), from its argv (a status Name
    is cut at 15 characters: kube-controller-manager)."""
    argv = [
        a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    words = [Path(a).name for a in argv if a]
    if words and words[0] in (*CONTROL_PLANE, *OTHERS):
        return words[0]
    if "docker-registry" in words or ("registry" in words and "serve" in words):
        return "registry"
    return ""


def memory(node: LabNode) -> dict[str, Any]:
    """Peak memory (VmHWM) of the node's control plane, kubelet, containerd and registry, and
    the pods' cgroup peak (page cache included), in MiB."""
    peaks: dict[str, int] = {}
    for pid in node.processes():
        with contextlib.suppress(OSError, KeyError, ValueError):
            name = _process_name(pid)
            if name:
                hwm = _status(pid)["VmHWM"]
                peaks[name] = peaks.get(name, 0) + int(hwm.split()[0]) * 1024
    out: dict[str, Any] = {f"{k}_vmhwm_mib": round(v / MiB, 1) for k, v in sorted(peaks.items())}
    out["control_plane_vmhwm_mib"] = round(sum(peaks.get(k, 0) for k in CONTROL_PLANE) / MiB, 1)
    out["node_services_vmhwm_mib"] = round(sum(peaks.values()) / MiB, 1)
    cgroup = CGROUP_FS / "memory" / CGROUP_ROOT.strip("/") / "memory.max_usage_in_bytes"
    with contextlib.suppress(OSError, ValueError):
        out["pods_cgroup_peak_mib"] = round(int(cgroup.read_text()) / MiB, 1)
    return out


def digests_against(upstream: dict[str, str], image_ids: dict[str, str]) -> dict[str, int]:
    """How many of the running containers run an image digest the upstream published."""
    known = set(upstream.values())
    same = [c for c, image_id in image_ids.items() if image_id.partition("@")[2] in known]
    return {"containers": len(image_ids), "running_upstream_digest": len(same)}


def podinfo_answers(cn: ClusterNode) -> dict[str, Any]:
    namespace, selector, port = PODINFO
    cn.wait_for("podinfo pods", lambda: cn.pods_running(namespace, selector), timeout=300)
    answer: dict[str, Any] = json.loads(cn.service_answer(namespace, selector, port, timeout=120))
    if answer.get("version") != "6.4.0":
        raise RuntimeError(f"podinfo answered {answer}")
    return answer


def upstream_digests(up: Upstream, images: list[str]) -> dict[str, str]:
    """ref -> the manifest digest the simulated upstream serves for it (HEAD by tag)."""
    out = {}
    for ref in images:
        host, _, rest = ref.partition("/")
        out[ref] = manifest_digest(up.registries[host], rest)
    return out


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def carry(files: list[Path], medium: Path) -> tuple[float, int]:
    """Copy onto the medium (directories whole); (seconds, bytes)."""
    medium.mkdir(parents=True)
    t0 = time.monotonic()
    for f in files:
        if f.is_dir():
            shutil.copytree(f, medium / f.name)
        else:
            shutil.copy2(f, medium / f.name)
    return time.monotonic() - t0, tree_bytes(medium)


# --- one way, one round -----------------------------------------------------------------------


def airlock_round(up: Upstream, work: Path) -> dict[str, Any]:
    row: dict[str, Any] = {}
    t0 = time.monotonic()
    built = build_cluster_bundle(up.sources(), work / "connected", airlock=AIRLOCK)
    row["connected_seconds"] = round(time.monotonic() - t0, 2)
    medium = work / "medium"
    seconds, size = carry([*built.bundle.parent.iterdir(), built.key], medium)
    row |= {"carry_seconds": round(seconds, 2), "medium_bytes": size}
    commands: list[str] = []
    with lab_node() as node:
        cn = ClusterNode(
            node,
            address=ADDRESS,
            say=lambda m: commands.append(m.split(" $ ", 1)[1]) if " $ " in m else None,
            log_dir=work / "logs",
        )
        t0 = time.monotonic()
        cn.install_from_bundle(
            medium / built.bundle.name,
            key=medium / built.key.name,
            bootstrap=medium / built.bootstrap.name,
        )
        row["install_seconds"] = round(time.monotonic() - t0, 2)
        cn.prepare_and_install(registries=[REGISTRY])
        row["node_install_seconds"] = round(time.monotonic() - t0, 2)
        cn.init(registries=[REGISTRY])
        row["medium_to_ready_seconds"] = round(time.monotonic() - t0, 2)
        cn.deploy("podinfo")
        row["podinfo_answer"] = podinfo_answers(cn)
        row["medium_to_podinfo_seconds"] = round(time.monotonic() - t0, 2)
        row["memory"] = memory(node)
        row["image_ids"] = dict(sorted(cn.pod_images().items()))
        cn.reset()
    row["gap_commands"] = commands
    return row


def _gap_phase(node: LabNode, phase: str, medium: Path, logs: Path, timeout: float) -> None:
    env = {"MEDIUM": str(medium), "NODE_ADDRESS": ADDRESS, "CGROUP_ROOT": CGROUP_ROOT}
    # every command with its time, in the log (bash run by root takes no PS4 from the environment)
    traced = 'PS4="+ \\$(date +%T.%N) "; set -x; . "$0" "$1"'
    argv = ["bash", "-c", traced, str(GAP_SH), phase]
    result = node.run(argv, env=env, check=False, timeout=timeout)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"gap-{phase}.log").write_text(f"{result.stdout}\n--- stderr\n{result.stderr}")
    if result.returncode != 0:
        raise RuntimeError(f"gap.sh {phase} exited {result.returncode}:\n{result.stderr[-3000:]}")


def blog_round(up: Upstream, work: Path) -> dict[str, Any]:
    row: dict[str, Any] = {}
    connected = work / "connected"
    connected.mkdir(parents=True)
    registries = " ".join(f"{h}={u.split('://', 1)[1]}" for h, u in up.registries.items())
    env = {**os.environ, "UPSTREAM_FILES": up.files_url, "UPSTREAM_REGISTRIES": registries}
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(CONNECTED_SH)], cwd=connected, env=env, capture_output=True, text=True,
        timeout=1800, check=False,
    )  # fmt: skip
    row["connected_seconds"] = round(time.monotonic() - t0, 2)
    if proc.returncode != 0:
        raise RuntimeError(f"connected.sh exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    medium = work / "medium"
    seconds, size = carry([connected], medium)
    medium = medium / connected.name
    row |= {"carry_seconds": round(seconds, 2), "medium_bytes": size}
    row["images"] = (medium / "images.txt").read_text().split()
    with lab_node() as node:
        cn = ClusterNode(node, address=ADDRESS)
        t0 = time.monotonic()
        _gap_phase(node, "install", medium, work / "logs", 900)
        row["node_install_seconds"] = round(time.monotonic() - t0, 2)
        _gap_phase(node, "init", medium, work / "logs", 1200)
        row["medium_to_ready_seconds"] = round(time.monotonic() - t0, 2)
        _gap_phase(node, "podinfo", medium, work / "logs", 600)
        row["podinfo_answer"] = podinfo_answers(cn)
        row["medium_to_podinfo_seconds"] = round(time.monotonic() - t0, 2)
        row["memory"] = memory(node)
        row["image_ids"] = dict(sorted(cn.pod_images().items()))
        _gap_phase(node, "reset", medium, work / "logs", 300)
    return row


# the peer first: the order alternates from round to round
WAYS: dict[str, Callable[[Upstream, Path], dict[str, Any]]] = {
    "blog": blog_round,
    "airlock": airlock_round,
}


def one_round(way: str, up: Upstream, work: Path) -> dict[str, Any]:
    """A way's round; a failure is recorded with its reason (the lab node is down either way),
    and the host is checked clean."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    kernel_before = kernel_settings()
    try:
        row = WAYS[way](up, work)
        row["ok"] = True
    except Exception as exc:  # recorded, and the run goes on with the other rounds
        say(f"   {way}: FAILED: {exc}")
        (work / "failure.txt").write_text(traceback.format_exc())
        row = {"ok": False, "error": str(exc)[-2000:]}
    finally:
        # what the way's own reset left changed (this harness writes the values back)
        left = restore_kernel(kernel_before)
    row["started"] = started
    row["kernel_settings_left_changed"] = left
    row["host_traces_after"] = {k: v for k, v in host_traces().items() if v}
    for heavy in ("connected", "medium"):
        shutil.rmtree(work / heavy, ignore_errors=True)
    return row


# --- summary ----------------------------------------------------------------------------------

FIGURES = (
    "medium_to_ready_seconds",
    "medium_to_podinfo_seconds",
    "node_install_seconds",
    "connected_seconds",
    "carry_seconds",
    "medium_bytes",
)


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "values": values,
    }


def _get(row: dict[str, Any], key: str) -> float | None:
    if key.startswith("memory."):
        value = row.get("memory", {}).get(key.split(".", 1)[1])
    else:
        value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    keys = (*FIGURES, "memory.control_plane_vmhwm_mib", "memory.node_services_vmhwm_mib",
            "memory.pods_cgroup_peak_mib")  # fmt: skip
    out: dict[str, Any] = {}
    for way, way_rows in rows.items():
        good = [r for r in way_rows if r.get("ok")]
        out[way] = {k: spread([v for r in good if (v := _get(r, k)) is not None]) for k in keys}
    ratios: dict[str, Any] = {}
    for k in keys:
        per_round = []
        for a, b in zip(rows.get("airlock", []), rows.get("blog", []), strict=False):
            va, vb = _get(a, k), _get(b, k)
            if a.get("ok") and b.get("ok") and va is not None and vb:
                per_round.append(round(va / vb, 4))
        ratios[k] = spread(per_round)
    out["ratio_airlock_over_blog"] = ratios
    return out


def command_counts(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    airlock_gap = next((r["gap_commands"] for r in rows.get("airlock", []) if r.get("ok")), [])
    return {
        "airlock": {
            "connected": len(AIRLOCK_CONNECTED_COMMANDS),
            "connected_commands": list(AIRLOCK_CONNECTED_COMMANDS),
            "gap": len(airlock_gap),
            "gap_commands": airlock_gap,
        },
        "blog": {
            "connected": len(operator_lines(CONNECTED_SH)),
            "gap": len(operator_lines(GAP_SH)),
            "how_counted": "lines of bench/blog/*.sh an operator types: a heredoc, a loop or"
            " a pipeline is one line; comments, function braces, the dispatch and the lines"
            " marked `# lab` (where the simulated upstream serves a host) are not counted",
        },
    }


def operator_lines(script: Path) -> list[str]:
    lines, heredoc = [], None
    for raw in script.read_text().splitlines():
        line = raw.strip()
        if heredoc is not None:
            heredoc = None if line == heredoc else heredoc
            continue
        if line.startswith("# --- dispatch"):
            break
        if not line or line.startswith(("#", "}", "set -")) or line.endswith("() {"):
            continue
        if line.endswith("# lab") or line.startswith(("K8S=", "M=", "ADDR=", "REG=", "HELM=")):
            continue
        if "<<" in line:
            heredoc = line.rsplit("<<", 1)[1].strip().strip("'\"")
        lines.append(line)
    return lines


def check_settings_agree() -> None:
    """gap.sh types the lab's node settings by hand: refuse to measure when they drifted."""
    text = GAP_SH.read_text()
    s = LAB_NODE_SETTINGS
    wanted = [
        f"cgroupDriver: {s['cgroupDriver']}",
        f"maxPerCore: {s['kubeProxy']['conntrackMaxPerCore']}",
        "restrict_oom_score_adj = true" if s["restrictOOMScoreAdj"] else "",
        "ignorePreflightErrors: [" + ", ".join(i["name"] for i in s["ignorePreflightErrors"]) + "]",
        *(f"{k}: {v}" for k, v in s["evictionHard"].items()),
    ]
    missing = [w for w in wanted if w and w not in text]
    if missing or s["cgroupRoot"].format(node=NODE) != CGROUP_ROOT:
        raise SystemExit(f"bench/blog/gap.sh no longer types the lab's node settings: {missing}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "blog")
    ap.add_argument("--out", type=Path, default=HERE / "blog_results.json")
    ap.add_argument("--only", choices=sorted(WAYS))
    ap.add_argument(
        "--keep-going", action="store_true", help="go on after a failed round (default: stop)"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("blog_figures.py needs root (network and mount namespaces)")
    check_settings_agree()
    ways = [args.only] if args.only else list(WAYS)
    cache = Path(os.environ.get("AIRLOCK_TEST_CACHE", "/tmp/airlock-test-cache")) / "upstream"
    rows: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    order: list[str] = []
    digests: dict[str, str] = {}
    with Upstream.start(cache) as up:
        schedule = [
            (n, way) for n in range(args.rounds) for way in (ways if n % 2 == 0 else ways[::-1])
        ]
        for i, (n, way) in enumerate(schedule):
            if i % len(ways) == 0 and (args.work / "STOP").exists():
                say(f"== {args.work / 'STOP'} exists: no round {n + 1}")
                break
            say(f"== round {n + 1}/{args.rounds}: {way}")
            row = one_round(way, up, args.work / f"round{n + 1}-{way}")
            rows[way].append(row)
            order.append(way)
            say(f"   { ({k: row.get(k) for k in ('ok', *FIGURES[:2]) if k in row}) }")
            if not digests and row.get("images"):
                # the images connected.sh listed (kubeadm's, the Flannel manifest's, the chart's)
                digests = upstream_digests(up, row["images"])
            write_results(args.out, rows, order, digests, rounds=args.rounds)  # after each round
            if not row["ok"] and not args.keep_going:
                break
    print(json.dumps(json.loads(args.out.read_text())["summary"], indent=2, sort_keys=True))


def write_results(
    out: Path,
    rows: dict[str, list[dict[str, Any]]],
    order: list[str],
    digests: dict[str, str],
    *,
    rounds: int,
) -> None:
    for way_rows in rows.values():
        for row in way_rows:
            if "image_ids" in row and digests:
                row["digests"] = digests_against(digests, row["image_ids"])
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": rounds,
        "order": order,
        "definition": {
            "medium_to_ready_seconds": "from the files on the medium to the node Ready and"
            " CoreDNS available, on a fresh lab node",
            "medium_to_podinfo_seconds": "from the files on the medium to podinfo's pods ready"
            " and its Service answering (version 6.4.0) through kube-proxy",
            "connected_seconds": "the connected side from an empty directory and cache (airlock:"
            " init, keys, bundle create; the blog: bench/blog/connected.sh)",
            "memory": "VmHWM after podinfo answered: control plane = kube-apiserver + etcd +"
            " kube-controller-manager + kube-scheduler; node services add the kubelet,"
            " containerd and the local registry; the pods' cgroup peak includes page cache",
            "ratio": "per round airlock / blog (lower is better), then the median",
        },
        "upstream_image_digests": digests,
        "summary": summarize(rows),
        "operator_commands": command_counts(rows),
        "verifies": {
            "airlock": "the bundle's signature and every blob's sha256 on load; every file"
            " against its digest before it is installed; every chart image present in the"
            " registry before helm runs",
            "blog": "nothing: no checksum or signature of any binary, unit, manifest, chart or"
            " image is checked, neither after download nor after the copy",
            "digests": "each round's `digests`: how many running containers run an image digest"
            " the upstream published",
        },
        "rounds_raw": rows,
    }
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
