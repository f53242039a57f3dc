"""`airlock node prepare|install|mirrors|check` and `airlock inventory`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from airlock.cli.output import json_option, state, use_json
from airlock.errors import AirlockError

__all__ = ["register"]

STORE = Path("/var/lib/airlock/store")
node_app = typer.Typer(help="Host changes on the offline node.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.command("inventory")(inventory)


def _render(result: object, *, dry_run: bool) -> None:
    from airlock.trust import UNVERIFIED
    from airlock.verbs.node import NodeResult

    assert isinstance(result, NodeResult)

    def text() -> None:
        if result.trust is not None and result.trust == UNVERIFIED:
            state.warn("installing from a bundle no trusted key vouched for: UNVERIFIED")
        if result.plan.empty:
            state.line("nothing to change: the node already matches the plan")
            return
        state.line(_plan_headline(result.plan, dry_run=dry_run))
        state.console.print(result.plan.render(), markup=False, highlight=False)
        if dry_run:
            state.line(f"dry run: {len(result.plan.changes)} changes planned, none applied")
        elif result.applied:
            _render_applied(result.applied)

    state.emit(result.to_json(), text)


def _plan_headline(plan: object, *, dry_run: bool) -> str:
    """One line first: how many changes of which kinds, where (the details follow)."""
    from collections import Counter

    from airlock.node.engine import Plan

    assert isinstance(plan, Plan)
    kinds = Counter(item.resource.kind for item in plan.changes)
    what = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    verb = "planned" if dry_run else "to apply"
    return f"{len(plan.changes)} changes {verb} on {plan.root} ({what}):"


def _render_applied(applied: object) -> None:
    """The changes applied, then the commands they ran (or, in a sysroot, recorded for the
    node): two counts of two different things, each named as what it is."""
    from airlock.node.engine import ApplyResult

    assert isinstance(applied, ApplyResult)
    names = ", ".join(applied.changed) if len(applied.changed) <= 6 else "as planned above"
    state.line(f"applied {len(applied.changed)} changes: {names}")
    ran = [a for a in applied.actions if a.ran]
    recorded = [a for a in applied.actions if not a.ran]
    if ran:
        state.line(f"  {len(ran)} commands run for them:")
        for action in ran:
            state.line(f"    {' '.join(action.argv)}")
    if recorded:
        state.line(f"  {len(recorded)} commands recorded for the node (a sysroot runs none):")
        for action in recorded:
            state.line(f"    {' '.join(action.argv)}")


@node_app.command("prepare")
def prepare(
    root: Path = typer.Option(Path("/"), "--root", help="Apply into a sysroot."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
    firewall: str = typer.Option("open", "--firewall", help="open (the ports), disable, skip."),
    selinux_permissive: bool = typer.Option(False, "--selinux-permissive"),
    json_out: bool = json_option(),
) -> None:
    """Kernel modules, sysctls, swap, firewall: the blog's node preparation."""
    use_json(json_out)
    from airlock.node.prepare import PrepareOptions
    from airlock.verbs.node import prepare_node

    if firewall not in ("open", "disable", "skip"):
        raise AirlockError(f"--firewall {firewall!r}: choose open, disable or skip")
    options = PrepareOptions(firewall=firewall, selinux_permissive=selinux_permissive)  # type: ignore[arg-type]
    _render(prepare_node(root=root, dry_run=dry_run, options=options), dry_run=dry_run)


@node_app.command("install")
def install(
    bundle: Path | None = typer.Argument(None, help="The bundle (default: what the store holds)."),
    root: Path = typer.Option(Path("/"), "--root", help="Apply into a sysroot."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
    registry: str = typer.Option("127.0.0.1:5000", "--registry", help="ADDR[,ADDR...] mirrors."),
    listen: list[str] = typer.Option(
        [],
        "--listen",
        help="The registry unit's ADDRESS:PORT (repeat; default: the spec's registry.listen, "
        "else this node's advertise address and loopback).",
    ),
    store: Path = typer.Option(STORE, "--store"),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s) for a BUNDLE."),
    allow_unsigned: bool = typer.Option(
        False, "--allow-unsigned", help="Install from a BUNDLE no trusted key vouches for."
    ),
    from_url: str | None = typer.Option(
        None, "--from", help="Another node's share (http://ADDR:PORT/): fetch only what is used."
    ),
    json_out: bool = json_option(),
) -> None:
    """Binaries, CNI plugins, containerd, kubelet units, mirrors, from the bundle."""
    use_json(json_out)
    from airlock.cli.progress import StepProgress
    from airlock.verbs.node import InstallOptions, install_node

    if from_url is not None and bundle is not None:
        raise AirlockError("give a BUNDLE or --from URL, not both")
    with StepProgress(unit="changes") as progress:
        options = InstallOptions(
            registries=[r for r in registry.split(",") if r],
            registry_listen=listen,
            store=store,
            keys=key,
            allow_unsigned=allow_unsigned,
            progress=progress,
            source_url=from_url,
        )
        result = install_node(bundle, root=root, dry_run=dry_run, options=options)
    _render(result, dry_run=dry_run)


@node_app.command("mirrors")
def mirrors(
    registry: str = typer.Option(..., "--registry", help="ADDR[,ADDR...] of local registries."),
    root: Path = typer.Option(Path("/"), "--root"),
    store: Path = typer.Option(STORE, "--store"),
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
def check(
    root: Path = typer.Option(Path("/"), "--root"),
    registry: str | None = typer.Option(None, "--registry", help="Local registry URL to check."),
    store: Path = typer.Option(STORE, "--store"),
    json_out: bool = json_option(),
) -> None:
    """Preflight: a superset of kubeadm's, each failure with its fix."""
    use_json(json_out)
    from airlock.node.preflight import summary
    from airlock.verbs.mirrors import registry_url
    from airlock.verbs.node import check_node

    url = registry_url(registry, tls=False) if registry else None
    results = check_node(root=root, registry_url=url, store=store)
    data = summary(results)

    def text() -> None:
        marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for r in results:
            state.console.print(
                f"{marks.get(r.status, r.status)} {escape(r.name)}: {escape(r.message)}"
            )
            if r.status != "ok" and r.fix:
                state.console.print(f"     fix: {r.fix}", markup=False)

    state.emit(data, text)
    if any(r.status == "fail" for r in results):
        raise typer.Exit(1)


def _inventory_text(data: dict[str, Any]) -> None:
    """The inventory in a few lines; the document itself is for -o FILE (or --json)."""
    os_info = data.get("os") or {}
    name = os_info.get("error") or " ".join(
        str(os_info[k]) for k in ("id", "version_id") if os_info.get(k)
    )
    store = data.get("store") or {}
    held = (
        f"{len(store.get('images') or [])} images, {len(store.get('blobs') or [])} blobs in "
        f"{store.get('path')}"
        if store.get("present")
        else f"no store at {store.get('path')}"
    )
    state.line(
        f"{name or 'unknown OS'} on {data.get('arch')}: {len(data.get('packages') or [])} "
        f"packages, {len(data.get('binaries') or [])} binaries, "
        f"{len(data.get('mirrors') or [])} registry mirrors; {held}"
    )
    state.line("carry it back: airlock inventory -o inventory.json [--sign KEY]")


def inventory(
    root: Path = typer.Option(Path("/"), "--root"),
    store: Path | None = typer.Option(None, "--store"),
    output: Path | None = typer.Option(None, "-o", "--output"),
    sign: Path | None = typer.Option(
        None, "--sign", help="ed25519 private key: also write OUTPUT.sig."
    ),
    json_out: bool = json_option(),
) -> None:
    """What this node already holds (carried back: the next bundle is a delta)."""
    use_json(json_out)
    from airlock.verbs.delta import write_inventory
    from airlock.verbs.node import inventory as collect

    if sign is not None and output is None:
        raise AirlockError("--sign needs -o FILE: the signature goes next to it as FILE.sig")
    data = collect(root=root, store=store)
    if output is None:
        state.emit(data, lambda: _inventory_text(data))
        return
    written = write_inventory(data, output, sign_key=sign)
    summary = {
        "inventory": str(written.path),
        "size": written.size,
        "sha256": written.digest,
        "blobs": written.blobs,
        "signature": str(written.signature) if written.signature else None,
        "keyId": written.key_id,
    }

    def text() -> None:
        signed = f", signed ({written.signature})" if written.signature else ", unsigned"
        state.line(
            f"wrote {written.path} ({written.size} bytes, {written.blobs} blobs){signed}; "
            "carry it back: `airlock bundle create --since` builds the delta"
        )

    state.emit(summary, text)
