"""`airlock cluster init|join|reset` and `airlock app deploy|list`, fed from the node's store.

On the offline node the spec and the files come from what `airlock load` put in the store:
the spec inside the newest bundle's airlock.json, the CNI manifest and the charts as blobs
(checked by digest). kubeadm and helm are whatever the node has installed from the bundle.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.cluster.apps import (
    AppDeployOptions,
    AppResult,
    deploy_app,
    list_apps,
    registry_images_in_store,
)
from airlock.cluster.init import InitOptions, InitResult, init_cluster
from airlock.cluster.join import JoinOptions, JoinResult, join_cluster
from airlock.cluster.reset import ResetOptions, ResetResult, reset_cluster
from airlock.errors import UsageError
from airlock.node.install import store_source
from airlock.spec import NodeSettings, Spec, load_spec
from airlock.store import Store

__all__ = [
    "ClusterInputs",
    "app_deploy",
    "app_list",
    "cluster_init",
    "cluster_join",
    "cluster_reset",
    "node_settings",
    "store_inputs",
]


@dataclass(frozen=True)
class ClusterInputs:
    spec: Spec
    cni_manifest: Path
    cni_digest: str
    charts: dict[str, tuple[Path, str]]  # chart name -> (blob path, digest)


def _newest_manifest(store: Path) -> dict[str, Any]:
    data = Store.open(store).newest_bundle_record()
    if data is None:
        raise UsageError(
            f"the store {store} holds no bundle", hint="run `airlock load BUNDLE` first"
        )
    return data


def _carried_spec(manifest: dict[str, Any], store: Path) -> Spec:
    """The spec the newest loaded bundle carries; one this airlock cannot read is named."""
    from pydantic import ValidationError

    try:
        return Spec.model_validate(manifest.get("spec") or {})
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
        raise UsageError(
            f"the spec carried by the newest bundle in {store} is incomplete for this airlock "
            f"({fields})",
            hint="load a bundle built by this airlock (cluster init also takes the spec: -f FILE)",
        ) from None


def store_inputs(store: Path, *, spec_file: Path | None = None) -> ClusterInputs:
    manifest = _newest_manifest(store)
    spec = load_spec(spec_file) if spec_file else _carried_spec(manifest, store)
    source = store_source(store)
    files = list(source.files())
    cni = next((f for f in files if f.kind == "manifest"), None)
    if cni is None:
        raise UsageError(f"the store {store} carries no CNI manifest", hint="rebuild the bundle")
    unpacked = Store.open(store).meta_dir / "files"  # files the bundle stored compressed
    charts = {}
    for f in files:
        if f.kind == "chart":
            charts[f.name.rsplit("-", 1)[0]] = (source.materialize(f, unpacked), f.digest)
    return ClusterInputs(spec, source.materialize(cni, unpacked), cni.digest, charts)


def node_settings(store: Path) -> NodeSettings:
    """The spec's node settings from the newest bundle in the store (defaults without one)."""
    record = Store.open(store).newest_bundle_record() if store.is_dir() else None
    if not record or not isinstance(record.get("spec"), dict):
        return NodeSettings.model_validate({})
    return Spec.model_validate(record["spec"]).node


def cluster_reset(*, store: Path, options: ResetOptions) -> ResetResult:
    """`cluster reset`: the kubelet's cgroup root comes from the spec's node settings."""
    root = node_settings(store).cgroup_root_for(socket.gethostname().lower())
    return reset_cluster(options=dataclasses.replace(options, cgroup_root=root))


def cluster_join(path: Path, *, store: Path, options: JoinOptions) -> JoinResult:
    return join_cluster(path, options=dataclasses.replace(options, settings=node_settings(store)))


def cluster_init(*, store: Path, spec_file: Path | None, options: InitOptions) -> InitResult:
    inputs = store_inputs(store, spec_file=spec_file)
    opts = InitOptions(
        **{
            **options.__dict__,
            "cni_manifest": str(inputs.cni_manifest),
            "cni_manifest_sha256": inputs.cni_digest.removeprefix("sha256:"),
            "store": str(store),
        }
    )
    return init_cluster(inputs.spec, options=opts)


@contextmanager
def _named_charts(charts: dict[str, tuple[Path, str]]) -> Iterator[dict[str, Path]]:
    """Charts under their own names (helm wants NAME-VERSION.tgz), copied from their blobs."""
    with tempfile.TemporaryDirectory(prefix="airlock-charts-") as tmp:
        out = {}
        for name, (blob, _) in charts.items():
            dest = Path(tmp) / f"{name}.tgz"
            shutil.copyfile(blob, dest)
            out[name] = dest
        yield out


def app_list(*, store: Path) -> list[Any]:
    with _named_charts(store_inputs(store).charts) as charts:
        return list_apps(charts=charts)


def app_deploy(name: str, *, store: Path, sets: tuple[str, ...], dry_run: bool) -> AppResult:
    inputs = store_inputs(store)
    with _named_charts(inputs.charts) as charts:
        return deploy_app(
            name,
            options=AppDeployOptions(
                charts=charts,
                registry_images=registry_images_in_store(store),
                sets=sets,
                dry_run=dry_run,
            ),
        )
