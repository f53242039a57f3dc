"""`airlock version` and `airlock completion SHELL`."""

from __future__ import annotations

import typer

from airlock.cli.output import SCHEMA_VERSION, json_option, state, use_json

__all__ = ["register"]

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_AIRLOCK_COMPLETE"  # what the scripts set when they ask for completions


def register(app: typer.Typer) -> None:
    app.command("version")(version)
    app.command("completion")(completion)


def _install_source() -> str | None:
    """Where this airlock was installed from (pip's direct_url record), when it says."""
    import json
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        raw = distribution("airlock").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    if not raw:
        return None
    info = json.loads(raw)
    vcs = info.get("vcs_info") or {}
    commit = f"@{vcs['commit_id']}" if vcs.get("commit_id") else ""
    editable = " (editable)" if (info.get("dir_info") or {}).get("editable") else ""
    return f"{info.get('url', '')}{commit}{editable}" or None


def version(json_out: bool = json_option()) -> None:
    """airlock's version and what it was built with: Python, platform, bundle formats, the JSON
    contract's version."""
    use_json(json_out)
    import platform
    from pathlib import Path

    import airlock
    from airlock.bundle.layout import FORMAT_VERSIONS

    data = {
        "version": airlock.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system().lower()}/{platform.machine()}",
        "bundleFormats": list(FORMAT_VERSIONS),
        "jsonSchemaVersion": SCHEMA_VERSION,
        "installedAt": str(Path(airlock.__file__).parent),
        "installedFrom": _install_source(),
    }

    def text() -> None:
        state.line(f"airlock {data['version']}")
        state.line(f"  python {data['python']} on {data['platform']}")
        state.line(f"  bundle formats {', '.join(FORMAT_VERSIONS)}; JSON schema {SCHEMA_VERSION}")
        state.line(f"  installed at {data['installedAt']}")
        if data["installedFrom"]:
            state.line(f"  from {data['installedFrom']}")

    state.emit(data, text)


def completion(
    shell: str = typer.Argument(..., metavar="SHELL", help="bash, zsh or fish."),
) -> None:
    """Print the shell completion script for airlock.

    Load it in the current shell with `source <(airlock completion bash)`, or install it where
    the shell reads completions (see the examples).
    """
    from typer.completion import get_completion_script  # type: ignore[attr-defined]

    from airlock.errors import UsageError

    if shell not in SHELLS:
        raise UsageError(f"no completion for shell {shell!r}", f"choose one of {', '.join(SHELLS)}")
    script = get_completion_script(prog_name="airlock", complete_var=COMPLETE_VAR, shell=shell)
    typer.echo(script)
