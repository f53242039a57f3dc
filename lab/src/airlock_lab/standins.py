"""Stand-ins for the software this machine cannot obtain (kubeadm, kubelet, crictl, helm, k9s,
the control-plane images), each one clearly named as such in its first lines.

A stand-in is a small `#!/bin/sh` script: it answers the few questions airlock asks of the real
program (`kubeadm version -o short`, `kubeadm config images list --kubernetes-version vX`,
`kubelet --version`, ...) exactly as the real one does, and refuses anything else with a message
that says it is a stand-in, so its success is never taken for a cluster. Image "binaries" carry a
deterministic pseudo-random payload after the script so that bundles have realistic weight.

The kubeadm stand-in also plays the cluster lifecycle (`init --config`, `join`, `reset -f`,
`token create --print-join-command`, `upgrade plan|apply|node`): it checks the config it is given
against the field names of its kubeadm API version (v1beta3 below v1.31, v1beta4 from v1.31),
writes the files kubeadm writes (a real openssl CA, kubeconfigs, static Pod manifests) under
`$KUBEADM_STANDIN_ROOT`, and says "kubeadm-standin:" on every line, so its output is never taken
for a cluster. `KUBEADM_STANDIN_FAIL=init-phase-wait` makes `init` fail the way kubeadm fails when
the control plane never comes up; `KUBEADM_STANDIN_CLUSTER_CA=FILE` is the CA `join` checks the
pinned hash against (what a real kubeadm reads from the cluster-info ConfigMap). That part is a
stdlib-only Python program run by `python3`, which the offline side has anyway. The helm stand-in
checks `upgrade --install NAME CHART.tgz --set k=v` (a packaged chart with Chart.yaml, well-formed
values) and deploys nothing.
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
    "KUBEADM_STANDIN_CLUSTER_CA",
    "KUBEADM_STANDIN_FAIL",
    "KUBEADM_STANDIN_ROOT",
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
# The environment the kubeadm stand-in reads (tests aim it at a sysroot and a failure).
KUBEADM_STANDIN_ROOT = "KUBEADM_STANDIN_ROOT"
KUBEADM_STANDIN_FAIL = "KUBEADM_STANDIN_FAIL"
KUBEADM_STANDIN_CLUSTER_CA = "KUBEADM_STANDIN_CLUSTER_CA"
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
        "# Written by airlock's simulated upstream (airlock_lab.standins) for tests on a machine\n"
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


def _lifecycle_branch(version: str, images: Sequence[str]) -> str:
    """The `init|join|reset|token|upgrade` branch: the Python program, fed through a heredoc."""
    program = f"VERSION = {version!r}\nOWN_IMAGES = {list(images)!r}\n" + _KUBEADM_PROGRAM
    if "\nAIRLOCK_STANDIN_PY\n" in program:  # pragma: no cover - guards the heredoc
        raise AssertionError("the stand-in program contains its own heredoc terminator")
    return (
        "  init|join|reset|token|upgrade)\n"
        "    if ! command -v python3 >/dev/null 2>&1; then\n"
        '      echo "kubeadm stand-in (airlock): python3 is needed for $1" >&2; exit 69\n'
        "    fi\n"
        "    KUBEADM_STANDIN_PROGRAM=$(cat <<'AIRLOCK_STANDIN_PY'\n"
        f"{program}"
        "AIRLOCK_STANDIN_PY\n"
        ")\n"
        '    exec python3 -c "$KUBEADM_STANDIN_PROGRAM" "$@" ;;\n'
    )


def kubeadm_script(version: str, *, images: Sequence[str] | None = None) -> bytes:
    """kubeadm stand-in for `version`: `version [-o short]`, `config images list [...]`, and
    `init|join|reset|token|upgrade` (see the module docstring).

    `images` (names below registry.k8s.io, e.g. "etcd:3.5.15-0") lets a test make a stand-in for
    a version the image table does not know; without it such a version is refused.
    """
    own_images = tuple(images) if images is not None else None
    if own_images is None:
        kubeadm_images(version)  # refuse a version the table does not know
        own_images = KUBEADM_IMAGES[version]
    table = [f"REPO/{n}" for n in own_images]
    own = "\n".join(table)
    tables = {**KUBEADM_IMAGES, version: own_images}
    cases = "".join(
        f"    {shlex.quote(v)}) list='{chr(10).join('REPO/' + n for n in tables[v])}' ;;\n"
        for v in sorted(tables)
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
        + _lifecycle_branch(version, own_images)
        + "esac\n"
        + f"# own table: {own.replace(chr(10), ' ')}\n"
        + _refuse("kubeadm")
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
    answers = _version_only(
        "helm", version, [("version", full), ("version --short", f"{version}+g{commit[:7]}")]
    ).decode()
    head, _, refuse = answers.rpartition("esac\n")
    return (head + "esac\n" + _HELM_INSTALL + refuse).encode()


# `helm upgrade --install NAME CHART.tgz [--wait] [--set k=v,...]`: check, log, deploy nothing.
_HELM_INSTALL = r"""say() { echo "helm-standin: $*"; }
die() { echo "Error: $*" >&2; echo "helm-standin: failed (airlock stand-in: not the real helm)" >&2; exit 1; }
check_set() {
  old_ifs=$IFS; IFS=,; set -f
  for part in $1; do
    case "$part" in
      *=*) key=${part%%=*} ;;
      *) IFS=$old_ifs; set +f; die "failed parsing --set data: key \"$part\" has no value" ;;
    esac
    if ! printf '%s\n' "$key" | grep -Eq '^[A-Za-z0-9_][A-Za-z0-9_.-]*(\[[0-9]+\])?(\.[A-Za-z0-9_-]+(\[[0-9]+\])?)*$'; then
      IFS=$old_ifs; set +f; die "failed parsing --set data: bad key \"$key\""
    fi
  done
  IFS=$old_ifs; set +f
}
if [ "$1" = upgrade ] || [ "$1" = install ]; then
  cmd=$1; shift
  install=no; [ "$cmd" = install ] && install=yes
  release=; chart=; sets=; ns=default
  while [ $# -gt 0 ]; do
    case "$1" in
      --install|-i) install=yes; shift ;;
      --wait|--atomic|--create-namespace|--debug) shift ;;
      --namespace|-n) [ $# -ge 2 ] || die "flag needs an argument: $1"; ns=$2; shift 2 ;;
      --timeout|--kubeconfig|--kube-context)
        [ $# -ge 2 ] || die "flag needs an argument: $1"; shift 2 ;;
      --namespace=*) ns=${1#*=}; shift ;;
      --timeout=*|--kubeconfig=*|--kube-context=*) shift ;;
      --set|--set-string)
        [ $# -ge 2 ] || die "flag needs an argument: $1"; check_set "$2"; sets="$sets $2"; shift 2 ;;
      --set=*|--set-string=*) check_set "${1#*=}"; sets="$sets ${1#*=}"; shift ;;
      -*) die "unknown flag: $1" ;;
      *) if [ -z "$release" ]; then release=$1; elif [ -z "$chart" ]; then chart=$1;
         else die "\"helm $cmd\" requires 2 arguments"; fi; shift ;;
    esac
  done
  [ -n "$chart" ] || die "\"helm $cmd\" requires 2 arguments: NAME and CHART"
  [ "$install" = yes ] || die "UPGRADE FAILED: \"$release\" has no deployed releases (the stand-in needs --install)"
  printf '%s\n' "$release" | grep -Eq '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' \
    || die "invalid release name \"$release\": must be a lowercase DNS-1123 label"
  [ -f "$chart" ] || die "path \"$chart\" not found"
  case "$chart" in *.tgz|*.tar.gz) ;; *) die "the helm stand-in installs packaged charts (.tgz) only: $chart" ;; esac
  member=$(tar -tzf "$chart" 2>/dev/null | grep -E '^[^/]+/Chart\.yaml$' | head -n 1)
  [ -n "$member" ] || die "Chart.yaml file is missing in $chart"
  meta=$(tar -xzOf "$chart" "$member")
  name=$(printf '%s\n' "$meta" | sed -n 's/^name:[[:space:]]*//p' | head -n 1)
  cver=$(printf '%s\n' "$meta" | sed -n 's/^version:[[:space:]]*//p' | head -n 1)
  [ -n "$name" ] && [ -n "$cver" ] || die "validation: chart.metadata.name and version are required ($member)"
  say "release \"$release\" in namespace \"$ns\": chart $name $cver ($chart) is valid"
  say "values:${sets:- (none)}"
  say "NOTHING was deployed: this is airlock's helm stand-in, not the real helm"
  exit 0
fi
"""


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


# The lifecycle half of the kubeadm stand-in: stdlib-only Python (see `_lifecycle_branch`).
_KUBEADM_PROGRAM = r'''import base64, hashlib, ipaddress, json, os, re, secrets, shutil, subprocess, sys

ROOT = os.environ.get("KUBEADM_STANDIN_ROOT") or "/"
FAIL = os.environ.get("KUBEADM_STANDIN_FAIL", "")
NOTE = "airlock stand-in: this is not the real kubeadm, and nothing it reports is a cluster"
STATE = "/etc/kubernetes/.airlock-standin.json"
CRI_DEFAULT = "unix:///var/run/containerd/containerd.sock"


def say(line):
    print("kubeadm-standin: " + line, flush=True)


class Failed(Exception):
    pass


def host(path):
    return path if ROOT == "/" else os.path.join(ROOT, path.lstrip("/"))


def vtuple(v):
    m = re.match(r"^v(\d+)\.(\d+)\.(\d+)$", str(v or ""))
    return tuple(int(x) for x in m.groups()) if m else None


def api_for(v):
    return "kubeadm.k8s.io/v1beta4" if v[:2] >= (1, 31) else "kubeadm.k8s.io/v1beta3"


# --- a YAML reader for the subset kubeadm configs use (block maps and lists, flow scalars) ---


class YamlError(Exception):
    pass


def _strip_comment(s):
    out, q, i = [], None, 0
    while i < len(s):
        c = s[i]
        if q:
            if q == '"' and c == "\\":
                out.append(s[i : i + 2])
                i += 2
                continue
            if c == q:
                q = None
        elif c in "\"'" and (i == 0 or s[i - 1] in " \t:[{,-"):
            q = c
        elif c == "#" and (i == 0 or s[i - 1] in " \t"):
            break
        out.append(c)
        i += 1
    return "".join(out).rstrip()


def _is_item(s):
    return s == "-" or s.startswith("- ")


def _split_key(s):
    if not s or s[0] in "[{":
        return None
    if s[0] in "\"'":
        end = s.find(s[0], 1)
        rest = s[end + 1 :] if end > 0 else ""
        if end > 0 and rest.startswith(":") and (len(rest) == 1 or rest[1] == " "):
            return s[1:end], rest[1:].strip()
        return None
    for i, c in enumerate(s):
        if c == ":" and (i + 1 == len(s) or s[i + 1] == " "):
            return s[:i].strip(), s[i + 1 :].strip()
    return None


def _scalar(s, n):
    if s[0] == '"':
        try:
            v, end = json.JSONDecoder().raw_decode(s)
        except ValueError:
            raise YamlError(f"line {n}: bad double-quoted string {s!r}") from None
        if s[end:].strip():
            raise YamlError(f"line {n}: text after a quoted string: {s!r}")
        return v
    if s[0] == "'":
        if len(s) < 2 or not s.endswith("'"):
            raise YamlError(f"line {n}: unterminated single-quoted string {s!r}")
        return s[1:-1].replace("''", "'")
    if s[0] in "[{":
        return _flow(s, n)
    if s in ("true", "True", "TRUE"):
        return True
    if s in ("false", "False", "FALSE"):
        return False
    if s in ("null", "Null", "NULL", "~"):
        return None
    if re.fullmatch(r"[-+]?\d+", s):
        return int(s)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", s):
        return float(s)
    if s[0] in "&*!|>%@`":
        raise YamlError(f"line {n}: this stand-in's YAML reader does not support {s[0]!r}")
    return s


def _flow(s, n):
    close = "]" if s[0] == "[" else "}"
    if not s.endswith(close):
        raise YamlError(f"line {n}: unterminated flow collection {s!r}")
    inner = s[1:-1].strip()
    if any(c in inner for c in "[]{}"):
        raise YamlError(f"line {n}: nested flow collections are not supported by this stand-in")
    parts = [p.strip() for p in inner.split(",")] if inner else []
    if close == "]":
        return [_scalar(p, n) for p in parts if p]
    out = {}
    for p in parts:
        kv = _split_key(p)
        if kv is None or not kv[1]:
            raise YamlError(f"line {n}: expected 'key: value' in {s!r}")
        out[kv[0]] = _scalar(kv[1], n)
    return out


def _block(L, i, indent):
    return _seq(L, i, indent) if _is_item(L[i][1]) else _map(L, i, indent)


def _map(L, i, indent):
    out = {}
    while i < len(L) and L[i][0] == indent:
        _, s, n = L[i]
        kv = _split_key(s)
        if kv is None:
            raise YamlError(f"line {n}: expected 'key: value', got {s!r}")
        k, rest = kv
        if k in out:
            raise YamlError(f"line {n}: duplicate key {k!r}")
        i += 1
        if rest:
            out[k] = _scalar(rest, n)
        elif i < len(L) and L[i][0] > indent:
            out[k], i = _block(L, i, L[i][0])
        elif i < len(L) and L[i][0] == indent and _is_item(L[i][1]):
            out[k], i = _seq(L, i, indent)
        else:
            out[k] = None
    if i < len(L) and L[i][0] > indent:
        raise YamlError(f"line {L[i][2]}: bad indentation")
    return out, i


def _seq(L, i, indent):
    out = []
    while i < len(L) and L[i][0] == indent and _is_item(L[i][1]):
        ind, s, n = L[i]
        item = s[1:].lstrip(" ")
        if not item:
            i += 1
            if i < len(L) and L[i][0] > indent:
                v, i = _block(L, i, L[i][0])
            else:
                v = None
        elif _is_item(item) or _split_key(item) is not None:
            sub = ind + len(s) - len(item)
            L[i] = (sub, item, n)
            v, i = _block(L, i, sub)
        else:
            v = _scalar(item, n)
            i += 1
        out.append(v)
    if i < len(L) and L[i][0] > indent:
        raise YamlError(f"line {L[i][2]}: bad indentation")
    return out, i


def load_all(text):
    docs, cur = [], []
    for n, raw in enumerate(text.split("\n"), 1):
        lead = raw[: len(raw) - len(raw.lstrip(" \t"))]
        if "\t" in lead:
            raise YamlError(f"line {n}: tabs are not allowed in indentation")
        s = _strip_comment(raw)
        if not s.strip():
            continue
        if s.rstrip() == "---" and not lead:
            docs.append(cur)
            cur = []
            continue
        cur.append((len(s) - len(s.lstrip(" ")), s.strip(), n))
    docs.append(cur)
    out = []
    for L in docs:
        if not L:
            continue
        L = list(L)
        value, i = _block(L, 0, L[0][0])
        if i != len(L):
            raise YamlError(f"line {L[i][2]}: unexpected content {L[i][1]!r}")
        out.append(value)
    return out


# --- the config API: field names per kubeadm API version ---

S, I, B, DUR, MAP, BMAP, ARGS, ANY = "string", "integer", "boolean", "duration", "map", "bmap", "args", "any"


def schemas(v4):
    taint = {"key": S, "value": S, "effect": S, "timeAdded": S}
    node_reg = {
        "name": S, "criSocket": S, "taints": [taint], "kubeletExtraArgs": ARGS,
        "ignorePreflightErrors": [S], "imagePullPolicy": S,
    }
    if v4:
        node_reg["imagePullSerial"] = B
    endpoint = {"advertiseAddress": S, "bindPort": I}
    token = {"token": S, "description": S, "ttl": DUR, "expires": S, "usages": [S], "groups": [S]}
    patches = {"directory": S}
    timeouts = {k: DUR for k in (
        "controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall",
        "etcdAPICall", "tlsBootstrap", "discovery", "upgradeManifests")}
    volume = {"name": S, "hostPath": S, "mountPath": S, "readOnly": B, "pathType": S}
    envs = [{"name": S, "value": S, "valueFrom": ANY}]

    def component(**extra):
        d = {"extraArgs": ARGS, "extraVolumes": [volume]}
        if v4:
            d["extraEnvs"] = envs
        d.update(extra)
        return d

    api_server = component(certSANs=[S])
    if not v4:
        api_server["timeoutForControlPlane"] = DUR
    etcd_local = {"imageRepository": S, "imageTag": S, "dataDir": S, "extraArgs": ARGS,
                  "serverCertSANs": [S], "peerCertSANs": [S]}
    if v4:
        etcd_local["extraEnvs"] = envs
    dns = {"imageRepository": S, "imageTag": S}
    cluster = {
        "apiVersion": S, "kind": S,
        "etcd": {"local": etcd_local,
                 "external": {"endpoints": [S], "caFile": S, "certFile": S, "keyFile": S}},
        "networking": {"serviceSubnet": S, "podSubnet": S, "dnsDomain": S},
        "kubernetesVersion": S, "controlPlaneEndpoint": S, "apiServer": api_server,
        "controllerManager": component(), "scheduler": component(), "dns": dns,
        "certificatesDir": S, "imageRepository": S, "featureGates": BMAP, "clusterName": S,
    }
    if v4:
        dns["disabled"] = B
        cluster.update(proxy={"disabled": B}, encryptionAlgorithm=S,
                       certificateValidityPeriod=DUR, caCertificateValidityPeriod=DUR)
    init = {"apiVersion": S, "kind": S, "bootstrapTokens": [token], "nodeRegistration": node_reg,
            "localAPIEndpoint": endpoint, "certificateKey": S, "skipPhases": [S],
            "patches": patches}
    discovery = {
        "bootstrapToken": {"token": S, "apiServerEndpoint": S, "caCertHashes": [S],
                           "unsafeSkipCAVerification": B},
        "file": {"kubeConfigPath": S}, "tlsBootstrapToken": S,
    }
    join = {"apiVersion": S, "kind": S, "nodeRegistration": node_reg, "caCertPath": S,
            "discovery": discovery,
            "controlPlane": {"localAPIEndpoint": endpoint, "certificateKey": S},
            "skipPhases": [S], "patches": patches}
    kinds = {"InitConfiguration": init, "ClusterConfiguration": cluster,
             "JoinConfiguration": join}
    if v4:
        init.update(dryRun=B, timeouts=timeouts)
        join.update(dryRun=B, timeouts=timeouts)
        kinds["ResetConfiguration"] = {
            "apiVersion": S, "kind": S, "cleanupTmpDir": B, "certificatesDir": S,
            "criSocket": S, "dryRun": B, "force": B, "ignorePreflightErrors": [S],
            "skipPhases": [S], "unmountFlags": [S], "timeouts": timeouts}
        kinds["UpgradeConfiguration"] = {
            "apiVersion": S, "kind": S, "apply": ANY, "node": ANY, "plan": ANY, "diff": ANY,
            "timeouts": timeouts}
    else:
        discovery["timeout"] = DUR
    return kinds


API3, API4 = "kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"
SCHEMAS = {API3: schemas(False), API4: schemas(True)}
OTHER = {"kubelet.config.k8s.io/v1beta1": "KubeletConfiguration",
         "kubeproxy.config.k8s.io/v1alpha1": "KubeProxyConfiguration"}


def _type_error(where, want, got):
    return f"{where}: expected {want}, got {type(got).__name__} {got!r}"


def check_fields(value, schema, other, api, kind, path, errors):
    where = f"{api}, Kind={kind}: {path or '(document)'}"
    if schema == ANY:
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            errors.append(_type_error(where, "a mapping", value))
            return
        for key, sub in value.items():
            here = f"{path}.{key}" if path else str(key)
            if key not in schema:
                msg = f'strict decoding error: unknown field "{here}" in {api}, Kind={kind}'
                alt = API4 if api == API3 else API3
                if isinstance(other, dict) and key in other:
                    msg += f' ("{here}" is a {alt} field; this config is {api})'
                errors.append(msg)
                continue
            nxt = other.get(key) if isinstance(other, dict) else None
            check_fields(sub, schema[key], nxt, api, kind, here, errors)
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            errors.append(_type_error(where, "a list", value))
            return
        inner_other = other[0] if isinstance(other, list) and other else None
        for i, item in enumerate(value):
            check_fields(item, schema[0], inner_other, api, kind, f"{path}[{i}]", errors)
        return
    if schema == ARGS:
        if api == API3:
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            if not ok:
                errors.append(f"{where}: {api} expects extra arguments as a map of string to"
                              f" string (a list of {{name, value}} is the {API4} form)")
        else:
            ok = isinstance(value, list) and all(
                isinstance(a, dict) and set(a) == {"name", "value"}
                and all(isinstance(x, str) for x in a.values()) for a in value)
            if not ok:
                errors.append(f"{where}: {api} expects extra arguments as a list of"
                              f" {{name, value}} (a map is the {API3} form)")
        return
    if schema == S and not isinstance(value, str):
        errors.append(_type_error(where, "a string", value))
    elif schema == I and (not isinstance(value, int) or isinstance(value, bool)):
        errors.append(_type_error(where, "an integer", value))
    elif schema == B and not isinstance(value, bool):
        errors.append(_type_error(where, "a boolean", value))
    elif schema == DUR and not (isinstance(value, str) and re.fullmatch(
            r"(\d+(\.\d+)?(ns|us|ms|s|m|h))+", value)):
        errors.append(_type_error(where, "a duration like 4m0s", value))
    elif schema == MAP and not (isinstance(value, dict)
                                and all(isinstance(v, str) for v in value.values())):
        errors.append(_type_error(where, "a map of string to string", value))
    elif schema == BMAP and not (isinstance(value, dict)
                                 and all(isinstance(v, bool) for v in value.values())):
        errors.append(_type_error(where, "a map of string to boolean", value))


def load_config(path, *, allowed):
    """Parse and check a kubeadm --config file; returns (api, {kind: doc})."""
    real = host(path)
    try:
        with open(real, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise Failed(f"unable to read config from {path!r}: {exc.strerror}") from None
    try:
        docs = load_all(text)
    except YamlError as exc:
        raise Failed(f"error converting YAML to JSON in {path}: {exc}") from None
    errors, found, apis = [], {}, set()
    for n, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            errors.append(f"document {n}: not a mapping")
            continue
        api, kind = doc.get("apiVersion"), doc.get("kind")
        if not api or not kind:
            errors.append(f"document {n}: 'apiVersion' and 'kind' are required")
            continue
        if api in OTHER:
            if kind != OTHER[api]:
                errors.append(f'no kind "{kind}" is registered for version "{api}"')
            elif kind == "KubeletConfiguration" and doc.get("cgroupDriver") not in (
                    None, "systemd", "cgroupfs"):
                errors.append(f"KubeletConfiguration: cgroupDriver {doc.get('cgroupDriver')!r}"
                              " is neither systemd nor cgroupfs")
            found[kind] = doc
            continue
        if api.startswith("kubeadm.k8s.io/") and api not in SCHEMAS:
            errors.append(f'no kind "{kind}" is registered for version "{api}"'
                          " (this kubeadm reads kubeadm.k8s.io/v1beta3 and v1beta4)")
            continue
        if api not in SCHEMAS:
            errors.append(f'no kind "{kind}" is registered for version "{api}"')
            continue
        schema = SCHEMAS[api].get(kind)
        if schema is None:
            errors.append(f'no kind "{kind}" is registered for version "{api}"')
            continue
        if kind not in allowed:
            errors.append(f"{kind} does not belong in this command's --config"
                          f" (expected: {', '.join(allowed)})")
            continue
        if kind in found:
            errors.append(f"{kind} appears twice in {path}")
            continue
        apis.add(api)
        other = SCHEMAS[API4 if api == API3 else API3].get(kind, {})
        check_fields(doc, schema, other, api, kind, "", errors)
        found[kind] = doc
    if len(apis) > 1:
        errors.append(f"mixed kubeadm API versions in one file: {', '.join(sorted(apis))}")
    if errors:
        raise Failed("\n".join(errors))
    return (apis.pop() if apis else None), found


def check_api_rule(api, version, what):
    want = api_for(version)
    if api != want:
        raise Failed(
            f"{api} is not the config API for {what} v{'.'.join(map(str, version))}: "
            f"kubeadm.k8s.io/v1beta3 is used below v1.31, kubeadm.k8s.io/v1beta4 from v1.31 "
            f"(expected {want})")


def check_node_registration(nr, errors, where):
    cri = (nr or {}).get("criSocket")
    if cri is not None and not str(cri).startswith("unix://"):
        errors.append(f"{where}.nodeRegistration.criSocket {cri!r}: expected unix:///path")
    for t in (nr or {}).get("taints") or []:
        if t.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            errors.append(f"{where}.nodeRegistration.taints: bad effect {t.get('effect')!r}")
        if not t.get("key"):
            errors.append(f"{where}.nodeRegistration.taints: a taint needs a key")


def check_endpoint(ep, errors, where):
    if not ep:
        return
    addr = ep.get("advertiseAddress")
    if addr is not None:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            errors.append(f"{where}.advertiseAddress: {addr!r} is not a valid IP address")
    port = ep.get("bindPort")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        errors.append(f"{where}.bindPort: {port!r} is not a valid port")


def check_host_port(value, errors, where):
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:(\d{1,5}))?", str(value))
    if not m or (m.group(3) and not 0 < int(m.group(3)) < 65536):
        errors.append(f"{where}: {value!r} is not host[:port]")


TOKEN_RE = r"[a-z0-9]{6}\.[a-z0-9]{16}"
KEY_RE = r"[a-f0-9]{64}"
HASH_RE = r"sha256:[a-f0-9]{64}"


def validate_init(found, api):
    init = found.get("InitConfiguration")
    cluster = found.get("ClusterConfiguration")
    if cluster is None or init is None:
        raise Failed("the init config needs an InitConfiguration and a ClusterConfiguration")
    kv = cluster.get("kubernetesVersion")
    if not kv:
        raise Failed("ClusterConfiguration.kubernetesVersion is required: without it kubeadm"
                     " asks https://dl.k8s.io for stable-1, which an air-gapped node cannot reach")
    version = vtuple(kv)
    if version is None:
        raise Failed(f"ClusterConfiguration.kubernetesVersion {kv!r} is not a version like v1.27.3")
    check_api_rule(api, version, "Kubernetes")
    own = vtuple(VERSION)
    if version > own:
        raise Failed(f'the kubernetesVersion "{kv}" is higher than the kubeadm version'
                     f' "{VERSION}"; use the kubeadm of that release')
    if version[:2] < (own[0], own[1] - 1):
        raise Failed(f"this version of kubeadm only supports deploying clusters with the control"
                     f" plane version >= {own[0]}.{own[1] - 1}.0. Current version: {kv}")
    errors = []
    net = cluster.get("networking") or {}
    nets = {}
    for key in ("podSubnet", "serviceSubnet"):
        if net.get(key) is None:
            continue
        try:
            nets[key] = ipaddress.ip_network(net[key], strict=True)
        except ValueError as exc:
            errors.append(f"ClusterConfiguration.networking.{key}: {exc}")
    if len(nets) == 2 and nets["podSubnet"].overlaps(nets["serviceSubnet"]):
        errors.append(f"ClusterConfiguration.networking: podSubnet {nets['podSubnet']} overlaps"
                      f" serviceSubnet {nets['serviceSubnet']}")
    if cluster.get("controlPlaneEndpoint"):
        check_host_port(cluster["controlPlaneEndpoint"], errors,
                        "ClusterConfiguration.controlPlaneEndpoint")
    check_endpoint(init.get("localAPIEndpoint"), errors, "InitConfiguration.localAPIEndpoint")
    check_node_registration(init.get("nodeRegistration"), errors, "InitConfiguration")
    for t in init.get("bootstrapTokens") or []:
        if not re.fullmatch(TOKEN_RE, str(t.get("token", ""))):
            errors.append(f"InitConfiguration.bootstrapTokens: the token {t.get('token')!r} does"
                          " not match the regular expression [a-z0-9]{6}.[a-z0-9]{16}")
    key = init.get("certificateKey")
    if key is not None and not re.fullmatch(KEY_RE, str(key)):
        errors.append("InitConfiguration.certificateKey: expected 32 bytes as 64 hex characters")
    if errors:
        raise Failed("\n".join(errors))
    return init, cluster, kv


def validate_join(found, api):
    join = found.get("JoinConfiguration")
    if join is None:
        raise Failed("the join config needs a JoinConfiguration")
    check_api_rule(api, vtuple(VERSION), "kubeadm")
    errors = []
    disc = join.get("discovery") or {}
    bt, df = disc.get("bootstrapToken"), disc.get("file")
    if not bt and not df:
        errors.append("JoinConfiguration.discovery: bootstrapToken or file is required")
    if bt:
        if not re.fullmatch(TOKEN_RE, str(bt.get("token", ""))):
            errors.append("JoinConfiguration.discovery.bootstrapToken.token: the token"
                          " does not match [a-z0-9]{6}.[a-z0-9]{16}")
        if not bt.get("apiServerEndpoint"):
            errors.append("JoinConfiguration.discovery.bootstrapToken.apiServerEndpoint"
                          " is required")
        else:
            check_host_port(bt["apiServerEndpoint"], errors,
                            "JoinConfiguration.discovery.bootstrapToken.apiServerEndpoint")
        hashes = bt.get("caCertHashes") or []
        if not hashes and not bt.get("unsafeSkipCAVerification"):
            errors.append("using token-based discovery without caCertHashes can be unsafe;"
                          " set caCertHashes (or unsafeSkipCAVerification: true)")
        for h in hashes:
            if not re.fullmatch(HASH_RE, str(h)):
                errors.append(f"JoinConfiguration.discovery.bootstrapToken.caCertHashes: {h!r}"
                              " is not sha256:<64 hex>")
    check_node_registration(join.get("nodeRegistration"), errors, "JoinConfiguration")
    cp = join.get("controlPlane")
    if cp is not None:
        check_endpoint(cp.get("localAPIEndpoint"), errors,
                       "JoinConfiguration.controlPlane.localAPIEndpoint")
        if not re.fullmatch(KEY_RE, str(cp.get("certificateKey", ""))):
            errors.append("JoinConfiguration.controlPlane.certificateKey is required to fetch"
                          " the control-plane certificates (64 hex characters)")
    if errors:
        raise Failed("\n".join(errors))
    return join


# --- the files kubeadm writes ---


def write(path, text, mode=0o644):
    real = host(path)
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with open(real, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(real, mode)


def openssl(*args, data=None):
    try:
        proc = subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)
    except FileNotFoundError:
        raise Failed("openssl not found: the stand-in makes its CA with it") from None
    if proc.returncode != 0:
        raise Failed(f"openssl {args[0]} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def make_ca():
    crt, key = host("/etc/kubernetes/pki/ca.crt"), host("/etc/kubernetes/pki/ca.key")
    os.makedirs(os.path.dirname(crt), exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
            "-days", "3650", "-subj", "/CN=kubernetes",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign")
    os.chmod(key, 0o600)


def ca_hash(crt_path):
    pub = openssl("x509", "-in", crt_path, "-pubkey", "-noout")
    der = openssl("pkey", "-pubin", "-outform", "DER", data=pub)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def kubeconfig(server, cluster, user, ca_b64):
    return (
        "# airlock STAND-IN kubeconfig, written by the kubeadm stand-in: no API server runs.\n"
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
        f"    certificate-authority-data: {ca_b64}\n    server: https://{server}\n"
        f"  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    user: {user}\n"
        f"  name: {user}@{cluster}\ncurrent-context: {user}@{cluster}\n"
        f"users:\n- name: {user}\n  user: {{}}\n")


def static_pod(name, image, command):
    return (
        "# airlock STAND-IN static Pod, written by the kubeadm stand-in.\n"
        "apiVersion: v1\nkind: Pod\nmetadata:\n"
        f"  name: {name}\n  namespace: kube-system\n"
        "  labels:\n    tier: control-plane\n"
        f"    component: {name}\n"
        "  annotations:\n    airlock.io/stand-in: \"true\"\n"
        "spec:\n  hostNetwork: true\n  priorityClassName: system-node-critical\n"
        f"  containers:\n  - name: {name}\n    image: {image}\n"
        f"    command: [{command}]\n")


def own_image(name, fallback_tag):
    for ref in OWN_IMAGES:
        if ref.split(":")[0] == name:
            return ref.split(":", 1)[1]
    return fallback_tag


def write_control_plane(kv, repo, endpoint):
    def image(name, tag):
        return f"{repo}/{name}:{tag}"
    etcd = image("etcd", own_image("etcd", "unknown"))
    pods = [
        ("etcd", etcd, "etcd"),
        ("kube-apiserver", image("kube-apiserver", kv), "kube-apiserver"),
        ("kube-controller-manager", image("kube-controller-manager", kv),
         "kube-controller-manager"),
        ("kube-scheduler", image("kube-scheduler", kv), "kube-scheduler"),
    ]
    for name, img, cmd in pods:
        if name == "etcd":
            say(f'[etcd] Creating static Pod manifest for local etcd in "/etc/kubernetes/manifests"')
        else:
            say(f'[control-plane] Creating static Pod manifest for "{name}"')
        write(f"/etc/kubernetes/manifests/{name}.yaml", static_pod(name, img, cmd), 0o600)


def load_state():
    try:
        with open(host(STATE), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def save_state(state):
    write(STATE, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)


def preflight_files(paths):
    present = [p for p in paths if os.path.exists(host(p))]
    if present:
        lines = []
        for p in present:
            tag = ("FileAvailable-" if not p.endswith("/") else "DirAvailable-") + p.rstrip(
                "/").replace("/", "-")
            lines.append(f"\t[ERROR {tag}]: {p.rstrip('/')} already exists")
        raise Failed(
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
            + "\n".join(lines)
            + "\n[preflight] If you know what you are doing, you can make a check non-fatal"
            " with `--ignore-preflight-errors=...`")


def parse_flags(args, spec):
    """spec: flag -> True (takes a value) / False (switch). Returns (flags, positionals)."""
    flags, pos, i = {}, [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name, eq, val = a.partition("=")
            if name not in spec:
                raise Failed(f"unknown flag: {name}")
            if spec[name]:
                if not eq:
                    i += 1
                    if i >= len(args):
                        raise Failed(f"flag needs an argument: {name}")
                    val = args[i]
                flags[name] = val
            else:
                flags[name] = True
        else:
            pos.append(a)
        i += 1
    return flags, pos


# --- commands ---


def cmd_init(args):
    flags, pos = parse_flags(args, {"--config": True, "--upload-certs": False,
                                    "--skip-token-print": False, "--v": True})
    if pos:
        raise Failed(f"unknown command {pos[0]!r} for \"kubeadm init\"")
    if "--config" not in flags:
        raise Failed("this stand-in needs `kubeadm init --config FILE` (airlock always writes"
                     " one); refusing to guess flags")
    api, found = load_config(flags["--config"], allowed=(
        "InitConfiguration", "ClusterConfiguration"))
    init, cluster, kv = validate_init(found, api)
    kinds = ", ".join(sorted(found))
    say(f"[config] {flags['--config']} is a valid {api} config ({kinds})")
    say(f"[init] Using Kubernetes version: {kv}")
    preflight_files(["/etc/kubernetes/manifests/kube-apiserver.yaml",
                     "/etc/kubernetes/manifests/kube-controller-manager.yaml",
                     "/etc/kubernetes/manifests/kube-scheduler.yaml",
                     "/etc/kubernetes/manifests/etcd.yaml"])
    say("[preflight] stand-in: no host checks here (airlock's own preflight runs before)")
    repo = cluster.get("imageRepository") or "registry.k8s.io"
    say(f"[preflight] images come from {repo} (pulled through the node's mirrors)")
    ep = init.get("localAPIEndpoint") or {}
    addr = ep.get("advertiseAddress") or "127.0.0.1"
    port = ep.get("bindPort") or 6443
    endpoint = cluster.get("controlPlaneEndpoint") or (
        f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}")
    name = cluster.get("clusterName") or "kubernetes"
    say('[certs] Using certificateDir folder "/etc/kubernetes/pki"')
    say('[certs] Generating "ca" certificate and key (a real self-signed CA, via openssl)')
    make_ca()
    with open(host("/etc/kubernetes/pki/ca.crt"), "rb") as fh:
        ca_b64 = base64.b64encode(fh.read()).decode()
    for conf, user in (("admin.conf", "kubernetes-admin"),
                       ("super-admin.conf", "kubernetes-super-admin"),
                       ("kubelet.conf", "system:node:" + str(
                           (init.get("nodeRegistration") or {}).get("name") or "node")),
                       ("controller-manager.conf", "system:kube-controller-manager"),
                       ("scheduler.conf", "system:kube-scheduler")):
        say(f'[kubeconfig] Writing "{conf}" kubeconfig file')
        write(f"/etc/kubernetes/{conf}", kubeconfig(endpoint, name, user, ca_b64), 0o600)
    kubelet = found.get("KubeletConfiguration")
    say('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    write("/var/lib/kubelet/config.yaml",
          "# airlock STAND-IN: the KubeletConfiguration kubeadm was given\n"
          + json.dumps(kubelet or {}, indent=2, sort_keys=True) + "\n")
    write("/var/lib/kubelet/kubeadm-flags.env",
          f'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint='
          f'{(init.get("nodeRegistration") or {}).get("criSocket") or CRI_DEFAULT}"\n')
    write_control_plane(kv, repo, endpoint)
    if FAIL == "init-phase-wait":
        say('[wait-control-plane] Waiting for the kubelet to boot up the control plane as static'
            ' Pods from directory "/etc/kubernetes/manifests". This can take up to 4m0s')
        raise Failed(
            "[kubelet-check] Initial timeout of 40s passed.\n\n"
            "Unfortunately, an error has occurred:\n\ttimed out waiting for the condition\n\n"
            "This error is likely caused by:\n\t- The kubelet is not running\n"
            "\t- The kubelet is unhealthy due to a misconfiguration of the node in some way\n"
            "error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster"
            " (simulated by KUBEADM_STANDIN_FAIL=init-phase-wait)")
    say("[wait-control-plane] stand-in: nothing runs these static Pods; airlock's probe decides")
    tokens = [t["token"] for t in init.get("bootstrapTokens") or [] if t.get("token")]
    token = tokens[0] if tokens else (secrets.token_hex(3) + "." + secrets.token_hex(8))
    key = init.get("certificateKey") or secrets.token_hex(32)
    if "--upload-certs" in flags:
        say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the'
            ' "kube-system" Namespace (stand-in: not stored anywhere)')
        say("[upload-certs] Using certificate key:")
        print(key, flush=True)
    say(f"[bootstrap-token] Using token: {token}")
    save_state({"endpoint": endpoint, "kubernetesVersion": kv, "tokens": [token],
                "certificateKey": key, "api": api, "imageRepository": repo})
    h = ca_hash(host("/etc/kubernetes/pki/ca.crt"))
    say(f"init finished: files written under {ROOT}; NO control plane is running ({NOTE})")
    say("a real kubeadm would print this join command:")
    print(f"kubeadm join {endpoint} --token {token} \\\n\t--discovery-token-ca-cert-hash {h}",
          flush=True)


def cmd_join(args):
    flags, pos = parse_flags(args, {
        "--config": True, "--token": True, "--discovery-token-ca-cert-hash": True,
        "--control-plane": False, "--certificate-key": True, "--v": True})
    if "--config" in flags:
        if len(flags) > 1 + ("--v" in flags) or pos:
            raise Failed("can not mix '--config' with arguments [token discovery-token-ca-cert-"
                         "hash control-plane certificate-key]")
        api, found = load_config(flags["--config"], allowed=("JoinConfiguration",))
        join = validate_join(found, api)
        say(f"[config] {flags['--config']} is a valid {api} config (JoinConfiguration)")
    else:
        if len(pos) != 1 or "--token" not in flags:
            raise Failed("usage: kubeadm join ENDPOINT --token T --discovery-token-ca-cert-hash H"
                         " [--control-plane --certificate-key K]")
        join = {"discovery": {"bootstrapToken": {
            "apiServerEndpoint": pos[0], "token": flags["--token"],
            "caCertHashes": [flags.get("--discovery-token-ca-cert-hash")] if flags.get(
                "--discovery-token-ca-cert-hash") else []}}}
        if flags.get("--control-plane"):
            join["controlPlane"] = {"certificateKey": flags.get("--certificate-key", "")}
        join = validate_join({"JoinConfiguration": join}, api_for(vtuple(VERSION)))
    control_plane = join.get("controlPlane") is not None
    checks = ["/etc/kubernetes/kubelet.conf", "/etc/kubernetes/pki/ca.crt"]
    if control_plane:
        checks.append("/etc/kubernetes/manifests/kube-apiserver.yaml")
    preflight_files(checks)
    bt = (join.get("discovery") or {}).get("bootstrapToken") or {}
    endpoint = bt.get("apiServerEndpoint", "")
    say(f"[preflight] Running pre-flight checks (stand-in: none); API server {endpoint}")
    cluster_ca = os.environ.get("KUBEADM_STANDIN_CLUSTER_CA")
    ca_pem = None
    if cluster_ca:
        got = ca_hash(cluster_ca)
        pinned = bt.get("caCertHashes") or []
        if pinned and got not in pinned:
            raise Failed(
                "error execution phase preflight: couldn't validate the identity of the API"
                f' Server: cluster CA found in cluster-info ConfigMap is invalid: none of the'
                f' public keys "{got}" are pinned')
        with open(cluster_ca, encoding="utf-8") as fh:
            ca_pem = fh.read()
        say(f"[discovery] cluster CA {cluster_ca} matches the pinned hash {got}")
    else:
        say("[discovery] stand-in: no cluster CA to check the pinned hash against"
            " (KUBEADM_STANDIN_CLUSTER_CA unset); only its format was checked")
    if ca_pem:
        write("/etc/kubernetes/pki/ca.crt", ca_pem)
    name = "kubernetes"
    node = (join.get("nodeRegistration") or {}).get("name") or "node"
    say('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    write("/var/lib/kubelet/config.yaml", "# airlock STAND-IN kubelet config (join)\n{}\n")
    write("/etc/kubernetes/kubelet.conf", kubeconfig(endpoint, name, f"system:node:{node}", ""),
          0o600)
    if control_plane:
        say("[download-certs] stand-in: certificates are not downloaded (no kubeadm-certs"
            " Secret exists); the certificate key format was checked")
        write_control_plane(os.environ.get("KUBEADM_STANDIN_K8S_VERSION", VERSION),
                            "registry.k8s.io", endpoint)
        write("/etc/kubernetes/admin.conf",
              kubeconfig(endpoint, name, "kubernetes-admin", ""), 0o600)
    role = "control-plane node" if control_plane else "worker node"
    say(f"join finished as a {role}: files written under {ROOT}; this node joined NOTHING"
        f" ({NOTE})")


def cmd_reset(args):
    flags, pos = parse_flags(args, {"-f": False, "--force": False, "--cri-socket": True,
                                    "--cleanup-tmp-dir": False, "--config": True, "--v": True})
    if pos:
        raise Failed(f"unknown command {pos[0]!r} for \"kubeadm reset\"")
    if "--config" in flags:
        api, found = load_config(flags["--config"], allowed=("ResetConfiguration",))
        check_api_rule(api, vtuple(VERSION), "kubeadm")
    if "-f" not in flags and "--force" not in flags:
        raise Failed("this stand-in never prompts: pass -f (real kubeadm would ask"
                     " '[reset] Are you sure you want to proceed? [y/N]')")
    say("[reset] stand-in: no etcd member to remove, no containers to stop")
    dirs = ["/etc/kubernetes/manifests", "/var/lib/kubelet", "/etc/kubernetes/pki"]
    say(f"[reset] Deleting contents of directories: [{' '.join(dirs)}]")
    for d in dirs:
        real = host(d)
        if os.path.isdir(real):
            for entry in os.listdir(real):
                p = os.path.join(real, entry)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
    shutil.rmtree(host("/var/lib/etcd"), ignore_errors=True)
    files = [f"/etc/kubernetes/{n}" for n in (
        "admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
        "controller-manager.conf", "scheduler.conf")]
    say(f"[reset] Deleting files: [{' '.join(files)}]")
    for f in files + [STATE]:
        try:
            os.unlink(host(f))
        except FileNotFoundError:
            pass
    say("The reset process does not clean CNI configuration. To do so, you must remove"
        " /etc/cni/net.d")
    say("The reset process does not reset or clean up iptables rules or IPVS tables.")
    say(f"reset finished under {ROOT} ({NOTE})")


def cmd_token(args):
    if args[:1] != ["create"]:
        raise Failed("this stand-in answers only `kubeadm token create --print-join-command`")
    flags, pos = parse_flags(args[1:], {"--print-join-command": False, "--ttl": True,
                                        "--certificate-key": True, "--v": True})
    if pos:
        raise Failed(f"unexpected argument {pos[0]!r}; the stand-in makes random tokens only")
    state = load_state()
    if state is None or not os.path.exists(host("/etc/kubernetes/pki/ca.crt")):
        raise Failed("failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such"
                     " file or directory (no `kubeadm init` ran under this root)")
    token = secrets.token_hex(3) + "." + secrets.token_hex(8)
    state["tokens"].append(token)
    save_state(state)
    sys.stderr.write(f"kubeadm-standin: token created under {ROOT} ({NOTE})\n")
    if "--print-join-command" in flags:
        line = (f"kubeadm join {state['endpoint']} --token {token}"
                f" --discovery-token-ca-cert-hash {ca_hash(host('/etc/kubernetes/pki/ca.crt'))}")
        if flags.get("--certificate-key"):
            line += f" --control-plane --certificate-key {flags['--certificate-key']}"
        print(line + " ", flush=True)
    else:
        print(token, flush=True)


def cmd_upgrade(args):
    sub, rest = (args[0], args[1:]) if args else ("", [])
    if sub not in ("plan", "apply", "node"):
        raise Failed("this stand-in answers `kubeadm upgrade plan|apply|node`")
    flags, pos = parse_flags(rest, {"-y": False, "--yes": False, "--config": True,
                                    "--certificate-renewal": True, "--etcd-upgrade": True,
                                    "--v": True})
    if "--config" in flags:
        api, found = load_config(flags["--config"], allowed=(
            "UpgradeConfiguration", "ClusterConfiguration", "InitConfiguration"))
        check_api_rule(api, vtuple(VERSION), "kubeadm")
    if sub == "node":
        if pos:
            raise Failed(f"unexpected argument {pos[0]!r}")
        if not os.path.exists(host("/etc/kubernetes/kubelet.conf")):
            raise Failed("couldn't create a Kubernetes client from file"
                         ' "/etc/kubernetes/kubelet.conf": no such file (this node never joined)')
        say(f"[upgrade] stand-in: would upgrade this node's kubelet config to {VERSION}")
        say(f"upgrade node checked under {ROOT} ({NOTE})")
        return
    state = load_state()
    if state is None or not os.path.exists(host("/etc/kubernetes/admin.conf")):
        raise Failed("couldn't create a Kubernetes client from file"
                     ' "/etc/kubernetes/admin.conf": no such file (no `kubeadm init` ran here)')
    current = state["kubernetesVersion"]
    if len(pos) > 1:
        raise Failed(f"unexpected argument {pos[1]!r}")
    target = pos[0] if pos else VERSION
    if sub == "apply" and not pos:
        raise Failed("missing one or more required arguments. Required arguments: [version]")
    t, c, own = vtuple(target), vtuple(current), vtuple(VERSION)
    if t is None:
        raise Failed(f'the version "{target}" is not a version like v1.28.0')
    if t > own:
        raise Failed(f'the specified version to upgrade to "{target}" is higher than the kubeadm'
                     f' version "{VERSION}". Upgrade kubeadm first using the tool you used to'
                     " install kubeadm")
    if t < c:
        raise Failed(f'Specified version to upgrade to "{target}" is equal to or lower than the'
                     f' cluster version "{current}". Downgrades are not supported yet')
    if t[:2] > (c[0], c[1] + 1):
        raise Failed(f'Specified version to upgrade to "{target}" is too high; kubeadm can'
                     " upgrade only 1 minor version at a time")
    if sub == "plan":
        say(f"[upgrade/versions] Cluster version: {current}")
        say(f"[upgrade/versions] kubeadm version: {VERSION}")
        say(f"[upgrade/versions] Target version: {target}")
        say(f"upgrade plan checked ({NOTE})")
        return
    if "-y" not in flags and "--yes" not in flags:
        raise Failed("this stand-in never prompts: pass -y")
    say(f'[upgrade/version] You have chosen to change the cluster version to "{target}"')
    write_control_plane(target, state.get("imageRepository") or "registry.k8s.io",
                        state["endpoint"])
    state["kubernetesVersion"] = target
    save_state(state)
    say(f"upgrade apply {target}: static Pod manifests rewritten under {ROOT}; nothing was"
        f" upgraded ({NOTE})")


COMMANDS = {"init": cmd_init, "join": cmd_join, "reset": cmd_reset, "token": cmd_token,
            "upgrade": cmd_upgrade}


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(f"kubeadm-standin: unknown command {argv[:1]} ({NOTE})\n")
        return 64
    try:
        COMMANDS[argv[0]](argv[1:])
    except Failed as exc:
        sys.stderr.write(f"{exc}\nkubeadm-standin: {argv[0]} failed ({NOTE})\n")
        return 1
    return 0


sys.exit(main(sys.argv[1:]))
'''
