"""Platform parsing and matching, the containerd way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.errors import UsageError
from airlock.oci.platform import (
    Platform,
    available_platforms,
    parse_platform,
    platform_of,
    select_manifests,
)

words = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)


@given(os_=words, arch=words, variant=st.one_of(st.just(""), words))
def test_parse_round_trip(os_: str, arch: str, variant: str) -> None:
    text = f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"
    p = parse_platform(text)
    assert str(p) == text
    assert p.matches(p)


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", ""])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_platform(text)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/aarch64", "linux/arm64/v8", True),
        ("linux/x86_64", "linux/amd64", True),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/amd64", "linux/arm64", False),
        ("linux/amd64", "windows/amd64", False),
    ],
)
def test_matching(a: str, b: str, same: bool) -> None:
    assert parse_platform(a).matches(parse_platform(b)) is same
    assert parse_platform(b).matches(parse_platform(a)) is same


def _entry(digest: str, os_: str, arch: str, variant: str | None = None) -> dict[str, object]:
    plat: dict[str, str] = {"os": os_, "architecture": arch}
    if variant:
        plat["variant"] = variant
    return {"digest": digest, "size": 1, "platform": plat}


INDEX = [
    _entry("a", "linux", "amd64"),
    _entry("b", "linux", "arm64", "v8"),
    _entry("c", "linux", "arm", "v7"),
    _entry("att", "unknown", "unknown"),
]


def test_select_keeps_index_order_and_reports_missing() -> None:
    wanted = [
        parse_platform("linux/arm64"),
        parse_platform("linux/amd64"),
        parse_platform("linux/s390x"),
    ]
    chosen, missing = select_manifests(INDEX, wanted)
    assert [e["digest"] for e in chosen] == ["a", "b"]
    assert missing == [Platform("linux", "s390x")]
    assert available_platforms(INDEX) == ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]


@given(st.lists(st.sampled_from(["linux/amd64", "linux/arm64", "linux/arm/v7"]), max_size=6))
def test_select_each_entry_once(wanted: list[str]) -> None:
    chosen, missing = select_manifests(INDEX, [parse_platform(w) for w in wanted])
    assert not missing
    digests = [e["digest"] for e in chosen]
    assert len(digests) == len(set(digests)) == len(set(wanted))


def test_platform_of_config_and_entry() -> None:
    assert platform_of({"os": "linux", "architecture": "arm64", "variant": "v8"}) == Platform(
        "linux", "arm64", "v8"
    )
    assert platform_of(_entry("x", "linux", "amd64")) == Platform("linux", "amd64")
    assert platform_of({"mediaType": "x"}) is None
