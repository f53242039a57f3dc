"""`airlock node mirrors`: hosts.toml for every upstream registry in the store, pointing at the
local registries, in order (several give redundancy across nodes).

Default: no fallback to the real upstream, so a node in an air gap never looks one up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.errors import UsageError
from airlock.node.mirrors import (
    DEFAULT_CONFIG_PATH,
    Mirror,
    mirror_files,
    upstreams_in_store,
    write_mirrors,
)
from airlock.oci.layout import OciLayout
from airlock.system import host_path

__all__ = ["MirrorOptions", "MirrorResult", "configure_mirrors", "registry_url"]


def registry_url(addr: str, *, tls: bool) -> str:
    """`198.18.0.1:5000` -> `http://198.18.0.1:5000` (or https with a CA); URLs pass through."""
    if addr.startswith(("http://", "https://")):
        return addr.rstrip("/")
    return f"{'https' if tls else 'http'}://{addr}"


@dataclass(frozen=True)
class MirrorOptions:
    registries: list[str]
    ca_file: Path | None = None
    upstreams: list[str] = field(default_factory=list)
    upstream_fallback: bool = False


@dataclass(frozen=True)
class MirrorResult:
    hosts_dir: Path
    upstreams: list[str]
    mirrors: list[str]
    changed: list[Path]

    def to_json(self) -> dict[str, Any]:
        return {
            "hostsDir": str(self.hosts_dir),
            "upstreams": self.upstreams,
            "mirrors": self.mirrors,
            "changed": [str(p) for p in self.changed],
        }


def configure_mirrors(*, root: Path, store: Path, options: MirrorOptions) -> MirrorResult:
    if not options.registries:
        raise UsageError("no registry given", hint="--registry 198.18.0.1:5000[,ADDR...]")
    upstreams = options.upstreams or upstreams_in_store(OciLayout(store))
    if not upstreams:
        raise UsageError(
            f"the store {store} holds no images, so there is no upstream to mirror",
            hint="run `airlock load BUNDLE` first, or name them with --upstream",
        )
    ca = str(options.ca_file) if options.ca_file else None
    mirrors = [Mirror(registry_url(r, tls=ca is not None), ca_file=ca) for r in options.registries]
    files = mirror_files(upstreams, mirrors, upstream_fallback=options.upstream_fallback)
    hosts_dir = host_path(DEFAULT_CONFIG_PATH, root)
    changed = write_mirrors(hosts_dir, files)
    return MirrorResult(hosts_dir, sorted(upstreams), [m.url for m in mirrors], changed)
