"""`airlock bundle create|inspect|verify`, `airlock keys generate`, `airlock load`."""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from airlock.cli.output import camel, json_option, state, use_json

if TYPE_CHECKING:
    from airlock.fetch.recording import Recording

__all__ = ["register"]

BUNDLE_ISSUE = "Connected side: fetch every artifact with verification and write the bundle"
LOAD_ISSUE = "Offline side: load the bundle, serve it as a registry, mirror containerd to it"

bundle_app = typer.Typer(help="Build, inspect and verify bundles.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")
    app.add_typer(keys_app, name="keys")
    app.command("load")(load)


def _expiry(text: str | None) -> str | None:
    """`--expires YYYY-MM-DD`, checked on the command line: a real date, not in the past."""
    import datetime

    from airlock.errors import UsageError

    if text is None:
        return None
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--expires {text!r} is not a date", hint="give it as YYYY-MM-DD, e.g. 2027-06-30"
        ) from None
    if day < datetime.datetime.now(datetime.UTC).date():
        raise UsageError(
            f"--expires {text} is in the past: every load would refuse the bundle",
            hint="give a later date (YYYY-MM-DD), or leave --expires out",
        )
    return day.isoformat()


@bundle_app.command("create")
def create(
    spec_file: Path = typer.Option(Path("airlock.yaml"), "-f", "--file", help="The spec file."),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        metavar="PATH",
        help="NAME.airlock.tar, or a directory to write it in (default: here).",
    ),
    split: str | None = typer.Option(None, "--split", help="Volume size, e.g. 700M, 4G."),
    sign: Path | None = typer.Option(None, "--sign", help="ed25519 private key (PEM)."),
    since: Path | None = typer.Option(None, "--since", help="Inventory or old bundle: a delta."),
    since_key: list[Path] = typer.Option(
        [], "--since-key", help="Public key the --since inventory's signature must verify with."
    ),
    cache: Path | None = typer.Option(None, "--cache", help="Download cache directory."),
    sequence: int | None = typer.Option(
        None,
        "--sequence",
        help="Sequence number (rollback guard); default 1, or with --since "
        "one above what the far side loaded.",
    ),
    expires: str | None = typer.Option(None, "--expires", help="YYYY-MM-DD: refuse loads after."),
    registry_auth: Path | None = typer.Option(
        None, "--registry-auth", help="Registry logins: a Docker config.json or auth.json."
    ),
    ca_bundle: Path | None = typer.Option(
        None, "--ca-bundle", help="PEM CA certificates to trust beside the system's."
    ),
    compress: str = typer.Option(
        "zstd", "--compress", help="Files (never image layers): zstd, zstd:LEVEL or none."
    ),
    recovery: str | None = typer.Option(
        None, "--recovery", help="With --split: recovery volumes, e.g. 20% (repairs 1 in 5)."
    ),
    keep_cache: bool = typer.Option(
        False,
        "--keep-cache",
        help="Keep every layer in the cache too (by default the cache reads the layers this run "
        "downloaded from the unsplit bundle it wrote: moved or deleted, they are fetched again).",
    ),
    json_out: bool = json_option(),
) -> None:
    """Fetch every artifact (verified, cached, parallel) and write the bundle."""
    use_json(json_out)
    from airlock import replay
    from airlock.bundle.compression import parse_compression
    from airlock.bundle.recovery import parse_percent
    from airlock.cli.progress import StepProgress
    from airlock.cli.sizes import format_size, parse_size
    from airlock.errors import UsageError
    from airlock.fetch import recording
    from airlock.fetch.network import NetworkOptions
    from airlock.spec import load_spec
    from airlock.verbs.create import CreateOptions, create_bundle

    if since_key and since is None:
        raise UsageError("--since-key checks the --since inventory: give --since too")
    compression = parse_compression(compress)
    if recovery is not None and split is None:
        raise UsageError(
            "--recovery adds volumes to a split bundle: give --split SIZE too",
            "e.g. --split 4G --recovery 20%",
        )
    recovery_percent = parse_percent(recovery) if recovery is not None else None
    expiry = _expiry(expires)  # before any download: a typo must not cost the fetch
    argv = sys.argv[1:]
    records = replay.eligible(argv)  # run as `airlock bundle create ...`: see airlock.replay
    with (
        recording.start() if records else contextlib.nullcontext() as rec,
        StepProgress() as progress,
    ):
        spec = load_spec(spec_file)
        network = NetworkOptions.choose(
            flag=ca_bundle, spec_value=spec.sources.ca_bundle, spec_dir=spec_file.resolve().parent
        )
        result = create_bundle(
            spec,
            options=CreateOptions(
                output=output,
                cache=cache,
                sign_key=sign,
                split=parse_size(split) if split else None,
                sequence=sequence,
                expires=expiry,
                progress=progress,
                since=since,
                since_keys=tuple(since_key),
                registry_auth=registry_auth,
                spec_dir=spec_file.resolve().parent,
                network=network,
                compression=compression,
                recovery=recovery_percent,
                keep_cache=keep_cache,
            ),
        )
    w = result.write
    files_bytes = sum(f.size for f in result.files)
    files_stored = sum(f.stored.size if f.stored else f.size for f in result.files)
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
        "recoveryVolumes": [str(v) for v in w.recovery_volumes],
        "bootVolumes": [str(v) for v in w.boot_volumes],
        "compression": compression.describe(),
        "filesBytes": files_bytes,
        "filesStoredBytes": files_stored,
        "kubeadmImageList": result.plan.image_list_source,
        "warnings": result.warnings,
        "bootstrap": str(result.bootstrap) if result.bootstrap else None,
        "unchanged": result.unchanged,
    }
    delta = result.delta
    if delta is not None:
        data["delta"] = {
            "base": delta.base,
            "since": delta.baseline,
            "sinceKind": delta.kind,
            "omittedBlobs": delta.omitted,
            "omittedBytes": delta.omitted_bytes,
        }

    def text(unchanged: bool, downloaded: int, from_cache: int) -> None:
        for warning in result.warnings:
            state.warn(warning)
        if delta is not None:
            state.line(
                f"delta on {delta.baseline} ({delta.base[:19]}): {delta.omitted} blobs "
                f"({format_size(delta.omitted_bytes)}) already on the far side, left out"
            )
        state.line(
            # unchanged: the bundle already held exactly this content (same pins, key and
            # options): left as it was, airlock.json and its signature not made again
            ("unchanged, kept" if unchanged else "wrote")
            + f" {w.path}: {format_size(w.size)}, {len(result.images)} images, "
            f"{len(result.files)} files, {w.blob_count} blobs"
            + (f", {len(w.volumes)} volumes" if w.volumes else "")
            + (
                f" + {len(w.recovery_volumes)} recovery volumes, {len(w.boot_volumes)} boot copies"
                if w.recovery_volumes
                else ""
            )
            + (", signed" if w.signed else ", unsigned")
        )
        if files_stored < files_bytes:
            state.line(
                f"files: {format_size(files_bytes)} stored as {format_size(files_stored)} "
                f"({compression.describe()}, {files_bytes / files_stored:.2f}:1); "
                "image layers as upstream made them"
            )
        state.line(
            f"downloaded {format_size(downloaded)}; "
            f"{from_cache}/{len(result.files)} files from cache"
        )
        if result.bootstrap:
            state.line(
                f"wrote {result.bootstrap}: carry it with the bundle; on the node, "
                f"python3 {result.bootstrap.name} BUNDLE --key PUB installs airlock"
            )

    state.emit(
        data, lambda: text(result.unchanged, result.bytes_downloaded, result.files_from_cache)
    )
    if rec is not None:
        # what a run of this very command line prints when nothing changed: airlock.replay
        n = len(result.files)
        same = {**data, "unchanged": True, "bytesDownloaded": 0, "filesFromCache": n}
        stdout, stderr = state.rendered(same, lambda: text(True, 0, n))
        outputs = [w.path, *w.volumes, *w.recovery_volumes, *w.boot_volumes]
        _remember(
            rec,
            argv,
            cache,
            outputs + ([result.bootstrap] if result.bootstrap else []),
            network.ca_bundle,
            stdout,
            stderr,
        )


def _remember(
    rec: Recording,
    argv: list[str],
    cache: Path | None,
    outputs: list[Path],
    ca: Path | None,
    stdout: str,
    stderr: str,
) -> None:
    """Leave the record a later run of this command line answers from (airlock.replay)."""
    import os

    from airlock import replay
    from airlock.cachedir import default_cache_dir

    root = replay.cache_root(argv)
    if (cache or default_cache_dir()).resolve() != root.resolve():
        return  # not where a replay would look
    path = replay.record_path(root, argv, os.getcwd())
    record = rec.record(argv=argv, cache=root, outputs=outputs, ca=ca, stdout=stdout, stderr=stderr)
    try:
        if record is None:
            path.unlink(missing_ok=True)
            if state.debug:
                state.err.print(escape(f"debug: no replay record: {rec.spoiled}"))
        else:
            replay.save(path, record)
    except OSError:
        pass  # no record: the next run takes the full path


@bundle_app.command("bootstrap-script")
def bootstrap_script(
    output: Path | None = typer.Option(None, "-o", "--output", help="Write it here (0755)."),
) -> None:
    """Print (or write) airlock-bootstrap.py: installs airlock on an offline node from a bundle,
    checking its signature and every wheel first (python3 only)."""
    import sys

    from airlock.atomic import write_atomic
    from airlock.bootstrap import render_script

    script = render_script()
    if output is None:
        sys.stdout.buffer.write(script)
        return
    write_atomic(output, script, mode=0o755)
    state.line(f"wrote {output}")


@bundle_app.command("inspect")
def inspect(
    bundle: Path = typer.Argument(...),
    key: list[Path] = typer.Option([], "--key", help="Public key(s) to check the signature."),
    json_out: bool = json_option(),
) -> None:
    """List contents, sizes, sources, SBOM summary."""
    use_json(json_out)

    from airlock.bundle.inspect import inspect_bundle
    from airlock.cli.sizes import format_size

    summary = inspect_bundle(bundle, keys=key)

    def text() -> None:
        s = summary
        sig = "unsigned"
        if s.signed:
            sig = {
                None: "signed (no key given to check)",
                True: f"signed by {s.key_id}",
                False: "signature INVALID for the given keys",
            }[s.signature_valid]
        expiry = "no expiry"
        if s.expires:
            expiry = f"EXPIRED on {s.expires}" if s.expired else f"expires {s.expires}"
        state.line(
            f"{s.name} (channel {s.channel}, sequence {s.sequence}, {expiry}), "
            f"airlock {s.tool_version}, {sig}"
        )
        state.line(
            f"{format_size(s.archive_size)} in {max(s.volumes, 1)} volume(s); "
            f"{s.blob_count} blobs, {format_size(s.unique_size)} unique "
            f"({format_size(s.total_size)} if shared layers were repeated); "
            f"SBOM: {s.sbom_components} components"
        )
        state.line(
            f"format {s.format_version}; files {format_size(s.files_size)} stored as "
            f"{format_size(s.files_stored_size)} (compression {s.compression_ratio:.2f}:1)"
        )
        if s.recovery:
            r = s.recovery
            state.line(
                f"recovery: {r['recoveryVolumes']} recovery volume(s) for {r['dataVolumes']} "
                f"data volumes (any {r['recoveryVolumes']} may be lost or damaged), "
                f"{r['bootCopies']} boot copies"
            )
        state.table(
            ["image", "platforms", "size", "digest"],
            [
                (i.reference, ",".join(i.platforms), format_size(i.size), i.digest[:19])
                for i in s.images
            ],
            title=f"images ({len(s.images)})",
        )
        state.table(
            ["file", "kind", "version", "size", "checksum", "source"],
            [
                (
                    f.name,
                    f.kind,
                    f.version,
                    format_size(f.size)
                    + (f" ({f.size / f.stored_size:.1f}:1)" if f.stored_size else ""),
                    (f.checksum.source if f.checksum else "none published")
                    + (f"; signed ({f.signature_key[:19]})" if f.signature_key else ""),
                    f.url,
                )
                for f in s.files
            ],
            title=f"files ({len(s.files)})",
        )

    state.emit({**camel(summary), "compressionRatio": summary.compression_ratio}, text)


@bundle_app.command("verify")
def verify(
    bundle: Path = typer.Argument(...),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s)."),
    allow_unsigned: bool = typer.Option(
        False, "--allow-unsigned", help="Accept a bundle no trusted key vouches for (UNVERIFIED)."
    ),
    json_out: bool = json_option(),
) -> None:
    """Check every digest, the signature and every volume; name what is wrong."""
    use_json(json_out)
    from airlock.bundle.verify import BundleVerificationError, verify_bundle
    from airlock.bundle.volumes import locate_volumes
    from airlock.cli.progress import StepProgress
    from airlock.cli.verify_view import verify_data, verify_text
    from airlock.trust import trust_policy

    locate_volumes(bundle)  # a bundle that is not there is named before any key is looked for
    trust = trust_policy(key, allow_unsigned=allow_unsigned)
    try:
        with StepProgress() as progress:
            report = verify_bundle(bundle, trust=trust, progress=progress)
    except BundleVerificationError as exc:
        r = exc.report
        if state.json:
            state.emit(
                {
                    "ok": False,
                    "problems": list(r.problems),
                    "checked": list(r.checked),
                    "notChecked": list(r.not_checked),
                }
            )
        else:
            for problem in r.problems:
                state.err.print(f"[red]✗[/] {escape(problem)}")
            for item in r.checked:
                state.err.print(f"  checked: {escape(item)}")
        raise
    lines, warnings = verify_text(report, bundle)

    def text() -> None:
        for line in lines:
            state.line(line)
        for warning in warnings:
            state.warn(warning)

    state.emit(verify_data(report), text)


@bundle_app.command("repair")
def repair(
    bundle: Path = typer.Argument(..., help="The parts file, a volume or a boot copy."),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s)."),
    allow_unsigned: bool = typer.Option(False, "--allow-unsigned", help="Accept no signature."),
    json_out: bool = json_option(),
) -> None:
    """Rebuild damaged or missing volumes from the recovery volumes, then verify everything."""
    use_json(json_out)
    from airlock.cli.progress import StepProgress
    from airlock.verbs.repair import RepairOptions, repair_bundle

    with StepProgress() as progress:
        result = repair_bundle(
            bundle,
            options=RepairOptions(
                keys=tuple(key), allow_unsigned=allow_unsigned, progress=progress
            ),
        )

    def text() -> None:
        state.line(f"found: {result.before}")
        for p in result.rebuilt:
            state.line(f"rebuilt {p}")
        for p in result.restored:
            state.line(f"restored {p}")
        v = result.verify
        if v is not None:
            signed = f"signature OK ({v.signed_by})" if v.signed_by else "signature not checked"
            state.line(f"OK {result.bundle}: {v.blobs_checked} blobs verified; {signed}")

    state.emit(result.to_json(), text)


@bundle_app.command("send")
def send(
    bundle: Path = typer.Argument(..., help="The bundle (tar, parts file or first volume)."),
    to: str = typer.Option(
        ..., "--to", metavar="ADDRESS:PORT", help="The receiver (UDP; nothing comes back)."
    ),
    rate: str = typer.Option(..., "--rate", help="Bytes per second, e.g. 10M."),
    loss: str = typer.Option("5%", "--loss", help="Expected packet loss; sizes the recovery."),
    json_out: bool = json_option(),
) -> None:
    """Stream a bundle one way over UDP with recovery packets sized for the link's loss."""
    use_json(json_out)
    from airlock.cli.sizes import format_size, parse_size
    from airlock.verbs.oneway import SendOptions, parse_address, send_bundle

    result = send_bundle(
        bundle,
        to=parse_address(to),
        options=SendOptions(rate=parse_size(rate), loss=_percent(loss) / 100),
    )

    def text() -> None:
        state.line(
            f"sent {len(result.files)} files in {result.packets} packets "
            f"({format_size(result.bytes_sent)}) in {result.seconds:.1f} s"
        )

    state.emit(result.to_json(), text)


def _percent(text: str) -> float:
    from airlock.errors import UsageError

    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = -1
    if not 0 <= value < 90:
        raise UsageError(f"{text!r} is not a loss between 0% and 90%", "e.g. --loss 5%")
    return value


@bundle_app.command("receive")
def receive(
    listen: str = typer.Option(..., "--listen", help="ADDRESS:PORT to receive on (UDP)."),
    out: Path = typer.Option(..., "-o", "--output", help="Directory for the bundle."),
    idle: float = typer.Option(5.0, "--idle", help="Seconds of silence that end the transfer."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds to wait at most."),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s)."),
    allow_unsigned: bool = typer.Option(False, "--allow-unsigned", help="Accept no signature."),
    json_out: bool = json_option(),
) -> None:
    """Receive a bundle sent one way: assemble, rebuild from recovery data, verify."""
    use_json(json_out)
    from airlock.verbs.oneway import ReceiveOptions, parse_address, receive_bundle

    result = receive_bundle(
        out,
        options=ReceiveOptions(
            listen=parse_address(listen),
            idle=idle,
            timeout=timeout,
            keys=tuple(key),
            allow_unsigned=allow_unsigned,
        ),
    )

    def text() -> None:
        r = result.report
        state.line(f"received {r.packets} packets: {len(r.complete)} files whole")
        for missing in r.missing:
            state.line(f"lost in transit: {missing}")
        for name in result.repaired:
            state.line(f"rebuilt {name} from the recovery volumes")
        v = result.verify
        if v is not None:
            signed = f"signature OK ({v.signed_by})" if v.signed_by else "signature not checked"
            state.line(f"OK {result.out}: {v.blobs_checked} blobs verified; {signed}")

    state.emit(result.to_json(), text)


@keys_app.command("generate")
def keys_generate(
    out: Path = typer.Option(
        Path("airlock"),
        "-o",
        "--output",
        metavar="PREFIX",
        help="Write PREFIX.key (private, 0600) and PREFIX.pub.",
    ),
    old_out: Path | None = typer.Option(None, "--out", hidden=True),  # the first spelling
    json_out: bool = json_option(),
) -> None:
    """Generate an ed25519 key pair (PEM).

    Example: airlock keys generate -o site  (writes site.key and site.pub)
    """
    use_json(json_out)
    from airlock.bundle.signing import generate_keypair, key_id

    private, public = generate_keypair(old_out or out)
    data = {"private": str(private), "public": str(public), "keyId": key_id(public)}
    state.emit(
        data, lambda: state.line(f"wrote {private} (keep it secret) and {public} ({data['keyId']})")
    )


@keys_app.command("fingerprint")
def keys_fingerprint(
    keys: list[Path] = typer.Argument(..., metavar="PUB...", help="Public keys (PEM)."),
    json_out: bool = json_option(),
) -> None:
    """The key ID of each public key: sha256 of its DER form, as verify and inspect show it.

    Example: airlock keys fingerprint site.pub
    (the same as: openssl pkey -pubin -in site.pub -outform DER | sha256sum)
    """
    use_json(json_out)
    from airlock.bundle.signing import key_id

    rows = [{"key": str(k), "keyId": key_id(k)} for k in keys]

    def text() -> None:
        for r in rows:
            state.line(f"{r['keyId']}  {r['key']}")

    state.emit({"keys": rows}, text)


def load(
    bundle: Path = typer.Argument(...),
    store: Path = typer.Option(Path("/var/lib/airlock/store"), "--store", help="The store."),
    key: list[Path] = typer.Option([], "--key", help="Trusted public key(s)."),
    allow_unsigned: bool = typer.Option(
        False, "--allow-unsigned", help="Accept a bundle no trusted key vouches for (UNVERIFIED)."
    ),
    allow_downgrade: bool = typer.Option(
        False, "--allow-downgrade", help="Accept an older sequence than the store has loaded."
    ),
    scan: str | None = typer.Option(
        None, "--scan", help="Scanner command run over every file and layer (dir appended)."
    ),
    repair: bool = typer.Option(
        False, "--repair", help="Rebuild damaged volumes from the recovery volumes first."
    ),
    json_out: bool = json_option(),
) -> None:
    """Verify the bundle, then merge it into the store (idempotent)."""
    use_json(json_out)
    from airlock.cli.progress import StepProgress
    from airlock.cli.sizes import format_size
    from airlock.verbs.load import LoadOptions, load_bundle

    with StepProgress() as progress:
        result = load_bundle(
            bundle,
            store_dir=store,
            options=LoadOptions(
                keys=key,
                allow_unsigned=allow_unsigned,
                allow_downgrade=allow_downgrade,
                scan=shlex.split(scan) if scan else (),
                repair=repair,
                progress=progress,
            ),
        )

    def text() -> None:
        for volume in result.repaired:
            state.line(f"rebuilt {volume} from the recovery volumes")
        trust = result.verify.trust
        if not result.changed:
            state.line(f"{store} already holds everything in {bundle} ({trust}); nothing changed")
        else:
            state.line(
                f"loaded {bundle} ({trust}) into {store}: {result.blobs_added} new blobs "
                f"({format_size(result.bytes_added)}), {result.blobs_present} already present, "
                f"{len(result.images)} images"
            )
        if not result.verify.verified:
            state.warn(f"{bundle} was loaded {trust}: nobody vouched for its content")

    state.emit(result.to_json(), text)
