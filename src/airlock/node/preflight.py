"""`airlock node check`: preflight checks, a superset of kubeadm's, each failure with its fix.

Every check returns `CheckResult(status, message, fix)` with status ok, warn or fail. File-based
checks read under `root` (a sysroot in tests); checks of the running machine (loaded modules,
live sysctls, cgroups, ports) run only when `live`. The network is touched in two ways only:
binding 127.0.0.1 to see whether a port is free, and HTTP to the local registry URL given.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from airlock import system
from airlock.node.prepare import MODULES, SYSCTLS
from airlock.node.resources import SWAP_LINE, dpkg_status
from airlock.oci.media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from airlock.oci.ref import parse_reference

__all__ = [
    "BINARIES",
    "CheckResult",
    "PreflightOptions",
    "Status",
    "check_kubelet_cgroup_v1",
    "check_packages",
    "module_present",
    "run_preflight",
    "summary",
]

Status = Literal["ok", "warn", "fail"]
BINARIES = ("kubeadm", "kubelet", "kubectl", "crictl", "containerd", "runc", "conntrack")
_BIN_DIRS = ("/usr/local/bin", "/usr/local/sbin", "/usr/bin", "/usr/sbin", "/bin", "/sbin")
_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class PreflightOptions:
    """`registry_url` is the node's local registry (http://127.0.0.1:5000); `images` the
    references kubeadm will pull (checked there by HEAD). `live` defaults to root == /."""

    registry_url: str | None = None
    images: tuple[str, ...] = ()
    ports: tuple[int, ...] = (6443, 10250, 2379, 2380)
    store: str = "/var/lib/airlock/store"
    min_free_bytes: int = 4 << 30
    binaries: tuple[str, ...] = BINARIES
    live: bool | None = None
    timeout: float = 5.0
    kubernetes_version: str | None = None  # the bundle's; None: not checked against cgroups
    fail_cgroup_v1: bool | None = None  # the spec's node.failCgroupV1
    cgroup_v2: bool | None = None  # None: read from the running kernel when live
    packages: tuple[str, ...] = ()  # the spec's packages.names (the node's OS packages)
    cgroup_driver: str = "systemd"  # the spec's node.cgroupDriver


def _read(root: Path, node_path: str) -> str | None:
    path = system.host_path(node_path, root)
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def check_swap(root: Path, *, live: bool) -> CheckResult:
    fix = "airlock node prepare (swapoff -a; swap lines commented out in /etc/fstab)"
    if live:
        swaps = (_read(root, "/proc/swaps") or "").strip().splitlines()[1:]
        if swaps:
            devices = ", ".join(s.split()[0] for s in swaps)
            return CheckResult("swap", "fail", f"swap is on ({devices}); kubelet refuses it", fix)
    fstab = _read(root, "/etc/fstab") or ""
    active = [
        line.split()[0]
        for line in fstab.splitlines()
        if not line.lstrip().startswith("#") and SWAP_LINE.match(line)
    ]
    if active:
        return CheckResult("swap", "fail", f"/etc/fstab turns swap on at boot: {active}", fix)
    zram = _read(root, "/etc/systemd/zram-generator.conf")
    if zram is None and _read(root, "/usr/lib/systemd/zram-generator.conf"):
        return CheckResult("swap", "warn", "the zram generator makes a swap device at boot", fix)
    return CheckResult("swap", "ok", "swap is off" + ("" if live else " at boot"))


# what a module built into the kernel shows when it has no /sys/module entry (and the node no
# /lib/modules, as in many VMs and containers): (file, a line's last word, or "" for "exists")
_BUILT_IN_SIGNS = {
    "overlay": ("/proc/filesystems", "overlay"),
    "br_netfilter": ("/proc/sys/net/bridge/bridge-nf-call-iptables", ""),
}


def module_present(name: str, *, host: Path = Path("/")) -> bool:
    """Loaded (/sys/module), listed in the kernel's modules.builtin, or built in and working."""
    if (host / "sys/module" / name).exists():
        return True
    builtin = host / "lib/modules" / os.uname().release / "modules.builtin"
    with contextlib.suppress(OSError):
        names = {Path(line.strip()).name for line in builtin.read_text().splitlines()}
        if f"{name}.ko" in names:
            return True
    sign = _BUILT_IN_SIGNS.get(name)
    if sign is None:
        return False
    path, word = host / sign[0].lstrip("/"), sign[1]
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return False
    return not word or any(line.split()[-1:] == [word] for line in lines)


def check_modules(root: Path, *, live: bool, host: Path = Path("/")) -> CheckResult:
    fix = "airlock node prepare (modprobe overlay br_netfilter; /etc/modules-load.d/k8s.conf)"
    if live:
        missing = [m for m in MODULES if not module_present(m, host=host)]
        if missing:
            return CheckResult(
                "modules", "fail", f"neither loaded nor built in: {', '.join(missing)}", fix
            )
    configured: set[str] = set()
    for pattern in ("/etc/modules-load.d/*.conf", "/usr/lib/modules-load.d/*.conf"):
        for f in glob.glob(str(system.host_path(pattern, root))):
            try:  # Debian's modules.conf links to /etc/modules, which may be gone
                text = Path(f).read_text(errors="replace")
            except OSError:
                continue
            configured |= {
                ln.strip()
                for ln in text.splitlines()
                if ln.strip() and not ln.startswith(("#", ";"))
            }
    missing = [m for m in MODULES if m not in configured]
    if missing:
        return CheckResult("modules", "warn", f"not loaded at boot: {', '.join(missing)}", fix)
    return CheckResult(
        "modules", "ok", f"{', '.join(MODULES)} " + ("loaded" if live else "at boot")
    )


def _sysctl_files(root: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    files = []
    for d in ("/usr/lib/sysctl.d", "/etc/sysctl.d"):
        files += sorted(glob.glob(str(system.host_path(d, root) / "*.conf")))
    files.append(str(system.host_path("/etc/sysctl.conf", root)))
    for f in files:
        try:
            text = Path(f).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";")) and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip().lstrip("-")] = value.strip()
    return values


def check_sysctls(root: Path, *, live: bool) -> CheckResult:
    fix = "airlock node prepare (/etc/sysctl.d/99-k8s-cri.conf and sysctl -w)"
    if live:
        wrong = []
        for key, want in SYSCTLS.items():
            have = _read(Path("/"), "/proc/sys/" + key.replace(".", "/"))
            if (have or "").strip() != want:
                wrong.append(f"{key}={(have or 'absent').strip()}")
        if wrong:
            return CheckResult("sysctls", "fail", f"wrong now: {', '.join(wrong)}", fix)
    configured = _sysctl_files(root)
    wrong = [k for k, v in SYSCTLS.items() if configured.get(k) != v]
    if wrong:
        return CheckResult("sysctls", "warn", f"not set at boot: {', '.join(wrong)}", fix)
    return CheckResult("sysctls", "ok", "bridge netfilter and ip_forward set")


def check_cgroups(root: Path, *, live: bool, driver: str = "systemd") -> CheckResult:
    """containerd's runc and the kubelet use the spec's cgroup driver (node.cgroupDriver:
    systemd, or cgroupfs where another service manager starts the kubelet); a cgroup v1 host
    is a warning (kubelet v1.35+ on it has its own check)."""
    systemd = driver == "systemd"
    fix = (
        "airlock node install (containerd's SystemdCgroup and the kubelet's cgroupDriver follow"
        f" the spec's node.cgroupDriver, {driver} here)"
    )
    config = _read(root, "/etc/containerd/config.toml")
    if config is None:
        return CheckResult("cgroups", "fail", "no /etc/containerd/config.toml", fix)
    try:
        doc = tomllib.loads(config)
    except tomllib.TOMLDecodeError as exc:
        return CheckResult("cgroups", "fail", f"/etc/containerd/config.toml: {exc}", fix)
    problems = []
    if _find_key(doc, "SystemdCgroup", True) != systemd:
        problems.append(f"containerd's runc does not use the {driver} cgroup driver")
    kubelet = _read(root, "/var/lib/kubelet/config.yaml")
    found = re.search(r"^cgroupDriver:\s*(\S+)\s*$", kubelet or "", re.M)
    if found and found.group(1) != driver:
        problems.append(f"the kubelet uses {found.group(1)} while containerd uses {driver}")
    if problems:
        return CheckResult("cgroups", "fail", "; ".join(problems), fix)
    if live and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return CheckResult(
            "cgroups",
            "warn",
            f"cgroup v1 ({driver} cgroup driver); Kubernetes prefers cgroup v2",
            "boot with systemd.unified_cgroup_hierarchy=1 when you can",
        )
    return CheckResult("cgroups", "ok", ("cgroup v2, " if live else "") + f"{driver} cgroup driver")


def _find_key(node: Any, key: str, value: Any) -> bool:
    if isinstance(node, dict):
        return any((k == key and v == value) or _find_key(v, key, value) for k, v in node.items())
    return False


def check_binaries(root: Path, names: Sequence[str], *, live: bool) -> CheckResult:
    missing = []
    for name in names:
        found = any(system.host_path(f"{d}/{name}", root).is_file() for d in _BIN_DIRS)
        if not found and live:
            found = system.which(name) is not None
        if not found:
            missing.append(name)
    if missing:
        return CheckResult(
            "binaries",
            "fail",
            f"not found: {', '.join(missing)}",
            "airlock node install BUNDLE (conntrack: the OS package conntrack / conntrack-tools)",
        )
    return CheckResult("binaries", "ok", f"found: {', '.join(names)}")


def _rpm_missing(root: Path, names: Sequence[str]) -> list[str] | None:
    if system.which("rpm") is None:
        return None
    result = system.run(
        ["rpm", "--root", str(root), "-q", *names], check=False, timeout=60
    )  # one line per name: "N is not installed" for the missing
    return [n for n in names if f"package {n} is not installed" in result.stdout]


def check_packages(root: Path, names: Sequence[str]) -> CheckResult:
    """The spec's OS packages (packages.names) are installed: dpkg's status, else rpm's."""
    fix = (
        "airlock node install BUNDLE (it installs the packages the bundle carries: name "
        "packages.repositories in the spec so their closure travels)"
    )
    if system.host_path("/var/lib/dpkg/status", root).exists():
        have = dpkg_status(root)
        missing: list[str] | None = [n for n in names if n not in have]
    else:
        missing = _rpm_missing(root, names)
    if missing is None:
        return CheckResult("packages", "warn", "no dpkg or rpm database to look in", fix)
    if missing:
        return CheckResult("packages", "fail", f"not installed: {', '.join(missing)}", fix)
    return CheckResult("packages", "ok", f"installed: {', '.join(names)}")


def check_ports(ports: Sequence[int]) -> CheckResult:
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    if busy:
        return CheckResult(
            "ports",
            "fail",
            f"in use: {', '.join(map(str, busy))}",
            "stop what listens there (ss -ltnp) or airlock cluster reset",
        )
    return CheckResult("ports", "ok", f"free: {', '.join(map(str, ports))}")


def check_hostname(root: Path, *, live: bool) -> CheckResult:
    name = (_read(root, "/etc/hostname") or "").strip()
    if live or not name:
        name = name or socket.gethostname()
    hosts = _read(root, "/etc/hosts") or ""
    names = {w for line in hosts.splitlines() if not line.startswith("#") for w in line.split()[1:]}
    if name in names or name.split(".")[0] in names:
        return CheckResult("hostname", "ok", f"{name} is in /etc/hosts")
    return CheckResult(
        "hostname",
        "warn",
        f"{name} is not in /etc/hosts (no DNS in an air gap)",
        f"add a line with the node's address and '{name}' to /etc/hosts",
    )


def check_disk(root: Path, store: str, min_free: int) -> CheckResult:
    path = system.host_path(store, root)
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    gib = free / (1 << 30)
    if free < min_free:
        return CheckResult(
            "disk",
            "fail",
            f"{gib:.1f} GiB free for {store}, {min_free / (1 << 30):.1f} GiB wanted",
            "free space there or put the store on a larger disk (--store)",
        )
    return CheckResult("disk", "ok", f"{gib:.1f} GiB free for {store}")


def _opener() -> urllib.request.OpenerDirector:
    # No proxies: the local registry is reached directly, never through HTTP(S)_PROXY.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check_registry(url: str, timeout: float) -> CheckResult:
    fix = f"start it: systemctl start airlock-registry (or airlock registry serve); URL {url}"
    try:
        with _opener().open(f"{url.rstrip('/')}/v2/", timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return CheckResult("registry", "fail", f"{url} is not reachable: {reason}", fix)
    if status in (200, 401):
        return CheckResult("registry", "ok", f"{url} answers the OCI distribution API")
    return CheckResult("registry", "fail", f"{url}/v2/ answered HTTP {status}", fix)


def check_images(url: str, images: Sequence[str], timeout: float) -> CheckResult:
    missing = []
    opener = _opener()
    for image in images:
        ref = parse_reference(image)
        target = ref.digest or ref.tag or "latest"
        req = urllib.request.Request(
            f"{url.rstrip('/')}/v2/{ref.registry}/{ref.repository}/manifests/{target}",
            method="HEAD",
            headers={"Accept": _ACCEPT},
        )
        try:
            with opener.open(req, timeout=timeout) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        if not ok:
            missing.append(image)
    if missing:
        return CheckResult(
            "images",
            "fail",
            f"{len(missing)} of {len(images)} not in {url}: {', '.join(missing)}",
            "airlock load BUNDLE (a bundle built for this Kubernetes version)",
        )
    return CheckResult("images", "ok", f"all {len(images)} images are in {url}")


def check_kubelet_cgroup_v1(
    kubernetes_version: str, *, cgroup_v2: bool, fail_cgroup_v1: bool | None
) -> CheckResult:
    """kubelet v1.35+ refuses to start on a cgroup v1 host unless `failCgroupV1: false`."""
    m = re.match(r"^v?(\d+)\.(\d+)", kubernetes_version)
    minor = (int(m[1]), int(m[2])) if m else (0, 0)
    name = "kubelet-cgroup-v1"
    if cgroup_v2 or minor < (1, 35):
        return CheckResult(name, "ok", f"kubelet {kubernetes_version} runs on this cgroup version")
    if fail_cgroup_v1 is False:
        return CheckResult(
            name,
            "warn",
            f"cgroup v1 host with kubelet {kubernetes_version}: allowed by the spec's"
            " node.failCgroupV1: false (cgroup v1 support is deprecated and will go)",
        )
    return CheckResult(
        name,
        "fail",
        f"this host uses cgroup v1 and kubelet {kubernetes_version} (v1.35 or later) refuses to"
        " start on it unless its failCgroupV1 setting is false",
        "boot the node with cgroup v2 (systemd.unified_cgroup_hierarchy=1), or set"
        " `node: {failCgroupV1: false}` in the spec and build the bundle again",
    )


def run_preflight(
    *, root: Path = Path("/"), options: PreflightOptions | None = None
) -> list[CheckResult]:
    """Every check, in a fixed order."""
    opts = options or PreflightOptions()
    root = Path(root)
    live = opts.live if opts.live is not None else root == Path("/")
    results = [
        check_swap(root, live=live),
        check_modules(root, live=live),
        check_sysctls(root, live=live),
        check_cgroups(root, live=live, driver=opts.cgroup_driver),
        check_binaries(root, opts.binaries, live=live),
    ]
    if opts.packages:
        results.append(check_packages(root, opts.packages))
    if opts.kubernetes_version:
        v2 = opts.cgroup_v2
        if v2 is None:
            v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists() if live else True
        results.append(
            check_kubelet_cgroup_v1(
                opts.kubernetes_version, cgroup_v2=v2, fail_cgroup_v1=opts.fail_cgroup_v1
            )
        )
    if live:
        results.append(check_ports(opts.ports))
    results += [check_hostname(root, live=live), check_disk(root, opts.store, opts.min_free_bytes)]
    if opts.registry_url:
        registry = check_registry(opts.registry_url, opts.timeout)
        results.append(registry)
        if opts.images:
            if registry.status == "ok":
                results.append(check_images(opts.registry_url, opts.images, opts.timeout))
            else:
                results.append(
                    CheckResult(
                        "images", "fail", "not checked: the registry is unreachable", registry.fix
                    )
                )
    return results


def summary(results: Sequence[CheckResult]) -> dict[str, Any]:
    """JSON-ready: every result, and the worst status."""
    worst: Status = "ok"
    for r in results:
        if r.status == "fail" or (r.status == "warn" and worst == "ok"):
            worst = r.status
    return {"status": worst, "checks": [r.to_json() for r in results]}


def summary_json(results: Sequence[CheckResult]) -> str:
    return json.dumps(summary(results), indent=2) + "\n"


__all__ += ["summary_json"]
