"""`airlock cluster up|plan -i INVENTORY`: a cluster from an Ansible inventory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from airlock.cli.bundle_cmds import bundle_app
from airlock.cli.cluster_cmds import cluster_app
from airlock.cli.output import json_option, state, use_json

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """The commands join the `cluster` group (cluster_cmds registers the group itself)."""
    del app
    cluster_app.command("up")(up)
    cluster_app.command("plan")(plan)
    bundle_app.command("share")(share)


def _render(result: object) -> None:
    from airlock.verbs.fleet import FleetResult

    assert isinstance(result, FleetResult)

    def text() -> None:
        mode = "check mode (nothing changed)" if result.check else "applied"
        state.line(f"{result.inventory.source}: {len(result.report.hosts)} hosts, {mode}")
        if result.check:
            for host, diffs in result.report.diffs.items():
                state.line(f"--- {host}")
                for d in diffs:
                    state.console.print(d, markup=False, highlight=False, end="")
        rows = [
            (h.host, h.status, h.ok, h.changed, h.failed, h.unreachable, h.message or "")
            for h in result.report.hosts.values()
        ]
        state.table(["host", "status", "ok", "changed", "failed", "unreachable", "message"], rows)
        state.line(f"{result.seconds:.1f}s; log: {result.log}")

    state.emit(result.to_json(), text)
    if not result.ok:
        from airlock.verbs.fleet import failure_summary

        raise failure_summary(result)


_INVENTORY = typer.Option(..., "-i", "--inventory", help="Ansible inventory (INI or YAML).")
_BUNDLE = typer.Option(..., "--bundle", "-b", help="The bundle (NAME.airlock.tar).")
_KEY = typer.Option([], "--key", help="Trusted public key (placed on every node).")
_UNSIGNED = typer.Option(False, "--allow-unsigned", help="Send a bundle no key vouches for.")
_LIMIT = typer.Option(None, "--limit", "-l", help="Only these hosts (Ansible's pattern).")
_STAGE = typer.Option(
    [], "--stage", help="Only these stages: bootstrap, node, init, join, apps (repeat)."
)
_APP = typer.Option([], "--app", help="Charts from the bundle to deploy (repeat).")
_APP_SET = typer.Option([], "--app-set", help="A Helm value KEY=VALUE for the apps (repeat).")
_PKEY = typer.Option(None, "--private-key", help="SSH key (else the inventory's or ssh's).")
_FORKS = typer.Option(10, "--forks", help="Nodes worked on at once.")
_RUN_DIR = typer.Option(None, "--run-dir", help="Where the log and events go.")


def _fleet_command(*, check: bool, doc: str) -> Callable[..., None]:
    """`cluster up` and `cluster plan`: the same options and run, `plan` in check mode."""

    def command(
        inventory: Path = _INVENTORY,
        bundle: Path = _BUNDLE,
        key: list[Path] = _KEY,
        allow_unsigned: bool = _UNSIGNED,
        limit: str | None = _LIMIT,
        stage: list[str] = _STAGE,
        app: list[str] = _APP,
        app_set: list[str] = _APP_SET,
        private_key: Path | None = _PKEY,
        forks: int = _FORKS,
        run_dir: Path | None = _RUN_DIR,
        json_out: bool = json_option(),
    ) -> None:
        use_json(json_out)
        from airlock.verbs.fleet import FleetOptions, cluster_up

        options = FleetOptions(
            bundle=bundle,
            keys=key,
            allow_unsigned=allow_unsigned,
            check=check,
            limit=limit,
            stages=stage,
            apps=app,
            app_sets=app_set,
            private_key=private_key,
            forks=forks,
            run_dir=run_dir,
        )
        _render(cluster_up(inventory, options=options))

    command.__doc__ = doc
    command.__name__ = command.__qualname__ = "plan" if check else "up"
    return command


up = _fleet_command(
    check=False,
    doc="Every node of the inventory: bootstrap, load, prepare, install, init, join, apps.",
)
plan = _fleet_command(
    check=True, doc="What `cluster up` would change on each node (Ansible check and diff modes)."
)


def share(
    bundle: Path = typer.Argument(..., help="The bundle (tar or parts file)."),
    listen: str = typer.Option(..., "--listen", help="ADDRESS:PORT to serve on."),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s)."),
    allow_unsigned: bool = typer.Option(
        False, "--allow-unsigned", help="Share a bundle no trusted key vouches for (UNVERIFIED)."
    ),
    max_clients: int = typer.Option(16, "--max-clients", help="Blobs sent at once."),
    access_log: Path | None = typer.Option(
        None, "--access-log", help="JSON lines: client, path, bytes of every request."
    ),
    unit: bool = typer.Option(
        False, "--unit", help="Write, enable and start a systemd unit that serves (then exit)."
    ),
    root: Path = typer.Option(Path("/"), "--root", help="With --unit: a sysroot (nothing starts)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --unit: the plan only."),
    json_out: bool = json_option(),
) -> None:
    """Serve airlock.json, its signature, the bootstrap script and the bundle's blobs (read-only)
    to the other nodes of a cluster, which fetch only what they use and check every byte.
    With --unit, as a systemd unit (airlock-share.service) that outlives this session."""
    use_json(json_out)
    from airlock.bundle.handle import Bundle
    from airlock.bundle.volumes import locate_volumes
    from airlock.fleet.share import serve_share
    from airlock.oci.server import parse_listen
    from airlock.trust import trust_policy

    host, port = parse_listen(listen)
    locate_volumes(bundle)
    trust = trust_policy(key, allow_unsigned=allow_unsigned)
    with Bundle.open(bundle, trust=trust, hash_content=False) as opened:
        note = opened.report.trust
        if unit:
            from airlock.cli.node_cmds import _render as render_node
            from airlock.fleet.share_unit import ShareUnit, install_share_unit

            wanted = ShareUnit(bundle, listen, key, allow_unsigned, max_clients, access_log)
            render_node(install_share_unit(wanted, root=root, dry_run=dry_run), dry_run=dry_run)
            return

        def ready(url: str) -> None:
            state.ready({"url": url, "trust": note})
            state.info(f"sharing {bundle} ({note}) at {url}")

        serve_share(
            opened, host=host, port=port, max_clients=max_clients, access_log=access_log,
            ready=ready,
        )  # fmt: skip
