"""`airlock registry serve|push|certs|gc`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from airlock.cli.output import json_option, state, use_json

if TYPE_CHECKING:
    from airlock.oci.limits import Limits

__all__ = ["register"]

registry_app = typer.Typer(help="The local OCI registry.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")


@registry_app.command("serve")
def serve(
    store: Path = typer.Option(Path("/var/lib/airlock/store"), "--store"),
    bundle: Path | None = typer.Option(None, "--bundle", help="Serve straight from a bundle."),
    listen: list[str] = typer.Option(
        ["127.0.0.1:5000"], "--listen", help="ADDRESS:PORT; repeat for several addresses."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert"),
    tls_key: Path | None = typer.Option(None, "--tls-key"),
    htpasswd: Path | None = typer.Option(None, "--htpasswd"),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s) for --bundle."),
    allow_unsigned: bool = typer.Option(
        False, "--allow-unsigned", help="Serve a --bundle no trusted key vouches for (UNVERIFIED)."
    ),
    push: bool = typer.Option(
        False, "--push", help="Accept pushes into the store (needs TLS and --htpasswd)."
    ),
    delete: bool = typer.Option(
        False, "--delete", help="Accept manifest and blob DELETE (needs TLS and --htpasswd)."
    ),
    max_manifest: str = typer.Option("4MiB", "--max-manifest", help="Largest manifest."),
    max_upload: str = typer.Option("16GiB", "--max-upload", help="Largest single blob."),
    max_uploads: int = typer.Option(32, "--max-uploads", help="Uploads in flight at once."),
    free_floor: str = typer.Option(
        "2GiB", "--free-floor", help="Refuse pushes below this much free space..."
    ),
    free_floor_percent: float = typer.Option(
        5.0, "--free-floor-percent", help="...or below this share of the filesystem."
    ),
) -> None:
    """Serve an OCI registry from the store (or a bundle, verified first); pull-only unless
    --push."""
    import contextlib

    from airlock.bundle.handle import Bundle
    from airlock.bundle.serving import BlobChecks, BundleSource
    from airlock.bundle.volumes import locate_volumes
    from airlock.oci.sources import ContentSource, StoreSource
    from airlock.store import Store
    from airlock.trust import trust_policy

    limits = _limits(max_manifest, max_upload, max_uploads, free_floor, free_floor_percent)
    source: ContentSource
    trust_note = ""
    with contextlib.ExitStack() as stack:
        if bundle is not None:
            locate_volumes(bundle)  # a bundle that is not there is named before any key
            trust = trust_policy(key, allow_unsigned=allow_unsigned)
            # signature, index.json, the tar's index and the graph now; each blob's bytes are
            # hashed once before its first byte is served (a background thread runs ahead)
            opened = stack.enter_context(Bundle.open(bundle, trust=trust, hash_content=False))
            trust_note = f" ({opened.report.trust})"
            if not opened.report.verified:
                state.warn(f"serving {bundle} {opened.report.trust}: nobody vouched for it")
            source = stack.enter_context(BundleSource(opened, BlobChecks(opened)))
        else:
            opened_store = Store.open(store, write=push or delete)  # pushes land here
            if not (push or delete or opened_store.layout.index_path.exists()):
                _no_store(store)
            if push or delete:
                Store.open(store, write=True).init()
            source = StoreSource(opened_store.layout)
        # the server (aiohttp) is imported once the bundle's blobs are being hashed: the
        # import's second of CPU and the hashing run side by side
        from airlock.oci.server import RegistryOptions
        from airlock.oci.server import serve as serve_registry

        options = RegistryOptions(push=push, delete=delete, limits=limits)
        mode = "pull and push" if push else "pull only"
        serve_registry(
            source,
            listen=listen,
            tls_cert=tls_cert,
            tls_key=tls_key,
            htpasswd=htpasswd,
            options=options,
            ready=lambda url: _ready(f"{source.description}{trust_note}", url, mode),
        )


def _no_store(store: Path) -> None:
    """Pull-only from a directory that holds no store would answer every pull with 404."""
    from airlock.errors import UsageError

    what = "does not exist" if not store.exists() else "holds no store (no index.json)"
    raise UsageError(
        f"--store {store} {what}: there is nothing to serve",
        f"load a bundle into it first (airlock load BUNDLE --store {store}), serve a bundle "
        "as it is (--bundle BUNDLE), or accept pushes into a new store (--push)",
    )


def _ready(description: str, url: str, mode: str) -> None:
    state.ready({"url": url, "serving": description, "mode": mode})
    state.info(f"serving {description} at {url} ({mode})")


def _limits(
    max_manifest: str, max_upload: str, max_uploads: int, floor: str, floor_percent: float
) -> Limits:
    from airlock.errors import UsageError
    from airlock.oci.limits import Limits, parse_size

    try:
        return Limits(
            manifest_bytes=parse_size(max_manifest),
            upload_bytes=parse_size(max_upload),
            uploads_in_flight=max_uploads,
            floor_bytes=parse_size(floor),
            floor_percent=floor_percent,
        )
    except ValueError as exc:
        raise UsageError(str(exc), "sizes take binary units: 4MiB, 16GiB") from exc


@registry_app.command("push")
def push(
    to: str = typer.Option(
        ..., "--to", metavar="URL", help="The target registry, e.g. https://127.0.0.1:8443."
    ),
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
    from airlock.cli.progress import StepProgress
    from airlock.oci.push import PushOptions, push_store

    with StepProgress() as progress:
        result = push_store(
            store,
            to=to,
            options=PushOptions(
                username=username,
                password=password,
                ca_file=ca,
                insecure=insecure,
                concurrency=concurrency,
                progress=progress,
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
    out: Path = typer.Option(
        Path("/etc/airlock/pki"),
        "-o",
        "--output",
        metavar="DIR",
        help="The directory for the CA, the certificate and the credentials.",
    ),
    old_out: Path | None = typer.Option(None, "--out", hidden=True),  # the first spelling
    name: list[str] = typer.Option([], "--name", help="DNS names for the certificate."),
    address: list[str] = typer.Option([], "--address", help="IP addresses for the certificate."),
    htpasswd_user: str | None = typer.Option(
        None, "--htpasswd-user", help="Also write push credentials for this user (0600 files)."
    ),
    show_secrets: bool = typer.Option(
        False, "--show-secrets", help="Print the generated password too."
    ),
    json_out: bool = json_option(),
) -> None:
    """A CA and a server certificate for the node's names and addresses (and push credentials)."""
    use_json(json_out)
    from airlock.oci.certs import generate_certs
    from airlock.oci.htpasswd import ensure_credentials

    out = old_out or out
    paths = generate_certs(out, names=name or ["localhost"], addresses=address or ["127.0.0.1"])
    data: dict[str, object] = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(paths).items()
    }
    creds = ensure_credentials(out, user=htpasswd_user) if htpasswd_user else None
    if creds is not None:
        data.update(
            user=creds.user,
            htpasswd=str(creds.htpasswd),
            password_file=str(creds.password_file),
            credentials_created=creds.created,
        )
        if show_secrets:
            data["password"] = creds.password

    def text() -> None:
        state.line(f"CA {paths.ca_cert}, server certificate {paths.cert}")
        if creds is not None:
            state.line(
                f"push credentials for {creds.user}: htpasswd {creds.htpasswd}, "
                f"password in {creds.password_file} (0600)"
            )
            if show_secrets:
                state.line(f"password: {creds.password}")

    state.emit(data, text)


@registry_app.command("gc")
def gc(
    store: Path = typer.Option(Path("/var/lib/airlock/store"), "--store"),
    apply: bool = typer.Option(
        False, "--apply", help="Remove the blobs (without it: a dry run that only reports)."
    ),
    grace: float = typer.Option(
        3600.0, "--grace", help="Spare blobs younger than this many seconds (uploads in progress)."
    ),
    json_out: bool = json_option(),
) -> None:
    """Remove blobs that nothing in the store references (a dry run unless --apply)."""
    use_json(json_out)
    from airlock.oci.gc import GcOptions, collect_garbage

    result = collect_garbage(store, options=GcOptions(dry_run=not apply, grace_seconds=grace))

    def text() -> None:
        verb = "removed" if apply else "would remove"
        state.line(
            f"{verb} {len(result.removed)} blobs ({result.bytes_freed} bytes); kept "
            f"{result.kept} referenced and {result.young} younger than {grace:g} s"
        )
        for digest in result.removed:
            state.line(f"  {digest}")
        for digest in result.missing:
            state.warn(f"referenced but missing from the store: {digest}")
        if not apply and result.removed:
            state.line("dry run: nothing removed; run again with --apply")

    state.emit(result.to_json(), text)
