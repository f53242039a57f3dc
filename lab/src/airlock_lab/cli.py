"""`airlock lab up|down|status|upstream|components`: the air-gap lab and its real components."""

from __future__ import annotations

from pathlib import Path

import typer

from airlock.cli.output import json_option, state, use_json

__all__ = ["register"]

lab_app = typer.Typer(help="The air-gap lab (network namespaces).", no_args_is_help=True)


def _example(line: str) -> str:
    return f"Example:\n\n  {line}"


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")


@lab_app.command("up", epilog=_example("airlock lab up --nodes 2"))
def up(nodes: int = typer.Option(1, "--nodes"), json_out: bool = json_option()) -> None:
    """Create the gap namespace(s), veth and blackhole default route."""
    use_json(json_out)
    from airlock_lab.gap import lab_up

    st = lab_up(nodes=nodes)
    state.emit(
        st.to_json(),
        lambda: state.line(
            f"gap up: {', '.join(st.namespaces)}; host {st.host_ip} <-> gap {st.gap_ip}; "
            "default route inside: blackhole"
        ),
    )


@lab_app.command("down", epilog=_example("airlock lab down"))
def down(json_out: bool = json_option()) -> None:
    """Remove everything `lab up` made (idempotent, also after a crash)."""
    use_json(json_out)
    from airlock_lab.gap import lab_down

    removed = lab_down()
    state.emit(
        {"removed": removed},
        lambda: state.line(
            "removed " + (", ".join(removed) if removed else "nothing (already down)")
        ),
    )


@lab_app.command("status", epilog=_example("airlock lab status --json"))
def status(
    upstream: list[str] = typer.Option(
        [], "--upstream", metavar="ADDR:PORT", help="Upstream addresses to probe."
    ),
    json_out: bool = json_option(),
) -> None:
    """Prove the gap: upstream unreachable from inside, the host's veth reachable."""
    use_json(json_out)
    from airlock_lab.gap import lab_status

    st = lab_status(upstream=upstream)

    def text() -> None:
        if not st["up"]:
            state.line("lab is down")
            return
        for target, answer in st["probes"].items():
            state.line(f"from the gap to {target}: {answer}")
        state.line(f"host reachable: {st['hostReachable']}; gap holds: {st['gapHolds']}")

    state.emit(st, text)
    if st["up"] and not (st["hostReachable"] and st["gapHolds"]):
        raise typer.Exit(1)


@lab_app.command("upstream", epilog=_example("airlock lab upstream --sources-out sources.yaml"))
def upstream(
    workdir: Path = typer.Option(Path("/var/tmp/airlock-upstream"), "--workdir"),
    sources_out: Path | None = typer.Option(None, "--sources-out"),
    json_out: bool = json_option(),
) -> None:
    """Run the simulated upstream in the foreground; write the `sources:` block for a spec."""
    use_json(json_out)
    from airlock_lab.upstream import Upstream, serve_forever

    def ready(up: Upstream) -> None:
        state.ready(
            {
                "filesUrl": up.files_url,
                "registries": dict(sorted(up.registries.items())),
                "sourcesOut": str(sources_out) if sources_out else None,
            }
        )
        state.info(f"files at {up.files_url}")
        for host, url in sorted(up.registries.items()):
            state.info(f"registry {host} at {url}")
        if sources_out:
            state.info(f"wrote the sources block to {sources_out}")
        state.info("serving until interrupted (Ctrl-C or SIGTERM)")

    serve_forever(workdir, sources_out=sources_out, ready=ready)


@lab_app.command(
    "components", epilog=_example("airlock lab components --set seed --platform linux/amd64")
)
def components_cmd(
    sets: list[str] = typer.Option(
        ["seed"], "--set", metavar="SET", help="seed, current, upgrade (repeatable)."
    ),
    platform: list[str] = typer.Option(["linux/amd64"], "--platform", help="GOOS/GOARCH."),
    json_out: bool = json_option(),
) -> None:
    """Build the real components from their Go modules (cached under the user's cache dir)."""
    use_json(json_out)
    from airlock_lab.components import build

    built = build(sets, platforms=platform, progress=lambda name, msg: state.info(f"{name}: {msg}"))
    rows = [
        {
            "component": b.recipe.key,
            "platform": f"{b.goos}/{b.goarch}",
            "cached": b.cached,
            "seconds": round(b.seconds, 1),
            "dir": str(b.dir),
            "note": b.recipe.note,
        }
        for b in built
    ]
    total = sum(b.seconds for b in built)
    state.emit(
        {"components": rows, "seconds": round(total, 1)},
        lambda: state.line(
            f"{len(built)} component builds ready ({sum(not b.cached for b in built)} built, "
            f"{total:.0f}s)"
        ),
    )
