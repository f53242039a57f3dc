"""`airlock cluster init|join|reset|upgrade` and `airlock app deploy|list`."""

from __future__ import annotations

from pathlib import Path

import typer

from airlock.cli._stub import not_yet
from airlock.cli.output import json_option, use_json

__all__ = ["register"]

ISSUE = "Cluster bring-up: kubeadm init, join and reset, the CNI, and apps from the bundle"
UPGRADE_ISSUE = "Deltas across the gap: inventory round trip, delta bundles, upgrades"
cluster_app = typer.Typer(help="kubeadm, the CNI, readiness.", no_args_is_help=True)
app_app = typer.Typer(help="Helm charts from the bundle.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(app_app, name="app")


@cluster_app.command("init")
def init(
    dry_run: bool = typer.Option(False, "--dry-run"),
    force: bool = typer.Option(False, "--force"),
    json_out: bool = json_option(),
) -> None:
    """kubeadm init, the CNI, wait for Ready, write a join file."""
    use_json(json_out)
    not_yet("cluster init", ISSUE)


@cluster_app.command("join")
def join(
    file: Path = typer.Argument(...),
    control_plane: bool = typer.Option(False, "--control-plane"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    json_out: bool = json_option(),
) -> None:
    """Join this node with a join file."""
    use_json(json_out)
    not_yet("cluster join", ISSUE)


@cluster_app.command("reset")
def reset(dry_run: bool = typer.Option(False, "--dry-run"), json_out: bool = json_option()) -> None:
    """kubeadm reset, CNI state, kubelet state; keeps the store."""
    use_json(json_out)
    not_yet("cluster reset", ISSUE)


@cluster_app.command("upgrade")
def upgrade(
    dry_run: bool = typer.Option(False, "--dry-run"), json_out: bool = json_option()
) -> None:
    """Upgrade one minor version at a time, in kubeadm's order."""
    use_json(json_out)
    not_yet("cluster upgrade", UPGRADE_ISSUE)


@app_app.command("deploy")
def deploy(
    name: str = typer.Argument(...),
    set_: list[str] = typer.Option([], "--set"),
    json_out: bool = json_option(),
) -> None:
    """Install a Helm chart from the bundle, images from the local registry."""
    use_json(json_out)
    not_yet("app deploy", ISSUE)


@app_app.command("list")
def list_apps(json_out: bool = json_option()) -> None:
    """Charts carried in the store."""
    use_json(json_out)
    not_yet("app list", ISSUE)
