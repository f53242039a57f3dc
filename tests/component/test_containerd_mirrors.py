"""containerd pulls by original name through airlock's hosts.toml, from a real local registry.

Real binaries: Debian's docker-registry (distribution), skopeo, umoci, containerd + ctr + runc,
busybox-static, iproute2. A missing one fails the test with the reason; nothing is skipped.

Loopback tests render hosts.toml with `upstream_fallback=False`: with the upstream as
`server`, a failed pull would make containerd look up registry.k8s.io through the host's
resolver, which is not on loopback. The gap-namespace test keeps the default fallback: there
the blackhole default route stops any such attempt before a packet leaves.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airlock import system
from airlock.errors import SystemCommandError
from airlock.node.mirrors import (
    Mirror,
    mirror_files,
    render_containerd_config,
    write_mirrors,
)
from airlock_lab.containerd import ContainerdDaemon, installed_containerd_version
from airlock_lab.distribution import free_port, start_distribution
from airlock_lab.netns import NetnsLab, netns_exists

pytestmark = pytest.mark.component

UPSTREAM = "registry.k8s.io"
IMAGE = f"{UPSTREAM}/airlock-test:1.0"
BUSYBOX = Path("/bin/busybox")


def require(*binaries: str) -> None:
    missing = [b for b in binaries if system.which(b) is None]
    if missing:
        pytest.fail(
            f"required binaries missing: {', '.join(missing)} (apt-get install "
            "docker-registry skopeo umoci containerd runc busybox-static iproute2)"
        )


def wait_port(host: str, port: int, *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on {host}:{port} after {timeout}s")


def http_get(url: str, *, timeout: float = 20) -> str:
    """GET with bounded retries (the container's httpd takes a moment to listen)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: bytes = resp.read()
                return body.decode()
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    pytest.fail(f"GET {url} failed for {timeout}s: {last}")


@contextlib.contextmanager
def docker_registry(storage: Path, host: str) -> Iterator[tuple[str, int]]:
    """Debian's docker-registry on a free port of `host`, storing under `storage`."""
    with start_distribution(f"mirror-{host}", storage, storage.parent, address=host) as reg:
        yield reg.url, reg.port


@dataclass(frozen=True)
class Served:
    registry_url: str
    port: int
    storage: Path
    token: str


def build_test_image(workdir: Path, token: str) -> Path:
    """A one-layer OCI image: static busybox and /www/index.html holding `token`."""
    layout = workdir / "layout"
    bundle = workdir / "bundle"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:1.0"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1.0", str(bundle)], check=True)
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    (rootfs / "www").mkdir()
    (rootfs / "www" / "index.html").write_text(token + "\n")
    subprocess.run(["umoci", "repack", "--image", f"{layout}:1.0", str(bundle)], check=True)
    subprocess.run(
        [
            "umoci", "config", "--image", f"{layout}:1.0",
            "--config.entrypoint", "/bin/busybox",
            "--config.cmd", "httpd", "--config.cmd", "-f",
            "--config.cmd", "-p", "--config.cmd", "18080",
            "--config.cmd", "-h", "--config.cmd", "/www",
        ],
        check=True,
    )  # fmt: skip
    return layout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A docker-registry on loopback holding the test image as registry.k8s.io/airlock-test."""
    require("docker-registry", "skopeo", "umoci", "containerd", "ctr", "runc", "ip", "nsenter")
    if not BUSYBOX.is_file():
        pytest.fail("/bin/busybox missing (apt-get install busybox-static)")
    work = tmp_path_factory.mktemp("served")
    token = f"airlock-{secrets.token_hex(8)}"
    layout = build_test_image(work, token)
    storage = work / "storage"
    storage.mkdir()
    with docker_registry(storage, "127.0.0.1") as (url, port):
        subprocess.run(
            [
                "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                f"oci:{layout}:1.0", f"docker://127.0.0.1:{port}/{IMAGE}",
            ],
            check=True,
        )  # fmt: skip
        yield Served(url, port, storage, token)


def no_leftovers(daemon: ContainerdDaemon) -> None:
    assert not daemon.alive()
    assert daemon.shim_pids() == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(daemon.workdir.resolve()) + "/" not in mounts


def run_and_fetch(daemon: ContainerdDaemon, *, fetch_host: str, token: str) -> None:
    port = free_port()
    name = f"airlock-test-{os.getpid()}-{secrets.token_hex(3)}"
    daemon.run(IMAGE, name, args=["/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/www"])
    assert daemon.tasks().get(name) == "RUNNING"
    assert http_get(f"http://{fetch_host}:{port}/").strip() == token
    daemon.delete(name)
    assert name not in daemon.tasks()


def test_rendered_config_is_accepted_by_containerd(tmp_path: Path) -> None:
    require("containerd")
    debian_default = (
        'disabled_plugins = ["cri"]\nversion = 2\n\n[plugins]\n'
        '  [plugins."io.containerd.grpc.v1.cri".cni]\n    bin_dir = "/usr/lib/cni"\n'
    )
    text = render_containerd_config(
        containerd_version=installed_containerd_version(),
        sandbox_image="registry.k8s.io/pause:3.9",
        existing=debian_default,
        config_path=str(tmp_path / "certs.d"),
    )
    config = tmp_path / "config.toml"
    config.write_text(text)
    dump = system.run(["containerd", "--config", str(config), "config", "dump"]).stdout
    parsed = tomllib.loads(dump)
    assert "cri" not in parsed["disabled_plugins"]
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["config_path"] == str(tmp_path / "certs.d")
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.9"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is True
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"  # the user's setting survived


def test_pull_by_original_name_through_mirror_and_run(served: Served, tmp_path: Path) -> None:
    daemon = ContainerdDaemon(tmp_path / "ctd")
    written = write_mirrors(
        daemon.hosts_dir,
        mirror_files([UPSTREAM], [Mirror(served.registry_url)], upstream_fallback=False),
    )
    assert written == [daemon.hosts_dir / UPSTREAM / "hosts.toml"]
    try:
        daemon.start()
        plugins = daemon.ctr(["plugins", "list"]).stdout
        assert any(
            line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and line.split()[-1] == "ok"
            for line in plugins.splitlines()
        ), plugins
        assert IMAGE not in daemon.images()
        daemon.pull(IMAGE)
        assert IMAGE in daemon.images()
        run_and_fetch(daemon, fetch_host="127.0.0.1", token=served.token)
    finally:
        daemon.stop()
    no_leftovers(daemon)


def test_second_mirror_serves_when_first_is_down(served: Served, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    daemon = ContainerdDaemon(tmp_path / "ctd")
    write_mirrors(
        daemon.hosts_dir,
        mirror_files(
            [UPSTREAM], [Mirror(dead), Mirror(served.registry_url)], upstream_fallback=False
        ),
    )
    try:
        daemon.start()
        daemon.pull(IMAGE)
        assert IMAGE in daemon.images()
    finally:
        daemon.stop()
    no_leftovers(daemon)


def test_pull_fails_when_every_mirror_is_down(tmp_path: Path) -> None:
    require("containerd", "ctr")
    daemon = ContainerdDaemon(tmp_path / "ctd")
    dead = [Mirror(f"http://127.0.0.1:{free_port()}")]
    write_mirrors(daemon.hosts_dir, mirror_files([UPSTREAM], dead, upstream_fallback=False))
    try:
        daemon.start()
        with pytest.raises(SystemCommandError, match="connection refused"):
            daemon.pull(IMAGE, timeout=60)
        assert daemon.images() == []
    finally:
        daemon.stop()
    no_leftovers(daemon)


def connect_from(netns: str, host: str, port: int) -> str:
    """Try a TCP connect from inside `netns`; 'ok' or the OS error's name."""
    probe = (
        "import errno, socket, sys\n"
        "s = socket.socket(); s.settimeout(3)\n"
        "try:\n"
        f"    s.connect(({host!r}, {port})); print('ok')\n"
        "except OSError as e:\n"
        "    print(errno.errorcode.get(e.errno, 'timeout'))\n"
    )
    return system.run(["python3", "-c", probe], netns=netns, timeout=30).stdout.strip()


def lab_name(tag: str) -> str:
    return f"alk{tag}{os.getpid() % 100000}"


def test_gap_namespace_reaches_only_the_host_side(tmp_path: Path) -> None:
    require("ip", "nsenter")
    name = lab_name("g")
    with NetnsLab(name, index=os.getpid() % 1000 + 1000) as lab:
        routes = system.run(["ip", "-n", name, "route", "show"]).stdout
        assert "blackhole default" in routes
        with socket.socket() as listener:
            listener.bind((lab.veth.host_ip, 0))
            listener.listen(4)
            port = listener.getsockname()[1]
            assert connect_from(name, lab.veth.host_ip, port) == "ok"
        # Nothing owns 198.19.255.254; the blackhole refuses it before any packet leaves.
        assert connect_from(name, "198.19.255.254", 80) in {"EINVAL", "ENETUNREACH"}
        # The host's own loopback is not the namespace's.
        assert connect_from(name, "127.0.0.1", port) == "ECONNREFUSED"
    assert not netns_exists(name)
    assert lab.host_if not in system.run(["ip", "link", "show"]).stdout


def test_netns_lab_is_idempotent() -> None:
    require("ip")
    lab = NetnsLab(lab_name("i"), index=os.getpid() % 1000 + 2000)
    try:
        first = lab.up()
        second = lab.up()
        assert first == second
    finally:
        lab.down()
        lab.down()
    assert not netns_exists(lab.name)


def test_containerd_in_gap_namespace_pulls_from_host_registry(
    served: Served, tmp_path: Path
) -> None:
    """The blog's topology: the node sees only the registry host over a veth."""
    name = lab_name("c")
    with NetnsLab(name, index=os.getpid() % 1000 + 3000) as lab:  # noqa: SIM117 (lab first)
        # A second registry process on the veth address, serving the same storage.
        with docker_registry(served.storage, lab.veth.host_ip) as (url, _port):
            daemon = ContainerdDaemon(tmp_path / "ctd", netns=name)
            # Default fallback: the upstream is listed, but the gap blackholes it.
            write_mirrors(daemon.hosts_dir, mirror_files([UPSTREAM], [Mirror(url)]))
            try:
                daemon.start()
                daemon.pull(IMAGE)
                assert IMAGE in daemon.images()
                run_and_fetch(daemon, fetch_host=lab.veth.ns_ip, token=served.token)
            finally:
                daemon.stop()
            no_leftovers(daemon)
    assert not netns_exists(name)


def test_lab_guard_stops_upstream_fallback(tmp_path: Path) -> None:
    """With every mirror down, containerd falls back to the upstream `server`; the lab's
    dead proxy must catch that (no DNS lookup). Run in a gap namespace, so that even a
    broken guard sends nothing out (the blackhole refuses it)."""
    require("containerd", "ctr", "ip", "nsenter")
    name = lab_name("p")
    with NetnsLab(name, index=os.getpid() % 1000 + 4000) as lab:
        dead = Mirror(f"http://{lab.veth.host_ip}:{free_port(lab.veth.host_ip)}")
        daemon = ContainerdDaemon(tmp_path / "ctd", netns=name)
        write_mirrors(daemon.hosts_dir, mirror_files([UPSTREAM], [dead]))
        try:
            daemon.start()
            with pytest.raises(SystemCommandError) as failed:
                daemon.pull(IMAGE, timeout=60)
        finally:
            daemon.stop()
        no_leftovers(daemon)
    message = str(failed.value)
    assert "connection refused" in message  # the dead mirror was tried first
    assert "proxyconnect" in message  # then the upstream, through the dead proxy
    assert "lookup registry.k8s.io" not in message
