"""--help in plain words: metavars instead of Python types, every option explained, examples.

typer shows each parameter's Python type (`<bool>`, `<list[Path]>`, `<path>`) and writes a
required argument as `{bundle}` in the usage line. `tidy` walks the built command tree once
and gives every parameter a metavar a person reads the way kubectl and helm write them: a flag
has none; a value takes the metavar its command declared, else one by its type (PATH, TEXT,
N, SECONDS); an argument is its name in capitals (`BUNDLE`, `[BUNDLE]` when optional).
Options many commands share (`--store`, `--root`, `--dry-run`, ...) take their words from
`COMMON_OPTIONS` when their command gives none, and each command's `EXAMPLES` are shown under
its help (`make docs-check` parses every one of them against the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.core import TyperArgument, TyperOption

__all__ = ["tidy"]

_BY_TYPE = {"path": "PATH", "str": "TEXT", "int": "N", "float": "NUMBER"}

# long option -> (metavar, help) for options whose command says nothing of its own
COMMON_OPTIONS: dict[str, tuple[str, str]] = {
    "--store": ("DIR", "The node's store, an OCI layout."),
    "--root": ("DIR", "The node's root: / on the node itself, a sysroot to apply into one."),
    "--dry-run": ("", "Show the plan (every command and file); change nothing."),
    "--force": ("", "Go ahead where the command would otherwise refuse (see its description)."),
    "--key": ("PUB", "A trusted ed25519 public key (PEM); repeat for several."),
    "--since-key": ("PUB", "A public key the --since inventory's signature must verify with."),
    "--sign": ("KEY", "An ed25519 private key (PEM) to sign with."),
    "--listen": ("ADDRESS:PORT", "Where to listen; repeat for several addresses."),
    "--registry": ("ADDR[,ADDR...]", "Local registries, HOST:PORT, comma-separated."),
    "--tls-cert": ("FILE", "The server certificate (PEM); with --tls-key, serve HTTPS."),
    "--tls-key": ("FILE", "The server certificate's private key (PEM)."),
    "--htpasswd": ("FILE", "An htpasswd file (bcrypt): who may push or delete."),
    "--username": ("USER", "The target registry's user (or AIRLOCK_REGISTRY_USERNAME)."),
    "--password": ("PASSWORD", "Better: AIRLOCK_REGISTRY_PASSWORD, which stays out of ps."),
    "--concurrency": ("N", "Requests in flight at once."),
    "--set": ("KEY=VALUE", "A Helm value; repeat for several."),
    "--advertise-address": ("IP", "The API server's address on this node (default: found)."),
    "--control-plane-endpoint": ("HOST:PORT", "A shared endpoint for several control planes."),
    "--control-plane": ("", "Join as a control-plane node (the join file carries the certs)."),
    "--selinux-permissive": ("", "Set SELinux to permissive (the blog's step; off by default)."),
    "--output": ("FILE", "Write the result to FILE."),
    "--out": ("DIR", "The directory to write into."),
    "--file": ("FILE", "The spec file."),
    "--workdir": ("DIR", "Where the upstream keeps its files."),
    "--sources-out": ("FILE", "Write the spec's `sources:` block that points at the upstream."),
    "--nodes": ("N", "How many offline nodes."),
    "--split": ("SIZE", "Volume size, e.g. 700M (CD), 4G (DVD)."),
    "--expires": ("YYYY-MM-DD", "Refuse loads after this day."),
    "--cache": ("DIR", "The download cache."),
    "--rate": ("BYTES", "Bytes per second, e.g. 10M."),
    # metavar only (these options explain themselves)
    "--bundle": ("BUNDLE", ""),
    "--max-manifest": ("SIZE", ""),
    "--max-upload": ("SIZE", ""),
    "--free-floor": ("SIZE", ""),
    "--free-floor-percent": ("PERCENT", ""),
    "--ca": ("FILE", ""),
    "--ca-file": ("FILE", ""),
    "--ca-bundle": ("FILE", ""),
    "--registry-auth": ("FILE", ""),
    "--since": ("FILE", ""),
    "--sources": ("FILE", ""),
    "--preset": ("NAME", ""),
    "--compress": ("zstd[:LEVEL]|none", ""),
    "--recovery": ("PERCENT", ""),
    "--loss": ("PERCENT", ""),
    "--firewall": ("open|disable|skip", ""),
    "--platform": ("OS/ARCH", ""),
    "--upstream": ("HOST", ""),
    "--upstream-port": ("PORT", ""),
    "--name": ("NAME", ""),
    "--address": ("IP", ""),
    "--htpasswd-user": ("USER", ""),
    "--idle": ("SECONDS", ""),
    "--timeout": ("SECONDS", ""),
    "--grace": ("SECONDS", ""),
    "--scan": ("COMMAND", ""),
    "--sequence": ("N", ""),
    "--node": ("NAME", ""),
    "--kubeconfig": ("FILE", ""),
    "--role": ("ROLE", ""),
    "--from-version": ("VERSION", ""),
}

# argument name -> help, for arguments whose command says nothing of its own
COMMON_ARGUMENTS: dict[str, str] = {
    "bundle": "The bundle: NAME.airlock.tar, its parts file or its first volume.",
    "name": "The chart's name (`airlock app list` shows what the store carries).",
    "file": "The join file `airlock cluster init` wrote.",
}

# command path -> example lines (each one a whole `airlock ...` command)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (  # the whole journey, under `airlock --help`
        "airlock init -o airlock.yaml && airlock plan",
        "airlock bundle create --sign site.key --split 4G -o out/",
        "airlock load lab.airlock.tar --key site.pub && airlock node install",
        "airlock COMMAND --help",
    ),
    "init": ("airlock init --preset seed -o airlock.yaml",),
    "plan": ("airlock plan -f airlock.yaml", "airlock plan -f airlock.yaml --json"),
    "bundle create": (
        "airlock bundle create -f airlock.yaml -o out/ --sign site.key",
        "airlock bundle create -f airlock.yaml -o out/ --split 4G --recovery 20% --sign site.key",
        "airlock bundle create -f airlock.yaml --since inventory.json --sign site.key",
    ),
    "bundle inspect": ("airlock bundle inspect out/lab.airlock.tar --key site.pub",),
    "bundle verify": (
        "airlock bundle verify out/lab.airlock.tar --key site.pub",
        "airlock bundle verify /media/usb/lab.airlock.parts --key site.pub --progress=plain",
    ),
    "bundle repair": ("airlock bundle repair /media/usb/lab.airlock.parts --key site.pub",),
    "bundle send": ("airlock bundle send out/lab.airlock.tar --to 198.18.0.2:9000 --rate 10M",),
    "bundle receive": (
        "airlock bundle receive --listen 198.18.0.2:9000 -o incoming/ --key site.pub",
    ),
    "bundle bootstrap-script": ("airlock bundle bootstrap-script -o airlock-bootstrap.py",),
    "bundle share": (
        "airlock bundle share lab.airlock.tar --key site.pub --listen 198.18.0.10:5001",
        "airlock bundle share lab.airlock.tar --key site.pub --listen 198.18.0.10:5001 --unit",
    ),
    "keys generate": ("airlock keys generate -o site",),
    "keys fingerprint": ("airlock keys fingerprint site.pub",),
    "load": ("airlock load lab.airlock.tar --key site.pub",),
    "registry serve": (
        "airlock registry serve --listen 127.0.0.1:5000",
        "airlock registry serve --bundle lab.airlock.tar --key site.pub --listen 127.0.0.1:5000",
    ),
    "registry push": ("airlock registry push --to https://127.0.0.1:8443 --ca ca.crt",),
    "registry certs": (
        "airlock registry certs --out /etc/airlock/pki --name node1 --address 198.18.0.10",
    ),
    "registry gc": ("airlock registry gc", "airlock registry gc --apply"),
    "node prepare": ("airlock node prepare --dry-run", "airlock node prepare"),
    "node install": (
        "airlock node install --dry-run",
        "airlock node install lab.airlock.tar --key site.pub",
    ),
    "node mirrors": ("airlock node mirrors --registry 127.0.0.1:5000",),
    "node check": ("airlock node check --registry 127.0.0.1:5000",),
    "inventory": ("airlock inventory -o inventory.json --sign node.key",),
    "cluster init": ("airlock cluster init --dry-run", "airlock cluster init"),
    "cluster join": ("airlock cluster join join.yaml",),
    "cluster reset": ("airlock cluster reset --dry-run",),
    "cluster plan": ("airlock cluster plan -i hosts.ini -b lab.airlock.tar --key site.pub",),
    "cluster up": (
        "airlock cluster up -i hosts.ini -b lab.airlock.tar --key site.pub --app podinfo",
        "airlock cluster up -i hosts.yml -b lab.airlock.tar --key site.pub --limit node3",
    ),
    "cluster upgrade": ("airlock cluster upgrade --to v1.27.4 --dry-run",),
    "app deploy": ("airlock app deploy podinfo --set replicaCount=2",),
    "app list": ("airlock app list",),
    "version": ("airlock version", "airlock version --json"),
    "completion": (
        "airlock completion bash > /etc/bash_completion.d/airlock",
        "airlock completion zsh > ~/.zfunc/_airlock",
    ),
}


class _PlainArgument(TyperArgument):
    """An argument shown as `BUNDLE` (required) or `[BUNDLE]`, never `{bundle}` or `<path>`."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 and not name.endswith("...") else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _long_name(param: Any) -> str:
    return next((o for o in getattr(param, "opts", ()) if o.startswith("--")), "")


def _type_word(param: TyperOption) -> str:
    annotation = param.type_descriptor.annotation
    inner = getattr(annotation, "__args__", None)
    if inner and getattr(annotation, "__origin__", None) is list:
        annotation = inner[0]
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    name = getattr(annotation, "__name__", str(annotation))
    return _BY_TYPE.get(name, name.upper())


def _tidy_param(param: Any) -> None:
    common = COMMON_OPTIONS.get(_long_name(param))
    if isinstance(param, TyperOption) and common is not None:
        if param.metavar is None and not (param.is_flag or param.count):
            param.metavar = common[0]
        if not param.help and common[1]:
            param.help = common[1]
    if isinstance(param, TyperArgument):
        if not param.help:
            param.help = COMMON_ARGUMENTS.get(param.name or "")
        if param.metavar is None:
            param.metavar = (param.name or "value").upper()
        param.__class__ = _PlainArgument
    elif isinstance(param, TyperOption) and param.metavar is None:
        if param.is_flag or param.count:
            param.metavar = ""
        else:
            param.metavar = _type_word(param)


def _plain_help_option(command: Any) -> None:
    """--help is made per context, not kept in `params`: tidy it as it is made."""
    make = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            _tidy_param(option)
        return option

    command.get_help_option = get_help_option


def _add_examples(command: Any, path: str) -> None:
    lines = EXAMPLES.get(path)
    if lines and not command.epilog:
        command.epilog = "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def tidy(command: Any, path: str = "") -> Any:
    """Every parameter of `command` and its subcommands given a plain metavar and help, and
    each command its examples; returns `command`."""
    for param in getattr(command, "params", []):
        _tidy_param(param)
    _plain_help_option(command)
    _add_examples(command, path)
    for name, sub in getattr(command, "commands", {}).items():
        tidy(sub, f"{path} {name}".strip())
    return command
