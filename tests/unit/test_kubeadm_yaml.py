"""The kubeadm config YAML, read back as kubeadm reads it (YAML 1.1) into models of kubeadm's API
types: every field keeps its Go type. IPv4, IPv6 (`[fd00::10]:6443` must stay a string) and
names that a YAML 1.1 reader would take for a bool, a number or null."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from ruamel.yaml import YAML

from airlock.cluster.kubeadm_config import (
    V1BETA3,
    V1BETA4,
    InitConfigOptions,
    NodeFacts,
    render_init_config,
    render_join_config,
    to_yaml,
)
from airlock.presets import preset_text
from airlock.spec import parse_spec

TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4
HASH = "sha256:" + "c" * 64


class _Go(BaseModel):
    """A Go struct: strict types (a string is never a bool or an int), no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Arg(_Go):  # v1beta4 Arg
    name: str
    value: str


ExtraArgs = dict[str, str] | list[Arg]  # map in v1beta3, []Arg in v1beta4


class BootstrapToken(_Go):
    token: str
    ttl: str
    groups: list[str]
    usages: list[str]


class APIEndpoint(_Go):
    advertiseAddress: str
    bindPort: Annotated[int, Field(ge=1, le=65535)]  # int32


class NodeRegistrationOptions(_Go):
    name: str
    criSocket: str
    imagePullPolicy: Literal["Always", "Never", "IfNotPresent"]
    kubeletExtraArgs: ExtraArgs
    taints: list[dict[str, str]] | None = None


class InitTimeouts(_Go):
    controlPlaneComponentHealthCheck: str


class InitConfiguration(_Go):
    apiVersion: Literal["kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"]
    kind: Literal["InitConfiguration"]
    bootstrapTokens: list[BootstrapToken]
    certificateKey: str
    localAPIEndpoint: APIEndpoint
    nodeRegistration: NodeRegistrationOptions
    timeouts: InitTimeouts | None = None


class Networking(_Go):
    podSubnet: str
    serviceSubnet: str
    dnsDomain: str


class APIServer(_Go):
    extraArgs: ExtraArgs | None = None
    timeoutForControlPlane: str | None = None


class ClusterConfiguration(_Go):
    apiVersion: str
    kind: Literal["ClusterConfiguration"]
    clusterName: str
    kubernetesVersion: str
    controlPlaneEndpoint: str | None = None
    imageRepository: str | None = None
    networking: Networking
    apiServer: APIServer | None = None


class KubeletConfiguration(_Go):
    apiVersion: Literal["kubelet.config.k8s.io/v1beta1"]
    kind: Literal["KubeletConfiguration"]
    cgroupDriver: str


class BootstrapTokenDiscovery(_Go):
    apiServerEndpoint: str
    token: str
    caCertHashes: list[str]


class Discovery(_Go):
    bootstrapToken: BootstrapTokenDiscovery
    timeout: str | None = None


class JoinControlPlane(_Go):
    localAPIEndpoint: APIEndpoint
    certificateKey: str


class JoinTimeouts(_Go):
    discovery: str


class JoinConfiguration(_Go):
    apiVersion: str
    kind: Literal["JoinConfiguration"]
    discovery: Discovery
    timeouts: JoinTimeouts | None = None
    nodeRegistration: NodeRegistrationOptions
    controlPlane: JoinControlPlane | None = None


def read_as_kubeadm(text: str) -> list[dict[str, Any]]:
    """Each document with YAML 1.1 resolution (sigs.k8s.io/yaml's), which ruamel applies to
    the first document of a stream only: so one document at a time."""
    docs = []
    for part in text.split("---\n"):
        yaml = YAML(typ="safe", pure=True)
        yaml.version = (1, 1)
        docs.append(yaml.load(part))
        assert YAML(typ="safe", pure=True).load(part) == docs[-1]  # 1.2 reads the same
    return docs


def _node(hostname: str, *addresses: str) -> NodeFacts:
    cidrs = tuple(("eth0", f"{a}/{64 if ':' in a else 24}") for a in addresses)
    v4 = next((a for a in addresses if ":" not in a), None)
    return NodeFacts(hostname, cidrs, "eth0", v4)


# Host and cluster names a YAML 1.1 reader would not read as strings if written plainly.
AWKWARD = ["yes", "NO", "on", "off", "y", "n", "true", "null", "0755", "1e3", "12345", "1:30"]


@pytest.mark.parametrize("preset", ["seed", "current"])
@pytest.mark.parametrize(
    ("address", "endpoint"),
    [("198.18.2.2", "198.18.2.2:6443"), ("fd00::10", "[fd00::10]:6443")],
)
@pytest.mark.parametrize("name", ["cp-1", *AWKWARD])
def test_init_config_reads_back_as_kubeadm_types(
    preset: str, address: str, endpoint: str, name: str
) -> None:
    spec = parse_spec(preset_text(preset))  # type: ignore[arg-type]
    cfg = render_init_config(
        spec,
        node=_node(name, "198.18.2.2", "fd00::10"),
        options=InitConfigOptions(
            token=TOKEN, certificate_key=KEY, advertise_address=address, cluster_name=name
        ),
    )
    init, cluster, kubelet = read_as_kubeadm(cfg.text)
    i = InitConfiguration.model_validate(init)
    c = ClusterConfiguration.model_validate(cluster)
    KubeletConfiguration.model_validate(kubelet)
    assert i.localAPIEndpoint.advertiseAddress == address
    assert i.nodeRegistration.name == name.lower()
    assert c.clusterName == name
    assert i.bootstrapTokens[0].token == TOKEN and i.certificateKey == KEY
    assert cfg.api_endpoint == endpoint
    assert i.apiVersion == (V1BETA3 if preset == "seed" else V1BETA4)
    node_ip = i.nodeRegistration.kubeletExtraArgs
    got = node_ip["node-ip"] if isinstance(node_ip, dict) else node_ip[0].value
    assert got == address


@pytest.mark.parametrize("version", ["v1.27.3", "v1.34.1"])
@pytest.mark.parametrize("endpoint", ["198.18.2.2:6443", "[fd00::10]:6443", "k8s-api.lab:6443"])
@pytest.mark.parametrize("name", ["worker-1", *AWKWARD])
def test_join_config_reads_back_as_kubeadm_types(version: str, endpoint: str, name: str) -> None:
    cfg = render_join_config(
        kubernetes_version=version,
        api_endpoint=endpoint,
        token=TOKEN,
        ca_cert_hash=HASH,
        node=_node(name, "198.18.2.3", "fd00::11"),
        advertise_address="fd00::11",
        certificate_key=KEY,
        control_plane=True,
    )
    (doc,) = read_as_kubeadm(cfg.text)
    join = JoinConfiguration.model_validate(doc)
    assert join.discovery.bootstrapToken.apiServerEndpoint == endpoint
    assert join.discovery.bootstrapToken.caCertHashes == [HASH]
    assert join.nodeRegistration.name == name.lower()
    assert join.controlPlane is not None
    assert join.controlPlane.localAPIEndpoint.advertiseAddress == "fd00::11"


def test_ipv6_endpoint_is_quoted_in_the_text() -> None:
    cfg = render_join_config(
        kubernetes_version="v1.27.3",
        api_endpoint="[fd00::10]:6443",
        token=TOKEN,
        ca_cert_hash=HASH,
        node=_node("w", "198.18.2.3"),
    )
    assert "apiServerEndpoint: '[fd00::10]:6443'\n" in cfg.text


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
_scalars = st.one_of(
    _text,
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
    st.sampled_from(["true", "no", "Yes", "ON", "1.5", "0x1F", "0o17", "0755", "~", "null"]),
    st.sampled_from(["- x", "a: b", "#c", "12:30", "", "2001-12-14", "[fd00::1]:6443", "<<"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=10,
)


@given(st.lists(st.dictionaries(_text, _values, min_size=1, max_size=4), min_size=1, max_size=3))
def test_to_yaml_round_trips_in_yaml_1_1_and_1_2(docs: list[dict[str, Any]]) -> None:
    text = to_yaml(docs)
    assert list(YAML(typ="safe", pure=True).load_all(text)) == docs
    for doc, part in zip(docs, text.split("\n---\n"), strict=True):
        yaml = YAML(typ="safe", pure=True)
        yaml.version = (1, 1)
        assert yaml.load(part) == doc
