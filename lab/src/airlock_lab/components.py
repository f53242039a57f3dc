"""The seed's real components, built from their published Go modules (and pause.c with gcc).

`lab/components/<name>/<version>/` holds one small Go module per component: a go.mod with the
`require` (and, for Kubernetes, the staging `replace`) lines, its go.sum, and a `tools.go` that
names the commands; no upstream source is copied. `build` runs `go build` on it with the flags
the upstream release builds use (`-ldflags -X` version stamps, CGO_ENABLED=0, `-trimpath`),
and keeps the binaries under the user's cache directory, keyed by the module's go.mod/go.sum,
GOOS/GOARCH and a hash of the recipe, next to Go's own module and build caches. A warm run
only checks the keys.

Where a component cannot be built at its seed version here, its recipe says so in `note`
(docs/components.md gathers them); the module proxy these machines reach serves a subset of
modules, so some versions are substitutes, never silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from airlock import system
from airlock.errors import SystemCommandError, UsageError

__all__ = [
    "COMPONENTS_DIR",
    "MIN_GO",
    "Built",
    "Progress",
    "Recipe",
    "build",
    "build_one",
    "cache_root",
    "check_go",
    "recipe_key",
    "recipes",
    "sets_for",
    "source_dir",
]

MIN_GO = (1, 26)
COMPONENTS_DIR = Path(__file__).resolve().parents[2] / "components"
_FORMAT = "airlock-components-1"
_COMPLETE = "build.json"

Progress = Callable[[str, str], None]  # (component, message)


@dataclass(frozen=True)
class Command:
    """One binary: its file name and the Go package (or `.` for the module's own main)."""

    name: str
    package: str


@dataclass(frozen=True)
class Recipe:
    """How one component is built: the module dir, the commands, the flags, the why."""

    name: str  # "kubernetes"
    version: str  # the version it is served under ("v1.27.3")
    module: str  # dir under COMPONENTS_DIR ("kubernetes/v1.27.3")
    commands: tuple[Command, ...]
    ldflags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    kind: str = "go"  # "go" or "gcc" (pause)
    cgo_arches: tuple[str, ...] = ()  # where upstream builds with cgo (statically linked)
    built_version: str = ""  # when a substitute version is built, which one
    note: str = ""  # a switch or a substitution, and why

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class Built:
    recipe: Recipe
    goos: str
    goarch: str
    dir: Path  # the cached output directory
    seconds: float  # 0.0 when taken from the cache
    cached: bool

    def path(self, command: str) -> Path:
        return self.dir / command


# --- recipes ---------------------------------------------------------------------------------

_K8S_COMMANDS = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
)

# Each release's commit and build date, as `kubectl version` of the upstream binary reports
# (v1.28.15: the tag's commit and its time, as the module proxy's .info records them).
_K8S_RELEASES = {
    "v1.27.3": ("25b4e43193bcda6c7328a6d147b1fb73a33f1598", "2023-06-14T09:53:42Z"),
    "v1.28.15": ("841856557ef0f6a399096c42635d114d6f2cf7f4", "2024-10-22T20:26:26Z"),
}


def _kubernetes(version: str) -> Recipe:
    # hack/lib/version.sh (kube::version::ldflags) stamps both packages; hack/lib/golang.sh
    # adds -s -w unless DBG=1.
    commit, date = _K8S_RELEASES.get(version, ("", "1970-01-01T00:00:00Z"))
    major, minor = version.lstrip("v").split(".")[:2]
    flags: list[str] = []
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        for var, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitCommit", commit),
            ("gitTreeState", "clean"),
            ("buildDate", date),
        ):
            flags.append(f"-X {pkg}.{var}={value}")
    return Recipe(
        "kubernetes",
        version,
        f"kubernetes/{version}",
        tuple(Command(c, f"k8s.io/kubernetes/cmd/{c}") for c in _K8S_COMMANDS),
        tuple(flags),
        note="-checklinkname=0: Go 1.26's linker refuses the runtime linknames of this "
        "release's dependencies otherwise",
    )


def _etcd(version: str) -> Recipe:
    return Recipe(
        "etcd",
        version,
        f"etcd/{version}",
        (
            Command("etcd", "go.etcd.io/etcd/server/v3"),
            Command("etcdctl", "go.etcd.io/etcd/etcdctl/v3"),
            Command("etcdutl", "go.etcd.io/etcd/etcdutl/v3"),
        ),
    )


def _seed() -> list[Recipe]:
    return [
        _kubernetes("v1.27.3"),
        _etcd("v3.5.7"),
        Recipe(
            "coredns",
            "v1.10.1",
            "coredns/v1.10.1",
            (Command("coredns", "."),),
            note="built without the `trace` plugin: its DataDog tracer needs inet.af/netaddr, "
            "which the module proxy here does not serve (lab/components/coredns/v1.10.1/main.go "
            "lists the other plugins of core/plugin/zplugin.go)",
        ),
        Recipe(
            "pause",
            "3.9",
            "kubernetes/v1.27.3",
            (Command("pause", "build/pause/linux/pause.c"),),
            kind="gcc",
            note="build/pause/linux/pause.c from the k8s.io/kubernetes v1.27.3 module, "
            "gcc -Os -Wall -Werror -static as build/pause/Makefile does",
        ),
        Recipe(
            "flannel",
            "v0.22.0",
            "flannel/v0.22.0",
            (Command("flanneld", "github.com/flannel-io/flannel"),),
            (
                "-X github.com/flannel-io/flannel/pkg/version.Version=v0.22.0",
                "-extldflags=-static",
            ),
            cgo_arches=("amd64",),
            note="the checksum database does not answer for this version; go.sum pins it."
            " amd64 with cgo (the udp backend's C proxy) and -extldflags=-static, as its"
            " Makefile builds it",
        ),
        Recipe(
            "flannel-cni-plugin",
            "v1.1.2",
            "flannel-cni-plugin/v0.9.1",
            (Command("flannel", "github.com/containernetworking/plugins/plugins/meta/flannel"),),
            (
                "-X github.com/containernetworking/plugins/pkg/utils/buildversion."
                "BuildVersion=v0.9.1",
            ),
            built_version="v0.9.1",
            note="github.com/flannel-io/cni-plugin is not served by the module proxy here; "
            "its source is the flannel meta plugin of github.com/containernetworking/plugins "
            "v0.9.1, which it was split from, built in its place",
        ),
        Recipe(
            "cni-plugins",
            "v1.3.0",
            "cni-plugins/v1.3.0",
            tuple(
                Command(name, f"github.com/containernetworking/plugins/plugins/{kind}/{name}")
                for kind, names in (
                    ("ipam", ("dhcp", "host-local", "static")),
                    (
                        "main",
                        ("bridge", "dummy", "host-device", "ipvlan", "loopback", "macvlan"),
                    ),
                    ("main", ("ptp", "tap", "vlan")),
                    ("meta", ("bandwidth", "firewall", "portmap", "sbr", "tuning", "vrf")),
                )
                for name in names
            ),
            (
                "-X github.com/containernetworking/plugins/pkg/utils/buildversion."
                "BuildVersion=v1.3.0",
            ),
        ),
        Recipe(
            "helm",
            "v3.12.2",
            "helm/v3.12.2",
            (Command("helm", "helm.sh/helm/v3/cmd/helm"),),
            (
                "-X helm.sh/helm/v3/internal/version.version=v3.12.2",
                "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
                "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
                "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=27",
                "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
                "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=27",
            ),
        ),
        Recipe(
            "k9s",
            "v0.27.4",
            "k9s/v0.27.4",
            (Command("k9s", "github.com/derailed/k9s"),),
            ("-X github.com/derailed/k9s/cmd.version=v0.27.4",),
        ),
    ]


def _current() -> list[Recipe]:
    return [
        _kubernetes("v1.34.1"),
        Recipe(
            "crictl",
            "v1.34.0",
            "crictl/v1.34.0",
            (Command("crictl", "sigs.k8s.io/cri-tools/cmd/crictl"),),
            ("-X sigs.k8s.io/cri-tools/pkg/version.Version=v1.34.0",),
        ),
    ]


def _upgrade() -> list[Recipe]:
    """The target of issue 18's upgrade test (v1.27.3 -> v1.28.x, in `make test-full`): the
    last v1.28 patch release and the etcd its kubeadm upgrades to (3.5.15-0); CoreDNS v1.10.1
    and pause 3.9 are the seed's."""
    return [_kubernetes("v1.28.15"), _etcd("v3.5.15")]


SETS: dict[str, Callable[[], list[Recipe]]] = {
    "seed": _seed,
    "current": _current,
    "upgrade": _upgrade,
}


def sets_for(kubernetes_versions: Sequence[str]) -> tuple[str, ...]:
    """The seed, plus every other set that builds one of `kubernetes_versions` (the upstream
    serves a version as real release binaries and images when a set builds it)."""
    wanted = set(kubernetes_versions)
    extra = [
        name
        for name, make in SETS.items()
        if name != "seed" and any(r.name == "kubernetes" and r.version in wanted for r in make())
    ]
    return ("seed", *extra)


def recipes(names: Sequence[str] = ("seed",)) -> list[Recipe]:
    out: list[Recipe] = []
    for name in names:
        if name not in SETS:
            raise UsageError(f"unknown component set {name!r}", f"one of: {', '.join(SETS)}")
        out += SETS[name]()
    return out


# --- the build -------------------------------------------------------------------------------


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airlock"


def _go_env(goos: str, goarch: str, recipe: Recipe) -> dict[str, str]:
    root = cache_root() / "go"
    return {
        "GOMODCACHE": str(root / "mod"),
        "GOCACHE": str(root / "build"),
        "GOFLAGS": "-mod=readonly -buildvcs=false",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "1" if goarch in recipe.cgo_arches else "0",
        "GOOS": goos,
        "GOARCH": goarch,
        **dict(recipe.env),
    }


def check_go() -> str:
    """The Go toolchain's version; fails with a reason below MIN_GO."""
    if system.which("go") is None:
        raise UsageError(
            "go not found: the lab builds the real components from their Go modules",
            f"install Go {MIN_GO[0]}.{MIN_GO[1]} or newer and put it on PATH",
        )
    version = system.run(["go", "env", "GOVERSION"], env={"GOTOOLCHAIN": "local"}).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", version)
    if not m or (int(m[1]), int(m[2])) < MIN_GO:
        raise UsageError(
            f"{version or 'go'} is too old to build the lab's components",
            f"install Go {MIN_GO[0]}.{MIN_GO[1]} or newer",
        )
    return version


def recipe_key(recipe: Recipe, goos: str, goarch: str, go_version: str) -> str:
    """Changes with the module (go.mod, go.sum, own sources), the recipe and the target."""
    h = hashlib.sha256(_FORMAT.encode())
    h.update(json.dumps([asdict(recipe), goos, goarch, go_version], sort_keys=True).encode())
    module = COMPONENTS_DIR / recipe.module
    for path in sorted(module.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go_build(recipe: Recipe, out: Path, env: dict[str, str]) -> None:
    ldflags = " ".join(("-s", "-w", "-checklinkname=0", *recipe.ldflags))
    module = COMPONENTS_DIR / recipe.module
    for command in recipe.commands:
        system.run(
            [
                "nice", "-n", "19", "go", "build", "-trimpath", "-ldflags", ldflags,
                "-o", str(out / command.name), command.package,
            ],
            env=env,
            cwd=module,
            timeout=None,
        )  # fmt: skip


def _module_dir(recipe: Recipe, env: dict[str, str], module: str) -> Path:
    """Where Go unpacked `module` (downloading it if need be) for this recipe's go.mod."""
    result = system.run(
        ["go", "mod", "download", "-json", module], env=env, cwd=COMPONENTS_DIR / recipe.module
    )
    return Path(json.loads(result.stdout)["Dir"])


def source_dir(built: Built, module: str) -> Path:
    """The upstream module's own files (read-only, in Go's module cache): manifests, licences,
    constants.go at the exact tag the component was built from."""
    return _module_dir(built.recipe, _go_env(built.goos, built.goarch, built.recipe), module)


def _gcc_build(recipe: Recipe, out: Path, env: dict[str, str], goarch: str) -> None:
    compilers = {"amd64": "gcc", "arm64": "aarch64-linux-gnu-gcc"}
    cc = compilers.get(goarch)
    if cc is None or system.which(cc) is None:
        raise UsageError(
            f"no C compiler for linux/{goarch}: pause is built with gcc",
            "apt-get install gcc-aarch64-linux-gnu" if goarch == "arm64" else "apt-get install gcc",
        )
    source_root = _module_dir(recipe, env, "k8s.io/kubernetes")
    for command in recipe.commands:
        system.run(
            [
                "nice", "-n", "19", cc, "-Os", "-Wall", "-Werror", "-static",
                f"-DVERSION=v{recipe.version}", "-o", str(out / command.name),
                str(source_root / command.package),
            ],
            timeout=600,
        )  # fmt: skip


def build_one(
    recipe: Recipe,
    *,
    goos: str = "linux",
    goarch: str = "amd64",
    go_version: str | None = None,
    progress: Progress | None = None,
) -> Built:
    """Build one component for one platform, or take it from the cache."""
    say = progress or (lambda _name, _msg: None)
    go_version = go_version or check_go()
    key = recipe_key(recipe, goos, goarch, go_version)
    out = cache_root() / "components" / f"{recipe.key}-{goos}-{goarch}-{key}"
    with _locked(out.with_name(out.name + ".lock")):
        if (out / _COMPLETE).is_file():
            say(recipe.key, f"cached ({goos}/{goarch})")
            return Built(recipe, goos, goarch, out, 0.0, True)
        say(recipe.key, f"building {len(recipe.commands)} command(s) for {goos}/{goarch}")
        tmp = out.with_name(out.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        env = _go_env(goos, goarch, recipe)
        started = time.monotonic()
        try:
            if recipe.kind == "gcc":
                _gcc_build(recipe, tmp, env, goarch)
            else:
                _go_build(recipe, tmp, env)
        except SystemCommandError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemCommandError(
                f"building {recipe.key} for {goos}/{goarch} failed: {exc.message}",
                hint=f"the module is {COMPONENTS_DIR / recipe.module}; its note: "
                f"{recipe.note or 'none'}",
            ) from exc
        seconds = time.monotonic() - started
        record = {
            "format": _FORMAT,
            "recipe": asdict(recipe),
            "goos": goos,
            "goarch": goarch,
            "go": go_version,
            "seconds": round(seconds, 1),
        }
        (tmp / _COMPLETE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        say(recipe.key, f"built in {seconds:.0f}s")
        return Built(recipe, goos, goarch, out, seconds, False)


def build(
    sets: Sequence[str] = ("seed",),
    *,
    platforms: Sequence[str] = ("linux/amd64",),
    progress: Progress | None = None,
) -> list[Built]:
    """Every recipe of `sets` for every platform, in order (Kubernetes first)."""
    go_version = check_go()
    out: list[Built] = []
    for platform in platforms:
        goos, _, goarch = platform.partition("/")
        for recipe in recipes(sets):
            out.append(
                build_one(
                    recipe, goos=goos, goarch=goarch, go_version=go_version, progress=progress
                )
            )
    return out
