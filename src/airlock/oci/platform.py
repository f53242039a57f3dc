"""Platforms (`linux/amd64`, `linux/arm64/v8`): parse, normalise, match index entries (pure).

Normalisation follows containerd's: `x86_64` is amd64, `aarch64` is arm64, an arm64 without a
variant is v8, a 32-bit arm without a variant is v7. So `linux/arm64` matches an index entry
`linux/arm64/v8` and the reverse. `os.version` and `os.features` are not compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airlock.errors import UsageError

__all__ = [
    "Platform",
    "available_platforms",
    "format_platforms",
    "parse_platform",
    "platform_of",
    "select_manifests",
]

_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", ""),
}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def normalised(self) -> Platform:
        os_ = self.os.lower()
        arch, variant = self.architecture.lower(), self.variant.lower()
        if arch in _ARCH_ALIASES:
            arch, alias_variant = _ARCH_ALIASES[arch]
            variant = variant or alias_variant
        if arch == "arm" and variant in ("6", "7", "8"):
            variant = "v" + variant
        variant = variant or _DEFAULT_VARIANT.get(arch, "")
        return Platform(os_, arch, variant)

    def matches(self, other: Platform) -> bool:
        return self.normalised() == other.normalised()

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out


def parse_platform(text: str) -> Platform:
    """`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7` (as written; compare with `matches`)."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(
            f"invalid platform {text!r}", "platforms look like linux/amd64 or linux/arm64/v8"
        )
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def platform_of(obj: Mapping[str, Any]) -> Platform | None:
    """The platform of an index entry (`platform` object) or of an image config (top level)."""
    src = obj.get("platform", obj)
    if not isinstance(src, Mapping):
        return None
    os_, arch = src.get("os"), src.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
        return None
    variant = src.get("variant")
    return Platform(os_, arch, variant if isinstance(variant, str) else "")


def available_platforms(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The platforms an index offers, as strings (entries without one, like attestations, skipped)."""
    out = []
    for e in entries:
        p = platform_of(e)
        if p is not None and p.os != "unknown":
            out.append(str(p))
    return sorted(set(out))


def select_manifests(
    entries: Sequence[Mapping[str, Any]], wanted: Sequence[Platform]
) -> tuple[list[Mapping[str, Any]], list[Platform]]:
    """For each wanted platform the first matching index entry; and the platforms not found.

    Entries come back in the index's order, each once, even when it matches several wanted.
    """
    chosen: list[int] = []
    missing: list[Platform] = []
    for want in wanted:
        found = next(
            (i for i, e in enumerate(entries) if (p := platform_of(e)) and p.matches(want)),
            None,
        )
        if found is None:
            missing.append(want)
        elif found not in chosen:
            chosen.append(found)
    return [entries[i] for i in sorted(chosen)], missing


def format_platforms(platforms: Sequence[Platform]) -> str:
    return ", ".join(str(p) for p in platforms) or "none"
