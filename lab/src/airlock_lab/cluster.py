"""A real Kubernetes cluster on lab nodes, brought up by airlock from the bundle alone.

The journey of the blog post, for real, inside the gap: on a `LabNode` (its own network, mount
and UTS namespaces), airlock is installed from the bundle's wheelhouse, verifies and loads the
bundle into the node's store, prepares and installs the node on its real root (the node's
mount namespace), and `airlock cluster init` runs real `kubeadm init` with airlock's config;
Flannel comes from the bundle's manifest, podinfo from its chart through real Helm. Nothing on
the node reaches anything but the lab's own addresses.

The lab's node settings (`LAB_NODE_SETTINGS`) are the spec's `node:` block, each with its reason:
they are what this kernel and sandbox impose, written into the spec rather than into lab-only
code paths (docs/node.md).

The node's OS packages (`LAB_NODE_PACKAGES`: what kubeadm's preflight and the kubelet run) are
the spec's `packages:` block, resolved against the Debian repositories this machine's apt is
configured with (read when the spec is written, `debroot.debian_repositories`), so `plan`
resolves their closure and the bundle carries every .deb. `ClusterNode.withhold_carried_packages`
makes them absent on a lab node first (removed inside the node's overlays only), so `node
install` really installs them from the bundle.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from airlock import system
from airlock.errors import SystemCommandError
from airlock_lab.debroot import debian_repositories
from airlock_lab.node import CGROUP_FS, LabNode

__all__ = [
    "ADMIN_CONF",
    "LAB_NODE_PACKAGES",
    "LAB_NODE_SETTINGS",
    "NODE_AIRLOCK",
    "ClusterBundle",
    "ClusterEvidence",
    "ClusterNode",
    "PackageEvidence",
    "add_node_settings",
    "build_cluster_bundle",
    "bundle_digests",
    "bundle_packages",
    "gap_routes",
    "lab_node_packages",
    "ungap_routes",
]

ADMIN_CONF = "/etc/kubernetes/admin.conf"
NODE_AIRLOCK = "/opt/airlock/venv/bin/airlock"
HOST_AIRLOCK = Path(sys.executable).with_name("airlock")
_RULE_PREFS = ("32000", "32001")

LAB_NODE_SETTINGS: dict[str, Any] = {
    # no systemd here: the daemonless systemctl starts the kubelet, so the cgroupfs driver
    "cgroupDriver": "cgroupfs",
    # every lab node's kubelet shares this host's one cgroup v1 hierarchy
    "cgroupRoot": "/airlock-{node}",
    # this VM's processes lack CAP_SYS_RESOURCE: no negative oom_score_adj (runc: EACCES)
    "restrictOOMScoreAdj": True,
    # the lab's disk is shared by several checkouts: the kubelet's default 10% of a large
    # disk would taint the node with disk-pressure while gigabytes are free
    "evictionHard": {
        "memory.available": "100Mi",
        "nodefs.available": "2Gi",
        "nodefs.inodesFree": "5%",
        "imagefs.available": "2Gi",
    },
    # nf_conntrack_max is read-only inside a child network namespace
    "kubeProxy": {"conntrackMaxPerCore": 0},
    "ignorePreflightErrors": [
        {
            "name": "CRI",
            "reason": "the lab's crictl v1.27.0 is a version-only stand-in (its module is not"
            " served here) and kubeadm v1.27 asks crictl whether the runtime runs; the"
            " kubelet talks to containerd's CRI directly",
        },
        {
            "name": "ImagePull",
            "reason": "the same stand-in crictl cannot pull; airlock checks every image is in"
            " the node's registry and the kubelet pulls them through the mirrors",
        },
        {
            "name": "HTTPProxyCIDR",
            "reason": "kubeadm v1.27.3 built with this machine's Go 1.26: url.Parse refuses"
            " the bracketed IPv4 literal this check builds (https://[10.96.0.1]:1234); the"
            " check is about an HTTP proxy, and the gap has none",
        },
    ],
}


# the Debian lab node's equivalents of the seed's socat, conntrack-tools and libcgroup, plus what
# kubeadm's preflight looks for (iptables, ethtool, ebtables); the kubelet runs iptables itself
LAB_NODE_PACKAGES = ("socat", "conntrack", "cgroup-tools", "iptables", "ethtool", "ebtables")


def lab_node_packages() -> dict[str, Any]:
    """The spec's `packages:` block for the lab's nodes (this machine's Debian release).

    `installed: minimal`: the closure is resolved against a minimal Debian of that release
    (what debootstrap's minbase installs), the base every node of it has; a lab node already
    holding a package of the closure at the same version keeps it, and `node install` installs
    the rest. A dpkg status file would need the node's own, which the connected side cannot
    read."""
    repos = debian_repositories()
    return {
        "os": repos.os,
        "names": list(LAB_NODE_PACKAGES),
        "repositories": list(repos.repositories),
        "keys": list(repos.keys),
        "installed": "minimal",
    }


def gap_routes(netns: str, dev: str, *, service_subnet: str = "10.96.0.0/12") -> None:
    """A default route through `dev` that nothing can use: policy rules look the main table up
    without its default route, then blackhole the rest. Software that asks for the
    default-route interface (Flannel picks its VXLAN interface that way) finds `dev`, and no
    packet to an address that is not on a connected network leaves the namespace.

    The service subnet gets a route of its own: a connection to a Service's cluster IP is
    routed before kube-proxy's DNAT rewrites it, so without a route it fails at once."""
    system.run(["ip", "-n", netns, "route", "replace", "default", "dev", dev], timeout=30)
    system.run(["ip", "-n", netns, "route", "replace", service_subnet, "dev", dev], timeout=30)
    ungap_routes(netns, restore_blackhole=False)
    main, hole = _RULE_PREFS
    system.run(
        [
            "ip",
            "-n",
            netns,
            "rule",
            "add",
            "pref",
            main,
            "lookup",
            "main",
            "suppress_prefixlength",
            "0",
        ],
        timeout=30,
    )
    system.run(["ip", "-n", netns, "rule", "add", "pref", hole, "blackhole"], timeout=30)


def ungap_routes(netns: str, *, restore_blackhole: bool = True) -> None:
    """Undo `gap_routes` (back to a plain blackhole default route)."""
    for pref in _RULE_PREFS:
        system.run(["ip", "-n", netns, "rule", "del", "pref", pref], check=False, timeout=30)
    if restore_blackhole:
        system.run(
            ["ip", "-n", netns, "route", "replace", "blackhole", "default"], check=False, timeout=30
        )


@dataclass(frozen=True)
class ClusterBundle:
    """A signed seed bundle whose spec carries the lab's node settings."""

    bundle: Path
    bootstrap: Path
    key: Path  # the public key
    digests: dict[str, str]  # repository -> the image digest the bundle carries


def add_node_settings(spec: Path, *, packages: bool = True) -> None:
    """The lab's node settings as the spec's `node:` block and (unless `packages` is false)
    the node's OS packages as its `packages:` block (ruamel.yaml, comments kept)."""
    yaml = YAML()
    doc = yaml.load(spec.read_text())
    doc["node"] = LAB_NODE_SETTINGS
    if packages:
        doc["packages"] = lab_node_packages()
    with spec.open("w") as fh:
        yaml.dump(doc, fh)


def bundle_packages(airlock: Path, bundle: Path) -> dict[str, str]:
    """package -> version of the OS packages the bundle carries (its `.deb` files), without
    the epoch (the archive's file names leave it out)."""
    doc = json.loads(
        system.run([str(airlock), "bundle", "inspect", str(bundle), "--json"], timeout=300).stdout
    )
    out: dict[str, str] = {}
    for f in doc.get("files", []):
        if f.get("kind") == "package" and str(f.get("name", "")).endswith(".deb"):
            name, version = f["name"].split("_")[:2]
            out[name] = urllib.parse.unquote(version).split(":", 1)[-1]
    return out


def bundle_digests(airlock: Path, bundle: Path) -> dict[str, str]:
    """repository -> the image digest the bundle carries (from `airlock bundle inspect`)."""
    doc = json.loads(
        system.run([str(airlock), "bundle", "inspect", str(bundle), "--json"], timeout=300).stdout
    )
    return {i["reference"].rsplit(":", 1)[0]: i["digest"] for i in doc["images"]}


def build_cluster_bundle(
    sources: dict[str, Any],
    work: Path,
    *,
    airlock: Path,
    kubernetes_version: str | None = None,
    key: Path | None = None,
    sequence: int | None = None,
) -> ClusterBundle:
    """`airlock init --preset seed` (at `kubernetes_version` when given), the lab's node
    settings, keys (or the private `key` given), `bundle create --sign`."""
    work.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    with (work / "sources.yaml").open("w") as fh:
        yaml.dump({"sources": sources}, fh)
    spec = work / "airlock.yaml"
    spec.unlink(missing_ok=True)
    system.run(
        [str(airlock), "init", "--preset", "seed", "--sources", str(work / "sources.yaml"),
         "-o", str(spec)],
        timeout=300,
    )  # fmt: skip
    add_node_settings(spec)
    if kubernetes_version:
        doc = yaml.load(spec.read_text())
        doc["kubernetes"]["version"] = kubernetes_version
        with spec.open("w") as fh:
            yaml.dump(doc, fh)
    if key is None and not (work / "site.key").exists():
        system.run([str(airlock), "keys", "generate", "--out", str(work / "site")], timeout=60)
    signing = key or work / "site.key"
    created = json.loads(
        system.run(
            [str(airlock), "bundle", "create", "-f", str(spec), "--cache", str(work / "cache"),
             "--sign", str(signing), "-o", str(work / "out"), "--json",
             *(["--sequence", str(sequence)] if sequence else [])],
            timeout=1800,
        ).stdout
    )  # fmt: skip
    return ClusterBundle(
        bundle=Path(created["bundle"]),
        bootstrap=Path(created["bootstrap"]),
        key=signing.with_suffix(".pub"),
        digests=bundle_digests(airlock, Path(created["bundle"])),
    )


@dataclass(frozen=True)
class PackageEvidence:
    """One OS package of the bundle on a node after `node install`."""

    name: str
    bundle_version: str  # from the .deb's file name (no epoch)
    installed_version: str | None  # dpkg's, on the node
    from_bundle: bool  # `node install` installed it (the node lacked it, or had another version)
    before: str | None  # the node's version before `node install` (None: it had none)

    @property
    def matches(self) -> bool:
        return (self.installed_version or "").split(":", 1)[-1] == self.bundle_version


@dataclass
class ClusterEvidence:
    node_conditions: dict[str, dict[str, str]] = field(default_factory=dict)
    pod_images: dict[str, str] = field(default_factory=dict)  # pod/container -> image digest
    podinfo_answer: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class ClusterNode:
    """A lab node driven through airlock's own commands (the node's airlock after bootstrap)."""

    def __init__(
        self,
        node: LabNode,
        *,
        address: str,
        say: Callable[[str], None] = lambda _m: None,
        log_dir: Path | None = None,
    ) -> None:
        self.node = node
        self.address = address
        self.say = say
        self.log_dir = log_dir
        self.carried_packages: dict[str, str] = {}  # the bundle's OS packages -> version
        self.withheld: list[str] = []  # removed from the node before `node install`
        self.before_install: dict[str, str] = {}  # the carried packages the node then had

    # --- commands -------------------------------------------------------------------------

    def airlock(self, *args: str, timeout: float = 900) -> system.CommandResult:
        """Run the node's airlock; a failure raises with the output's tail."""
        self.say("   [" + self.node.hostname + "] $ " + " ".join(["airlock", *args]))
        result = self.node.run([NODE_AIRLOCK, *args], check=False, timeout=timeout)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            name = "-".join(a for a in args[:2] if a.isidentifier())
            with (self.log_dir / f"{self.node.name}-{name}.log").open("a") as fh:
                fh.write(f"$ airlock {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip()[-3000:]
            raise SystemCommandError(
                f"airlock {' '.join(args)} failed on {self.node.name}:\n{tail}"
            )
        return result

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True) -> system.CommandResult:
        return self.node.run(
            ["kubectl", "--kubeconfig", ADMIN_CONF, *args], check=check, timeout=timeout
        )

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    # --- the journey -----------------------------------------------------------------------

    def withhold_carried_packages(self, bundle: Path) -> list[str]:
        """The node gives up the OS packages the bundle carries (those the spec asks for, and
        each library of their closure nothing else on the node needs), inside its overlays, so
        `node install` installs them from the bundle rather than the node keeping the host's."""
        self.carried_packages = bundle_packages(HOST_AIRLOCK, bundle)
        asked = [n for n in LAB_NODE_PACKAGES if n in self.carried_packages]
        self.withheld = self.node.withhold_packages(self.carried_packages, always=asked)
        self.before_install = {
            name: entry.version
            for name, entry in self.node.installed_packages().items()
            if name in self.carried_packages
        }
        if self.withheld:
            self.say(
                f"   [{self.node.hostname}] removed from the node (its overlays only; the host "
                f"keeps its own): {' '.join(self.withheld)}"
            )
        return self.withheld

    def package_evidence(self) -> list[PackageEvidence]:
        """Each OS package of the bundle as the node's dpkg has it now."""
        installed = self.node.installed_packages()
        out = []
        for name, version in sorted(self.carried_packages.items()):
            now = installed[name].version if name in installed else None
            before = self.before_install.get(name)
            out.append(
                PackageEvidence(name, version, now, now is not None and now != before, before)
            )
        return out

    def verify_packages(self) -> system.CommandResult:
        """`dpkg --verify` of the packages installed from the bundle: their files on the node
        are the ones their .debs hold (dpkg's md5sums; no output when every file matches)."""
        names = [e.name for e in self.package_evidence() if e.from_bundle]
        return self.node.run(["dpkg", "--verify", *names], check=False, timeout=120)

    def install_from_bundle(self, bundle: Path, *, key: Path, bootstrap: Path) -> None:
        """The node gives up the bundle's OS packages (`withhold_carried_packages`), then
        airlock from the bundle's wheelhouse, then verify + load into the node's store."""
        self.withhold_carried_packages(bundle)
        self.say(
            f"   [{self.node.hostname}] $ python3 {bootstrap.name} {bundle.name} --venv /opt/airlock/venv"
        )
        self.node.run(
            [
                "python3",
                str(bootstrap),
                str(bundle),
                "--key",
                str(key),
                "--venv",
                "/opt/airlock/venv",
            ],
            timeout=600,
        )
        self.airlock("load", str(bundle), "--key", str(key))

    def prepare_and_install(self, *, registries: Sequence[str]) -> None:
        self.airlock("node", "prepare")
        self.airlock("node", "install", "--registry", ",".join(registries))

    def init(self, *, registries: Sequence[str], timeout: float = 1200) -> system.CommandResult:
        return self.airlock(
            "cluster",
            "init",
            "--advertise-address",
            self.address,
            "--registry",
            ",".join(registries),
            timeout=timeout,
        )

    def join(self, join_file: Path) -> system.CommandResult:
        return self.airlock("cluster", "join", str(join_file), timeout=900)

    def reset(self) -> system.CommandResult:
        return self.airlock("cluster", "reset", timeout=300)

    def deploy(self, app: str, *sets: str) -> system.CommandResult:
        args = [a for s in sets for a in ("--set", s)]
        return self.airlock("app", "deploy", app, *args, timeout=900)

    def memory_figures(self) -> dict[str, int]:
        """Peak memory in bytes: every pod of the node (its cgroup root's memory.max_usage,
        page cache included) and the kubelet's and containerd's own high-water marks."""
        out: dict[str, int] = {}
        if self.node.cgroup_root:
            peak = (
                CGROUP_FS
                / "memory"
                / self.node.cgroup_root.strip("/")
                / "memory.max_usage_in_bytes"
            )
            with contextlib.suppress(OSError, ValueError):
                out["pods peak (cgroup, with page cache)"] = int(peak.read_text())
        for pid in self.node.processes():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                name = status.split("\n", 1)[0].split()[-1]
                if name in ("kubelet", "containerd", "etcd", "kube-apiserver"):
                    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
                    out[f"{name} VmHWM"] = out.get(f"{name} VmHWM", 0) + int(hwm.split()[1]) * 1024
        return out

    # --- evidence --------------------------------------------------------------------------

    def wait_for(self, what: str, check: Callable[[], bool], *, timeout: float) -> float:
        start = time.monotonic()
        while not check():
            if time.monotonic() - start > timeout:
                raise SystemCommandError(f"{self.node.name}: {what} not within {timeout:.0f}s")
            time.sleep(3)
        return time.monotonic() - start

    def node_conditions(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for item in self.kubectl_json("get", "nodes").get("items", []):
            name = item["metadata"]["name"]
            out[name] = {
                c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])
            }
        return out

    def pod_images(self) -> dict[str, str]:
        """Every running container: namespace/pod/container -> the image digest it runs."""
        out: dict[str, str] = {}
        for pod in self.kubectl_json("get", "pods", "-A").get("items", []):
            meta = pod["metadata"]
            statuses = pod.get("status", {})
            for c in [
                *statuses.get("initContainerStatuses", []),
                *statuses.get("containerStatuses", []),
            ]:
                image_id = c.get("imageID", "")
                out[f"{meta['namespace']}/{meta['name']}/{c['name']}"] = image_id
        return out

    def pods_running(self, namespace: str, selector: str) -> bool:
        r = self.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json", check=False)
        if r.returncode != 0:
            return False
        items = json.loads(r.stdout).get("items", [])
        return bool(items) and all(
            all(s.get("ready") for s in p.get("status", {}).get("containerStatuses", []) or [{}])
            for p in items
        )

    def service_answer(
        self, namespace: str, selector: str, port: int, path: str = "/", *, timeout: float = 90
    ) -> str:
        """HTTP GET through the cluster IP of the Service `selector` picks, from the node
        (kube-proxy's rules carry it to a pod). Retried until `timeout`: a Service whose
        endpoints kube-proxy has not programmed yet refuses at once."""
        services = self.kubectl_json("-n", namespace, "get", "services", "-l", selector)
        items = services.get("items", [])
        if not items:
            raise SystemCommandError(f"no Service with {selector} in {namespace}")
        ip = items[0]["spec"]["clusterIP"]
        deadline = time.monotonic() + timeout
        while True:
            result = self.node.run(
                ["curl", "-fsS", "--max-time", "5", f"http://{ip}:{port}{path}"],
                check=False,
                timeout=20,
            )
            if result.returncode == 0:
                return result.stdout
            if time.monotonic() > deadline:
                raise SystemCommandError(f"{selector} at {ip}:{port}: {result.stderr.strip()}")
            time.sleep(2)
