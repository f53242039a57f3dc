"""Trust policy for what crosses the gap: which keys, rollback and freeze protection, expiry.

The ideas of TUF, scaled to one file: each bundle has a channel and a sequence number; the
store remembers the highest sequence it loaded per channel (and the airlock.json digest that
carried it) and refuses an older bundle, or a different bundle under the same number, unless
the operator says `--allow-downgrade`. An optional expiry date is enforced.

Trust fails closed: `trust_policy` finds the keys (`--key`, else every *.pub in the trusted-keys
directory) and, with none, refuses (exit 3, naming how to give one) unless the operator says
`--allow-unsigned`; what is then accepted is UNVERIFIED, and every summary says so.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from airlock.errors import VerificationError

__all__ = [
    "TRUSTED_KEYS_DIR",
    "UNVERIFIED",
    "ChannelState",
    "TrustPolicy",
    "check_expiry",
    "check_sequence",
    "no_key_hint",
    "read_channels",
    "record_sequence",
    "trust_policy",
    "trusted_keys",
]

TRUSTED_KEYS_DIR = Path(os.environ.get("AIRLOCK_TRUSTED_KEYS", "/etc/airlock/trusted-keys"))


def trusted_keys(explicit: Sequence[Path], *, directory: Path | None = None) -> list[Path]:
    """The keys to check a signature with: those given, else every *.pub in the trusted dir."""
    if explicit:
        return list(explicit)
    folder = directory if directory is not None else TRUSTED_KEYS_DIR
    return sorted(folder.glob("*.pub")) if folder.is_dir() else []


UNVERIFIED = "UNVERIFIED"


class TrustPolicy(NamedTuple):
    """The keys a bundle's signature must verify with; none only with `allow_unsigned` (a
    NamedTuple, as ChannelState: `bundle verify`'s early path imports this module, and no
    dataclasses, as `airlock.bundle.rules` says)."""

    keys: tuple[Path, ...]
    allow_unsigned: bool = False

    @property
    def requires_signature(self) -> bool:
        return bool(self.keys) and not self.allow_unsigned


def no_key_hint(directory: Path | None = None) -> str:
    folder = directory if directory is not None else TRUSTED_KEYS_DIR
    return (
        f"name the signer's public key with --key PUB, or put it in {folder}/ (a directory "
        "AIRLOCK_TRUSTED_KEYS can name); --allow-unsigned accepts the bundle UNVERIFIED"
    )


def trust_policy(
    explicit: Sequence[Path], *, allow_unsigned: bool, directory: Path | None = None
) -> TrustPolicy:
    """The keys to check with; no key and no `allow_unsigned` is a VerificationError (exit 3)."""
    keys = trusted_keys(explicit, directory=directory)
    if not keys and not allow_unsigned:
        folder = directory if directory is not None else TRUSTED_KEYS_DIR
        raise VerificationError(
            f"no trusted key: --key was not given and {folder} holds no *.pub, so the bundle's "
            "signature cannot be checked",
            no_key_hint(directory),
        )
    return TrustPolicy(tuple(keys), allow_unsigned)


class ChannelState(NamedTuple):
    sequence: int
    manifest_digest: str
    name: str


def _state_path(meta_dir: Path) -> Path:
    return meta_dir / "channels.json"


def read_channels(meta_dir: Path) -> dict[str, ChannelState]:
    try:
        raw: dict[str, Any] = json.loads(_state_path(meta_dir).read_text())
    except FileNotFoundError:
        return {}
    return {ch: ChannelState(**v) for ch, v in raw.items()}


def check_sequence(
    meta_dir: Path,
    *,
    channel: str,
    sequence: int,
    manifest_digest: str,
    allow_downgrade: bool,
) -> None:
    """Refuse a bundle older than the newest loaded on its channel (rollback), or another
    bundle under the same number (a replayed or forged sequence)."""
    seen = read_channels(meta_dir).get(channel)
    if seen is None or allow_downgrade:
        return
    if sequence < seen.sequence:
        raise VerificationError(
            f"rollback refused: channel {channel!r} already loaded sequence {seen.sequence} "
            f"({seen.name}); this bundle is sequence {sequence}",
            hint="an older bundle may reintroduce fixed vulnerabilities; "
            "use --allow-downgrade only if you mean it",
        )
    if sequence == seen.sequence and manifest_digest != seen.manifest_digest:
        raise VerificationError(
            f"channel {channel!r} sequence {sequence} was already loaded from a different bundle "
            f"(airlock.json {seen.manifest_digest}, this one {manifest_digest})",
            hint="each new bundle needs a higher --sequence; --allow-downgrade overrides",
        )


def record_sequence(meta_dir: Path, *, channel: str, state: ChannelState) -> None:
    channels = read_channels(meta_dir)
    current = channels.get(channel)
    if current is not None and current.sequence > state.sequence:
        return  # a deliberate downgrade does not lower the high-water mark
    if current == state:
        return
    channels[channel] = state
    from airlock.atomic import write_atomic  # tempfile, shutil: not for every verify's start

    data = {ch: st._asdict() for ch, st in sorted(channels.items())}
    write_atomic(_state_path(meta_dir), json.dumps(data, indent=2, sort_keys=True).encode())


def check_expiry(expires: str | None, *, today: datetime.date | None = None) -> None:
    if expires is None:
        return
    day = today or datetime.datetime.now(datetime.UTC).date()
    if day > datetime.date.fromisoformat(expires):
        raise VerificationError(
            f"the bundle expired on {expires}",
            hint="ask the connected side for a fresh bundle (a stale bundle may hide a freeze attack)",
        )
