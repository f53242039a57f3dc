"""`airlock cluster init|join|reset|upgrade` and `airlock app deploy|list`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from airlock.cli.output import json_option, state, use_json

__all__ = ["register"]

STORE = Path("/var/lib/airlock/store")
cluster_app = typer.Typer(help="kubeadm, the CNI, readiness.", no_args_is_help=True)
app_app = typer.Typer(help="Helm charts from the bundle.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(app_app, name="app")


def _render(result: Any) -> None:
    data = dataclasses.asdict(result)

    def text() -> None:
        state.console.print(result.plan_text, markup=False, highlight=False, end="")
        if result.message:
            state.line(result.message)

    state.emit(data, text)


@cluster_app.command("init")
def init(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every command and file."),
    force: bool = typer.Option(False, "--force", help="Reset a stale cluster first."),
    store: Path = typer.Option(STORE, "--store"),
    spec_file: Path | None = typer.Option(
        None, "-f", "--file", help="Spec (default: the bundle's)."
    ),
    advertise_address: str | None = typer.Option(None, "--advertise-address"),
    control_plane_endpoint: str | None = typer.Option(None, "--control-plane-endpoint"),
    registry: str = typer.Option("", "--registry", help="ADDR[,ADDR...] for the join file."),
    root: Path = typer.Option(Path("/"), "--root"),
    show_secrets: bool = typer.Option(
        False, "--show-secrets", help="Print the bootstrap token and certificate key."
    ),
    json_out: bool = json_option(),
) -> None:
    """kubeadm init, the CNI, wait for Ready, write a join file."""
    use_json(json_out)
    from airlock.cluster.init import InitOptions
    from airlock.verbs.cluster import cluster_init

    options = InitOptions(
        cni_manifest="",
        root=root,
        advertise_address=advertise_address,
        control_plane_endpoint=control_plane_endpoint,
        single_node=control_plane_endpoint is None,
        registries=tuple(r for r in registry.split(",") if r),
        force=force,
        dry_run=dry_run,
        show_secrets=show_secrets,
    )
    _render(cluster_init(store=store, spec_file=spec_file, options=options))


@cluster_app.command("join")
def join(
    file: Path = typer.Argument(...),
    control_plane: bool = typer.Option(False, "--control-plane"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    force: bool = typer.Option(False, "--force"),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="The cluster CA to pin against."),
    root: Path = typer.Option(Path("/"), "--root"),
    store: Path = typer.Option(STORE, "--store", help="Where the spec's node settings are."),
    show_secrets: bool = typer.Option(
        False, "--show-secrets", help="Print the bootstrap token and certificate key."
    ),
    json_out: bool = json_option(),
) -> None:
    """Join this node with a join file."""
    use_json(json_out)
    from airlock.cluster.join import JoinOptions
    from airlock.verbs.cluster import cluster_join

    options = JoinOptions(
        root=root,
        control_plane=control_plane,
        force=force,
        dry_run=dry_run,
        ca_file=ca_file,
        show_secrets=show_secrets,
    )
    _render(cluster_join(file, store=store, options=options))


@cluster_app.command("reset")
def reset(
    dry_run: bool = typer.Option(False, "--dry-run"),
    root: Path = typer.Option(Path("/"), "--root"),
    store: Path = typer.Option(STORE, "--store"),
    json_out: bool = json_option(),
) -> None:
    """kubeadm reset, CNI state, kubelet state; keeps the store."""
    use_json(json_out)
    from airlock.cluster.reset import ResetOptions
    from airlock.verbs.cluster import cluster_reset

    options = ResetOptions(root=root, store=str(store), dry_run=dry_run)
    _render(cluster_reset(store=store, options=options))


@cluster_app.command("upgrade")
def upgrade(
    to: str = typer.Option(
        ..., "--to", metavar="VERSION", help="The target version, e.g. v1.27.4."
    ),
    role: str | None = typer.Option(
        None,
        "--role",
        help="first-control-plane | control-plane | worker (default: first-control-plane"
        " where a kube-apiserver manifest exists, else worker).",
    ),
    from_version: str | None = typer.Option(
        None,
        "--from",
        metavar="VERSION",
        help="The version the node runs now (default: read from the node).",
    ),
    node: str | None = typer.Option(None, "--node", help="This node's name (default: hostname)."),
    kubeconfig: str = typer.Option(
        "/etc/kubernetes/admin.conf", "--kubeconfig", help="For drain/uncordon."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
    store: Path = typer.Option(STORE, "--store"),
    root: Path = typer.Option(Path("/"), "--root"),
    json_out: bool = json_option(),
) -> None:
    """Upgrade one minor version at a time, in kubeadm's order."""
    use_json(json_out)
    from airlock.cluster.upgrade import ROLES, UpgradeOptions, upgrade_cluster
    from airlock.errors import UsageError
    from airlock.verbs.cluster import node_settings

    if role is not None and role not in ROLES:
        raise UsageError(f"--role {role!r}: choose one of {', '.join(ROLES)}")
    options = UpgradeOptions(
        target=to,
        role=role,  # checked above
        current=from_version,
        node_name=node,
        root=root,
        store=store,
        kubeconfig=kubeconfig,
        dry_run=dry_run,
        ignore_preflight_errors=tuple(i.name for i in node_settings(store).ignore_preflight_errors),
    )
    result = upgrade_cluster(options=options, progress=state.info)
    for warning in result.warnings:
        state.warn(warning)
    _render(result)


@app_app.command("deploy")
def deploy(
    name: str = typer.Argument(...),
    set_: list[str] = typer.Option([], "--set"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    store: Path = typer.Option(STORE, "--store"),
    json_out: bool = json_option(),
) -> None:
    """Install a Helm chart from the bundle, images from the local registry."""
    use_json(json_out)
    from airlock.verbs.cluster import app_deploy

    _render(app_deploy(name, store=store, sets=tuple(set_), dry_run=dry_run))


@app_app.command("list")
def list_apps(store: Path = typer.Option(STORE, "--store"), json_out: bool = json_option()) -> None:
    """Charts carried in the store."""
    use_json(json_out)
    from airlock.verbs.cluster import app_list

    apps = app_list(store=store)
    state.emit(
        [dataclasses.asdict(a) for a in apps],
        lambda: state.table(
            ["chart", "version", "images"], [(a.name, a.version, ", ".join(a.images)) for a in apps]
        ),
    )
