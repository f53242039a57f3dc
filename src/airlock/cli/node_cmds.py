"""`airlock node prepare|install|mirrors|check` and `airlock inventory`."""

from __future__ import annotations

from pathlib import Path

import typer

from airlock.cli._stub import not_yet
from airlock.cli.output import json_option, state, use_json

__all__ = ["register"]

NODE_ISSUE = "Node preparation and installation as an idempotent plan, then apply"
MIRROR_ISSUE = "Offline side: load the bundle, serve it as a registry, mirror containerd to it"
node_app = typer.Typer(help="Host changes on the offline node.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.command("inventory")(inventory)


@node_app.command("prepare")
def prepare(
    root: Path = typer.Option(Path("/"), "--root", help="Apply into a sysroot."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
    json_out: bool = json_option(),
) -> None:
    """Kernel modules, sysctls, swap, firewall: the blog's node preparation."""
    use_json(json_out)
    not_yet("node prepare", NODE_ISSUE)


@node_app.command("install")
def install(
    bundle: Path = typer.Argument(...),
    root: Path = typer.Option(Path("/"), "--root", help="Apply into a sysroot."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
    json_out: bool = json_option(),
) -> None:
    """Binaries, CNI plugins, containerd, kubelet units, mirrors, from the bundle."""
    use_json(json_out)
    not_yet("node install", NODE_ISSUE)


@node_app.command("mirrors")
def mirrors(
    registry: str = typer.Option(..., "--registry", help="ADDR[,ADDR...] of local registries."),
    root: Path = typer.Option(Path("/"), "--root"),
    store: Path = typer.Option(Path("/var/lib/airlock/store"), "--store"),
    ca: Path | None = typer.Option(None, "--ca", help="CA file for https registries."),
    upstream: list[str] = typer.Option(
        [], "--upstream", help="Upstream registry hosts (default: every one in the store)."
    ),
    upstream_fallback: bool = typer.Option(
        False,
        "--upstream-fallback/--no-upstream-fallback",
        help="Let containerd try the real upstream after the mirrors (off in an air gap).",
    ),
    json_out: bool = json_option(),
) -> None:
    """containerd hosts.toml pointing every upstream registry at the local registries."""
    use_json(json_out)
    from airlock.verbs.mirrors import MirrorOptions, configure_mirrors

    result = configure_mirrors(
        root=root,
        store=store,
        options=MirrorOptions(
            registries=[r for r in registry.split(",") if r],
            ca_file=ca,
            upstreams=upstream,
            upstream_fallback=upstream_fallback,
        ),
    )
    state.emit(
        result.to_json(),
        lambda: state.line(
            f"{len(result.upstreams)} upstreams -> {', '.join(result.mirrors)}; "
            f"{len(result.changed)} files changed under {result.hosts_dir}"
        ),
    )


@node_app.command("check")
def check(json_out: bool = json_option()) -> None:
    """Preflight: a superset of kubeadm's, each failure with its fix."""
    use_json(json_out)
    not_yet("node check", NODE_ISSUE)


def inventory(
    root: Path = typer.Option(Path("/"), "--root"),
    output: Path | None = typer.Option(None, "-o", "--output"),
    json_out: bool = json_option(),
) -> None:
    """What this node already holds (carried back: the next bundle is a delta)."""
    use_json(json_out)
    not_yet("inventory", NODE_ISSUE)
