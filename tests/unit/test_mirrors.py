"""containerd hosts.toml and config.toml renderers, and the small TOML writer (pure)."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.errors import NodeError, UsageError
from airlock.node.mirrors import (
    Mirror,
    config_version_for,
    dump_toml,
    mirror_files,
    render_containerd_config,
    render_hosts_toml,
    upstream_registries,
    upstreams_in_store,
    write_mirrors,
)
from airlock.oci.layout import OciLayout, image_descriptor
from airlock.oci.media import OCI_MANIFEST

PAUSE = "registry.k8s.io/pause:3.9"
TWO = [Mirror("http://198.18.0.1:5000"), Mirror("http://198.18.0.5:5000")]

# --- hosts.toml ----------------------------------------------------------------------------


def test_two_mirrors_in_order_with_upstream_fallback() -> None:
    assert render_hosts_toml("registry.k8s.io", TWO) == (
        "# Managed by airlock: registry.k8s.io images are pulled from these registries, in order.\n"
        'server = "https://registry.k8s.io"\n'
        "\n"
        '[host."http://198.18.0.1:5000/v2/registry.k8s.io"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n"
        "\n"
        '[host."http://198.18.0.5:5000/v2/registry.k8s.io"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n"
    )


def test_without_fallback_the_last_mirror_is_also_the_server() -> None:
    mirrors = [
        Mirror("http://198.18.0.1:5000"),
        Mirror("https://node2.lab:5443/", ca_file="/etc/airlock/ca.crt"),
    ]
    assert render_hosts_toml("registry.k8s.io", mirrors, upstream_fallback=False) == (
        "# Managed by airlock: registry.k8s.io images are pulled from these registries, in order.\n"
        'server = "https://node2.lab:5443/v2/registry.k8s.io"\n'
        'capabilities = ["pull", "resolve"]\n'
        "override_path = true\n"
        'ca = "/etc/airlock/ca.crt"\n'
        "\n"
        '[host."http://198.18.0.1:5000/v2/registry.k8s.io"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n"
        "\n"
        '[host."https://node2.lab:5443/v2/registry.k8s.io"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n"
        '  ca = "/etc/airlock/ca.crt"\n'
    )


def test_tls_fields_parse_and_hosts_keep_their_order() -> None:
    mirrors = [
        Mirror("https://b.lab:5443", ca_file="/etc/airlock/ca.crt"),
        Mirror("https://a.lab:5443", skip_verify=True),
    ]
    doc = tomllib.loads(render_hosts_toml("ghcr.io", mirrors))
    assert doc["server"] == "https://ghcr.io"
    assert list(doc["host"]) == ["https://b.lab:5443/v2/ghcr.io", "https://a.lab:5443/v2/ghcr.io"]
    first, second = doc["host"].values()
    assert first == {
        "capabilities": ["pull", "resolve"],
        "override_path": True,
        "ca": "/etc/airlock/ca.crt",
    }
    assert second["skip_verify"] is True
    assert "ca" not in second
    assert "skip_verify" not in first


def test_docker_hub_server_is_registry_1() -> None:
    doc = tomllib.loads(render_hosts_toml("docker.io", TWO[:1]))
    assert doc["server"] == "https://registry-1.docker.io"
    assert list(doc["host"]) == ["http://198.18.0.1:5000/v2/docker.io"]


def test_mirror_url_with_a_path_prefix() -> None:
    assert Mirror("https://proxy.lab/airlock/").endpoint("quay.io") == (
        "https://proxy.lab/airlock/v2/quay.io"
    )


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("127.0.0.1:5000", {}),
        ("ftp://127.0.0.1", {}),
        ("http://", {}),
        ("http://user:pw@127.0.0.1:5000", {}),
        ("http://127.0.0.1:5000?x=1", {}),
        ("http://127.0.0.1:5000", {"ca_file": "/ca.crt"}),
        ("http://127.0.0.1:5000", {"skip_verify": True}),
    ],
)
def test_bad_mirrors_are_usage_errors(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Mirror(url, **kwargs)


@pytest.mark.parametrize("upstream", ["", "../etc", "a/b", "Registry.K8s.io", "x y", "_default"])
def test_bad_upstreams_are_usage_errors(upstream: str) -> None:
    with pytest.raises(UsageError):
        render_hosts_toml(upstream, TWO)


def test_no_mirror_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no local registry"):
        render_hosts_toml("quay.io", [])


def test_mirror_files_one_per_upstream_sorted() -> None:
    files = mirror_files(["quay.io", "docker.io", "quay.io", "myreg.lab:5000"], TWO)
    assert list(files) == [
        "docker.io/hosts.toml",
        "myreg.lab:5000/hosts.toml",
        "quay.io/hosts.toml",
    ]
    assert files["quay.io/hosts.toml"] == render_hosts_toml("quay.io", TWO)
    for text in files.values():
        tomllib.loads(text)


def test_upstreams_from_references_and_store(tmp_path: Path) -> None:
    refs = [
        "nginx",
        "registry.k8s.io/pause:3.9",
        "docker.io/flannel/flannel:v0.22.0",
        "ghcr.io/x/y:1",
    ]
    assert upstream_registries(refs) == ["docker.io", "ghcr.io", "registry.k8s.io"]
    store = OciLayout(tmp_path / "store")
    store.init()
    digest = "sha256:" + "a" * 64
    store.merge_index([image_descriptor(r, OCI_MANIFEST, digest, 10) for r in refs[1:]])
    assert upstreams_in_store(store) == ["docker.io", "ghcr.io", "registry.k8s.io"]


def test_write_mirrors_is_idempotent(tmp_path: Path) -> None:
    files = mirror_files(["docker.io", "registry.k8s.io"], TWO)
    root = tmp_path / "certs.d"
    written = write_mirrors(root, files)
    assert written == [root / "docker.io/hosts.toml", root / "registry.k8s.io/hosts.toml"]
    assert (root / "docker.io/hosts.toml").read_text() == files["docker.io/hosts.toml"]
    assert write_mirrors(root, files) == []
    changed = mirror_files(["docker.io"], TWO[:1])
    assert write_mirrors(root, changed) == [root / "docker.io/hosts.toml"]


def test_write_mirrors_stays_under_root(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="outside"):
        write_mirrors(tmp_path / "certs.d", {"../evil/hosts.toml": "x"})
    assert not (tmp_path / "evil").exists()


# --- config.toml ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1.6.20", 2), ("v1.7.13", 2), ("1.7.x", 2), ("1.5.0", 2), ("2.0.0", 3), ("v2.1.4", 3)],
)
def test_config_version_for(version: str, expected: int) -> None:
    assert config_version_for(version) == expected


@pytest.mark.parametrize("version", ["1.4.13", "3.0.0", "latest", ""])
def test_unsupported_containerd_versions(version: str) -> None:
    with pytest.raises(UsageError):
        config_version_for(version)


def test_fresh_config_version_2() -> None:
    assert render_containerd_config(containerd_version="1.7.13", sandbox_image=PAUSE) == (
        "version = 2\n"
        "\n"
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        'sandbox_image = "registry.k8s.io/pause:3.9"\n'
        "\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        'runtime_type = "io.containerd.runc.v2"\n'
        "\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "SystemdCgroup = true\n"
        "\n"
        '[plugins."io.containerd.grpc.v1.cri".registry]\n'
        'config_path = "/etc/containerd/certs.d"\n'
    )


def test_fresh_config_version_3() -> None:
    text = render_containerd_config(
        containerd_version="2.0.2", sandbox_image="registry.k8s.io/pause:3.10"
    )
    assert text == (
        "version = 3\n"
        "\n"
        '[plugins."io.containerd.cri.v1.images".pinned_images]\n'
        'sandbox = "registry.k8s.io/pause:3.10"\n'
        "\n"
        '[plugins."io.containerd.cri.v1.images".registry]\n'
        'config_path = "/etc/containerd/certs.d"\n'
        "\n"
        '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]\n'
        'runtime_type = "io.containerd.runc.v2"\n'
        "\n"
        '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]\n'
        "SystemdCgroup = true\n"
    )
    assert "io.containerd.grpc.v1.cri" not in text


USER_CONFIG = """\
# my containerd
version = 2
root = "/data/containerd"
disabled_plugins = ["cri", "io.containerd.snapshotter.v1.btrfs"]
oom_score = -999

[grpc]
  address = "/run/containerd/containerd.sock"
  max_recv_message_size = 16777216

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "k8s.gcr.io/pause:3.2"
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = "/usr/local/sbin/runc"
      SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
      endpoint = ["https://mirror.example"]
    [plugins."io.containerd.grpc.v1.cri".registry.configs."reg.lab".auth]
      username = "me"
    [plugins."io.containerd.grpc.v1.cri".registry.configs."reg.lab".tls]
      insecure_skip_verify = true
    [plugins."io.containerd.grpc.v1.cri".registry.configs."other.lab".tls]
      ca_file = "/ca.pem"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/opt/containerd"

[metrics]
  address = "127.0.0.1:1338"
"""


def test_user_config_keeps_user_keys_and_order() -> None:
    text = render_containerd_config(
        containerd_version="1.6.20", sandbox_image=PAUSE, existing=USER_CONFIG
    )
    doc = tomllib.loads(text)
    assert list(doc) == [
        "version",
        "root",
        "disabled_plugins",
        "oom_score",
        "grpc",
        "plugins",
        "metrics",
    ]
    assert doc["root"] == "/data/containerd"
    assert doc["oom_score"] == -999
    assert doc["disabled_plugins"] == ["io.containerd.snapshotter.v1.btrfs"]
    assert doc["grpc"] == {
        "address": "/run/containerd/containerd.sock",
        "max_recv_message_size": 16777216,
    }
    assert doc["metrics"] == {"address": "127.0.0.1:1338"}
    assert list(doc["plugins"]) == ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE
    assert cri["enable_selinux"] is False
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni"}
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"BinaryName": "/usr/local/sbin/runc", "SystemdCgroup": True}
    # containerd refuses mirrors and tls next to config_path; credentials stay.
    assert cri["registry"] == {
        "configs": {"reg.lab": {"auth": {"username": "me"}}},
        "config_path": "/etc/containerd/certs.d",
    }
    assert doc["plugins"]["io.containerd.internal.v1.opt"] == {"path": "/opt/containerd"}
    assert "# my containerd" not in text  # comments are not kept (documented)


@pytest.mark.parametrize("version", ["1.6.20", "2.0.0"])
def test_rendering_twice_changes_nothing(version: str) -> None:
    existing = USER_CONFIG if version.startswith("1.") else ""
    once = render_containerd_config(
        containerd_version=version, sandbox_image=PAUSE, existing=existing
    )
    twice = render_containerd_config(containerd_version=version, sandbox_image=PAUSE, existing=once)
    assert once == twice


def test_custom_config_path() -> None:
    text = render_containerd_config(
        containerd_version="2.0.0", sandbox_image=PAUSE, config_path="/srv/certs.d"
    )
    doc = tomllib.loads(text)
    assert (
        doc["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == "/srv/certs.d"
    )


@pytest.mark.parametrize(
    ("existing", "version", "match"),
    [
        ('root = "/x"\n', "1.6.20", "version 1"),
        ("version = 2\n", "2.0.0", "needs version 3"),
        ("version = 3\n", "1.7.0", "needs version 2"),
        ("version = [\n", "1.7.0", "not valid TOML"),
        ("version = 2\nplugins = 5\n", "1.7.0", "expected a table"),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nregistry = 1\n', "1.7.0", "table"),
    ],
)
def test_bad_existing_configs_are_node_errors(existing: str, version: str, match: str) -> None:
    with pytest.raises(NodeError, match=match):
        render_containerd_config(containerd_version=version, sandbox_image=PAUSE, existing=existing)


def test_comment_only_config_counts_as_empty() -> None:
    fresh = render_containerd_config(containerd_version="1.7.0", sandbox_image=PAUSE)
    commented = render_containerd_config(
        containerd_version="1.7.0", sandbox_image=PAUSE, existing="# nothing yet\n\n"
    )
    assert commented == fresh


# --- the TOML writer -----------------------------------------------------------------------

_keys = st.text(max_size=8)
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.datetimes(),
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.dates(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=12,
)
_documents = st.dictionaries(_keys, _values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_dump_toml_round_trips(doc: dict[str, Any]) -> None:
    assert tomllib.loads(dump_toml(doc)) == doc


_plugin_names = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz.-_"), min_size=1, max_size=20
).filter(lambda n: n not in {"cri", "io.containerd.grpc.v1.cri"})
_user_configs = st.fixed_dictionaries(
    {"version": st.just(2)},
    optional={
        "root": st.text(max_size=20),
        "disabled_plugins": st.lists(st.sampled_from(["cri", "io.containerd.grpc.v1.cri", "x"])),
        "grpc": st.dictionaries(_keys, _scalars, max_size=3),
        "plugins": st.dictionaries(
            _plugin_names, st.dictionaries(_keys, _values, max_size=3), max_size=3
        ),
    },
)


@settings(max_examples=150, deadline=None)
@given(_user_configs)
def test_render_keeps_every_user_key_and_is_idempotent(user: dict[str, Any]) -> None:
    existing = dump_toml(user)
    once = render_containerd_config(
        containerd_version="1.7.2", sandbox_image=PAUSE, existing=existing
    )
    doc = tomllib.loads(once)
    for key, value in user.items():
        if key == "disabled_plugins":
            assert doc[key] == [p for p in value if p == "x"]
        elif key == "plugins":
            for name, table in value.items():
                assert doc["plugins"][name] == table
        else:
            assert doc[key] == value
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == PAUSE
    assert (
        render_containerd_config(containerd_version="1.7.2", sandbox_image=PAUSE, existing=once)
        == once
    )
