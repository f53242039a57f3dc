"""The real images against the real manifests that use them, and under real containerd + runc.

The manifests are the real ones: kubeadm v1.27.3's own static pods (`kubeadm init phase
control-plane all` and `etcd local` into a scratch `--rootfs`), its addons (`kubeadm init phase
addon all --dry-run`: CoreDNS, kube-proxy) and the Flannel release's kube-flannel.yml as the
upstream serves it. Every container's command must exist in its image (on the image's PATH when
bare) with the loader and libraries its ELF header names; then containerd pulls every image by
its original name and runs each binary with its version flag, Flannel's two init containers
with their real command and arguments into bind-mounted host directories, and iptables (legacy
and nft), ip6tables, ip, conntrack and ipset inside kube-proxy's and Flannel's images.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from airlock.oci.layout import OciLayout
from airlock_lab.components import Built, build
from airlock_lab.containerd import ContainerdDaemon
from airlock_lab.debroot import elf_info
from airlock_lab.upstream import Upstream

pytestmark = pytest.mark.component

KUBE = "v1.27.3"
FLANNEL_MANIFEST = (
    "https://github.com/flannel-io/flannel/releases/download/v0.22.0/kube-flannel.yml"
)


@dataclass(frozen=True)
class Use:
    """One container of a real manifest: its image, command, args and mounted paths."""

    source: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    mounts: tuple[str, ...]


def _containers(obj: Any, source: str) -> Iterator[Use]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec) if obj.get("kind") != "Pod" else spec
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        yield Use(
            f"{source}: {obj['kind']} {obj['metadata']['name']}/{container['name']}",
            container["image"],
            tuple(container.get("command", [])),
            tuple(container.get("args", [])),
            tuple(m["mountPath"] for m in container.get("volumeMounts", [])),
        )


def _kubeadm(seed: Built, root: Path, args: list[str]) -> str:
    out = subprocess.run(
        [str(seed.path("kubeadm")), *args, "--config", "/kubeadm.yaml", "--rootfs", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, (args, out.stderr[-2000:])
    return out.stdout


def _dry_run_objects(text: str) -> Iterator[Any]:
    """The objects `kubeadm ... --dry-run` prints (tab-indented YAML after each action)."""
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("\t"):
            block.append(line[1:])
        elif block:
            yield YAML(typ="safe").load("\n".join(block))
            block = []


@pytest.fixture(scope="module")
def kubernetes() -> Built:
    return next(b for b in build(("seed",)) if b.recipe.name == "kubernetes")


@pytest.fixture(scope="module")
def uses(
    kubernetes: Built, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> list[Use]:
    root = tmp_path_factory.mktemp("kubeadm-root")
    (root / "kubeadm.yaml").write_text(
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n"
        "localAPIEndpoint: {advertiseAddress: 198.18.0.2}\n---\n"
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
        f"kubernetesVersion: {KUBE}\n"
    )
    _kubeadm(kubernetes, root, ["init", "phase", "control-plane", "all"])
    _kubeadm(kubernetes, root, ["init", "phase", "etcd", "local"])
    out: list[Use] = []
    for manifest in sorted((root / "etc/kubernetes/manifests").glob("*.yaml")):
        out += _containers(YAML(typ="safe").load(manifest.read_text()), manifest.name)
    addons = _kubeadm(kubernetes, root, ["init", "phase", "addon", "all", "--dry-run"])
    for obj in _dry_run_objects(addons):
        if obj and obj.get("kind") in ("Deployment", "DaemonSet"):
            out += _containers(obj, "kubeadm addon")
    flannel = upstream.local_path(FLANNEL_MANIFEST).read_text()
    for obj in YAML(typ="safe").load_all(flannel):
        if obj and obj.get("kind") == "DaemonSet":
            out += _containers(obj, "kube-flannel.yml")
    return out


# --- the image's file tree -----------------------------------------------------------------


class ImageTree:
    """The merged file tree of one platform's image, read from the upstream's OCI layout."""

    def __init__(self, layout: OciLayout, ref: str) -> None:
        desc = layout.images()[ref]
        doc = json.loads(layout.read(desc["digest"]))
        if "manifests" in doc:  # an index: the amd64 one
            doc = json.loads(
                layout.read(
                    next(
                        m["digest"]
                        for m in doc["manifests"]
                        if m["platform"]["architecture"] == "amd64"
                    )
                )
            )
        self.config = json.loads(layout.read(doc["config"]["digest"]))["config"]
        self.members: dict[str, tarfile.TarInfo] = {}
        self.data: dict[str, bytes] = {}
        for layer in doc["layers"]:
            with tarfile.open(fileobj=io.BytesIO(layout.read(layer["digest"])), mode="r:gz") as t:
                for member in t.getmembers():
                    name = member.name.removeprefix("./").strip("/")
                    self.members[name] = member
                    if member.isfile():
                        fh = t.extractfile(member)
                        assert fh is not None
                        self.data[name] = fh.read()

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """`path` with every symlink followed (in each directory too), or None if missing."""
        assert depth < 40, path
        parts = [p for p in path.strip("/").split("/") if p]
        current = ""
        for n, part in enumerate(parts):
            candidate = f"{current}/{part}".strip("/")
            member = self.members.get(candidate)
            if member is None:
                return None
            if member.issym():
                target = member.linkname
                base = target if target.startswith("/") else posixpath.join(current, target)
                rest = "/".join(parts[n + 1 :])
                return self.resolve(posixpath.normpath(f"/{base}/{rest}"), depth + 1)
            current = candidate
        return current

    def which(self, command: str) -> str | None:
        if "/" in command:
            return self.resolve(command)
        env = dict(e.split("=", 1) for e in self.config.get("Env", []))
        for directory in env.get("PATH", "").split(":"):
            found = self.resolve(f"{directory}/{command}")
            if found is not None:
                return found
        return None

    def runnable(self, path: str) -> list[str]:
        """What is wrong with running `path` here (not a file, not executable, no library)."""
        member = self.members[path]
        if not member.isfile():
            return [f"{path} is not a regular file"]
        if not member.mode & stat.S_IXUSR:
            return [f"{path} is not executable"]
        info = elf_info(self.data[path])
        if info is None:
            return [] if self.data[path].startswith(b"#!") else [f"{path} is no program"]
        missing = []
        if info.interpreter and self.resolve(info.interpreter) is None:
            missing.append(f"{path}: loader {info.interpreter} is missing")
        for soname in info.needed:
            dirs = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib")
            if not any(self.resolve(f"{d}/{soname}") for d in dirs):
                missing.append(f"{path}: library {soname} is missing")
        return missing


def _program(use: Use, tree: ImageTree) -> str:
    command = use.command or tuple(tree.config.get("Entrypoint") or ())
    assert command, f"{use.source}: no command and no entrypoint in {use.image}"
    return command[0]


def test_every_manifest_command_is_in_its_image(uses: list[Use], upstream: Upstream) -> None:
    images = {u.image for u in uses}
    assert images >= {
        f"registry.k8s.io/{n}:{KUBE}"
        for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
    } | {
        "registry.k8s.io/etcd:3.5.7-0",
        "registry.k8s.io/coredns/coredns:v1.10.1",
        "docker.io/flannel/flannel:v0.22.0",
        "docker.io/flannel/flannel-cni-plugin:v1.1.2",
    }
    trees = {ref: ImageTree(upstream.layout, ref) for ref in images}
    problems: list[str] = []
    for use in uses:
        tree = trees[use.image]
        program = _program(use, tree)
        found = tree.which(program)
        if found is None:
            problems.append(f"{use.source}: {program} is not in {use.image}")
            continue
        problems += [f"{use.source}: {p}" for p in tree.runnable(found)]
        if program == "cp":  # its source file must come from the image (or a volume)
            source = use.args[-2]
            mounted = any(source.startswith(m.rstrip("/") + "/") for m in use.mounts)
            if not mounted and tree.resolve(source) is None:
                problems.append(f"{use.source}: cp's source {source} is not in {use.image}")
    assert not problems, "\n".join(problems)
    # Paths the manifests name exactly, as upstream's images have them.
    kube_proxy = next(u for u in uses if u.image.startswith("registry.k8s.io/kube-proxy:"))
    assert kube_proxy.command[0] == "/usr/local/bin/kube-proxy"
    flanneld = next(u for u in uses if u.command[:1] == ("/opt/bin/flanneld",))
    assert flanneld.image == "docker.io/flannel/flannel:v0.22.0"
    pause = ImageTree(upstream.layout, "registry.k8s.io/pause:3.9")
    assert pause.config["Entrypoint"] == ["/pause"] and pause.runnable("pause") == []


# --- under containerd ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerdDaemon]:
    ctd = ContainerdDaemon(tmp_path_factory.mktemp("ctd"))
    for host, url in upstream.registries.items():
        hosts = ctd.hosts_dir / host / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(
            f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
    try:
        ctd.start()
        yield ctd
    finally:
        ctd.stop()


def _run(daemon: ContainerdDaemon, ref: str, argv: list[str], *, opts: tuple[str, ...] = ()) -> str:
    """`ctr run --rm` in a fresh network namespace of its own; the output, or a failure."""
    name = "t-" + hashlib.sha256(repr((ref, argv)).encode()).hexdigest()[:12]
    result = daemon.ctr(["run", "--rm", *opts, ref, name, *argv], check=False, timeout=120)
    assert result.returncode == 0, (ref, argv, result.stdout[-1500:], result.stderr[-1500:])
    return result.stdout + result.stderr


VERSIONS = [
    (
        f"registry.k8s.io/kube-apiserver:{KUBE}",
        ["kube-apiserver", "--version"],
        f"Kubernetes {KUBE}",
    ),
    (
        f"registry.k8s.io/kube-controller-manager:{KUBE}",
        ["kube-controller-manager", "--version"],
        f"Kubernetes {KUBE}",
    ),
    (
        f"registry.k8s.io/kube-scheduler:{KUBE}",
        ["kube-scheduler", "--version"],
        f"Kubernetes {KUBE}",
    ),
    (
        f"registry.k8s.io/kube-proxy:{KUBE}",
        ["/usr/local/bin/kube-proxy", "--version"],
        f"Kubernetes {KUBE}",
    ),
    ("registry.k8s.io/etcd:3.5.7-0", ["etcd", "--version"], "etcd Version: 3.5.7"),
    ("registry.k8s.io/etcd:3.5.7-0", ["etcdctl", "version"], "etcdctl version: 3.5.7"),
    ("registry.k8s.io/coredns/coredns:v1.10.1", ["/coredns", "-version"], "CoreDNS-1.10.1"),
    ("registry.k8s.io/pause:3.9", ["/pause", "-v"], "pause.c v3.9"),
    ("docker.io/flannel/flannel:v0.22.0", ["/opt/bin/flanneld", "--version"], "v0.22.0"),
    ("docker.io/flannel/flannel-cni-plugin:v1.1.2", ["/flannel"], "CNI flannel plugin v0.9.1"),
]

NET_TOOLS = [
    (["iptables", "--version"], "iptables v1.8.9 (nf_tables)"),
    (["iptables-legacy", "--version"], "iptables v1.8.9 (legacy)"),
    (["iptables", "-t", "nat", "-N", "AIRLOCK-TEST"], ""),
    (["iptables-legacy", "-t", "nat", "-N", "AIRLOCK-TEST"], ""),
    (["ip6tables", "-t", "filter", "-N", "AIRLOCK-TEST"], ""),
    (["iptables-restore", "--version"], "(nf_tables)"),
    (["ip", "link", "show", "lo"], "lo:"),
    (["conntrack", "--version"], "conntrack v1.4"),
    (["ipset", "--version"], "ipset v7"),
]


def test_every_real_image_runs_under_containerd(
    daemon: ContainerdDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    refs = sorted({ref for ref, _, _ in VERSIONS})
    for ref in refs:
        daemon.pull(ref)
    for ref, argv, expected in VERSIONS:
        assert expected in _run(daemon, ref, argv), (ref, argv)
    # Flannel's init containers, with the manifest's own command and arguments.
    cni_bin, net_d, conf = tmp_path / "cni-bin", tmp_path / "net.d", tmp_path / "kube-flannel"
    for d in (cni_bin, net_d, conf):
        d.mkdir()
    (conf / "cni-conf.json").write_text('{"name": "cbr0", "cniVersion": "0.3.1"}\n')
    bind = "type=bind,src={},dst={},options=rbind:rw"
    _run(
        daemon,
        "docker.io/flannel/flannel-cni-plugin:v1.1.2",
        ["cp", "-f", "/flannel", "/opt/cni/bin/flannel"],
        opts=("--mount", bind.format(cni_bin, "/opt/cni/bin")),
    )
    plugin = next(b for b in build(("seed",)) if b.recipe.name == "flannel-cni-plugin")
    assert (cni_bin / "flannel").read_bytes() == plugin.path("flannel").read_bytes()
    _run(
        daemon,
        "docker.io/flannel/flannel:v0.22.0",
        ["cp", "-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"],
        opts=(
            "--mount", bind.format(net_d, "/etc/cni/net.d"),
            "--mount", bind.format(conf, "/etc/kube-flannel"),
        ),
    )  # fmt: skip
    assert (net_d / "10-flannel.conflist").read_text() == (conf / "cni-conf.json").read_text()


@pytest.mark.parametrize(
    "ref", [f"registry.k8s.io/kube-proxy:{KUBE}", "docker.io/flannel/flannel:v0.22.0"]
)
def test_iptables_and_iproute2_run_in_the_network_images(
    daemon: ContainerdDaemon, ref: str
) -> None:
    """In a fresh network namespace of the container's own, with NET_ADMIN as kube-proxy and
    flanneld have it: both iptables backends write rules there."""
    daemon.pull(ref)
    for argv, expected in NET_TOOLS:
        out = _run(daemon, ref, argv, opts=("--cap-add", "CAP_NET_ADMIN"))
        assert expected in out, (ref, argv, out)
