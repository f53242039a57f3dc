"""The simulated upstream: the internet of the blog post, in a network namespace of its own.

Tests (and `airlock lab upstream`) point a spec's `sources:` block at it, so airlock takes the
same code path as a user with internet. It serves:

- files, under one URL prefix per upstream host (`http://198.19.128.2:8080/dl.k8s.io/...`),
  with the real layout and checksum-file formats, from an aiohttp static server with Range
  support running in a background thread. Content is real where Debian provides it (kubectl,
  CNI plugins, containerd, runc) and a clearly named stand-in elsewhere (`standins`);
- one real Debian `docker-registry` per upstream registry host (registry.k8s.io, docker.io,
  ghcr.io), each on an address of its own, holding images built by `imagebuild` and pushed with
  skopeo (some as OCI, some converted to Docker v2 schema 2).

Every server listens inside the upstream's "internet" namespace (`internet`): the host reaches
it through its routes, as a connected workstation reaches the internet, and so would a lab
namespace that routes to the host; the gap, whose default route is a blackhole, cannot. The
servers count requests by source address (`requests_by_source`), so a test or the demo can
show that none came from the gap.

Everything built is cached under the work directory, keyed by a hash of the code, the data and
the Debian inputs, so a second start only starts the daemons.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airlock import system
from airlock.atomic import write_atomic
from airlock.errors import AirlockError, SystemCommandError, UsageError
from airlock.oci.layout import OciLayout
from airlock.oci.ref import parse_reference
from airlock_lab import components, debroot, imagebuild, realimages, standins
from airlock_lab.components import Built
from airlock_lab.distribution import Distribution, start_distribution
from airlock_lab.imagebuild import TarEntry, write_tgz
from airlock_lab.internet import Internet, internet_down, internet_up
from airlock_lab.netns import bound_socket

__all__ = [
    "CNI_VERSION",
    "CONTAINERD_VERSION",
    "DEFAULT_KUBERNETES_VERSIONS",
    "DEFAULT_PLATFORMS",
    "FILE_HOSTS",
    "FLANNEL_VERSION",
    "PODINFO_CHART_VERSION",
    "REGISTRY_HOSTS",
    "RUNC_VERSION",
    "RequestRecord",
    "Upstream",
    "serve_forever",
]

DEFAULT_KUBERNETES_VERSIONS = ("v1.27.3", "v1.27.4")
DEFAULT_PLATFORMS = ("linux/amd64",)
FILE_HOSTS = (
    "dl.k8s.io",
    "github.com",
    "get.helm.sh",
    "raw.githubusercontent.com",
    "stefanprodan.github.io",
)
REGISTRY_HOSTS = ("registry.k8s.io", "docker.io", "ghcr.io")
CNI_VERSION = "v1.3.0"
CONTAINERD_VERSION = "1.7.2"
RUNC_VERSION = "v1.1.7"
FLANNEL_VERSION = "v0.22.0"
PODINFO_CHART_VERSION = "6.4.0"
KUBEPKG_VERSION = "v0.15.1"
FILES_PORT = 8080
REGISTRY_PORT = 5000

_BUILD_FORMAT = "airlock-upstream-build-1"
_COMPLETE = ".complete"
_STATE = "upstream.json"
_LAST_USED = ".last-used"
_IN_USE = ".in-use"
_STALE_BUILD_SECONDS = 600
_DATA_FILES = (
    "upstream-kube-flannel.yml",
    "upstream-kubelet.service",
    "upstream-10-kubeadm.conf",
    "upstream-podinfo-Chart.yaml",
    "upstream-podinfo-values.yaml",
    "upstream-podinfo-deployment.yaml",
    "upstream-podinfo-service.yaml",
)


@dataclass(frozen=True)
class RequestRecord:
    """One request the file server answered (for "nothing leaks past the mirror" checks)."""

    remote: str  # client address
    method: str
    path: str  # /dl.k8s.io/release/...
    status: int
    range: str | None = None


@dataclass(frozen=True)
class _DebianInputs:
    busybox: Path
    kubectl: Path
    cni_dir: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path

    @classmethod
    def find(cls) -> _DebianInputs:
        def need(path: str | None, what: str, package: str) -> Path:
            if not path or not Path(path).exists():
                raise UsageError(
                    f"{what} not found: the simulated upstream serves it",
                    f"install Debian's {package} (apt-get install {package})",
                )
            return Path(path).resolve()

        return cls(
            busybox=need(str(imagebuild.BUSYBOX_PATH), "busybox", "busybox-static"),
            kubectl=need(system.which("kubectl"), "kubectl", "kubernetes-client"),
            cni_dir=need("/usr/lib/cni", "/usr/lib/cni", "containernetworking-plugins"),
            containerd=need(system.which("containerd"), "containerd", "containerd"),
            containerd_shim=need(
                system.which("containerd-shim-runc-v2"), "containerd-shim-runc-v2", "containerd"
            ),
            ctr=need(system.which("ctr"), "ctr", "containerd"),
            runc=need(system.which("runc"), "runc", "runc"),
        )

    def cni_plugins(self) -> list[Path]:
        return sorted(p for p in self.cni_dir.iterdir() if p.is_file())

    def fingerprint(self) -> list[tuple[str, int, int]]:
        paths = [
            self.busybox,
            self.kubectl,
            self.containerd,
            self.containerd_shim,
            self.ctr,
            self.runc,
            *self.cni_plugins(),
        ]
        return [(str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in paths]


def _data(name: str) -> bytes:
    return (resources.files("airlock_lab") / "data" / name).read_bytes()


Components = dict[tuple[str, str], Built]  # (recipe key, goarch) -> its cached build


def _cache_key(
    inputs: _DebianInputs,
    versions: Sequence[str],
    comps: Components,
    roots: dict[str, debroot.DebianRoot],
) -> str:
    """Changes when anything that shapes the build changes: code, data, Debian binaries, and
    the component builds and Debian roots (their directories are named by their own keys)."""
    h = hashlib.sha256(_BUILD_FORMAT.encode())
    built = sorted(str(b.dir) for b in comps.values())
    unpacked = sorted((str(r.root), sorted(r.versions.items())) for r in roots.values())
    h.update(json.dumps([list(versions), inputs.fingerprint(), built, unpacked]).encode())
    here = Path(__file__).parent
    for module in ("debroot.py", "imagebuild.py", "realimages.py", "standins.py", "upstream.py"):
        h.update((here / module).read_bytes())
    for name in _DATA_FILES:
        h.update(_data(name))
    return h.hexdigest()[:16]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.lstrip("v").split("-")[0].split("."))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock: xdist workers sharing a cache build it once, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- files --------------------------------------------------------------------------------


def _sha256_hex(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sha512_hex(path: Path) -> str:
    h = hashlib.sha512()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _put(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    write_atomic(path, data, mode=mode)
    return path


def _copy(src: Path, dst: Path) -> Path:
    # A copy, never a hard link: a test that corrupts a served file must not touch /usr/bin.
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)
    return dst


def _sum_line(path: Path) -> bytes:
    return f"{_sha256_hex(path)}  {path.name}\n".encode()


def release_signing_key() -> Ed25519PrivateKey:
    """The simulated upstream's release key (a fixed seed: builds stay cacheable and the
    public key is known to tests; it signs nothing outside the lab)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"airlock lab release key").digest())


def release_public_key_pem() -> bytes:
    return (
        release_signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _sha1_hex(path: Path) -> str:
    h = hashlib.sha1()  # the CNI release publishes a .sha1 beside the others
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _arches(comps: Components, key: str) -> list[tuple[str, Built]]:
    return sorted((arch, b) for (k, arch), b in comps.items() if k == key)


def _signed_release_binary(path: Path) -> None:
    """dl.k8s.io's checksum files hold the hex only; the `.sig` is a detached signature as
    `cosign sign-blob --key` writes it (base64), beside the binary."""
    _put(path.with_name(path.name + ".sha256"), _sha256_hex(path).encode())
    _put(path.with_name(path.name + ".sha512"), _sha512_hex(path).encode())
    sig = release_signing_key().sign(path.read_bytes())
    _put(path.with_name(path.name + ".sig"), base64.b64encode(sig))


def _build_kubernetes(
    root: Path, inputs: _DebianInputs, versions: Sequence[str], comps: Components
) -> None:
    release = root / "dl.k8s.io" / "release"
    for v in versions:
        real = _arches(comps, f"kubernetes-{v}")
        constants = (
            root
            / "raw.githubusercontent.com"
            / (f"kubernetes/kubernetes/{v}/cmd/kubeadm/app/constants/constants.go")
        )
        if real:
            # the release binaries of every command, as the release bucket holds them
            for arch, built in real:
                for command in built.recipe.commands:
                    dst = _copy(
                        built.path(command.name),
                        release / v / "bin" / "linux" / arch / command.name,
                    )
                    _signed_release_binary(dst)
            source = components.source_dir(real[0][1], "k8s.io/kubernetes")
            _copy_file(source / "cmd/kubeadm/app/constants/constants.go", constants)
            continue
        # A version with no component build: labelled stand-ins (kubeadm, kubelet) and
        # Debian's kubectl.
        bindir = release / v / "bin" / "linux" / "amd64"
        for b in (
            _put(bindir / "kubeadm", standins.kubeadm_script(v), mode=0o755),
            _put(bindir / "kubelet", standins.kubelet_script(v), mode=0o755),
            _copy(inputs.kubectl, bindir / "kubectl"),
        ):
            _signed_release_binary(b)
        _put(constants, standins.kubeadm_constants_go(v))
    minors: dict[str, str] = {}
    for v in sorted(versions, key=_version_key):
        minors[".".join(v.split(".")[:2])] = v
    for minor, latest in minors.items():
        _put(release / f"stable-{minor.lstrip('v')}.txt", latest.encode())


def _copy_file(src: Path, dst: Path) -> Path:
    """A plain (non-executable) copy out of Go's read-only module cache."""
    _put(dst, src.read_bytes())
    return dst


def _build_cni(gh: Path, comps: Components) -> None:
    # scripts/release.sh at v1.3.0: `tar -C bin -caf cni-plugins-linux-$arch-$TAG.tgz .` of
    # every plugin, then `.sha1`, `.sha256`, `.sha512` files as sha*sum writes them.
    for arch, built in _arches(comps, f"cni-plugins-{CNI_VERSION}"):
        cni = (
            gh
            / "containernetworking/plugins/releases/download"
            / CNI_VERSION
            / f"cni-plugins-linux-{arch}-{CNI_VERSION}.tgz"
        )
        write_tgz(
            cni,
            [
                TarEntry(c.name, source=built.path(c.name), mode=0o755)
                for c in built.recipe.commands
            ],
            dot_root=True,
        )
        _put(cni.with_name(cni.name + ".sha1"), f"{_sha1_hex(cni)}  {cni.name}\n".encode())
        _put(cni.with_name(cni.name + ".sha256"), _sum_line(cni))
        _put(cni.with_name(cni.name + ".sha512"), f"{_sha512_hex(cni)}  {cni.name}\n".encode())


def _build_helm(root: Path, comps: Components) -> None:
    # helm's Makefile at v3.12.2: `dist` packs linux-$arch/{helm,LICENSE,README.md}; `checksum`
    # writes `.sha256sum` (hash  name) and `.sha256` (hash only).
    for arch, built in _arches(comps, f"helm-{standins.HELM_VERSION}"):
        source = components.source_dir(built, "helm.sh/helm/v3")
        helm = root / "get.helm.sh" / f"helm-{standins.HELM_VERSION}-linux-{arch}.tar.gz"
        write_tgz(
            helm,
            [
                TarEntry(f"linux-{arch}/helm", source=built.path("helm"), mode=0o755),
                TarEntry(f"linux-{arch}/LICENSE", source=source / "LICENSE"),
                TarEntry(f"linux-{arch}/README.md", source=source / "README.md"),
            ],
        )
        _put(helm.with_name(helm.name + ".sha256sum"), _sum_line(helm))
        _put(helm.with_name(helm.name + ".sha256"), _sha256_hex(helm).encode())


def _build_k9s(gh: Path, comps: Components) -> None:
    # .goreleaser.yml at v0.27.4: archives `k9s_{{ .Os }}_{{ .Arch }}` (linux -> Linux) with
    # goreleaser's default extra files (LICENSE*, README*), one `checksums.txt` for all.
    k9s_dir = gh / "derailed/k9s/releases/download" / standins.K9S_VERSION
    sums = b""
    for arch, built in _arches(comps, f"k9s-{standins.K9S_VERSION}"):
        source = components.source_dir(built, "github.com/derailed/k9s")
        k9s = k9s_dir / f"k9s_Linux_{arch}.tar.gz"
        write_tgz(
            k9s,
            [
                TarEntry("k9s", source=built.path("k9s"), mode=0o755),
                TarEntry("LICENSE", source=source / "LICENSE"),
                TarEntry("README.md", source=source / "README.md"),
            ],
        )
        sums += _sum_line(k9s)
    if sums:
        _put(k9s_dir / "checksums.txt", sums)


def _build_flannel(gh: Path, comps: Components) -> None:
    # The release's kube-flannel.yml is Documentation/kube-flannel.yml of the tag; the Makefile's
    # tar.gz target packs flanneld, mk-docker-opts.sh and README.md per architecture.
    download = gh / "flannel-io/flannel/releases/download" / FLANNEL_VERSION
    real = _arches(comps, f"flannel-{FLANNEL_VERSION}")
    if not real:
        _put(download / "kube-flannel.yml", _data("upstream-kube-flannel.yml"))
        return
    source = components.source_dir(real[0][1], "github.com/flannel-io/flannel")
    _copy_file(source / "Documentation/kube-flannel.yml", download / "kube-flannel.yml")
    for arch, built in real:
        tgz = download / f"flannel-{FLANNEL_VERSION}-linux-{arch}.tar.gz"
        write_tgz(
            tgz,
            [
                TarEntry("flanneld", source=built.path("flanneld"), mode=0o755),
                TarEntry("mk-docker-opts.sh", source=source / "dist/mk-docker-opts.sh", mode=0o755),
                TarEntry("README.md", source=source / "README.md"),
            ],
        )


def _build_files(
    root: Path, inputs: _DebianInputs, versions: Sequence[str], comps: Components
) -> None:
    """The upstream file hosts, as `root/<host>/<path>` (see the module docstring)."""
    _build_kubernetes(root, inputs, versions, comps)
    gh = root / "github.com"
    _build_cni(gh, comps)

    # crictl v1.27.0 is not served by the module proxy these machines reach: a stand-in.
    crictl_dir = gh / "kubernetes-sigs/cri-tools/releases/download" / standins.CRICTL_VERSION
    crictl = crictl_dir / f"crictl-{standins.CRICTL_VERSION}-linux-amd64.tar.gz"
    write_tgz(crictl, [TarEntry("crictl", data=standins.crictl_script(), mode=0o755)])
    _put(crictl.with_name(crictl.name + ".sha256"), _sha256_hex(crictl).encode())

    # containerd: Debian's real binaries (Debian's own version, served under 1.7.2's name).
    ctrd_dir = gh / "containerd/containerd/releases/download" / f"v{CONTAINERD_VERSION}"
    ctrd = ctrd_dir / f"containerd-{CONTAINERD_VERSION}-linux-amd64.tar.gz"
    write_tgz(
        ctrd,
        [
            TarEntry("bin/containerd", source=inputs.containerd, mode=0o755),
            TarEntry("bin/containerd-shim-runc-v2", source=inputs.containerd_shim, mode=0o755),
            TarEntry("bin/ctr", source=inputs.ctr, mode=0o755),
        ],
    )
    _put(ctrd.with_name(ctrd.name + ".sha256sum"), _sum_line(ctrd))

    runc = _copy(
        inputs.runc, gh / "opencontainers/runc/releases/download" / RUNC_VERSION / "runc.amd64"
    )
    _put(runc.with_name("runc.sha256sum"), _sum_line(runc))

    _build_k9s(gh, comps)
    _build_flannel(gh, comps)
    _build_helm(root, comps)

    templates = (
        root
        / "raw.githubusercontent.com/kubernetes/release"
        / KUBEPKG_VERSION
        / "cmd/kubepkg/templates/latest/deb"
    )
    _put(
        templates / "kubelet/lib/systemd/system/kubelet.service", _data("upstream-kubelet.service")
    )
    _put(templates / "kubeadm/10-kubeadm.conf", _data("upstream-10-kubeadm.conf"))

    _build_chart_repo(root / "stefanprodan.github.io" / "podinfo")


def _build_chart_repo(repo: Path) -> None:
    version = PODINFO_CHART_VERSION
    chart = repo / f"podinfo-{version}.tgz"
    write_tgz(
        chart,
        [
            TarEntry("podinfo/Chart.yaml", data=_data("upstream-podinfo-Chart.yaml")),
            TarEntry("podinfo/values.yaml", data=_data("upstream-podinfo-values.yaml")),
            TarEntry(
                "podinfo/templates/deployment.yaml",
                data=_data("upstream-podinfo-deployment.yaml"),
            ),
            TarEntry("podinfo/templates/service.yaml", data=_data("upstream-podinfo-service.yaml")),
        ],
    )
    image = f"ghcr.io/stefanprodan/podinfo:{version}"
    # The shape `helm repo index` writes; URLs are absolute upstream URLs, as on the real site.
    index = (
        "apiVersion: v1\n"
        "entries:\n"
        "  podinfo:\n"
        "  - annotations:\n"
        "      artifacthub.io/images: |\n"
        "        - name: podinfo\n"
        f"          image: {image}\n"
        "    apiVersion: v2\n"
        f"    appVersion: {version}\n"
        '    created: "2023-06-26T10:00:00.000000000Z"\n'
        "    description: Podinfo Helm chart for Kubernetes\n"
        f"    digest: {_sha256_hex(chart)}\n"
        "    home: https://github.com/stefanprodan/podinfo\n"
        '    kubeVersion: ">=1.23.0-0"\n'
        "    maintainers:\n"
        "    - email: stefanprodan@users.noreply.github.com\n"
        "      name: stefanprodan\n"
        "    name: podinfo\n"
        "    sources:\n"
        "    - https://github.com/stefanprodan/podinfo\n"
        "    urls:\n"
        f"    - https://stefanprodan.github.io/podinfo/podinfo-{version}.tgz\n"
        f"    version: {version}\n"
        'generated: "2023-06-26T10:00:00.000000000Z"\n'
    )
    _put(repo / "index.yaml", index.encode())


# --- the file server ----------------------------------------------------------------------


class _FileServer:
    """aiohttp static files (Range, HEAD) under `root`, in its own thread, on a socket bound
    in the upstream's namespace."""

    def __init__(self, root: Path, *, netns: str, address: str, port: int = FILES_PORT) -> None:
        self.root = root
        self.netns = netns
        self.address = address
        self.port = port
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    async def _record(self, request: web.Request, response: web.StreamResponse) -> None:
        # on_response_prepare sees the final status (a Range answer is 206 only by then).
        record = RequestRecord(
            request.remote or "",
            request.method,
            request.path,
            response.status,
            request.headers.get("Range"),
        )
        with self._lock:
            self._records.append(record)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        if not parts or any(p in (".", "..") or "\\" in p for p in parts):
            raise web.HTTPNotFound()
        path = self.root.joinpath(*parts)
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    def start(self) -> None:
        sock = bound_socket(self.netns, self.address, self.port)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []
        app = web.Application()
        app.on_response_prepare.append(self._record)
        app.router.add_get("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)

        async def setup() -> None:
            await runner.setup()
            await web.SockSite(runner, sock).start()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(setup())
            except BaseException as exc:  # reported to start() below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="airlock-upstream-files", daemon=True)
        self._thread.start()
        if not started.wait(30) or failure:
            sock.close()
            raise AirlockError(
                f"the upstream file server did not start: {failure[0] if failure else 'timeout'}"
            )

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._thread = None
        self._loop = None


# --- registries ---------------------------------------------------------------------------


def _push(image: imagebuild.BuiltImage, layout: Path, registry: Distribution) -> None:
    ref = parse_reference(image.ref)
    argv = ["skopeo", "copy", "--all", "--quiet", "--dest-tls-verify=false"]
    if image.push_as == "docker":
        argv += ["--format", "v2s2"]
    dest = f"docker://{registry.address}:{registry.port}/{ref.repository}:{ref.tag}"
    system.run([*argv, f"oci:{layout}:{image.ref}", dest], timeout=300)


# --- the upstream -------------------------------------------------------------------------


class Upstream:
    """A started simulated upstream. Use `Upstream.start(...)`, then `stop()` (or `with`)."""

    def __init__(
        self,
        *,
        workdir: Path,
        build_dir: Path,
        run_dir: Path,
        kubernetes_versions: tuple[str, ...],
        platforms: tuple[str, ...],
        images: list[str],
        file_server: _FileServer,
        registry_procs: dict[str, Distribution],
        internet: Internet,
        in_use: TextIO | None = None,
    ) -> None:
        self.workdir = workdir
        self.build_dir = build_dir
        self.run_dir = run_dir
        self.kubernetes_versions = kubernetes_versions
        self.platforms = platforms
        self.images = images
        self._files = file_server
        self._registries = registry_procs
        self.internet = internet
        self._in_use = in_use

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        kubernetes_versions: Sequence[str] = DEFAULT_KUBERNETES_VERSIONS,
        platforms: Sequence[str] = DEFAULT_PLATFORMS,
        progress: components.Progress | None = None,
    ) -> Upstream:
        """Build (or reuse the cached build), start the registries and the file server.

        The real components are built first (`components.build`, cached under the user's
        cache directory) for every platform in `platforms`.
        """
        versions = tuple(kubernetes_versions)
        sets = components.sets_for(versions)
        built_versions = {r.version for r in components.recipes(sets) if r.name == "kubernetes"}
        for v in versions:
            if v not in built_versions:
                standins.kubeadm_images(v)  # refuse unknown versions before any work
        workdir = Path(workdir).resolve()
        inputs = _DebianInputs.find()
        if system.which("skopeo") is None:
            raise UsageError(
                "skopeo not found: the simulated upstream pushes its images with it",
                "apt-get install skopeo",
            )
        comps = {
            (b.recipe.key, b.goarch): b
            for b in components.build(sets, platforms=platforms, progress=progress)
        }
        roots = {arch: debroot.unpacked_root(arch) for arch in sorted({a for _, a in comps})}
        build_dir = workdir / f"build-{_cache_key(inputs, versions, comps, roots)}"
        run_dir = workdir / "run" / f"{os.getpid()}-{secrets.token_hex(4)}"
        run_dir.mkdir(parents=True)
        registries: dict[str, Distribution] = {}
        files: _FileServer | None = None
        built: list[imagebuild.BuiltImage] = []
        in_use: TextIO | None = None
        net = internet_up(("files", *REGISTRY_HOSTS))
        try:
            with _locked(workdir / ".lock"):
                _prune_stale_builds(workdir, keep=build_dir)
                complete = (build_dir / _COMPLETE).exists()
                if not complete:
                    shutil.rmtree(build_dir, ignore_errors=True)
                    build_dir.mkdir(parents=True)
                    built = _build_images(build_dir / "oci", inputs, versions, comps, roots)
                    _build_files(build_dir / "files", inputs, versions, comps)
                for host in REGISTRY_HOSTS:
                    registries[host] = start_distribution(
                        host,
                        build_dir / "registry" / host,
                        run_dir,
                        address=net.addresses[host],
                        netns=net.netns,
                        port=REGISTRY_PORT,
                    )
                if not complete:
                    _push_all(built, build_dir / "oci", registries)
                    state = {"images": [i.ref for i in built], "versions": list(versions)}
                    _put(build_dir / _STATE, json.dumps(state, indent=2).encode())
                    _put(build_dir / _COMPLETE, b"")
                (build_dir / _LAST_USED).touch()
                in_use = _hold_in_use(build_dir)
            images = list(json.loads((build_dir / _STATE).read_text())["images"])
            files = _FileServer(
                build_dir / "files", netns=net.netns, address=net.addresses["files"]
            )
            files.start()
        except BaseException:
            if in_use is not None:
                in_use.close()
            for reg in registries.values():
                reg.process.stop()
            if files is not None:
                files.stop()
            internet_down(net)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return cls(
            workdir=workdir,
            build_dir=build_dir,
            run_dir=run_dir,
            kubernetes_versions=versions,
            platforms=tuple(platforms),
            images=images,
            file_server=files,
            registry_procs=registries,
            internet=net,
            in_use=in_use,
        )

    def stop(self) -> None:
        """Stop the registries (their whole process groups) and the file server."""
        for reg in self._registries.values():
            reg.process.stop()
        self._files.stop()
        internet_down(self.internet)
        if self._in_use is not None:
            self._in_use.close()
            self._in_use = None
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Upstream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests and the CLI read --

    @property
    def files_url(self) -> str:
        return f"http://{self._files.address}:{self._files.port}/"

    @property
    def addresses(self) -> list[str]:
        """Every address the upstream listens on (files first, then the registries)."""
        return list(self.internet.addresses.values())

    @property
    def files_root(self) -> Path:
        """The served tree (`<host>/<path>`). Read it; do not change it: it is a shared cache."""
        return self.build_dir / "files"

    @property
    def layout(self) -> OciLayout:
        """The OCI layout the images were built in (before the push; docker-flavoured images
        are converted to v2s2 on push, so their registry digests differ from these)."""
        return OciLayout(self.build_dir / "oci")

    def release_key(self, dest: Path) -> Path:
        """Write the upstream's release public key (PEM) to `dest`: the spec's verify key."""
        dest.write_bytes(release_public_key_pem())
        return dest

    @property
    def registries(self) -> dict[str, str]:
        """Upstream registry host -> `http://ADDRESS:5000` (in the upstream's namespace)."""
        return {host: reg.url for host, reg in self._registries.items()}

    @property
    def registry_logs(self) -> dict[str, Path]:
        return {host: reg.log for host, reg in self._registries.items()}

    @property
    def pids(self) -> list[int]:
        return [reg.process.pid for reg in self._registries.values()]

    @property
    def request_log(self) -> list[RequestRecord]:
        return self._files.records

    def requests_by_source(self) -> dict[str, int]:
        """Requests answered so far, by client address: the file server's own records and
        each registry's access log (one line per request, the client's address first)."""
        counts: dict[str, int] = {}
        for record in self._files.records:
            counts[record.remote] = counts.get(record.remote, 0) + 1
        for log in self.registry_logs.values():
            for source in _registry_sources(log):
                counts[source] = counts.get(source, 0) + 1
        return dict(sorted(counts.items()))

    def alive(self) -> bool:
        return all(reg.process.alive() for reg in self._registries.values())

    def sources(self) -> dict[str, Any]:
        """The spec's `sources:` block that points airlock at this upstream."""
        return {
            "files": {f"https://{h}/": f"{self.files_url}{h}/" for h in FILE_HOSTS},
            "registries": {
                host: {"url": url, "insecure": True} for host, url in self.registries.items()
            },
        }

    def mirror_url(self, upstream_url: str) -> str:
        """`https://dl.k8s.io/release/...` -> the same file on this upstream."""
        for prefix, mirror in self.sources()["files"].items():
            if upstream_url.startswith(prefix):
                return str(mirror) + upstream_url[len(prefix) :]
        raise UsageError(f"{upstream_url} is not served by the simulated upstream")

    def local_path(self, upstream_url: str) -> Path:
        """The served file behind an upstream URL (for checks; do not modify it)."""
        for host in FILE_HOSTS:
            prefix = f"https://{host}/"
            if upstream_url.startswith(prefix):
                return self.files_root / host / upstream_url[len(prefix) :]
        raise UsageError(f"{upstream_url} is not served by the simulated upstream")


_ACCESS_LINE = re.compile(r'^(\d{1,3}(?:\.\d{1,3}){3}) - \S+ \[[^\]]*\] "[A-Z]+ /')


def _registry_sources(log: Path) -> list[str]:
    """Client addresses of the access-log lines of one docker-registry (combined log format)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [m.group(1) for line in text.splitlines() if (m := _ACCESS_LINE.match(line))]


def _build_images(
    layout_dir: Path,
    inputs: _DebianInputs,
    versions: Sequence[str],
    comps: Components,
    roots: dict[str, debroot.DebianRoot],
) -> list[imagebuild.BuiltImage]:
    """The real images where a component build makes them, labelled stand-ins for the rest
    (podinfo, the registry, Kubernetes versions without a build)."""
    layout = OciLayout(layout_dir)
    etcd = sorted({b.recipe.version.lstrip("v") for b in comps.values() if b.recipe.name == "etcd"})
    wanted = realimages.real_images(versions, etcd)
    builder = imagebuild.ImageBuilder(layout)
    real = realimages.build_real_images(
        builder,
        wanted,
        comps,
        busybox=imagebuild.busybox_base_layer(inputs.busybox),
        net_tools={arch: debroot.net_tools_layer(root) for arch, root in roots.items()},
    )
    standin = imagebuild.build_seed_images(
        layout,
        kubernetes_versions=versions,
        busybox=inputs.busybox,
        replaced={i.ref for i in real},
    )
    order = {ref: n for n, ref in enumerate(imagebuild.seed_image_refs(versions))}
    return sorted([*real, *standin], key=lambda i: order.get(i.ref, len(order)))


def _push_all(
    images: Sequence[imagebuild.BuiltImage], layout: Path, registries: dict[str, Distribution]
) -> None:
    def one(image: imagebuild.BuiltImage) -> None:
        host = parse_reference(image.ref).registry
        _push(image, layout, registries[host])

    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(one, image) for image in images]:
            future.result()


def _hold_in_use(build_dir: Path) -> TextIO:
    """A shared lock held while an upstream serves this build, so pruning never removes it."""
    fh = (build_dir / _IN_USE).open("a")
    fcntl.flock(fh, fcntl.LOCK_SH)
    return fh


def _prune_stale_builds(workdir: Path, *, keep: Path) -> None:
    """Drop builds of older code (they are large) that nobody serves or used for a while."""
    now = time.time()
    for old in workdir.glob("build-*"):
        if old == keep or not old.is_dir():
            continue
        marker = old / _LAST_USED
        used = marker.stat().st_mtime if marker.exists() else old.stat().st_mtime
        if now - used <= _STALE_BUILD_SECONDS:
            continue
        with (old / _IN_USE).open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running upstream still serves it
            shutil.rmtree(old, ignore_errors=True)


def _sources_yaml(sources: dict[str, Any]) -> str:
    lines = ["sources:", "  files:"]
    lines += [f'    "{k}": "{v}"' for k, v in sources["files"].items()]
    lines.append("  registries:")
    for host, reg in sources["registries"].items():
        lines.append(f'    {host}: {{url: "{reg["url"]}", insecure: true}}')
    return "\n".join(lines) + "\n"


def serve_forever(
    workdir: Path,
    *,
    sources_out: Path | None = None,
    ready: Callable[[Upstream], None] | None = None,
    kubernetes_versions: Sequence[str] = DEFAULT_KUBERNETES_VERSIONS,
    stop_event: threading.Event | None = None,
) -> None:
    """Run the upstream until SIGINT/SIGTERM (or `stop_event`), then stop it cleanly.

    `sources_out` receives the spec's `sources:` block (YAML) once everything is ready; `ready`
    is called with the started upstream (the CLI prints its URLs there).
    """
    stop = stop_event or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        with Upstream.start(workdir, kubernetes_versions=kubernetes_versions) as up:
            if sources_out is not None:
                _put(Path(sources_out), _sources_yaml(up.sources()).encode())
            if ready is not None:
                ready(up)
            while not stop.wait(1.0):
                dead = [r for r in up._registries.values() if not r.process.alive()]
                if dead:
                    tail = dead[0].log.read_text(errors="replace")[-1500:].strip()
                    raise SystemCommandError(
                        f"the simulated upstream's registry for {dead[0].host} exited: {tail}",
                        hint="start it again; the build is cached, so that takes seconds",
                    )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
