"""The kubeadm config airlock writes: spec + node facts -> YAML text (pure, except detection).

kubeadm's config API changed at v1.31: `kubeadm.k8s.io/v1beta3` is used below it and
`kubeadm.k8s.io/v1beta4` from it. The differences that touch what airlock writes:

- extra arguments (`nodeRegistration.kubeletExtraArgs`, `apiServer.extraArgs`, ...) are a map in
  v1beta3 and a list of `{name, value}` in v1beta4 (duplicates allowed);
- the control-plane wait moved from `ClusterConfiguration.apiServer.timeoutForControlPlane`
  (v1beta3) to `InitConfiguration.timeouts.controlPlaneComponentHealthCheck`, and the join
  discovery timeout from `discovery.timeout` to `JoinConfiguration.timeouts.discovery` (v1beta4).

Images keep their registry.k8s.io names (no `imageRepository` unless asked): containerd resolves
them through the node's hosts.toml mirrors. The YAML is written by ruamel.yaml (block style, keys
in a fixed order, so `--dry-run` output can be compared byte for byte), quoting every string that
kubeadm's YAML 1.1 reader would take for something else (`[fd00::10]:6443`, `yes`, `0755`).

Node facts come from `ip -j route` and `ip -j addr` (`detect_node_facts`, via airlock.system);
`node_facts_from_ip` is the pure half that tests feed.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import SafeRepresenter
from ruamel.yaml.resolver import VersionedResolver

from airlock import system
from airlock.errors import NodeError, SystemCommandError, UsageError
from airlock.spec import NodeSettings, Spec

__all__ = [
    "CRI_SOCKET",
    "KUBELET_API",
    "V1BETA3",
    "V1BETA4",
    "InitConfigOptions",
    "KubeadmConfig",
    "NodeFacts",
    "detect_node_facts",
    "kubeadm_api_version",
    "kubelet_extra_args",
    "node_facts_from_ip",
    "render_init_config",
    "render_join_config",
    "to_yaml",
    "validate_network",
]

V1BETA3 = "kubeadm.k8s.io/v1beta3"
V1BETA4 = "kubeadm.k8s.io/v1beta4"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
API_PORT = 6443
TOKEN_GROUPS = ("system:bootstrappers:kubeadm:default-node-token",)
TOKEN_USAGES = ("signing", "authentication")
_TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}\Z")
_KEY_RE = re.compile(r"^[a-f0-9]{64}\Z")
_HASH_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")
_ENDPOINT_RE = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:(\d{1,5}))?\Z")


def kubeadm_api_version(kubernetes_version: str) -> str:
    """`kubeadm.k8s.io/v1beta3` below v1.31, `v1beta4` from v1.31."""
    m = re.match(r"^v(\d+)\.(\d+)\.(\d+)$", kubernetes_version)
    if not m:
        raise UsageError(
            f"not an exact Kubernetes version: {kubernetes_version!r}", hint="e.g. v1.27.3"
        )
    return V1BETA4 if (int(m[1]), int(m[2])) >= (1, 31) else V1BETA3


# --- node facts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeFacts:
    """What the config needs to know about this node."""

    hostname: str
    # every address with its prefix and interface: ("eth0", "198.18.2.2/24")
    addresses: tuple[tuple[str, str], ...] = ()
    default_interface: str | None = None
    default_address: str | None = None

    @property
    def node_name(self) -> str:
        # kubeadm lowercases the host name for the Node object; so do we, to match it.
        return self.hostname.lower()

    def interface_of(self, address: str) -> str | None:
        want = ipaddress.ip_address(address)
        for ifname, cidr in self.addresses:
            if ipaddress.ip_interface(cidr).ip == want:
                return ifname
        return None

    def networks(self) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
        """The node's own networks, loopback and link-local left out (they never collide)."""
        out = []
        for ifname, cidr in self.addresses:
            iface = ipaddress.ip_interface(cidr)
            if iface.ip.is_loopback or iface.ip.is_link_local:
                continue
            out.append((ifname, iface.network))
        return out


def node_facts_from_ip(*, hostname: str, route_json: str, addr_json: str) -> NodeFacts:
    """Parse `ip -j route` and `ip -j addr` output (the default route picks the interface)."""
    try:
        routes = json.loads(route_json or "[]")
        links = json.loads(addr_json or "[]")
    except ValueError as exc:
        raise NodeError(f"cannot read `ip -j` output: {exc}") from None
    default_if = next(
        (str(r["dev"]) for r in routes if r.get("dst") == "default" and r.get("dev")), None
    )
    addresses: list[tuple[str, str]] = []
    for link in links:
        ifname = str(link.get("ifname", ""))
        for a in link.get("addr_info") or []:
            if a.get("family") in ("inet", "inet6") and a.get("local"):
                addresses.append((ifname, f"{a['local']}/{a.get('prefixlen', 32)}"))
    default_addr = None
    if default_if:
        default_addr = next(
            (
                cidr.split("/")[0]
                for ifname, cidr in addresses
                if ifname == default_if and ipaddress.ip_interface(cidr).version == 4
            ),
            None,
        )
    return NodeFacts(hostname, tuple(addresses), default_if, default_addr)


def detect_node_facts(
    *, run: Callable[..., system.CommandResult] = system.run, hostname: str | None = None
) -> NodeFacts:
    """This node's host name, addresses and default-route interface."""
    try:
        routes = run(["ip", "-j", "route"]).stdout
        addrs = run(["ip", "-j", "addr"]).stdout
    except SystemCommandError as exc:
        raise NodeError(
            f"cannot read this node's addresses: {exc.message}", hint="is iproute2 installed?"
        ) from exc
    return node_facts_from_ip(
        hostname=hostname or socket.gethostname(), route_json=routes, addr_json=addrs
    )


# --- validation -------------------------------------------------------------------------------


def validate_network(spec: Spec, *, node: NodeFacts) -> None:
    """podSubnet and serviceSubnet must not overlap each other or this node's networks."""
    pod = ipaddress.ip_network(spec.network.pod_subnet)
    svc = ipaddress.ip_network(spec.network.service_subnet)
    problems: list[str] = []
    if pod.overlaps(svc):
        problems.append(
            f"network.podSubnet {pod} overlaps network.serviceSubnet {svc}: pod and service"
            " addresses would be ambiguous"
        )
    for what, net in (("podSubnet", pod), ("serviceSubnet", svc)):
        for ifname, own in node.networks():
            if net.version == own.version and net.overlaps(own):
                problems.append(
                    f"network.{what} {net} overlaps this node's network {own} on {ifname}:"
                    " traffic to the node's neighbours would be routed into the cluster"
                )
    if problems:
        raise UsageError(
            "; ".join(problems),
            hint="pick ranges that collide with nothing, e.g. podSubnet 10.244.0.0/16 and"
            " serviceSubnet 10.96.0.0/12, and set them in the spec's network block",
        )


def _advertise(node: NodeFacts, wanted: str | None) -> str:
    if wanted is None:
        if node.default_address is None:
            raise NodeError(
                "cannot pick the API server's advertise address: this node has no default route"
                " with an IPv4 address",
                hint="pass --advertise-address with one of this node's addresses",
            )
        return node.default_address
    try:
        ipaddress.ip_address(wanted)
    except ValueError:
        raise UsageError(f"advertise address {wanted!r} is not an IP address") from None
    if node.interface_of(wanted) is None:
        have = ", ".join(f"{c.split('/')[0]} on {i}" for i, c in node.addresses) or "none"
        raise UsageError(
            f"advertise address {wanted} is not an address of this node (it has: {have})",
            hint="use one of the node's own addresses; the API server binds to it",
        )
    return wanted


def _check_endpoint(endpoint: str) -> str:
    m = _ENDPOINT_RE.match(endpoint)
    if not m or (m[3] and not 0 < int(m[3]) < 65536):
        raise UsageError(
            f"control-plane endpoint {endpoint!r} is not HOST[:PORT]",
            hint="e.g. k8s-api.lab:6443 (a name or address all control-plane nodes answer on)",
        )
    return endpoint


# --- YAML -------------------------------------------------------------------------------------

# kubeadm reads its config with sigs.k8s.io/yaml, a YAML 1.1 parser: `yes`, `on`, `0755`, `1:30`
# are not strings there although YAML 1.2 (ruamel's default) reads them as strings. A string
# either version would resolve to another type is quoted.
_RESOLVERS = (VersionedResolver(version=(1, 1)), VersionedResolver(version=(1, 2)))
_STR_TAG = "tag:yaml.org,2002:str"


def _represent_str(representer: SafeRepresenter, data: str) -> ScalarNode:
    ambiguous = any(r.resolve(ScalarNode, data, (True, False)) != _STR_TAG for r in _RESOLVERS)
    return representer.represent_scalar(_STR_TAG, data, style="'" if ambiguous else None)


def _yaml() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 4096  # long values (hashes, URLs) stay on one line
    yaml.representer.add_representer(str, _represent_str)
    return yaml


def to_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    """Block-style YAML written by ruamel.yaml, documents joined by `---`, keys in the order
    given; every string kubeadm's YAML 1.1 reader could take for another type is quoted."""
    out = io.StringIO()
    _yaml().dump_all([_plain(d) for d in documents], out)
    return out.getvalue()


def _plain(value: Any) -> Any:
    """Mappings as dicts and tuples as lists, so the safe representer takes them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _extra_args(api: str, args: Mapping[str, str]) -> Any:
    if api == V1BETA3:
        return dict(args)
    return [{"name": k, "value": v} for k, v in args.items()]


# --- init -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitConfigOptions:
    token: str  # bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}
    certificate_key: str  # 64 hex: encrypts the control-plane certs in the kubeadm-certs Secret
    advertise_address: str | None = None  # None: the default-route interface's address
    control_plane_endpoint: str | None = None  # HA: a name or VIP every control plane answers
    cluster_name: str | None = None  # None: the spec's metadata.name
    single_node: bool = True  # no control-plane taint, so workloads schedule here
    bind_port: int = API_PORT
    image_repository: str | None = None  # None: registry.k8s.io names, resolved by mirrors
    token_ttl: str = "24h0m0s"
    control_plane_timeout: str = "4m0s"
    api_server_extra_args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KubeadmConfig:
    api_version: str
    kubernetes_version: str
    text: str
    node_name: str
    advertise_address: str
    api_endpoint: str  # what joiners dial: controlPlaneEndpoint, else address:port


def _check_secrets(token: str, certificate_key: str | None) -> None:
    if not _TOKEN_RE.match(token):
        raise UsageError(
            "the bootstrap token must look like abcdef.0123456789abcdef ([a-z0-9]{6}.[a-z0-9]{16})"
        )
    if certificate_key is not None and not _KEY_RE.match(certificate_key):
        raise UsageError("the certificate key must be 64 lowercase hex characters (32 bytes)")


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def render_init_config(spec: Spec, *, node: NodeFacts, options: InitConfigOptions) -> KubeadmConfig:
    """InitConfiguration + ClusterConfiguration + KubeletConfiguration for this node."""
    version = spec.kubernetes.version
    api = kubeadm_api_version(version)
    _check_secrets(options.token, options.certificate_key)
    validate_network(spec, node=node)
    address = _advertise(node, options.advertise_address)
    endpoint = (
        _check_endpoint(options.control_plane_endpoint) if options.control_plane_endpoint else None
    )
    registration = _registration(api, spec.node, node=node, address=address)
    if options.single_node:
        registration["taints"] = []
    init: dict[str, Any] = {
        "apiVersion": api,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": options.token,
                "ttl": options.token_ttl,
                "groups": list(TOKEN_GROUPS),
                "usages": list(TOKEN_USAGES),
            }
        ],
        "certificateKey": options.certificate_key,
        "localAPIEndpoint": {"advertiseAddress": address, "bindPort": options.bind_port},
        "nodeRegistration": registration,
    }
    api_server: dict[str, Any] = {}
    if options.api_server_extra_args:
        api_server["extraArgs"] = _extra_args(api, options.api_server_extra_args)
    if api == V1BETA3:
        api_server["timeoutForControlPlane"] = options.control_plane_timeout
    else:
        init["timeouts"] = {"controlPlaneComponentHealthCheck": options.control_plane_timeout}
    cluster: dict[str, Any] = {
        "apiVersion": api,
        "kind": "ClusterConfiguration",
        "clusterName": options.cluster_name or spec.metadata.name,
        "kubernetesVersion": version,
    }
    if endpoint:
        cluster["controlPlaneEndpoint"] = endpoint
    if options.image_repository:
        cluster["imageRepository"] = options.image_repository
    cluster["networking"] = {
        "podSubnet": spec.network.pod_subnet,
        "serviceSubnet": spec.network.service_subnet,
        "dnsDomain": spec.network.dns_domain,
    }
    if api_server:
        cluster["apiServer"] = api_server
    documents = [init, cluster, _kubelet_config(spec.node)]
    proxy = _kube_proxy_config(spec.node)
    if proxy:
        documents.append(proxy)
    return KubeadmConfig(
        api_version=api,
        kubernetes_version=version,
        text=to_yaml(documents),
        node_name=node.node_name,
        advertise_address=address,
        api_endpoint=endpoint or _host_port(address, options.bind_port),
    )


def kubelet_extra_args(settings: NodeSettings, *, node: str, address: str) -> dict[str, str]:
    """The kubelet flags that differ per node (kubeadm shares the KubeletConfiguration with
    every node that joins, so per-node values are flags): node-ip, and cgroup-root."""
    args = {"node-ip": address}
    root = settings.cgroup_root_for(node)
    if root:
        args["cgroup-root"] = root
    return args


def _registration(
    api: str, settings: NodeSettings, *, node: NodeFacts, address: str
) -> dict[str, Any]:
    registration: dict[str, Any] = {
        "name": node.node_name,
        "criSocket": CRI_SOCKET,
        # The images are in the local registry already; never reach out for a newer tag.
        "imagePullPolicy": "IfNotPresent",
        "kubeletExtraArgs": _extra_args(
            api, kubelet_extra_args(settings, node=node.node_name, address=address)
        ),
    }
    if settings.ignore_preflight_errors:
        registration["ignorePreflightErrors"] = [i.name for i in settings.ignore_preflight_errors]
    return registration


def _kubelet_config(settings: NodeSettings) -> dict[str, Any]:
    kubelet: dict[str, Any] = {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "cgroupDriver": settings.cgroup_driver,
    }
    if settings.eviction_hard is not None:
        kubelet["evictionHard"] = dict(settings.eviction_hard)
    if settings.fail_cgroup_v1 is not None:
        kubelet["failCgroupV1"] = settings.fail_cgroup_v1
    return kubelet


def _kube_proxy_config(settings: NodeSettings) -> dict[str, Any] | None:
    if settings.kube_proxy.conntrack_max_per_core is None:
        return None
    return {
        "apiVersion": KUBE_PROXY_API,
        "kind": "KubeProxyConfiguration",
        "conntrack": {"maxPerCore": settings.kube_proxy.conntrack_max_per_core},
    }


# --- join -------------------------------------------------------------------------------------


def render_join_config(
    *,
    kubernetes_version: str,
    api_endpoint: str,
    token: str,
    ca_cert_hash: str,
    node: NodeFacts,
    advertise_address: str | None = None,
    certificate_key: str | None = None,
    control_plane: bool = False,
    discovery_timeout: str = "5m0s",
    settings: NodeSettings | None = None,
) -> KubeadmConfig:
    """A JoinConfiguration; with `control_plane` it carries the certificate key."""
    api = kubeadm_api_version(kubernetes_version)
    _check_secrets(token, certificate_key)
    _check_endpoint(api_endpoint)
    if not _HASH_RE.match(ca_cert_hash):
        raise UsageError(f"CA cert hash {ca_cert_hash!r} is not sha256:<64 hex>")
    address = _advertise(node, advertise_address)
    discovery: dict[str, Any] = {
        "bootstrapToken": {
            "apiServerEndpoint": api_endpoint,
            "token": token,
            "caCertHashes": [ca_cert_hash],
        }
    }
    join: dict[str, Any] = {"apiVersion": api, "kind": "JoinConfiguration", "discovery": discovery}
    if api == V1BETA3:
        discovery["timeout"] = discovery_timeout
    else:
        join["timeouts"] = {"discovery": discovery_timeout}
    join["nodeRegistration"] = _registration(
        api, settings or NodeSettings.model_validate({}), node=node, address=address
    )
    if control_plane:
        if not certificate_key:
            raise UsageError(
                "joining as a control-plane node needs the certificate key",
                hint="the join file from `airlock cluster init` carries it; it expires 2 h after"
                " init (kubeadm deletes the kubeadm-certs Secret), so make a fresh one then",
            )
        join["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": address, "bindPort": API_PORT},
            "certificateKey": certificate_key,
        }
    return KubeadmConfig(
        api_version=api,
        kubernetes_version=kubernetes_version,
        text=to_yaml([join]),
        node_name=node.node_name,
        advertise_address=address,
        api_endpoint=api_endpoint,
    )
