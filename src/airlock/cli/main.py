"""`airlock`: the command tree of DESIGN.md and the one top-level error handler."""

from __future__ import annotations

import sys
import traceback

import typer
from rich.markup import escape

from airlock import __version__
from airlock.cli import bundle_cmds, cluster_cmds, node_cmds, registry_cmds, spec_cmds
from airlock.cli.output import state
from airlock.errors import EXIT_FAILED, AirlockError

__all__ = ["app", "run"]

app = typer.Typer(
    name="airlock",
    help="Carry everything a Kubernetes cluster needs across an air gap, and bring it up there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"airlock {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More detail."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    state.json = state.json or json_out
    state.debug = debug
    state.verbose = verbose


spec_cmds.register(app)
bundle_cmds.register(app)
registry_cmds.register(app)
node_cmds.register(app)
cluster_cmds.register(app)


def _register_plugins(group: str = "airlock.commands") -> None:
    """Command groups other distributions add (the lab's `airlock lab ...` among them).

    The production package knows no plugin by name: an installed distribution declares an
    entry point `NAME = module:register` and its `register(app)` adds its commands.
    """
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        ep.load()(app)


_register_plugins()


def _report(exc: AirlockError) -> None:
    if state.json:
        import json

        payload = {"error": exc.message, "hint": exc.hint, "exitCode": exc.exit_code}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    # messages name things like `containers[kube-flannel]`: never read them as markup
    state.err.print(f"[red bold]error:[/] {escape(exc.message)}", highlight=False)
    if exc.hint:
        state.err.print(f"[dim]hint:[/] {escape(exc.hint)}")


def run() -> None:
    """Console-script entry: every AirlockError becomes its exit code; nothing else leaks."""
    if "--json" in sys.argv[1:]:
        state.json = True
    if "--debug" in sys.argv[1:]:
        state.debug = True
    try:
        app()  # standalone: typer maps usage errors to exit 2 and --help/--version to 0
    except AirlockError as exc:
        if state.debug:
            traceback.print_exc()
        _report(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        state.err.print("interrupted; run the command again to resume")
        sys.exit(130)
    except Exception as exc:
        if state.debug:
            traceback.print_exc()
        state.err.print(f"[red bold]internal error:[/] {type(exc).__name__}: {escape(str(exc))}")
        state.err.print("[dim]hint:[/] rerun with --debug for a traceback, and report it")
        sys.exit(EXIT_FAILED)
