"""`make demo`: airlock's whole journey on one machine, across a network-namespace air gap.

Connected side (the host): the simulated upstream, `airlock init/plan/bundle create`, and the
blog's way for comparison (one docker-archive tar per image). Then `airlock lab up` makes the
gap; the bundle is carried over the veth (resumable, every volume checked against the parts
file); inside the gap, airlock is installed from the bundle's own wheelhouse into a fresh venv,
and that airlock verifies and loads. Then the gap becomes a lab node (its own mount and UTS
namespaces, a daemonless systemctl) and gives up the OS packages the bundle carries (removed
inside the node's overlays only): airlock from the bundle prepares and installs it on its real
root, dpkg installs those packages from the bundle offline, `airlock node check` passes,
`airlock cluster init` runs real kubeadm, Flannel and CoreDNS come up, podinfo is
deployed with real Helm and answers through its Service, every container runs the digest the
bundle carries, and `airlock cluster reset` undoes it. Everything it started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from ruamel.yaml import YAML

from airlock import system
from airlock_lab.cluster import (
    LAB_NODE_PACKAGES,
    NODE_AIRLOCK,
    ClusterNode,
    add_node_settings,
    bundle_digests,
    gap_routes,
    ungap_routes,
)
from airlock_lab.gap import GAP_NETNS, lab_down, lab_status, lab_up, prove_gap
from airlock_lab.node import LabNode
from airlock_lab.upstream import Upstream

__all__ = [
    "CarryServer",
    "DemoSummary",
    "carry",
    "check_volumes",
    "main",
    "packages_ok",
    "run_demo",
]

REGISTRY_PORT = 5000
CARRY_PORT = 8090
DEMO_NODE, DEMO_HOSTNAME, DEMO_CGROUP_ROOT = "airlock-node1", "node1", "/airlock-node1"
SPLIT = "32M"


@dataclass
class DemoSummary:
    stages: dict[str, float] = field(default_factory=dict)
    bundle_bytes: int = 0
    bundle_volumes: int = 0
    blog_method_bytes: int = 0
    images: list[str] = field(default_factory=list)
    images_pulled: list[str] = field(default_factory=list)
    podinfo_answer: dict[str, Any] = field(default_factory=dict)
    gap_probes: dict[str, str] = field(default_factory=dict)
    gap_proof: dict[str, Any] = field(default_factory=dict)
    upstream_requests_by_source: dict[str, int] = field(default_factory=dict)
    upstream_requests_from_control: int = -1
    upstream_requests_from_gap: int = -1
    os_packages: list[dict[str, Any]] = field(default_factory=list)  # the bundle's, on node1
    os_packages_verified: bool = False  # dpkg --verify of those installed from the bundle
    node_check: dict[str, str] = field(default_factory=dict)  # check -> status
    node_conditions: dict[str, dict[str, str]] = field(default_factory=dict)
    pod_images: dict[str, str] = field(default_factory=dict)
    digests_match: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _say(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def _stage(summary: DemoSummary, name: str) -> Iterator[None]:
    _say(f"\n== {name}")
    t0 = time.monotonic()
    try:
        yield
    finally:
        summary.stages[name] = round(time.monotonic() - t0, 2)
        _say(f"   ({summary.stages[name]:.1f}s)")


class _CommandLog:
    """Every airlock command's whole output, kept in the demo's work directory; the screen
    gets a line or two of it."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.count = 0

    def start(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.count = root, 0

    def save(self, args: Sequence[str], result: system.CommandResult) -> Path | None:
        if self.root is None:
            return None
        self.count += 1
        words = [a for a in args[:2] if not a.startswith("-") and "/" not in a]
        path = self.root / f"{self.count:02d}-{'-'.join(words) or 'airlock'}.log"
        path.write_text(
            f"$ airlock {' '.join(args)}\n(exit {result.returncode})\n\n--- stdout\n"
            f"{result.stdout}\n--- stderr\n{result.stderr}"
        )
        return path


_log = _CommandLog()
# what a JSON result says first, when it has it
_JSON_FIRST = (
    "bundle", "size", "volumes", "blobs", "images", "signed", "trust", "blobsAdded",
    "bytesAdded", "blobsPresent", "changed", "applied", "plan",
)  # fmt: skip
_SHOWN_LINES = 3


def _brief(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("changes"), list):  # a node plan
        return f"{len(value['changes'])} changes"
    if isinstance(value, list):
        return f"{len(value)} items" if len(value) != 1 else "1 item"
    if isinstance(value, dict):
        return f"{len(value)} entries"
    text = str(value)
    return text if len(text) <= 60 else text[:28] + "…" + text[-28:]


def json_summary(doc: dict[str, Any]) -> str:
    """One line for a --json result: whether it succeeded and its first few facts."""
    if not doc.get("ok", True):
        error = doc.get("error") or {}
        return f"FAILED {error.get('code')}: {error.get('message')}"
    keys = [k for k in _JSON_FIRST if doc.get(k) is not None][:5]
    return "ok: " + ", ".join(f"{k} {_brief(doc[k])}" for k in keys)


def _airlock(
    exe: Path, *args: str, netns: str | None = None, check: bool = True
) -> system.CommandResult:
    _say(("   [gap] $ " if netns else "   $ ") + " ".join(["airlock", *args]))
    result = system.run([str(exe), *args], netns=netns, check=check, timeout=900)
    saved = _log.save(args, result)
    if "--json" in args:
        try:
            shown = [json_summary(json.loads(result.stdout))]
        except ValueError:
            shown = result.stdout.strip().splitlines()[:_SHOWN_LINES]
    else:
        lines = result.stdout.strip().splitlines()
        shown = lines[:_SHOWN_LINES] + (
            [f"… {len(lines) - _SHOWN_LINES} more lines"] if len(lines) > _SHOWN_LINES else []
        )
    problems = [
        line for line in result.stderr.splitlines() if line.startswith(("warning:", "error:"))
    ]
    for line in [*shown, *problems]:
        _say(f"     {line}")
    if saved is not None:
        _say(f"     (all of it: {saved})")
    return result


class CarryServer:
    """The host side of the transfer: serves a directory on the veth address, with Range (so a
    cut transfer resumes); `requests` records (path, Range header) for tests."""

    def __init__(self, root: Path, host: str, port: int) -> None:
        self.root, self.host, self.port = root, host, port
        self.requests: list[tuple[str, str | None]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, request.headers.get("Range")))
        rel = request.match_info["path"]
        path = (self.root / rel).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{path:.+}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def __enter__(self) -> CarryServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def carry(files: Sequence[Path], *, src_url: str, dest: Path, netns: str) -> None:
    """Copy files into the gap over the veth with curl (resuming a cut transfer)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        system.run(
            [
                "curl",
                "-fsS",
                "--retry",
                "3",
                "--max-time",
                "600",
                "-C",
                "-",
                "-o",
                str(dest / f.name),
                f"{src_url}/{f.name}",
            ],
            netns=netns,
            timeout=660,
        )


def check_volumes(parts_file: Path) -> list[str]:
    """Names of the volumes whose size or sha256 differ from the parts file (empty: all good)."""
    parts = json.loads(parts_file.read_text())
    bad = []
    for v in parts["volumes"]:
        p = parts_file.parent / v["name"]
        if not p.exists():
            bad.append(f"{v['name']} (missing)")
            continue
        h = hashlib.sha256()
        with p.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        if p.stat().st_size != v["size"] or h.hexdigest() != v["sha256"].removeprefix("sha256:"):
            bad.append(v["name"])
    return bad


def blog_method_size(up: Upstream, images: Sequence[str], workdir: Path) -> int:
    """The blog's way: one `docker save`-style tar per image (skopeo copy docker-archive:)."""
    total = 0
    workdir.mkdir(parents=True, exist_ok=True)
    for ref in images:
        registry, _, rest = ref.partition("/")
        out = workdir / (ref.replace("/", "_").replace(":", "_") + ".tar")
        out.unlink(missing_ok=True)
        src = f"docker://{up.registries[registry].removeprefix('http://')}/{rest}"
        system.run(
            ["skopeo", "copy", "-q", "--src-tls-verify=false", src, f"docker-archive:{out}:{ref}"],
            timeout=300,
        )
        total += out.stat().st_size
        out.unlink()
    return total


def _report_packages(cn: ClusterNode, summary: DemoSummary) -> None:
    """Which of the bundle's OS packages dpkg installed from it, at which version, and which
    the node already had at that version (libraries its other packages need)."""
    evidence = cn.package_evidence()
    summary.os_packages = [
        {
            "name": e.name,
            "bundle": e.bundle_version,
            "installed": e.installed_version,
            "fromBundle": e.from_bundle,
            "before": e.before,
        }
        for e in evidence
    ]
    verify = cn.verify_packages()
    summary.os_packages_verified = verify.returncode == 0 and not verify.stdout.strip()
    installed = [e for e in evidence if e.from_bundle]
    kept = [e for e in evidence if not e.from_bundle]
    _say(
        f"   OS packages installed from the bundle by dpkg, offline ({len(installed)}): "
        + ", ".join(
            f"{e.name} {e.installed_version}{'' if e.matches else ' != bundle'}"
            + (f" (the node had {e.before})" if e.before else "")
            for e in installed
        )
    )
    _say(
        "   dpkg --verify of those: "
        + ("every file as its .deb has it" if summary.os_packages_verified else verify.stdout)
    )
    if kept:
        _say(
            f"   already on the node at the bundle's version, needed by its other packages "
            f"({len(kept)}): " + ", ".join(f"{e.name} {e.installed_version}" for e in kept)
        )


def run_demo(workdir: Path, *, cache: Path, say: Callable[[str], None] = _say) -> DemoSummary:
    summary = DemoSummary()
    host_airlock = Path(sys.executable).with_name("airlock")
    if workdir.exists():
        shutil.rmtree(workdir)
    connected, gapdir = workdir / "connected", workdir / "gap"
    out = connected / "out"
    for d in (connected, gapdir, out):
        d.mkdir(parents=True)
    lab_down()  # a crashed earlier run leaves nothing in the way
    _log.start(workdir / "logs")
    with contextlib.ExitStack() as stack:
        with _stage(
            summary, "1. simulated upstream (files, chart repo, 3 docker-registry daemons)"
        ):
            _say(
                "   the seed's real components are built from their Go modules first: the first"
                " (cold) build takes tens of minutes on 2 cores, later runs take seconds"
            )
            up = stack.enter_context(
                Upstream.start(
                    cache / "upstream", progress=lambda name, msg: _say(f"   {name}: {msg}")
                )
            )
            _say(
                f"   in its own network namespace {up.internet.netns}, routed by the host: "
                f"files {up.files_url}; registries "
                + ", ".join(f"{h}={u}" for h, u in sorted(up.registries.items()))
            )
        spec = connected / "airlock.yaml"
        with _stage(summary, "2. spec and plan (connected side)"):
            sources = connected / "sources.yaml"
            with sources.open("w") as fh:
                YAML().dump({"sources": up.sources()}, fh)
            _airlock(
                host_airlock, "init", "--preset", "seed", "--sources", str(sources), "-o", str(spec)
            )
            add_node_settings(spec)
            _say(
                "   spec: the lab's node settings added (node: cgroupfs, cgroupRoot, ...; docs/spec.md)"
            )
            packages = YAML().load(spec.read_text())["packages"]
            _say(
                f"   spec: the node's OS packages ({packages['os']}): "
                f"{', '.join(packages['names'])}; from this machine's apt sources: "
                + ", ".join(packages["repositories"])
            )
            plan = json.loads(
                system.run([str(host_airlock), "plan", "-f", str(spec), "--json"]).stdout
            )["artifacts"]
            summary.images = sorted(a["source"] for a in plan if a["kind"] == "image")
            debs = [a for a in plan if a["kind"] == "package"]
            _say(
                f"   plan: {len(plan)} artifacts, {len(summary.images)} images, {len(debs)} .debs"
                f" ({sum(a.get('size') or 0 for a in debs) / 2**20:.1f} MiB: the closure libsolv"
                " resolved against a minimal Debian)"
            )
        with _stage(summary, "3. bundle create (fetch, verify, sign, split)"):
            _airlock(host_airlock, "keys", "generate", "--out", str(connected / "site"))
            created = json.loads(
                _airlock(
                    host_airlock,
                    "bundle",
                    "create",
                    "-f",
                    str(spec),
                    "--cache",
                    str(cache / "fetch"),
                    "--sign",
                    str(connected / "site.key"),
                    "--split",
                    SPLIT,
                    "-o",
                    str(out),
                    "--json",
                ).stdout
            )
            summary.bundle_bytes = created["size"]
            summary.bundle_volumes = len(created["volumes"])
            _say(
                f"   bundle: {created['size'] / 2**20:.1f} MiB in {len(created['volumes'])} "
                f"volumes of {SPLIT}, {created['images']} images, {created['files']} files, "
                f"{created['blobs']} blobs, {'signed' if created['signed'] else 'UNSIGNED'}"
            )
        with _stage(
            summary, "4. the blog's way, for comparison (one docker-archive tar per image)"
        ):
            summary.blog_method_bytes = blog_method_size(up, summary.images, connected / "blog")
            _say(f"   images only: {summary.blog_method_bytes} bytes as docker-archive tars")
        with _stage(summary, "5. lab up: the air gap (netns, veth, blackhole default route)"):
            stack.callback(lab_down)
            st = lab_up(nodes=1)
            _say(
                f"   host {st.host_ip} <-> gap {st.gap_ip}; the host forwards for the gap as "
                "for any lab link: only the gap's blackhole default route keeps it off the "
                "upstream"
            )
        with _stage(summary, "6. carry the bundle across (HTTP over the veth, resumable, checked)"):
            bootstrap = Path(created["bootstrap"])  # `bundle create` wrote it beside the bundle
            carried = [
                *map(Path, created["volumes"]),
                Path(created["bundle"]),
                connected / "site.pub",
                bootstrap,
            ]
            with CarryServer(out.parent, st.host_ip, CARRY_PORT):
                srv = f"http://{st.host_ip}:{CARRY_PORT}"
                carry(
                    [p for p in carried if p.parent == out],
                    src_url=f"{srv}/out",
                    dest=gapdir,
                    netns=GAP_NETNS,
                )
                carry([connected / "site.pub"], src_url=srv, dest=gapdir, netns=GAP_NETNS)
            bad = check_volumes(gapdir / Path(created["bundle"]).name)
            if bad:
                raise SystemExit(f"demo: volumes damaged in transit: {bad}")
            _say(
                f"   {summary.bundle_volumes} volumes + parts file + public key + bootstrap carried; sha256 of every volume matches the parts file"
            )
        bundle = gapdir / Path(created["bundle"]).name
        gap_airlock = gapdir / "venv" / "bin" / "airlock"
        with _stage(
            summary, "7. install airlock offline from the bundle's wheelhouse (fresh venv)"
        ):
            _say(
                f"   [gap] $ python3 airlock-bootstrap.py {bundle.name} --key site.pub "
                "--venv gap/venv"
            )
            result = system.run(
                [
                    "python3",
                    str(gapdir / bootstrap.name),
                    str(bundle),
                    "--key",
                    str(gapdir / "site.pub"),
                    "--venv",
                    str(gapdir / "venv"),
                ],
                netns=GAP_NETNS,
                timeout=600,
            )
            _say("     " + result.stdout.strip().replace("\n", "\n     "))
        store = gapdir / "store"
        with _stage(summary, "8. verify and load (signature, every volume and blob)"):
            _airlock(
                gap_airlock,
                "bundle",
                "verify",
                str(bundle),
                "--key",
                str(gapdir / "site.pub"),
                netns=GAP_NETNS,
            )
            _airlock(
                gap_airlock,
                "load",
                str(bundle),
                "--store",
                str(store),
                "--key",
                str(gapdir / "site.pub"),
                netns=GAP_NETNS,
            )
            again = _airlock(
                gap_airlock,
                "load",
                str(bundle),
                "--store",
                str(store),
                "--key",
                str(gapdir / "site.pub"),
                "--json",
                netns=GAP_NETNS,
            )
            if json.loads(again.stdout)["changed"]:
                raise SystemExit("demo: a second load changed the store")
            _say("   second load: nothing changed (idempotent)")
        registry_addr = f"{st.gap_ip}:{REGISTRY_PORT}"
        node = LabNode(
            DEMO_NODE, netns=GAP_NETNS, hostname=DEMO_HOSTNAME, cgroup_root=DEMO_CGROUP_ROOT
        )
        cn = ClusterNode(node, address=st.gap_ip, say=_say, log_dir=workdir / "logs" / "node")
        with _stage(
            summary,
            "9. the gap becomes node1: its own mount and UTS namespaces; airlock from the"
            " bundle, load into the node's store",
        ):
            # Flannel asks for the default-route interface: a default route nothing can use
            gap_routes(GAP_NETNS, "aln0")
            stack.callback(ungap_routes, GAP_NETNS)
            node.up()
            stack.callback(node.down)
            _say(
                f"   node {DEMO_HOSTNAME}: private /etc, /usr, /var/lib/*, /var/cache, /run;"
                " daemonless systemctl"
            )
            cn.install_from_bundle(
                bundle, key=gapdir / "site.pub", bootstrap=gapdir / bootstrap.name
            )
        with _stage(
            summary,
            "10. node prepare + install on the node's real root (containerd, registry unit,"
            " kubelet enabled, mirrors)",
        ):
            cn.prepare_and_install(registries=[registry_addr])
            second = json.loads(
                cn.airlock(
                    "node", "install", "--registry", registry_addr, "--dry-run", "--json"
                ).stdout
            )
            if second["plan"]["changes"]:
                raise SystemExit("demo: a second install would change something")
            _say("   second install plan: empty (idempotent)")
            _report_packages(cn, summary)
            check = json.loads(
                cn.node.run(
                    [NODE_AIRLOCK, "node", "check", "--registry", registry_addr, "--json"],
                    check=False,
                    timeout=300,
                ).stdout
            )
            summary.node_check = {c["name"]: c["status"] for c in check.get("checks", [])}
            if not check.get("ok", True) and not summary.node_check:
                summary.node_check = {"node check": "fail"}
                _say(f"   node check failed: {(check.get('error') or {}).get('message')}")
            _say(
                f"   [{DEMO_HOSTNAME}] $ airlock node check: {check.get('status')} ("
                + ", ".join(f"{k} {v}" for k, v in summary.node_check.items())
                + ")"
            )
            for c in check.get("checks", []):
                if c["status"] != "ok":
                    _say(f"     {c['status']} {c['name']}: {c['message']}")
        t_cluster = time.monotonic()
        with _stage(
            summary,
            "11. cluster init: real kubeadm init, Flannel from the bundle, node Ready, CoreDNS",
        ):
            _say("   (a few minutes on 2 shared cores: etcd and the API server start first)")
            cn.init(registries=[registry_addr])
            summary.node_conditions = cn.node_conditions()
            for name, conditions in summary.node_conditions.items():
                _say(f"   node {name}: " + ", ".join(f"{k}={v}" for k, v in conditions.items()))
            summary.notes.append(
                f"medium to a Ready node: {time.monotonic() - t_cluster:.0f}s after install"
            )
        with _stage(
            summary,
            "12. app deploy podinfo (real Helm), its answer through the Service; digests; reset",
        ):
            cn.deploy("podinfo")
            cn.wait_for(
                "podinfo pods",
                lambda: cn.pods_running("default", "app.kubernetes.io/name=podinfo"),
                timeout=300,
            )
            answer = cn.service_answer("default", "app.kubernetes.io/name=podinfo", 9898)
            summary.podinfo_answer = json.loads(answer)
            _say(f"   podinfo through its Service: {' '.join(answer.split())[:140]}")
            carried_digests = bundle_digests(host_airlock, bundle)
            summary.pod_images = cn.pod_images()
            for container, image_id in sorted(summary.pod_images.items()):
                repo, _, digest = image_id.partition("@")
                same = carried_digests.get(repo) == digest
                summary.digests_match = summary.digests_match and same
                _say(f"   {container}: {digest[:19]}… {'== bundle' if same else '!= bundle'}")
            for ref in summary.images:  # every other image resolves by its original name too
                node.run(
                    ["ctr", "-n", "k8s.io", "images", "pull", "--hosts-dir",
                     "/etc/containerd/certs.d", ref],
                    timeout=300,
                )  # fmt: skip
                summary.images_pulled.append(ref)
            _say(f"   every bundle image pulled by its original name: {len(summary.images)}")
            memory = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in cn.memory_figures().items())
            summary.notes.append(f"node1 memory: {memory}")
            _say(f"   memory: {memory}")
            cn.reset()
            _say("   cluster reset: kubeadm reset, pods, CNI, iptables, cgroups, kernel settings")
        with _stage(summary, "13. the gap held: probes, and no request reached the upstream"):
            urls = [f"{up.files_url}dl.k8s.io/release/stable-1.27.txt"] + [
                f"{url}/v2/" for _, url in sorted(up.registries.items())
            ]
            proof = prove_gap(urls)
            summary.gap_proof = proof.to_json()
            for url in urls:
                _say(
                    f"   GET {url}: from the control {proof.control_ip} -> "
                    f"{proof.control[url]}; from the gap {proof.gap_ip} -> {proof.gap[url]}"
                )
            upstream = [u.removeprefix("http://").split("/")[0] for u in urls]
            status = lab_status(upstream=upstream)
            summary.gap_probes = status.get("probes", {})
            for target, ans in summary.gap_probes.items():
                _say(f"   from the gap to {target}: {ans}")
            by_source = up.requests_by_source()
            gap_addresses = {st.gap_ip, *st.node_ips.values()}
            summary.upstream_requests_by_source = by_source
            summary.upstream_requests_from_control = by_source.get(proof.control_ip, 0)
            summary.upstream_requests_from_gap = sum(
                n for source, n in by_source.items() if source in gap_addresses
            )
            _say(
                "   upstream requests by source address: "
                + ", ".join(f"{source} {n}" for source, n in by_source.items())
            )
            _say(
                f"   from the control: {summary.upstream_requests_from_control}; "
                f"from the gap ({', '.join(sorted(gap_addresses))}): "
                f"{summary.upstream_requests_from_gap}"
            )
            if not (proof.control_reached and proof.gap_blocked):
                summary.notes.append(
                    "gap proof failed: the control must reach the upstream and the gap must not"
                )
    return summary


def _print_summary(s: DemoSummary) -> None:
    _say("\n== summary")
    ratio = s.bundle_bytes / s.blog_method_bytes if s.blog_method_bytes else 0
    _say(
        f"   bundle: {s.bundle_bytes / 2**20:.1f} MiB in {s.bundle_volumes} volumes (images, binaries, chart, manifests, SBOM, airlock's wheelhouse)"
    )
    _say(
        f"   blog's method, images only (docker-archive per image): {s.blog_method_bytes / 2**20:.1f} MiB (bundle/blog = {ratio:.2f}, the bundle also carries every binary)"
    )
    _say(f"   images pulled by original name in the gap: {len(s.images_pulled)}/{len(s.images)}")
    from_bundle = [p for p in s.os_packages if p["fromBundle"]]
    _say(
        f"   OS packages: {len(s.os_packages)} .debs carried; {len(from_bundle)} installed on node1"
        f" from the bundle (dpkg --verify {'ok' if s.os_packages_verified else 'FAILED'}),"
        f" the rest already there at the same version; node check: "
        f"{'passed' if s.node_check and 'fail' not in s.node_check.values() else 'FAILED'}"
    )
    proof = s.gap_proof
    _say(
        "   gap proof: the same GET reached the upstream from the control "
        f"({proof.get('controlReached')}, {s.upstream_requests_from_control} requests counted)"
        f" and failed from the gap ({proof.get('gapBlocked')})"
    )
    _say(f"   upstream requests from the gap: {s.upstream_requests_from_gap}")
    for name, secs in s.stages.items():
        _say(f"   {secs:7.1f}s  {name}")
    _say(f"   total {sum(s.stages.values()):.1f}s")
    _say(
        "   real: docker-registry (upstream), skopeo, airlock's registry, containerd 1.6 + runc, network namespaces, bundle signing and verification; kubeadm, kubelet, kubectl, kube-* images, etcd, CoreDNS, pause, Flannel, CNI plugins, Helm, k9s built from their Go modules (docs/components.md)"
    )
    _say(
        "   a real single-node cluster ran in the gap (kubeadm init, Flannel, CoreDNS, Helm) and was reset; stand-ins: crictl v1.27.0, podinfo (image and chart) and the registry image (their modules are not served here)"
    )
    for note in s.notes:
        _say(f"   note: {note}")


def packages_ok(s: DemoSummary) -> bool:
    """The node's OS packages came from the bundle: the ones asked for were absent from the node
    and dpkg installed them from it at the bundle's versions, every package of the closure is at
    the bundle's version, their files check, and `node check` found no failure."""
    by_name = {p["name"]: p for p in s.os_packages}
    asked = [by_name.get(n) for n in LAB_NODE_PACKAGES]
    return (
        all(
            p is not None
            and p["fromBundle"]
            and p["before"] is None
            and (p["installed"] or "").split(":", 1)[-1] == p["bundle"]
            for p in asked
        )
        and all((p["installed"] or "").split(":", 1)[-1] == p["bundle"] for p in s.os_packages)
        and s.os_packages_verified
        and bool(s.node_check)
        and "fail" not in s.node_check.values()
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="airlock's end-to-end demo on a network-namespace air gap"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/airlock-demo"))
    parser.add_argument("--cache", type=Path, default=Path("/var/tmp/airlock-demo-cache"))
    parser.add_argument("--summary-json", type=Path)
    args = parser.parse_args(argv)
    summary = run_demo(args.workdir, cache=args.cache)
    _print_summary(summary)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.to_json(), indent=2))
    ok = (
        len(summary.images_pulled) == len(summary.images)
        and summary.upstream_requests_from_gap == 0
        and summary.digests_match
        and bool(summary.pod_images)
        and summary.podinfo_answer.get("version") == "6.4.0"
        and summary.upstream_requests_from_control > 0
        and bool(summary.gap_proof.get("controlReached"))
        and bool(summary.gap_proof.get("gapBlocked"))
        and packages_ok(summary)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
