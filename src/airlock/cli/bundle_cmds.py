"""`airlock bundle create|inspect|verify`, `airlock keys generate`, `airlock load`."""

from __future__ import annotations

from pathlib import Path

import typer

from airlock.cli._stub import not_yet
from airlock.cli.output import json_option, state, use_json

__all__ = ["register"]

BUNDLE_ISSUE = "Connected side: fetch every artifact with verification and write the bundle"
LOAD_ISSUE = "Offline side: load the bundle, serve it as a registry, mirror containerd to it"

bundle_app = typer.Typer(help="Build, inspect and verify bundles.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")
    app.add_typer(keys_app, name="keys")
    app.command("load")(load)


@bundle_app.command("create")
def create(
    spec_file: Path = typer.Option(Path("airlock.yaml"), "-f", "--file", help="The spec file."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Bundle path."),
    split: str | None = typer.Option(None, "--split", help="Volume size, e.g. 700M, 4G."),
    sign: Path | None = typer.Option(None, "--sign", help="ed25519 private key (PEM)."),
    since: Path | None = typer.Option(None, "--since", help="Inventory or old bundle: a delta."),
    cache: Path | None = typer.Option(None, "--cache", help="Download cache directory."),
    sequence: int = typer.Option(1, "--sequence", help="Sequence number (rollback guard)."),
    json_out: bool = json_option(),
) -> None:
    """Fetch every artifact (verified, cached, parallel) and write the bundle."""
    use_json(json_out)
    from airlock.cli.progress import DownloadProgress
    from airlock.cli.sizes import format_size, parse_size
    from airlock.spec import load_spec
    from airlock.verbs.create import CreateOptions, create_bundle

    if since is not None:
        not_yet(
            "bundle create --since",
            "Deltas across the gap: inventory round trip, delta bundles, upgrades",
        )
    spec = load_spec(spec_file)
    with DownloadProgress() as progress:
        result = create_bundle(
            spec,
            options=CreateOptions(
                output=output,
                cache=cache,
                sign_key=sign,
                split=parse_size(split) if split else None,
                sequence=sequence,
                progress=progress,
            ),
        )
    w = result.write
    data = {
        "bundle": str(w.path),
        "volumes": [str(v) for v in w.volumes],
        "size": w.size,
        "sha256": w.sha256,
        "blobs": w.blob_count,
        "uniqueBlobBytes": w.unique_blob_bytes,
        "images": len(result.images),
        "files": len(result.files),
        "bytesDownloaded": result.bytes_downloaded,
        "filesFromCache": result.files_from_cache,
        "signed": w.signed,
        "kubeadmImageList": result.plan.image_list_source,
        "warnings": result.warnings,
    }

    def text() -> None:
        for warning in result.warnings:
            state.warn(warning)
        state.line(
            f"wrote {w.path}: {format_size(w.size)}, {len(result.images)} images, "
            f"{len(result.files)} files, {w.blob_count} blobs"
            + (f", {len(w.volumes)} volumes" if w.volumes else "")
            + (", signed" if w.signed else ", unsigned")
        )
        state.line(
            f"downloaded {format_size(result.bytes_downloaded)}; "
            f"{result.files_from_cache}/{len(result.files)} files from cache"
        )

    state.emit(data, text)


@bundle_app.command("inspect")
def inspect(bundle: Path = typer.Argument(...), json_out: bool = json_option()) -> None:
    """List contents, sizes, sources, SBOM summary."""
    use_json(json_out)
    not_yet("bundle inspect", BUNDLE_ISSUE)


@bundle_app.command("verify")
def verify(
    bundle: Path = typer.Argument(...),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s)."),
    json_out: bool = json_option(),
) -> None:
    """Check every digest, the signature and every volume; name what is wrong."""
    use_json(json_out)
    not_yet("bundle verify", BUNDLE_ISSUE)


@keys_app.command("generate")
def keys_generate(
    out: Path = typer.Option(Path("airlock"), "--out", help="Prefix: PREFIX.key and PREFIX.pub."),
    json_out: bool = json_option(),
) -> None:
    """Generate an ed25519 key pair (PEM)."""
    use_json(json_out)
    not_yet("keys generate", BUNDLE_ISSUE)


def load(
    bundle: Path = typer.Argument(...),
    store: Path = typer.Option(Path("/var/lib/airlock/store"), "--store", help="The store."),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s)."),
    json_out: bool = json_option(),
) -> None:
    """Verify the bundle, then merge it into the store (idempotent)."""
    use_json(json_out)
    not_yet("load", LOAD_ISSUE)
