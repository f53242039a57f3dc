"""`airlock lab up|down|status|upstream`: the blog's air-gap topology on one Linux host."""

from __future__ import annotations

from pathlib import Path

import typer

from airlock.cli._stub import not_yet
from airlock.cli.output import json_option, state, use_json

__all__ = ["register"]

ISSUE = "The air-gap lab, end to end: `make demo` and the e2e tests"
lab_app = typer.Typer(help="The air-gap lab (network namespaces).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")


@lab_app.command("up")
def up(nodes: int = typer.Option(1, "--nodes"), json_out: bool = json_option()) -> None:
    """Create the gap namespace(s), veth and blackhole default route."""
    use_json(json_out)
    not_yet("lab up", ISSUE)


@lab_app.command("down")
def down(json_out: bool = json_option()) -> None:
    """Remove everything `lab up` made (idempotent, also after a crash)."""
    use_json(json_out)
    not_yet("lab down", ISSUE)


@lab_app.command("status")
def status(json_out: bool = json_option()) -> None:
    """Prove the gap: upstream unreachable from inside, the host's veth reachable."""
    use_json(json_out)
    not_yet("lab status", ISSUE)


@lab_app.command("upstream")
def upstream(
    workdir: Path = typer.Option(Path("/var/tmp/airlock-upstream"), "--workdir"),
    sources_out: Path | None = typer.Option(None, "--sources-out"),
) -> None:
    """Run the simulated upstream in the foreground; write the `sources:` block for a spec."""
    from airlock.lab.upstream import Upstream, serve_forever

    def ready(up: Upstream) -> None:
        state.info(f"files at {up.files_url}")
        for host, url in sorted(up.registries.items()):
            state.info(f"registry {host} at {url}")
        if sources_out:
            state.info(f"wrote the sources block to {sources_out}")
        state.info("serving until interrupted (Ctrl-C or SIGTERM)")

    serve_forever(workdir, sources_out=sources_out, ready=ready)
