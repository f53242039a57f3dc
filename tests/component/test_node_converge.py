"""`node prepare` and `node install` converge on real sysroots, with real binaries.

- A Debian bookworm sysroot built with `debootstrap --variant=minbase` (the mirror is read from
  this machine's own apt sources at test time), cached as a tarball under
  /tmp/airlock-test-cache so it is built once. If debootstrap takes more than 5 minutes the
  tests fall back to a hand-made Debian-like tree and say so with a warning.
- A hand-made Fedora-like tree (os-release, fstab with a swap line, zram-generator.conf,
  firewalld zone).
- install from a source packed the upstream way with Debian's real containerd, ctr, shims, runc
  and CNI plugins; kubeadm, kubelet and crictl are clearly named shell stand-ins (not obtainable
  here), kubectl is Debian's real one. After install: runc runs from the sysroot, the CNI bridge
  plugin answers VERSION, and the sysroot's containerd accepts the written config.toml.
- Read-only targets: a real read-only tmpfs mount and a real immutable file (chattr +i).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tarfile
import warnings
from collections.abc import Iterator
from importlib import resources as ilr
from pathlib import Path

import pytest

from airlock import system
from airlock.blobstore import BlobStore
from airlock.errors import NodeError
from airlock.node.engine import Context, Plan, apply, plan
from airlock.node.install import FileRecord, StoreSource, install_resources
from airlock.node.osinfo import read_os_info
from airlock.node.prepare import PrepareOptions, prepare_resources
from airlock.node.resources import File

pytestmark = pytest.mark.component

CACHE = Path("/tmp/airlock-test-cache")
DEBIAN_TAR = CACHE / "debian-bookworm-minbase.tar"
DEBOOTSTRAP_LIMIT = 300
PLAT = "linux/amd64"


def require(*binaries: str) -> None:
    missing = [b for b in binaries if system.which(b) is None]
    if missing:
        pytest.fail(
            f"required binaries missing: {', '.join(missing)} "
            "(apt-get install debootstrap containerd runc containernetworking-plugins)"
        )


def apt_mirror() -> str:
    """The Debian archive this machine itself uses (deb822 .sources or one-line .list)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in (".list", ".sources", ""):
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if (
                uris
                and suites
                and "bookworm" in suites.group(1).split()
                and "security" not in uris.group(1)
            ):
                return uris.group(1)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm":
                return next(p for p in parts[1:] if "://" in p)
    pytest.fail("no Debian bookworm mirror in /etc/apt/sources.list(.d): cannot debootstrap")


def handmade_debian(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    )
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\n"
    )
    (root / "etc/fstab").write_text(
        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
    )


@pytest.fixture(scope="module")
def debian_tar() -> Path | None:
    """The cached debootstrap tarball (None: fell back to a hand-made tree, with a warning)."""
    if DEBIAN_TAR.exists():
        return DEBIAN_TAR
    require("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / f"build-{os.getpid()}"
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(build), apt_mirror()],
            check=True,
            capture_output=True,
            timeout=DEBOOTSTRAP_LIMIT,
        )
    except subprocess.TimeoutExpired:
        warnings.warn(
            f"debootstrap took more than {DEBOOTSTRAP_LIMIT}s: using a hand-made Debian-like "
            "tree (os-release + dpkg status) instead of a real Debian sysroot",
            stacklevel=1,
        )
        subprocess.run(["rm", "-rf", str(build)], check=False)
        return None
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"debootstrap failed: {exc.stderr.decode(errors='replace')[-2000:]}")
    tmp = DEBIAN_TAR.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(build), "-cf", str(tmp), "."], check=True)
    tmp.rename(DEBIAN_TAR)
    subprocess.run(["rm", "-rf", str(build)], check=True)
    return DEBIAN_TAR


@pytest.fixture
def debian_root(tmp_path: Path, debian_tar: Path | None) -> Path:
    root = tmp_path / "debian"
    if debian_tar is None:
        handmade_debian(root)
        return root
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(debian_tar)], check=True)
    return root


def converge(resources_fn: object, root: Path) -> tuple[Plan, Plan]:
    make = resources_fn  # a callable returning fresh resources (they read the root)
    assert callable(make)
    ctx = Context(root=root)
    first = plan(make(), ctx)
    apply(first, ctx)
    second = plan(make(), Context(root=root))
    return first, second


def test_prepare_converges_on_debootstrap_debian(debian_root: Path) -> None:
    info = read_os_info(root=debian_root)
    assert (info.id, info.family) == ("debian", "deb")

    def make() -> list:  # type: ignore[type-arg]
        return prepare_resources(root=debian_root, os_info=info)

    first, second = converge(make, debian_root)
    assert "sysctl:/etc/sysctl.d/99-k8s-cri.conf" in [i.resource.id for i in first.changes]
    assert second.empty, second.render()
    assert any("ufw is not installed" in w for w in second.warnings)  # minbase has no ufw
    assert (debian_root / "etc/modules-load.d/k8s.conf").read_text().splitlines()[1:] == [
        "overlay",
        "br_netfilter",
    ]


def fedora_tree(root: Path) -> None:
    files = {
        "etc/os-release": 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=38\n',
        "etc/fstab": "UUID=1 / btrfs subvol=root 0 0\n/dev/mapper/swap none swap defaults 0 0\n",
        "usr/lib/systemd/zram-generator.conf": "[zram0]\nzram-size = min(ram, 8192)\n",
        "usr/lib/firewalld/zones/public.xml": '<?xml version="1.0" encoding="utf-8"?>\n<zone>\n'
        '  <short>Public</short>\n  <service name="ssh"/>\n</zone>\n',
        "etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_prepare_converges_on_fedora_like_tree(tmp_path: Path) -> None:
    root = tmp_path / "fedora"
    fedora_tree(root)
    info = read_os_info(root=root)
    assert info.family == "rpm"

    def make() -> list:  # type: ignore[type-arg]
        return prepare_resources(root=root, os_info=info, options=PrepareOptions())

    _, second = converge(make, root)
    assert second.empty, second.render()
    assert "#/dev/mapper/swap none swap defaults 0 0" in (root / "etc/fstab").read_text()
    assert (root / "etc/systemd/zram-generator.conf").exists()
    zone = (root / "etc/firewalld/zones/public.xml").read_text()
    assert '<port protocol="udp" port="8472"/>' in zone and '<service name="ssh"/>' in zone
    assert "SELINUX=enforcing" in (root / "etc/selinux/config").read_text()  # not asked


def test_unknown_os_family(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=arch\n")
    with pytest.raises(NodeError, match="unsupported operating system") as err:
        read_os_info(root=tmp_path)
    assert err.value.hint and "debian, fedora" in err.value.hint


# --- install with real binaries ----------------------------------------------------------


def targz_of(members: dict[str, Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, path in members.items():
            tar.add(path, arcname=name)
    return buf.getvalue()


def targz_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def standin(name: str) -> bytes:
    return f'#!/bin/sh\n# airlock test stand-in for {name} (not the real binary)\necho {name}-standin "$@"\n'.encode()


@pytest.fixture(scope="module")
def real_source(tmp_path_factory: pytest.TempPathFactory) -> StoreSource:
    require("containerd", "ctr", "containerd-shim-runc-v2", "runc", "kubectl")
    cni = sorted(p for p in Path("/usr/lib/cni").iterdir() if p.is_file())
    if not cni:
        pytest.fail("no CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)")
    bins = {
        f"bin/{n}": Path(system.which(n) or "")
        for n in ("containerd", "ctr", "containerd-shim-runc-v2")
    }
    data = ilr.files("airlock_lab") / "data"
    gh = "https://github.com"
    files: dict[str, tuple[str, bytes, str]] = {
        "kubeadm": (
            "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm",
            standin("kubeadm"),
            "1.27.3",
        ),
        "kubelet": (
            "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubelet",
            standin("kubelet"),
            "1.27.3",
        ),
        "kubectl": (
            "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubectl",
            Path(system.which("kubectl") or "").read_bytes(),
            "1.27.3",
        ),
        "runc.amd64": (
            f"{gh}/opencontainers/runc/releases/download/v1.1.5/runc.amd64",
            Path(system.which("runc") or "").read_bytes(),
            "v1.1.5",
        ),
        "crictl-v1.27.0-linux-amd64.tar.gz": (
            f"{gh}/kubernetes-sigs/cri-tools/releases/download/v1.27.0/crictl-v1.27.0-linux-amd64.tar.gz",
            targz_bytes({"crictl": standin("crictl")}),
            "v1.27.0",
        ),
        "containerd-1.6.20-linux-amd64.tar.gz": (
            f"{gh}/containerd/containerd/releases/download/v1.6.20/containerd-1.6.20-linux-amd64.tar.gz",
            targz_of(bins),
            "1.6.20",
        ),
        "cni-plugins-linux-amd64-v1.3.0.tgz": (
            f"{gh}/containernetworking/plugins/releases/download/v1.3.0/cni-plugins-linux-amd64-v1.3.0.tgz",
            targz_of({f"./{p.name}": p for p in cni}),
            "v1.3.0",
        ),
        "kubelet.service": (
            "https://raw.githubusercontent.com/kubernetes/release/x/kubelet.service",
            (data / "upstream-kubelet.service").read_bytes(),
            "",
        ),
        "10-kubeadm.conf": (
            "https://raw.githubusercontent.com/kubernetes/release/x/10-kubeadm.conf",
            (data / "upstream-10-kubeadm.conf").read_bytes(),
            "",
        ),
    }
    store = BlobStore(tmp_path_factory.mktemp("source") / "store")
    records = []
    for name, (url, blob, version) in files.items():
        digest = store.put_bytes(blob)
        platform = "" if name.endswith((".service", ".conf")) else PLAT
        records.append(FileRecord(name, "binary", url, digest, len(blob), platform, version))
    return StoreSource(store, records)


def install_for(source: StoreSource, root: Path) -> list:  # type: ignore[type-arg]
    return install_resources(
        source,
        root=root,
        registry_addrs=["127.0.0.1:5000"],
        sandbox_image="registry.k8s.io/pause:3.9",
        upstreams=["docker.io", "registry.k8s.io"],
        platform=PLAT,
    )


def test_install_real_binaries_run_from_the_sysroot(
    debian_root: Path, real_source: StoreSource
) -> None:
    root = debian_root
    config = root / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(  # a user's edits: must survive
        'version = 2\n\n[debug]\n  level = "debug"\n\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "native"\n'
    )
    ctx = Context(root=root)
    first = plan(install_for(real_source, root), ctx)
    diff = next(
        i for i in first.changes if i.resource.id == "file:/etc/containerd/config.toml"
    ).change.diff
    assert '+config_path = "/etc/containerd/certs.d"' in diff.splitlines()
    # mirrors.py re-writes the TOML (indentation is not kept), but every user setting is:
    # each removed line comes back as an added one with the same content.
    lines = diff.splitlines()
    removed = [ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    added = {ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")}
    assert removed and set(removed) <= added, diff
    # Interrupted after half of the changes, then rerun: converges.
    half = Plan(first.root, first.items[: len(first.items) // 2], first.pending)
    apply(half, ctx)
    rerun_ctx = Context(root=root)
    apply(plan(install_for(real_source, root), rerun_ctx), rerun_ctx)
    second = plan(install_for(real_source, root), Context(root=root))
    assert second.empty, second.render()

    runc = subprocess.run(
        [str(root / "usr/local/sbin/runc"), "--version"], capture_output=True, text=True
    )
    assert runc.returncode == 0 and "runc version" in runc.stdout, runc.stderr
    bridge = subprocess.run(
        [str(root / "opt/cni/bin/bridge")],
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
    )
    assert bridge.returncode == 0 and "supportedVersions" in bridge.stdout, bridge.stderr
    dump = subprocess.run(
        [str(root / "usr/local/bin/containerd"), "--config", str(config), "config", "dump"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dump.returncode == 0, dump.stderr
    assert '[plugins."io.containerd.grpc.v1.cri"]' in dump.stdout
    assert 'config_path = "/etc/containerd/certs.d"' in dump.stdout
    assert "SystemdCgroup = true" in dump.stdout
    assert 'sandbox_image = "registry.k8s.io/pause:3.9"' in dump.stdout
    assert 'level = "debug"' in dump.stdout and 'snapshotter = "native"' in dump.stdout
    kubectl = subprocess.run(
        [str(root / "usr/local/bin/kubectl"), "version", "--client"], capture_output=True, text=True
    )
    assert kubectl.returncode == 0, kubectl.stderr


# --- read-only targets, for real ---------------------------------------------------------


@contextlib.contextmanager
def readonly_tmpfs(mountpoint: Path, files: dict[str, str]) -> Iterator[None]:
    mountpoint.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=True)
    try:
        for name, text in files.items():
            (mountpoint / name).write_text(text)
        subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_read_only_mount_refused_before_any_write(tmp_path: Path) -> None:
    require("mount", "umount")
    root = tmp_path / "root"
    with readonly_tmpfs(root / "etc/ro", {"x.conf": "old\n"}):
        resources = [File("/etc/a.conf", content="a\n"), File("/etc/ro/x.conf", content="new\n")]
        ctx = Context(root=root)
        p = plan(resources, ctx)
        assert len(p.changes) == 2
        with pytest.raises(NodeError) as err:
            apply(p, ctx)
        assert "/etc/ro/x.conf: Read-only file system" in err.value.message
        assert not (root / "etc/a.conf").exists()
        assert (root / "etc/ro/x.conf").read_text() == "old\n"


def test_immutable_file_refused_before_any_write(tmp_path: Path) -> None:
    require("chattr")
    target = tmp_path / "etc/locked.conf"
    target.parent.mkdir(parents=True)
    target.write_text("old\n")
    subprocess.run(["chattr", "+i", str(target)], check=True)
    try:
        ctx = Context(root=tmp_path)
        p = plan(
            [File("/etc/first.conf", content="1\n"), File("/etc/locked.conf", content="new\n")], ctx
        )
        with pytest.raises(NodeError, match="/etc/locked.conf: Operation not permitted"):
            apply(p, ctx)
        assert not (tmp_path / "etc/first.conf").exists()
        assert target.read_text() == "old\n"
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)


def test_local_deb_package_installs_into_debootstrap_root(
    debian_root: Path, tmp_path: Path
) -> None:
    """Package: a local .deb installed offline with dpkg --root; the second plan is empty."""
    require("dpkg", "dpkg-deb")
    if not (debian_root / "var/lib/dpkg/status").read_text().count("Package: dpkg\n"):
        pytest.fail("the sysroot is the hand-made fallback: dpkg --root needs a real Debian root")
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: airlock-test-hello\nVersion: 1.0-1\nArchitecture: all\n"
        "Maintainer: airlock tests <t@example.invalid>\nDescription: test package\n"
    )
    (pkg / "usr/share/airlock-test").mkdir(parents=True)
    (pkg / "usr/share/airlock-test/hello").write_text("hello\n")
    deb = tmp_path / "airlock-test-hello_1.0-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb)],
        check=True,
        capture_output=True,
    )
    from airlock.node.resources import BytesPayload, Package

    def make() -> list:  # type: ignore[type-arg]
        return [Package(BytesPayload(deb.read_bytes(), deb.name), filename=deb.name, family="deb")]

    first, second = converge(make, debian_root)
    assert first.changes[0].change.msg == "install airlock-test-hello 1.0-1"
    assert second.empty, second.render()
    assert (debian_root / "usr/share/airlock-test/hello").read_text() == "hello\n"
