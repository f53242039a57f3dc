"""`airlock`: the command tree of DESIGN.md and the one top-level error handler."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any, NoReturn

import typer
from rich.markup import escape

from airlock import __version__
from airlock.cli.helpstyle import tidy
from airlock.cli.meta_cmds import COMPLETE_VAR
from airlock.cli.output import state
from airlock.cli.plainvalues import install as plain_values
from airlock.errors import EXIT_FAILED, AirlockError, UsageError

__all__ = ["app", "interrupted", "run"]

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
    progress: str = typer.Option(
        "auto",
        "--progress",
        metavar="MODE",
        help="auto (a live display when stderr is a terminal), plain (lines, for logs and CI) "
        "or none; anywhere on the line, or AIRLOCK_PROGRESS.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    # --json, --debug and --progress are taken off the line before typer parses it (they
    # count anywhere); these options document them in --help
    state.json = state.json or json_out
    state.debug = state.debug or debug
    state.verbose = verbose
    del progress


# the modules of airlock.cli that add commands, in the order they register (the order of --help)
COMMAND_MODULES = (
    "spec_cmds",
    "bundle_cmds",
    "registry_cmds",
    "node_cmds",
    "cluster_cmds",
    "meta_cmds",
    "fleet_cmds",
)
# each of airlock's own command groups and commands, and every module that adds to it
# (fleet_cmds adds `bundle share` and `cluster up|plan`); a test checks it against the tree
OWN_COMMANDS: dict[str, tuple[str, ...]] = {
    "init": ("spec_cmds",),
    "plan": ("spec_cmds",),
    "bundle": ("bundle_cmds", "fleet_cmds"),
    "keys": ("bundle_cmds",),
    "load": ("bundle_cmds",),
    "registry": ("registry_cmds",),
    "node": ("node_cmds",),
    "inventory": ("node_cmds",),
    "cluster": ("cluster_cmds", "fleet_cmds"),
    "app": ("cluster_cmds",),
    "version": ("meta_cmds",),
    "completion": ("meta_cmds",),
}


def _register(modules: tuple[str, ...] = COMMAND_MODULES) -> None:
    from importlib import import_module

    for name in modules:
        import_module(f"airlock.cli.{name}").register(app)


def _register_plugins(group: str = "airlock.commands") -> None:
    """Command groups other distributions add (the lab's `airlock lab ...` among them).

    The production package knows no plugin by name: an installed distribution declares an
    entry point `NAME = module:register` and its `register(app)` adds its commands.
    """
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        ep.load()(app)


def _own_command(argv: list[str]) -> tuple[str, ...] | None:
    """The modules that add the command group or command the line names, when it is one of
    airlock's own (`airlock bundle create ...`, `airlock version`): only those are imported
    and built, and no plugin adds to them, so the installed distributions' entry points are
    not scanned (~0.15 s). Anything else (no command, `--help`, a plugin's group, an option
    with a value first, a shell asking for completions) gets every command and the plugins."""
    words = [a for a in argv if a not in ("--json", "--debug")]
    if not words or COMPLETE_VAR in os.environ:
        return None
    return OWN_COMMANDS.get(words[0])


_modules = _own_command(sys.argv[1:])
if _modules is None:
    _register()
    _register_plugins()
else:
    _register(tuple(m for m in COMMAND_MODULES if m in _modules))


GLOBAL_FLAGS = ("--json", "--debug")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
# click's base of usage errors, whether typer bundles click or depends on it
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _take_global_flags(argv: list[str]) -> list[str]:
    """--json, --debug and --progress MODE count wherever they stand on the line (before a
    `--`)."""
    end = argv.index("--") if "--" in argv else len(argv)
    head, tail = argv[:end], argv[end:]
    state.json = state.json or "--json" in head
    state.debug = state.debug or "--debug" in head
    state.progress = os.environ.get("AIRLOCK_PROGRESS") or state.progress
    kept: list[str] = []
    take_mode = False
    for arg in head:
        if take_mode:
            state.progress, take_mode = arg, False
        elif arg == "--progress":
            take_mode = True
        elif arg.startswith("--progress="):
            state.progress = arg.partition("=")[2]
        elif arg not in GLOBAL_FLAGS:
            kept.append(arg)
    if take_mode:
        raise UsageError("--progress needs a mode", "--progress auto, plain or none")
    return kept + tail


def _check_progress_mode() -> None:
    from airlock.cli.progress import MODES

    if state.progress not in MODES:
        env = os.environ.get("AIRLOCK_PROGRESS")
        where = " (from AIRLOCK_PROGRESS)" if env == state.progress else ""
        raise UsageError(
            f"--progress {state.progress!r}{where} is not a mode",
            "--progress auto (a live display on a terminal), plain (lines) or none",
        )


def _error(code: str, message: str, hint: str | None) -> dict[str, str | None]:
    return {"code": code, "message": message, "hint": hint}


def _report(exc: AirlockError, code: str | None = None) -> None:
    state.finish(_error(code or exc.code, exc.message, exc.hint))
    # messages name things like `containers[kube-flannel]`: never read them as markup
    state.err.print(f"[red bold]error:[/] {escape(exc.message)}", highlight=False)
    if exc.hint:
        state.err.print(f"[dim]hint:[/] {escape(exc.hint)}")


def _click_usage(exc: Any) -> int:
    if state.json:
        state.finish(_error("USAGE", exc.format_message(), "see --help"))
    exc.show()
    return int(exc.exit_code)


_OS_HINTS = {
    errno.EROFS: "the filesystem is mounted read-only: remount it read-write or choose another path",
    errno.ENOSPC: "the filesystem is full: free space or choose another path, then run again",
    errno.EACCES: "permission denied: run as a user that may write there (often root)",
    errno.EPERM: "not permitted: run as root, or choose a path you own",
    errno.ENOENT: "a file or directory on the path does not exist: check the path",
}


def _os_message(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _os_hint(exc: OSError) -> str:
    return _OS_HINTS.get(exc.errno or 0, "check the path and the filesystem, then run again")


def _report_interrupted() -> None:
    _report(
        AirlockError(
            "interrupted: what was already downloaded, verified or written is kept",
            "run the same command again: it resumes from there",
        ),
        "INTERRUPTED",
    )


def interrupted(argv: list[str]) -> NoReturn:
    """Ctrl-C before the CLI ran (airlock.earlyverify): the CLI's words, then exit 130."""
    _take_global_flags(list(argv))
    _report_interrupted()
    state.finish(_error("FAILED", f"failed (exit {EXIT_INTERRUPTED})", None))
    sys.exit(EXIT_INTERRUPTED)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: every AirlockError becomes its exit code; nothing else leaks."""
    try:
        args = _take_global_flags(list(sys.argv[1:] if argv is None else argv))
        _check_progress_mode()
        # not standalone: click would turn Ctrl-C into a silent exit and print usage errors
        # itself; here every outcome goes through one place and one JSON document
        if COMPLETE_VAR in os.environ:  # a shell asks for completions (airlock completion)
            from typer.completion import completion_init  # type: ignore[attr-defined]

            completion_init()
        command = plain_values(tidy(typer.main.get_command(app)))
        code = command.main(
            args=args, prog_name="airlock", complete_var=COMPLETE_VAR, standalone_mode=False
        )
    except AirlockError as exc:
        if state.debug:
            traceback.print_exc()
        _report(exc)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        code = exc.exit_code
    except _ClickException as exc:
        sys.exit(_click_usage(exc))
    except (KeyboardInterrupt, typer.Abort):
        code = EXIT_INTERRUPTED
    except OSError as exc:
        # the host said no (read-only, full, missing, not permitted): the user's to fix
        if state.debug:
            traceback.print_exc()
        _report(AirlockError(_os_message(exc), _os_hint(exc)), "OS_ERROR")
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        if state.debug:
            traceback.print_exc()
        _report(
            AirlockError(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with --debug for a traceback, and report it",
            ),
            "INTERNAL",
        )
        sys.exit(EXIT_FAILED)
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into this code, silently
        _report_interrupted()
    code = code if isinstance(code, int) else 0
    state.finish(None if code == 0 else _error("FAILED", f"failed (exit {code})", None))
    sys.exit(code)
