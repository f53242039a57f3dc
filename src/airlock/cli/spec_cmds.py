"""`airlock init` and `airlock plan`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from airlock.cli.output import json_option, state, use_json
from airlock.errors import UsageError
from airlock.presets import PRESETS, preset_text

if TYPE_CHECKING:
    from airlock.fetch.network import NetworkOptions
    from airlock.oci.credentials import CredentialStore
    from airlock.spec import Spec

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
    if not output.parent.is_dir():
        raise UsageError(
            f"cannot write {output}: directory {output.parent} does not exist",
            hint=f"create it first (mkdir -p {output.parent}), or name another -o/--output",
        )
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
    since_key: list[Path] = typer.Option(
        [], "--since-key", help="Public key the --since inventory's signature must verify with."
    ),
    ca_bundle: Path | None = typer.Option(
        None, "--ca-bundle", help="PEM CA certificates to trust beside the system's."
    ),
    registry_auth: Path | None = typer.Option(
        None, "--registry-auth", help="Registry logins: a Docker config.json or auth.json."
    ),
    json_out: bool = json_option(),
) -> None:
    """Resolve every artifact (URLs, image refs, digests, sizes); no artifact download."""
    use_json(json_out)
    from airlock.cli.render_plan import render_plan
    from airlock.fetch.network import NetworkOptions
    from airlock.spec import load_spec
    from airlock.verbs.plan import PlanOptions, plan_bundle

    spec = load_spec(spec_file)
    network = NetworkOptions.choose(
        flag=ca_bundle, spec_value=spec.sources.ca_bundle, spec_dir=spec_file.resolve().parent
    )
    if since is not None:
        from airlock.verbs.create import registry_credentials

        creds = registry_credentials(
            spec, auth_file=registry_auth, spec_dir=spec_file.resolve().parent
        )
        _plan_since(spec, since, since_key, network, creds)
        return
    result = plan_bundle(
        spec,
        options=PlanOptions(
            network=network, registry_auth=registry_auth, spec_dir=spec_file.resolve().parent
        ),
    )
    render_plan(result)


def _plan_since(
    spec: Spec,
    since: Path,
    keys: list[Path],
    network: NetworkOptions,
    credentials: CredentialStore,
) -> None:
    """What will travel on top of an inventory, and its size, from metadata only."""
    from airlock.cli.sizes import format_size
    from airlock.verbs.delta import plan_since, read_baseline

    result = plan_since(
        spec,
        baseline=read_baseline(since, keys=keys),
        network=network,
        credentials=credentials,
    )

    def text() -> None:
        order = {"travels": 0, "partial": 1, "unknown": 2, "present": 3}
        rows = sorted(result.entries, key=lambda e: (order[e.status], e.kind == "image", e.name))
        state.line(f"since {since} ({result.base[:19]}):")
        for e in rows:
            size = format_size(e.travel_bytes) if e.status != "present" else "-"
            where = f" [{e.platform}]" if e.platform else ""
            note = f"  ({e.note})" if e.note and e.status != "present" else ""
            state.line(
                f"  {e.status:<8} {size:>10}  {e.kind:<8} {e.name}{where}"
                f"  present: {format_size(e.present_bytes)}{note}"
            )
        counts = result.counts()
        state.line(
            f"{format_size(result.travel_bytes)} will travel ({result.travel_bytes} bytes, shared "
            f"blobs once); {format_size(result.present_bytes)} already on the far side; "
            f"{counts['travels']} travel, {counts['partial']} partly, {counts['present']} present,"
            f" {counts['unknown']} unknown"
        )
        state.line(
            "not counted: airlock's wheelhouse (left out when unchanged) and the bundle's own "
            "small metadata"
        )
        for w in result.warnings:
            state.warn(w)

    state.emit(result.to_json(), text)
