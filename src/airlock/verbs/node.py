"""`airlock node prepare|install|check` and `airlock inventory`: inputs -> resources -> plan.

With `dry_run` only the plan is computed (nothing on the host changes); otherwise the plan is
applied and a second run finds nothing to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.atomic import remove_dead_temps
from airlock.bundle.handle import Bundle
from airlock.bundle.volumes import locate_volumes
from airlock.node import engine
from airlock.node.install import ArtifactSource, BundleSource, install_resources, store_source
from airlock.node.inventory import collect_inventory
from airlock.node.osinfo import read_os_info
from airlock.node.preflight import CheckResult, PreflightOptions, run_preflight
from airlock.node.prepare import PrepareOptions, prepare_resources
from airlock.node.resources import File, Probe
from airlock.oci.ref import parse_reference
from airlock.progress import ProgressSink
from airlock.store import DEFAULT_STORE, META_DIR, Store
from airlock.system import host_path
from airlock.trust import trust_policy

__all__ = [
    "InstallOptions",
    "NodeResult",
    "check_node",
    "install_node",
    "inventory",
    "prepare_node",
]


@dataclass(frozen=True)
class NodeResult:
    plan: engine.Plan
    applied: engine.ApplyResult | None
    trust: str | None = None  # installing from a bundle: who vouched for it, or UNVERIFIED

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "plan": self.plan.to_json(),
            "applied": self.applied.to_json() if self.applied else None,
        }
        if self.trust is not None:
            out["trust"] = self.trust
        return out


def _run(
    resources: Sequence[engine.Resource],
    *,
    root: Path,
    dry_run: bool,
    progress: ProgressSink | None = None,
) -> NodeResult:
    ctx = engine.Context(root=root, dry_run=dry_run, progress=progress)
    if not dry_run:  # what an earlier run killed mid-write left beside the files it manages
        for directory in sorted({host_path(p, root).parent for r in resources for p in r.writes()}):
            remove_dead_temps(directory)
    the_plan = engine.plan(resources, ctx)
    if dry_run or the_plan.empty:
        return NodeResult(the_plan, None)
    return NodeResult(the_plan, engine.apply(the_plan, ctx))


def prepare_node(*, root: Path, dry_run: bool, options: PrepareOptions | None = None) -> NodeResult:
    resources = prepare_resources(
        root=root, os_info=read_os_info(root=root), options=options or PrepareOptions()
    )
    return _run(resources, root=root, dry_run=dry_run)


REGISTRY_PORT = 5000


@dataclass(frozen=True)
class InstallOptions:
    registries: Sequence[str] = ("127.0.0.1:5000",)
    # where the registry unit listens; empty: the spec's `registry.listen`, else the node's
    # advertise address (its default-route address) and loopback, never every interface
    registry_listen: Sequence[str] = ()
    store: Path = DEFAULT_STORE
    platform: str | None = None
    keys: Sequence[Path] = ()  # for a bundle: none given, the trusted-keys directory
    allow_unsigned: bool = False  # install from a bundle no trusted key vouches for
    progress: ProgressSink | None = None  # each change as it is applied
    source_url: str | None = None  # another node's share (`cluster up`): fetch only what is used


def registry_listen_addresses(
    wanted: Sequence[str], spec: dict[str, Any], advertise: str | None
) -> list[str]:
    """The registry unit's addresses: asked for, else the spec's, else advertise + loopback."""
    if wanted:
        return list(wanted)
    from_spec = (spec.get("registry") or {}).get("listen") or []
    if from_spec:
        return [str(a) for a in from_spec]
    out = [f"{advertise}:{REGISTRY_PORT}"] if advertise else []
    loopback = f"127.0.0.1:{REGISTRY_PORT}"
    return [*out, loopback] if loopback not in out else out


def loopback_only_warning(listen: Sequence[str]) -> str | None:
    """Said when the registry unit would answer this node alone (no default route found)."""
    hosts = {a.rpartition(":")[0].strip("[]") for a in listen}
    if hosts - {"127.0.0.1", "::1", "localhost"}:
        return None
    return (
        "the registry unit listens on loopback only (this node has no default route to take "
        "an advertise address from): other nodes cannot pull from it; set registry.listen in "
        "the spec or pass --listen ADDRESS:PORT"
    )


def _advertise_address() -> str | None:
    from airlock.cluster.kubeadm_config import detect_node_facts
    from airlock.errors import NodeError

    try:
        return detect_node_facts().default_address
    except NodeError:
        return None


@dataclass(frozen=True)
class _Installing:
    source: ArtifactSource
    resolved: dict[str, Any]
    images: list[str]
    spec: dict[str, Any]
    trust: str | None = None
    # installed from another node's share: the verified airlock.json, recorded in this node's
    # store as a loaded bundle's is (its spec's node settings are what `cluster join` reads)
    record: tuple[str, bytes] | None = None


@contextlib.contextmanager
def _source(
    bundle: Path | None, options: InstallOptions, *, root: Path, dry_run: bool
) -> Iterator[_Installing]:
    """The files to install, the resolved versions, the image references and the spec: from
    the store, or from a bundle opened (and verified: structure, signature; bytes as read), or
    from another node's share (airlock.json's signature checked; each blob's bytes as read)."""
    if options.source_url is not None:
        yield _remote(options, root=root, dry_run=dry_run)
        return
    if bundle is None:
        store = Store.open(options.store)
        meta = (store.newest_bundle_record() if store.exists() else None) or {}
        if not meta:
            _no_bundle_loaded(options.store)
        images = [i["reference"] for i in meta.get("images", [])]
        yield _Installing(
            store_source(options.store), meta.get("resolved", {}), images, meta.get("spec") or {}
        )
        return
    locate_volumes(bundle)  # a bundle that is not there is named before any key is looked for
    trust = trust_policy(options.keys, allow_unsigned=options.allow_unsigned)
    with Bundle.open(bundle, trust=trust, hash_content=False) as opened:
        m = opened.manifest
        yield _Installing(
            BundleSource(opened),
            dict(m.resolved),
            [i.reference for i in m.images],
            dict(m.spec),
            opened.report.trust,
        )


def _no_bundle_loaded(store: Path) -> None:
    from airlock.errors import UsageError

    what = "does not exist" if not store.exists() else "holds no loaded bundle"
    raise UsageError(
        f"the store {store} {what}: nothing to install from",
        f"load the bundle first (airlock load BUNDLE --store {store}), or install from it "
        "directly (airlock node install BUNDLE)",
    )


def _remote(options: InstallOptions, *, root: Path, dry_run: bool) -> _Installing:
    """From another node's share; blobs fetched before (kept in FETCHED_DIR) are hashed again
    and used, not fetched again (a plan uses them too, and keeps nothing new)."""
    from airlock.blobstore import BlobStore
    from airlock.fleet.remote import FETCHED_DIR, RemoteBundle, RemoteSource

    trust = trust_policy(options.keys, allow_unsigned=options.allow_unsigned)
    remote = RemoteBundle(str(options.source_url), trust=trust)
    cache = BlobStore(host_path(FETCHED_DIR, root), durable=False)  # every use hashes it again
    m = remote.manifest
    images = [i.reference for i in m.images]
    record = (
        f"{options.store}/{META_DIR}/bundles/{m.name}.{m.sequence}.json",
        remote.manifest_bytes,
    )
    return _Installing(
        RemoteSource(remote, cache=cache, fill=not dry_run),
        dict(m.resolved),
        images,
        dict(m.spec),
        remote.trust,
        record,
    )


def install_node(
    bundle: Path | None, *, root: Path, dry_run: bool, options: InstallOptions
) -> NodeResult:
    with _source(bundle, options, root=root, dry_run=dry_run) as found:
        source, resolved, images = found.source, found.resolved, found.images
        listen = registry_listen_addresses(
            options.registry_listen,
            found.spec,
            None if options.registry_listen else _advertise_address(),
        )
        upstreams = sorted({parse_reference(r).registry for r in images})
        pause = next(
            (r for r in images if parse_reference(r).name == "registry.k8s.io/pause"), None
        )
        node = found.spec.get("node") or {}
        resources = install_resources(
            source,
            root=root,
            registry_addrs=list(options.registries),
            containerd_version=resolved.get("containerd"),
            sandbox_image=pause or "registry.k8s.io/pause:3.9",
            upstreams=upstreams,
            platform=options.platform,
            registry_listen=listen,
            store=str(options.store),
            cgroup_driver=str(node.get("cgroupDriver", "systemd")),
            restrict_oom_score_adj=bool(node.get("restrictOOMScoreAdj", False)),
            serve_registry=options.source_url is None,
        )
        if found.record is not None:
            resources.append(File(found.record[0], content=found.record[1]))
        warning = loopback_only_warning(listen) if options.source_url is None else None
        if warning is not None:
            resources.append(Probe("registry listen addresses", lambda _ctx: [warning]))
        ran = _run(resources, root=root, dry_run=dry_run, progress=options.progress)
        return dataclasses.replace(ran, trust=found.trust)


def check_node(*, root: Path, registry_url: str | None, store: Path) -> list[CheckResult]:
    record = Store.open(store).newest_bundle_record() or {}
    resolved = record.get("resolved", {})
    images = tuple(r for r in resolved.get("images", []) if r.startswith("registry.k8s.io/"))
    spec = record.get("spec") or {}
    node = spec.get("node") or {}
    return run_preflight(
        root=root,
        options=PreflightOptions(
            registry_url=registry_url,
            images=images,
            store=str(store),
            kubernetes_version=(spec.get("kubernetes") or {}).get("version"),
            fail_cgroup_v1=node.get("failCgroupV1"),
            packages=tuple((spec.get("packages") or {}).get("names") or ()),
            cgroup_driver=str(node.get("cgroupDriver", "systemd")),
        ),
    )


def inventory(*, root: Path, store: Path | None) -> dict[str, Any]:
    return collect_inventory(root=root, store=store)
