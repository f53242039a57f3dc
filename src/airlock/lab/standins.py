"""Stand-ins for the software this machine cannot obtain (kubeadm, kubelet, crictl, helm, k9s,
the control-plane images), each one clearly named as such in its first lines.

A stand-in is a small `#!/bin/sh` script: it answers the few questions airlock asks of the real
program (`kubeadm version -o short`, `kubeadm config images list --kubernetes-version vX`,
`kubelet --version`, ...) exactly as the real one does, and refuses anything else with a message
that says it is a stand-in, so its success is never taken for a cluster. Image "binaries" carry a
deterministic pseudo-random payload after the script so that bundles have realistic weight.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence

from airlock.errors import UsageError

__all__ = [
    "CRICTL_VERSION",
    "HELM_VERSION",
    "K9S_VERSION",
    "KUBEADM_IMAGES",
    "REGISTRY_CONFIG",
    "STANDIN_MARKER",
    "crictl_script",
    "go_runner_script",
    "helm_script",
    "k9s_script",
    "kubeadm_constants_go",
    "kubeadm_images",
    "kubeadm_script",
    "kubelet_script",
    "pseudo_random",
    "standin_executable",
]

STANDIN_MARKER = "airlock STAND-IN"
CRICTL_VERSION = "v1.27.0"
HELM_VERSION = "v3.12.2"
K9S_VERSION = "v0.27.4"

# kubeadm's own image list per exact release (cmd/kubeadm/app/constants/constants.go at the tag).
# etcd and CoreDNS move in patch releases, so the key is the exact version, never the minor.
_KUBE_1_27_EXTRAS = ("pause:3.9", "etcd:3.5.7-0", "coredns/coredns:v1.10.1")
KUBEADM_IMAGES: dict[str, tuple[str, ...]] = {
    v: (
        f"kube-apiserver:{v}",
        f"kube-controller-manager:{v}",
        f"kube-scheduler:{v}",
        f"kube-proxy:{v}",
        *_KUBE_1_27_EXTRAS,
    )
    for v in ("v1.27.3", "v1.27.4")
}

REGISTRY_CONFIG = b"""version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def kubeadm_images(version: str, *, repository: str = "registry.k8s.io") -> list[str]:
    """What `kubeadm config images list --kubernetes-version VERSION` prints, in its order."""
    try:
        names = KUBEADM_IMAGES[version]
    except KeyError:
        known = ", ".join(sorted(KUBEADM_IMAGES))
        raise UsageError(
            f"the stand-in kubeadm table has no entry for {version}",
            f"known versions: {known}",
        ) from None
    # kubeadm drops CoreDNS's extra path segment for any repository but the default one.
    return [
        f"{repository}/{'coredns:' + n.split(':', 1)[1] if n.startswith('coredns/') and repository != 'registry.k8s.io' else n}"
        for n in names
    ]


def pseudo_random(seed: str, size: int) -> bytes:
    """`size` deterministic bytes derived from `seed` (SHAKE-256: fast and stable)."""
    return hashlib.shake_256(seed.encode()).digest(size) if size > 0 else b""


def _header(program: str, version: str) -> str:
    return (
        "#!/bin/sh\n"
        f"# {program} {version}: {STANDIN_MARKER}, not the real {program}.\n"
        "# Written by airlock's simulated upstream (airlock.lab.standins) for tests on a machine\n"
        f"# that cannot obtain {program}. Its success is never a real result.\n"
    )


def _refuse(program: str) -> str:
    return (
        f'echo "{program} stand-in (airlock): \\`{program} $*\\` is not simulated;'
        f' this is not the real {program}" >&2\n'
        "exit 64\n"
    )


def _sleep_forever() -> str:
    # PID 1 ignores SIGTERM unless it handles it: trap it, so `ctr task kill` ends us at once.
    return "trap 'exit 0' TERM INT\nwhile :; do /bin/busybox sleep 3600 & wait $!; done\nexit 0\n"


def go_runner_script() -> bytes:
    return (_header("go-runner", "v2.3.1") + 'exec "$@"\n').encode()


def _podinfo_body(version: str) -> str:
    doc = (
        '{\\n  "hostname": "%s",\\n  "version": "' + version + '",\\n'
        '  "revision": "airlock-standin",\\n  "message": "podinfo stand-in"\\n}\\n'
    )
    return (
        "port=9898\n"
        'for a in "$@"; do case "$a" in --port=*) port="${a#--port=}";; esac; done\n'
        "www=/tmp/www\n"
        'mkdir -p "$www"\n'
        f'printf \'{doc}\' "$(hostname)" > "$www/index.html"\n'
        'printf \'{"status":"OK"}\\n\' > "$www/healthz"\n'
        'cp "$www/healthz" "$www/readyz"\n'
        '/bin/busybox httpd -f -p "$port" -h "$www" &\n'
        "pid=$!\n"
        "trap 'kill $pid; exit 0' TERM INT\n"
        "wait $pid\n"
        "exit 0\n"
    )


def standin_executable(ref: str, *, platform: str, payload_size: int) -> bytes:
    """The entrypoint "binary" of a stand-in image: a script, then `payload_size` bytes of weight.

    The shell never reads past the final `exit`, so the payload is inert. podinfo serves HTTP
    on :9898 with busybox httpd; everything else waits for a signal.
    """
    name, _, version = ref.rpartition("/")[2].partition(":")
    body = _podinfo_body(version) if name == "podinfo" else _sleep_forever()
    script = _header(name, version) + f"# platform: {platform}\n" + body
    payload = pseudo_random(f"{ref}|{platform}", payload_size)
    return script.encode() + (b"\n# payload (pseudo-random weight)\n" + payload if payload else b"")


def kubeadm_script(version: str) -> bytes:
    """kubeadm stand-in for `version`: `version [-o short]`, `config images list [...]`."""
    kubeadm_images(version)  # refuse a version the table does not know
    table = [f"REPO/{n}" for n in KUBEADM_IMAGES[version]]
    own = "\n".join(table)
    cases = "".join(
        f"    {shlex.quote(v)}) list='{chr(10).join('REPO/' + n for n in KUBEADM_IMAGES[v])}' ;;\n"
        for v in sorted(KUBEADM_IMAGES)
    )
    major, minor = version.lstrip("v").split(".")[:2]
    info = (
        f'&version.Info{{Major:"{major}", Minor:"{minor}", GitVersion:"{version}", '
        'GitTreeState:"clean", GoVersion:"go1.20.5", Compiler:"gc", Platform:"linux/amd64"}'
    )
    return (
        _header("kubeadm", version) + "# It answers `kubeadm version [-o short]` and\n"
        "# `kubeadm config images list [--kubernetes-version vX.Y.Z] [--image-repository R]`.\n"
        f"VERSION={version}\n"
        'case "$1" in\n'
        "  version)\n"
        '    if [ "$2" = "-o" ] && [ "$3" = "short" ] || [ "$2" = "-o=short" ] || [ "$2" = "--output=short" ]; then\n'
        '      echo "$VERSION"\n'
        "    else\n"
        f"      echo 'kubeadm version: {info}'\n"
        "    fi\n"
        "    exit 0 ;;\n"
        "  config)\n"
        '    if [ "$2" = images ] && [ "$3" = list ]; then\n'
        "      shift 3\n"
        '      want="$VERSION"; repo=registry.k8s.io\n'
        "      while [ $# -gt 0 ]; do\n"
        '        case "$1" in\n'
        '          --kubernetes-version) want="$2"; shift 2 ;;\n'
        '          --kubernetes-version=*) want="${1#*=}"; shift ;;\n'
        '          --image-repository) repo="$2"; shift 2 ;;\n'
        '          --image-repository=*) repo="${1#*=}"; shift ;;\n'
        '          *) echo "kubeadm stand-in (airlock): unsupported flag $1" >&2; exit 64 ;;\n'
        "        esac\n"
        "      done\n"
        '      case "$want" in\n'
        f"{cases}"
        '        *) echo "kubeadm stand-in (airlock) $VERSION: no image table for $want" >&2; exit 64 ;;\n'
        "      esac\n"
        '      if [ "$repo" != registry.k8s.io ]; then list=$(echo "$list" | sed "s#^REPO/coredns/coredns:#REPO/coredns:#"); fi\n'
        '      echo "$list" | sed "s#^REPO/#$repo/#"\n'
        "      exit 0\n"
        "    fi ;;\n"
        "esac\n" + f"# own table: {own.replace(chr(10), ' ')}\n" + _refuse("kubeadm")
    ).encode()


def _version_only(program: str, version: str, answers: Sequence[tuple[str, str]]) -> bytes:
    """A stand-in that answers fixed argument strings with fixed output, refusing the rest."""
    cases = "".join(
        f"  {shlex.quote(args)}) echo {shlex.quote(out)}; exit 0 ;;\n" for args, out in answers
    )
    return (
        _header(program, version) + 'case "$*" in\n' + cases + "esac\n" + _refuse(program)
    ).encode()


def kubelet_script(version: str) -> bytes:
    return _version_only("kubelet", version, [("--version", f"Kubernetes {version}")])


def crictl_script(version: str = CRICTL_VERSION) -> bytes:
    out = f"crictl version {version}"
    return _version_only("crictl", version, [("--version", out), ("-v", out)])


def helm_script(version: str = HELM_VERSION) -> bytes:
    commit = "1e210a2c8cc5117d1055bfaa5d40f51bbc2e345e"
    full = (
        f'version.BuildInfo{{Version:"{version}", GitCommit:"{commit}", '
        'GitTreeState:"clean", GoVersion:"go1.20.5"}'
    )
    return _version_only(
        "helm", version, [("version", full), ("version --short", f"{version}+g{commit[:7]}")]
    )


def k9s_script(version: str = K9S_VERSION) -> bytes:
    return _version_only(
        "k9s", version, [("version -s", f"Version  {version}"), ("version", f"Version: {version}")]
    )


def kubeadm_constants_go(version: str) -> bytes:
    """An excerpt of kubeadm's constants.go at `version`, with the lines that pin its images."""
    names = dict(n.rsplit(":", 1) for n in KUBEADM_IMAGES[version])
    return (
        f"// {STANDIN_MARKER}: an excerpt of kubernetes/cmd/kubeadm/app/constants/constants.go at\n"
        f"// {version}, served by airlock's simulated upstream; only the image constants are kept.\n"
        "package constants\n\n"
        "const (\n"
        "\t// PauseVersion indicates the default pause image version for kubeadm\n"
        f'\tPauseVersion = "{names["pause"]}"\n\n'
        "\t// CoreDNSImageName specifies the name of the image for CoreDNS add-on\n"
        '\tCoreDNSImageName = "coredns"\n\n'
        "\t// CoreDNSVersion is the version of CoreDNS to be deployed if it is used\n"
        f'\tCoreDNSVersion = "{names["coredns/coredns"]}"\n\n'
        "\t// DefaultEtcdVersion indicates the default etcd version that kubeadm uses\n"
        f'\tDefaultEtcdVersion = "{names["etcd"]}"\n'
        ")\n"
    ).encode()
