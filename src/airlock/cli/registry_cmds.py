"""`airlock registry serve|push|certs`."""

from __future__ import annotations

from pathlib import Path

import typer

from airlock.cli.output import json_option, state, use_json

__all__ = ["register"]

registry_app = typer.Typer(help="The local OCI registry.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")


@registry_app.command("serve")
def serve(
    store: Path = typer.Option(Path("/var/lib/airlock/store"), "--store"),
    bundle: Path | None = typer.Option(None, "--bundle", help="Serve straight from a bundle."),
    listen: str = typer.Option("127.0.0.1:5000", "--listen"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert"),
    tls_key: Path | None = typer.Option(None, "--tls-key"),
    htpasswd: Path | None = typer.Option(None, "--htpasswd"),
) -> None:
    """Serve an OCI registry from the store (or a bundle)."""
    from airlock.oci.layout import OciLayout
    from airlock.oci.server import serve as serve_registry
    from airlock.oci.sources import BundleSource, ContentSource, StoreSource

    source: ContentSource
    if bundle is not None:
        source = BundleSource(bundle)
    else:
        layout = OciLayout(store)
        layout.init()
        source = StoreSource(layout)
    serve_registry(
        source,
        listen=listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        htpasswd=htpasswd,
        ready=lambda url: state.info(f"serving {source.description} at {url}"),
    )


@registry_app.command("push")
def push(
    to: str = typer.Option(..., "--to", help="Target registry URL (https://harbor.local)."),
    store: Path = typer.Option(Path("/var/lib/airlock/store"), "--store"),
    ca: Path | None = typer.Option(None, "--ca", help="CA file to verify the target's TLS."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify the target's TLS."),
    username: str | None = typer.Option(None, "--username", envvar="AIRLOCK_REGISTRY_USERNAME"),
    password: str | None = typer.Option(
        None, "--password", envvar="AIRLOCK_REGISTRY_PASSWORD", help="Better: the env variable."
    ),
    concurrency: int = typer.Option(8, "--concurrency"),
    json_out: bool = json_option(),
) -> None:
    """Copy the store into an existing registry (distribution, Harbor, Zot)."""
    use_json(json_out)
    from airlock.oci.push import PushOptions, push_store

    result = push_store(
        store,
        to=to,
        options=PushOptions(
            username=username,
            password=password,
            ca_file=ca,
            insecure=insecure,
            concurrency=concurrency,
        ),
    )

    def text() -> None:
        state.line(
            f"pushed {len(result.images)} images to {to}: {result.blobs_uploaded} blobs uploaded "
            f"({result.bytes_uploaded} bytes), {result.blobs_mounted} mounted, "
            f"{result.blobs_present} already there, {result.manifests_put} manifests"
        )
        for note in result.notes:
            state.warn(note)

    state.emit(result.to_json(), text)


@registry_app.command("certs")
def certs(
    out: Path = typer.Option(Path("/etc/airlock/pki"), "--out"),
    name: list[str] = typer.Option([], "--name", help="DNS names for the certificate."),
    address: list[str] = typer.Option([], "--address", help="IP addresses for the certificate."),
    json_out: bool = json_option(),
) -> None:
    """A CA and a server certificate for the node's names and addresses."""
    use_json(json_out)
    from airlock.oci.certs import generate_certs

    paths = generate_certs(out, names=name or ["localhost"], addresses=address or ["127.0.0.1"])
    data = {k: str(v) if isinstance(v, Path) else v for k, v in vars(paths).items()}
    state.emit(data, lambda: state.line(f"CA {paths.ca_cert}, server certificate {paths.cert}"))
