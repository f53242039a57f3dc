"""containerd mirror configuration: hosts.toml per upstream registry, and config.toml.

containerd pulls every image by its original name (`registry.k8s.io/pause:3.9`); for each
upstream registry host, `<config_path>/<host>/hosts.toml` sends those pulls to local registries
instead, tried in order (several give redundancy across nodes). Each local registry serves the
upstream's images under the full upstream name, so a mirror entry is
`[host."http(s)://ADDR/v2/<upstream>"]` with `override_path = true`: containerd then asks for
`ADDR/v2/<upstream>/<repository>/manifests/<tag>`, which is exactly where airlock's registry
keeps them. Nothing is rewritten: kubeadm's image names and the CNI manifests stay as they are.

config.toml is edited, not replaced: the renderer parses the user's file, sets only the keys
airlock owns (the CRI registry `config_path`, the sandbox image, `SystemdCgroup`, CRI not
disabled) and writes the rest back in its order. containerd 1.x reads config version 2,
containerd 2.x version 3 (its plugin IDs differ). The writer emits plain TOML; comments in the
user's file are not kept (tomllib does not report them).

Everything here is pure except `write_mirrors`.
"""

from __future__ import annotations

import datetime
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airlock.atomic import write_atomic
from airlock.errors import NodeError, UsageError
from airlock.oci.layout import OciLayout
from airlock.oci.ref import DOCKER_HUB, parse_reference

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "HOSTS_TOML",
    "Mirror",
    "config_version_for",
    "dump_toml",
    "mirror_files",
    "render_containerd_config",
    "render_hosts_toml",
    "upstream_registries",
    "upstreams_in_store",
    "write_mirrors",
]

DEFAULT_CONFIG_PATH = "/etc/containerd/certs.d"
HOSTS_TOML = "hosts.toml"
MIRROR_CAPABILITIES = ("pull", "resolve")
RUNC_RUNTIME_TYPE = "io.containerd.runc.v2"

# The documented upstream endpoint of a registry host when it is not the host itself.
_UPSTREAM_SERVERS = {DOCKER_HUB: "https://registry-1.docker.io"}
_HOST_RE = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?$"
)

# Plugin IDs of the CRI in each config version; the CRI must not be disabled.
_CRI_V2 = "io.containerd.grpc.v1.cri"
_CRI_V3_IMAGES = "io.containerd.cri.v1.images"
_CRI_V3_RUNTIME = "io.containerd.cri.v1.runtime"
_CRI_PLUGIN_NAMES = frozenset({"cri", _CRI_V2, _CRI_V3_IMAGES, _CRI_V3_RUNTIME})


@dataclass(frozen=True)
class Mirror:
    """A local registry that serves upstream images under their full names.

    `url` is `http://ADDR[:PORT]` or `https://ADDR[:PORT]` (a path prefix is allowed, e.g. a
    registry behind a reverse proxy). `ca_file` is the CA that signed an https registry's
    certificate; `skip_verify` turns certificate checks off and is only for tests.
    """

    url: str
    ca_file: str | None = None
    skip_verify: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(
                f"invalid registry URL {self.url!r}",
                "give the scheme and address, e.g. https://198.18.1.1:5000 or http://127.0.0.1:5000",
            )
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise UsageError(
                f"invalid registry URL {self.url!r}: no credentials, query or fragment allowed"
            )
        if parts.scheme == "http" and (self.ca_file or self.skip_verify):
            raise UsageError(
                f"registry {self.url} is plain http, but a CA file or skip_verify was given",
                "use an https:// URL for a registry that serves TLS",
            )

    def endpoint(self, upstream: str) -> str:
        """Where this registry serves `upstream`'s repositories (with override_path)."""
        return f"{self.url.rstrip('/')}/v2/{upstream}"


def _check_upstream(upstream: str) -> None:
    # The upstream becomes a directory name: only a registry host[:port] may pass.
    if not _HOST_RE.match(upstream):
        raise UsageError(
            f"invalid upstream registry host {upstream!r}",
            "a registry host looks like registry.k8s.io, docker.io or myregistry.local:5000",
        )


def upstream_server(upstream: str) -> str:
    """The documented default `server` for an upstream registry host."""
    return _UPSTREAM_SERVERS.get(upstream, f"https://{upstream}")


def render_hosts_toml(
    upstream: str, mirrors: Sequence[Mirror], *, upstream_fallback: bool = True
) -> str:
    """hosts.toml for one upstream registry host: try `mirrors` in order.

    With `upstream_fallback` (the default) `server` is the upstream's documented endpoint,
    which containerd tries after every mirror failed (useful on a node that can reach it;
    in an air gap the attempt fails). Without it the last mirror is also the `server`, so
    containerd never contacts the upstream at all (that mirror is tried twice). Every mirror
    is a `[host]` entry either way: containerd 1.6 rejects a hosts.toml without one, and then
    falls back to the upstream.
    """
    _check_upstream(upstream)
    if not mirrors:
        raise UsageError(
            f"no local registry given for {upstream}", "give at least one registry address"
        )
    lines = [
        f"# Managed by airlock: {upstream} images are pulled from these registries, in order.",
    ]
    if upstream_fallback:
        lines.append(f"server = {_toml_value(upstream_server(upstream))}")
    else:
        last = mirrors[-1]
        lines.append(f"server = {_toml_value(last.endpoint(upstream))}")
        lines.extend(_host_fields(last, indent=""))
    for mirror in mirrors:
        lines.append("")
        lines.append(f"[host.{_toml_key(mirror.endpoint(upstream))}]")
        lines.extend(_host_fields(mirror, indent="  "))
    return "\n".join(lines) + "\n"


def _host_fields(mirror: Mirror, *, indent: str) -> list[str]:
    fields = [
        f"{indent}capabilities = {_toml_value(list(MIRROR_CAPABILITIES))}",
        f"{indent}override_path = true",
    ]
    if mirror.ca_file:
        fields.append(f"{indent}ca = {_toml_value(mirror.ca_file)}")
    if mirror.skip_verify:
        fields.append(f"{indent}skip_verify = true")
    return fields


def mirror_files(
    upstreams: Iterable[str], mirrors: Sequence[Mirror], *, upstream_fallback: bool = True
) -> dict[str, str]:
    """`<upstream>/hosts.toml` (relative to the hosts directory, e.g. certs.d) -> content."""
    return {
        f"{upstream}/{HOSTS_TOML}": render_hosts_toml(
            upstream, mirrors, upstream_fallback=upstream_fallback
        )
        for upstream in sorted(set(upstreams))
    }


def write_mirrors(root: Path, files: Mapping[str, str]) -> list[Path]:
    """Write `files` under the hosts directory `root` atomically; returns the paths changed.

    A file whose content is already right is not touched, so a second run changes nothing.
    """
    changed: list[Path] = []
    base = root.resolve()
    for rel, content in sorted(files.items()):
        target = (root / rel).resolve()
        if not target.is_relative_to(base):
            raise UsageError(f"refusing to write {rel!r} outside {root}")
        data = content.encode()
        if target.is_file() and target.read_bytes() == data:
            continue
        write_atomic(target, data)
        changed.append(root / rel)
    return changed


def upstream_registries(references: Iterable[str]) -> list[str]:
    """The registry hosts of image references (`docker.io` for Docker Hub names), sorted."""
    return sorted({parse_reference(ref).registry for ref in references})


def upstreams_in_store(store: OciLayout) -> list[str]:
    """Every upstream registry host of the images in a store's index.json."""
    return upstream_registries(store.images().keys())


# --- config.toml -------------------------------------------------------------------------


def config_version_for(containerd_version: str) -> int:
    """config.toml version for a containerd release: 2 for 1.5-1.7, 3 for 2.x."""
    match = re.match(r"^v?(\d+)\.(\d+|x)", containerd_version.strip())
    if not match:
        raise UsageError(
            f"cannot read containerd version {containerd_version!r}", "e.g. 1.7.13 or 2.0.0"
        )
    major = int(match.group(1))
    minor = match.group(2)
    if major == 1 and (minor == "x" or int(minor) >= 5):
        return 2
    if major == 2:
        return 3
    raise UsageError(
        f"containerd {containerd_version} is not supported",
        "airlock configures containerd 1.5 to 1.7 (config version 2) and 2.x (version 3)",
    )


def render_containerd_config(
    *,
    containerd_version: str,
    sandbox_image: str,
    existing: str = "",
    config_path: str = DEFAULT_CONFIG_PATH,
    cgroup_driver: str = "systemd",
    restrict_oom_score_adj: bool = False,
    cni_bin_dir: str | None = None,
) -> str:
    """The config.toml text: `existing` with the keys airlock owns set, everything else kept.
    `cgroup_driver` (the spec's node.cgroupDriver) is the kubelet's too: runc's SystemdCgroup."""
    version = config_version_for(containerd_version)
    try:
        doc: dict[str, Any] = tomllib.loads(existing)
    except tomllib.TOMLDecodeError as exc:
        raise NodeError(
            f"the existing containerd config is not valid TOML: {exc}",
            "fix or move the file aside; airlock then writes a fresh one",
        ) from exc
    if doc:
        _check_existing_version(doc.get("version"), version, containerd_version)
    disabled = doc.get("disabled_plugins")
    if isinstance(disabled, list):
        doc["disabled_plugins"] = [p for p in disabled if p not in _CRI_PLUGIN_NAMES]
    if version == 2:
        cri = _table(doc, "plugins", _CRI_V2)
        cri["sandbox_image"] = sandbox_image
        _set_restrict_oom(cri, restrict_oom_score_adj)
        if cni_bin_dir:
            _table(cri, "cni")["bin_dir"] = cni_bin_dir
        _set_runc(
            _table(cri, "containerd", "runtimes", "runc"),
            prefix=f"plugins.{_CRI_V2}",
            systemd_cgroup=cgroup_driver == "systemd",
        )
        _set_registry(_table(cri, "registry"), config_path)
    else:
        images = _table(doc, "plugins", _CRI_V3_IMAGES)
        _table(images, "pinned_images")["sandbox"] = sandbox_image
        _set_registry(_table(images, "registry"), config_path)
        runtime = _table(doc, "plugins", _CRI_V3_RUNTIME)
        _set_restrict_oom(runtime, restrict_oom_score_adj)
        if cni_bin_dir:
            _table(runtime, "cni")["bin_dir"] = cni_bin_dir
        _set_runc(
            _table(runtime, "containerd", "runtimes", "runc"),
            prefix=f"plugins.{_CRI_V3_RUNTIME}",
            systemd_cgroup=cgroup_driver == "systemd",
        )
    doc.pop("version", None)
    return dump_toml({"version": version, **doc})


def _check_existing_version(found: Any, wanted: int, containerd_version: str) -> None:
    if found == wanted:
        return
    if found is None:
        raise NodeError(
            "the existing containerd config has no `version`, so it is version 1",
            "version 1 is obsolete; move it aside (airlock writes a fresh version "
            f"{wanted} config) or rewrite it from `containerd config default`",
        )
    hint = (
        "containerd 2.x: convert it with `containerd config migrate` first"
        if wanted == 3
        else "move it aside; airlock then writes a fresh one"
    )
    raise NodeError(
        f"the existing containerd config is version {found}, but containerd "
        f"{containerd_version} needs version {wanted}",
        hint,
    )


def _table(parent: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The nested table at `keys`, created (appended, so order is kept) when missing."""
    node = parent
    for key in keys:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise NodeError(
                f"containerd config: `{key}` is a {type(child).__name__}, expected a table",
                "fix the file or move it aside",
            )
        node = child
    return node


def _set_restrict_oom(cri: dict[str, Any], restrict: bool) -> None:
    # The spec's node.restrictOOMScoreAdj: the CRI clamps the kubelet's negative scores to
    # containerd's own, on nodes where no process may lower oom_score_adj (no
    # CAP_SYS_RESOURCE); otherwise runc fails every pod sandbox (-998) with EACCES.
    if restrict:
        cri["restrict_oom_score_adj"] = True
    else:
        cri.pop("restrict_oom_score_adj", None)


def _set_runc(runc: dict[str, Any], *, prefix: str, systemd_cgroup: bool) -> None:
    # Setting only `options` leaves runtime_type empty (containerd then cannot start pods),
    # so the runtime type is always set with it.
    runc["runtime_type"] = RUNC_RUNTIME_TYPE
    options = runc.setdefault("options", {})
    if not isinstance(options, dict):
        raise NodeError(f"containerd config: `{prefix}...runc.options` is not a table")
    options["SystemdCgroup"] = systemd_cgroup


def _set_registry(registry: dict[str, Any], config_path: str) -> None:
    registry["config_path"] = config_path
    # containerd refuses `mirrors` and `configs.*.tls` together with config_path; hosts.toml
    # replaces both. Credentials (`configs.*.auth`) stay.
    registry.pop("mirrors", None)
    configs = registry.get("configs")
    if isinstance(configs, dict):
        for name in list(configs):
            entry = configs[name]
            if isinstance(entry, dict):
                entry.pop("tls", None)
                if not entry:
                    del configs[name]
        if not configs:
            del registry["configs"]


# --- a small TOML writer -----------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+\Z")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)  # `$` would let "a\n" pass


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise NodeError(f"cannot write a {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_toml(doc: Mapping[str, Any]) -> str:
    """TOML text for a document as tomllib returns it (tables keep their order).

    In each table its plain keys come first, then its sub-tables; a table holding only
    sub-tables gets no header of its own (the same document either way).
    """
    lines: list[str] = []
    _dump_table(doc, [], lines, header=None)
    return "\n".join(lines).strip("\n") + "\n"


def _dump_table(
    table: Mapping[str, Any], path: list[str], lines: list[str], *, header: str | None
) -> None:
    plain = [(k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)]
    nested = [(k, v) for k, v in table.items() if isinstance(v, dict) or _is_table_array(v)]
    if header is not None and (plain or not nested or header.startswith("[[")):
        if lines:
            lines.append("")
        lines.append(header)
    for key, value in plain:
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        sub = [*path, key]
        dotted = ".".join(_toml_key(k) for k in sub)
        if isinstance(value, dict):
            _dump_table(value, sub, lines, header=f"[{dotted}]")
        else:
            for item in value:
                _dump_table(item, sub, lines, header=f"[[{dotted}]]")
