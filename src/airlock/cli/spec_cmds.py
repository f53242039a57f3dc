"""`airlock init` and `airlock plan`."""

from __future__ import annotations

from pathlib import Path

import typer

from airlock.cli.output import json_option, state, use_json
from airlock.errors import UsageError
from airlock.presets import PRESETS, preset_text

__all__ = ["register"]

SPEC_OPTION = typer.Option(Path("airlock.yaml"), "-f", "--file", help="The spec file.")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("plan")(plan)


def init(
    preset: str = typer.Option("seed", "--preset", help="seed (the blog's versions) or current."),
    output: Path = typer.Option(Path("airlock.yaml"), "-o", "--output", help="Where to write."),
    sources: Path | None = typer.Option(
        None, "--sources", help="A YAML `sources:` block to append (from `airlock lab upstream`)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    json_out: bool = json_option(),
) -> None:
    """Write a spec: `seed` reproduces the blog exactly; `current` is a recent line."""
    use_json(json_out)
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}", hint=f"choose one of: {', '.join(PRESETS)}")
    if output.exists() and not force:
        raise UsageError(f"{output} exists", hint="use --force to overwrite, or -o another file")
    text = preset_text(preset, sources=sources.read_text() if sources else None)  # type: ignore[arg-type]
    from airlock.spec import parse_spec

    parse_spec(text, filename=str(output))  # a preset must always be a valid spec
    output.write_text(text)
    state.emit(
        {"written": str(output), "preset": preset}, lambda: state.line(f"wrote {output} ({preset})")
    )


def plan(
    spec_file: Path = SPEC_OPTION,
    since: Path | None = typer.Option(
        None, "--since", help="An inventory: show only what travels."
    ),
    json_out: bool = json_option(),
) -> None:
    """Resolve every artifact (URLs, image refs, where each was found); no artifact download."""
    use_json(json_out)
    from airlock.cli.render_plan import render_plan
    from airlock.resolve.plan import resolve_plan
    from airlock.spec import load_spec

    if since is not None:
        from airlock.errors import NotImplementedYet

        raise NotImplementedYet("plan --since", "Deltas across the gap")
    result = resolve_plan(load_spec(spec_file))
    render_plan(result)
