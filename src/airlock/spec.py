"""The spec (airlock.yaml): pydantic models, and loading with errors that name file, line, field.

Loading is two steps: ruamel.yaml parses with positions, pydantic validates; each pydantic error
location (`("network", "podSubnet")`) is mapped back to the line of that key in the file. Checks
that pydantic cannot place (duplicate images) are done here with their own positions.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from io import StringIO
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from airlock.errors import AirlockError, SpecError
from airlock.oci.ref import parse_reference

__all__ = [
    "API_VERSION",
    "SUPPORTED_CNIS",
    "Chart",
    "ExtraFile",
    "Kubernetes",
    "Network",
    "Packages",
    "RegistryCredentials",
    "RegistrySource",
    "Runtime",
    "SignedPrefix",
    "Sources",
    "Spec",
    "Tools",
    "Verify",
    "dump_spec",
    "load_spec",
    "parse_spec",
]

API_VERSION = "airlock/v1alpha1"
SUPPORTED_CNIS = ("flannel", "calico")

_SEMVER_V = re.compile(r"^v\d+\.\d+\.\d+\Z")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+\Z")
_PLATFORM = re.compile(r"^linux/(amd64|arm64|arm|ppc64le|s390x)(/v[5-8])?\Z")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_SHA256 = re.compile(r"^[a-f0-9]{64}\Z")


def _exact_v(value: str) -> str:
    if not _SEMVER_V.match(value):
        raise ValueError(f"expected an exact version like v1.27.3, got {value!r}")
    return value


def _exact(value: str) -> str:
    """Versions written without `v` upstream (containerd: 1.7.2); a leading v is tolerated."""
    if not _SEMVER.match(value.removeprefix("v")):
        raise ValueError(f"expected an exact version like 1.7.2, got {value!r}")
    return value.removeprefix("v")


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not a valid CIDR: {value!r} ({exc})") from None
    return str(net)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value


VersionV = Annotated[str, AfterValidator(_exact_v)]
Version = Annotated[str, AfterValidator(_exact)]
Cidr = Annotated[str, AfterValidator(_cidr)]
Url = Annotated[str, AfterValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Metadata(_Model):
    name: str
    channel: str = "stable"

    @field_validator("name", "channel")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"must be a lowercase DNS label (a-z, 0-9, -), got {v!r}")
        return v


class Kubernetes(_Model):
    version: VersionV
    release_tools: VersionV = Field("v0.15.1", alias="releaseTools")


class Runtime(_Model):
    containerd: Version
    runc: VersionV
    crictl: VersionV
    cni_plugins: VersionV = Field(alias="cniPlugins")


class Network(_Model):
    cni: str
    version: VersionV
    pod_subnet: Cidr = Field("10.244.0.0/16", alias="podSubnet")
    service_subnet: Cidr = Field("10.96.0.0/12", alias="serviceSubnet")
    dns_domain: str = Field("cluster.local", alias="dnsDomain")

    @field_validator("cni")
    @classmethod
    def _known_cni(cls, v: str) -> str:
        if v not in SUPPORTED_CNIS:
            raise ValueError(f"unknown CNI {v!r}; supported: {', '.join(SUPPORTED_CNIS)}")
        return v


class Tools(_Model):
    helm: VersionV | None = None
    k9s: VersionV | None = None


class Chart(_Model):
    name: str
    repo: Url
    version: str


class ExtraFile(_Model):
    url: Url
    sha256: str | None = None
    name: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v):
            raise ValueError("sha256 must be 64 lowercase hex characters")
        return v


class Packages(_Model):
    os: str
    names: list[str] = []
    repositories: list[str] = []  # Debian: <archive>/dists/<suite>[#main,contrib]; RPM: repo dir
    keys: list[str] = []  # signing keys (files) the repository metadata must verify against
    installed: str = "minimal"  # the target's base: "minimal", or a dpkg status file
    recommends: bool = False

    @field_validator("repositories")
    @classmethod
    def _repo_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            _http_url(url.split("#", 1)[0])
        return v


_SECRET_FIELDS = ("password", "secret", "token", "auth", "identitytoken")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class RegistryCredentials(_Model):
    """Where the registry secret is: an environment variable or a file, never the value.

    The variable or file holds `username:secret`, or only the secret when `username` is set.
    """

    env: str | None = None
    file: str | None = None
    username: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inline = [k for k in data if str(k).lower() in _SECRET_FIELDS]
            if inline:
                raise ValueError(
                    f"{inline[0]}: a secret is never written in the spec (it is recorded in the "
                    "bundle); name an environment variable (env: NAME) or a file (file: PATH)"
                )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> RegistryCredentials:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) or file (a path)")
        if self.env is not None and not _ENV_NAME.match(self.env):
            raise ValueError(f"env must be a variable name like REGISTRY_AUTH, got {self.env!r}")
        return self


class RegistrySource(_Model):
    url: Url
    insecure: bool = False
    credentials: RegistryCredentials | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inline = [k for k in data if str(k).lower() in (*_SECRET_FIELDS, "username")]
            if inline:
                raise ValueError(
                    f"{inline[0]}: registry credentials go under `credentials:` as a reference "
                    "(env: NAME or file: PATH, optional username), never inline"
                )
        return data


class Sources(_Model):
    files: dict[str, Url] = {}
    registries: dict[str, RegistrySource] = {}
    # a PEM file of CA certificates trusted beside the system's, for every download
    ca_bundle: str | None = Field(None, alias="caBundle")

    @field_validator("files")
    @classmethod
    def _prefixes(cls, v: dict[str, str]) -> dict[str, str]:
        for prefix in v:
            _http_url(prefix)
        return v


class SignedPrefix(_Model):
    """Files under `prefix` have a detached signature at URL + `suffix`, made with `key`."""

    prefix: Url
    key: str  # path of the PEM public key (cosign.pub)
    suffix: str = ".sig"


class Verify(_Model):
    signatures: list[SignedPrefix] = []


class Registry(_Model):
    """The node's registry unit (`node install`)."""

    # ADDRESS:PORT list; empty: the node's advertise address and loopback, port 5000
    listen: list[str] = []

    @field_validator("listen")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for item in v:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"{item!r} is not ADDRESS:PORT (e.g. 198.18.0.10:5000)")
        return v


class PreflightIgnore(_Model):
    """A kubeadm preflight check this node cannot pass, and why (kubeadm's
    `nodeRegistration.ignorePreflightErrors`): the reason is required, so the list says itself
    what was waived."""

    name: str
    reason: str

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", v) or v.lower() == "all":
            raise ValueError(
                f"{v!r} is not a kubeadm preflight check name (e.g. SystemVerification);"
                " `all` is never accepted"
            )
        return v

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("say why this check is waived")
        return v


class KubeProxySettings(_Model):
    # 0: kube-proxy leaves nf_conntrack_max alone (it is read-only inside a child network
    # namespace); None: kube-proxy's default (32768 per core)
    conntrack_max_per_core: int | None = Field(None, alias="conntrackMaxPerCore", ge=0)


class NodeSettings(_Model):
    """How the nodes run Kubernetes (`node install`, `cluster init|join`); docs/node.md."""

    # containerd's runc `SystemdCgroup` and the kubelet's `cgroupDriver` alike: systemd on a
    # systemd host, cgroupfs where another service manager starts the kubelet
    cgroup_driver: Literal["systemd", "cgroupfs"] = Field("systemd", alias="cgroupDriver")
    # the kubelet's --cgroup-root, per node ({node} is the node's name): kubelets that share
    # one cgroup v1 hierarchy need one each; None: the kubelet's default (/)
    cgroup_root: str | None = Field(None, alias="cgroupRoot")
    # kubelet v1.35+ refuses cgroup v1 unless this is false; None: the kubelet's default
    fail_cgroup_v1: bool | None = Field(None, alias="failCgroupV1")
    # containerd clamps the kubelet's negative oom_score_adj (-998 for every pod sandbox) to
    # its own: for nodes whose processes lack CAP_SYS_RESOURCE (some VM sandboxes, user
    # namespaces), where runc would fail every pod with "permission denied"
    restrict_oom_score_adj: bool = Field(False, alias="restrictOOMScoreAdj")
    # the kubelet's evictionHard (all of it: a map that names some signals sets the rest to
    # zero); None: the kubelet's defaults (nodefs.available 10%, imagefs.available 15%, ...)
    eviction_hard: dict[str, str] | None = Field(None, alias="evictionHard")
    kube_proxy: KubeProxySettings = Field(KubeProxySettings.model_validate({}), alias="kubeProxy")
    ignore_preflight_errors: list[PreflightIgnore] = Field([], alias="ignorePreflightErrors")

    @field_validator("cgroup_root")
    @classmethod
    def _check_root(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"/[A-Za-z0-9_.{}/-]*", v):
            raise ValueError(f"{v!r} is not a cgroup path like /kubelet-{{node}}")
        return v

    def cgroup_root_for(self, node: str) -> str | None:
        return self.cgroup_root.replace("{node}", node) if self.cgroup_root else None


class Wheelhouse(_Model):
    """The offline nodes airlock itself must install on: a wheelhouse for each CPython x
    architecture. airlock needs Python 3.11+; a node with an older platform Python needs the
    distribution's python3.11 (carry it with `packages`)."""

    pythons: list[str] = ["3.11", "3.12", "3.13"]
    architectures: list[Literal["x86_64", "aarch64"]] = ["x86_64", "aarch64"]

    @field_validator("pythons")
    @classmethod
    def _pythons(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one Python version is needed, e.g. 3.11")
        for py in v:
            m = re.fullmatch(r"3\.(\d{1,2})", py)
            if m is None:
                raise ValueError(f"{py!r} is not a Python version like 3.12 (quote it in YAML)")
            if int(m[1]) < 11:
                raise ValueError(
                    f"airlock needs Python 3.11 or newer, not {py}; for older nodes carry the "
                    "distribution's python3.11 package in `packages`"
                )
        return list(dict.fromkeys(v))

    @field_validator("architectures")
    @classmethod
    def _architectures(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one architecture is needed: x86_64, aarch64")
        return list(dict.fromkeys(v))


def _image(value: str) -> str:
    try:
        parse_reference(value)
    except AirlockError as exc:
        raise ValueError(exc.message) from None
    return value


Image = Annotated[str, AfterValidator(_image)]


class Spec(_Model):
    api_version: Literal["airlock/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Bundle"]
    metadata: Metadata
    platforms: list[str] = ["linux/amd64"]
    kubernetes: Kubernetes
    runtime: Runtime
    network: Network
    tools: Tools = Tools()
    images: list[Image] = []
    charts: list[Chart] = []
    files: list[ExtraFile] = []
    packages: Packages | None = None
    verify: Verify = Verify()
    sources: Sources = Sources.model_validate({})
    registry: Registry = Registry()
    wheelhouse: Wheelhouse = Wheelhouse()
    node: NodeSettings = NodeSettings.model_validate({})

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one platform is needed, e.g. linux/amd64")
        for p in v:
            if not _PLATFORM.match(p):
                raise ValueError(f"unsupported platform {p!r}; e.g. linux/amd64, linux/arm64")
        return v


# --- loading with positions -------------------------------------------------------------------


def _line_of(doc: Any, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest key in `loc` that exists in the parsed document."""
    node, line = doc, None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    if line is None and isinstance(doc, CommentedMap):
        line = doc.lc.line + 1
    return line


def _field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _model_fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names (as users write them) of the model that `loc` points into."""
    model: type[BaseModel] = Spec
    for part in loc:
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            continue  # a list index or a dict key: still inside the same model's container
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(err: ErrorDetails) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        known = _model_fields_at(loc[:-1])
        return "unknown field" + _did_you_mean(str(loc[-1]), known)
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        msg = str(err["msg"])
        return f"{msg[:1].lower()}{msg[1:]}, got {err['input']!r}" + _did_you_mean(
            str(err["input"]), expected
        )
    if kind == "string_type" and isinstance(err["input"], int | float):
        return (
            f"must be text, but YAML read {err['input']!r} as a number "
            f'(1.30 even becomes 1.3): quote it, e.g. "v{err["input"]}"'
        )
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _duplicate_images(doc: Any) -> list[tuple[tuple[int | str, ...], str]]:
    images = doc.get("images") if isinstance(doc, CommentedMap) else None
    if not isinstance(images, CommentedSeq):
        return []
    seen: dict[str, int] = {}
    problems: list[tuple[tuple[int | str, ...], str]] = []
    for i, item in enumerate(images):
        if not isinstance(item, str):
            continue
        try:
            key = str(parse_reference(item))
        except AirlockError:
            continue
        if key in seen:
            problems.append(
                (("images", i), f"duplicate image {item!r} (same as images[{seen[key]}])")
            )
        else:
            seen[key] = i
    return problems


def parse_spec(text: str, *, filename: str = "airlock.yaml") -> Spec:
    """Validate spec text; every problem in one SpecError naming `filename:line: field: why`."""
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        raise SpecError([f"{filename}:{line}: not valid YAML: {exc.problem}"]) from None
    except YAMLError as exc:  # reader errors (control characters) carry no problem mark
        raise SpecError([f"{filename}:1: not valid YAML: {exc}"]) from None
    if not isinstance(doc, CommentedMap):
        raise SpecError([f"{filename}:1: the spec must be a mapping (apiVersion, kind, ...)"])
    problems: list[tuple[int, str]] = []
    spec: Spec | None = None
    try:
        spec = Spec.model_validate(_plain(doc))
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append((_line_of(doc, loc) or 0, f"{_field_name(loc)}: {_describe(err)}"))
    for loc, msg in _duplicate_images(doc):
        problems.append((_line_of(doc, loc) or 0, f"{_field_name(loc)}: {msg}"))
    if problems or spec is None:
        problems.sort(key=lambda p: p[0])
        raise SpecError(
            [f"{filename}:{line}: {msg}" for line, msg in problems],
            hint="fix the fields above; `airlock init` writes a valid example",
        )
    return spec


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_spec(path: Path) -> Spec:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(
            [f"{path}: no such file"], hint="create one with `airlock init -o airlock.yaml`"
        ) from None
    return parse_spec(text, filename=str(path))


def dump_spec(spec: Spec) -> str:
    """The spec as YAML, with the field names users write (aliases), defaults included."""
    data = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    out = StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return out.getvalue()
