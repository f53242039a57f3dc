"""The release check of `airlock plan`: which versions are probed, and what is reported."""

from __future__ import annotations

import asyncio

from airlock.presets import preset_text
from airlock.spec import parse_spec
from airlock.verbs.plan import check_releases, nearest_candidates


def test_candidates_nearest_first_and_bounded() -> None:
    c = nearest_candidates("v1.27.99")
    assert c[:4] == ["v1.27.98", "v1.27.100", "v1.27.97", "v1.27.101"]
    assert "v1.27.15" in c and "v1.27.0" in c and "v1.26.16" in c and "v1.25.0" in c
    assert "v1.27.99" not in c and len(c) < 100
    assert nearest_candidates("1.7.2")[:2] == ["1.7.1", "1.7.3"]  # containerd: no v
    assert nearest_candidates("latest") == []


def test_check_names_field_url_and_nearest() -> None:
    spec = parse_spec(preset_text("seed").replace("v1.27.3", "v1.27.99"))
    released = {"v1.27.3", "v1.27.4"}
    asked: list[str] = []

    async def status(url: str) -> int:
        asked.append(url)
        if "/release/v1.27." in url:
            return 200 if url.split("/release/")[1].split("/")[0] in released else 404
        return 200

    (miss,) = asyncio.run(check_releases(spec, status))
    assert miss.field == "kubernetes.version" and miss.version == "v1.27.99"
    assert miss.url.endswith("/release/v1.27.99/bin/linux/amd64/kubeadm")
    assert miss.nearest == "v1.27.4"
    assert "nearest release that exists: v1.27.4" in miss.message()
    assert len(asked) < 120  # bounded


def test_everything_present_is_no_finding() -> None:
    spec = parse_spec(preset_text("seed"))

    async def status(url: str) -> int:
        return 200

    assert asyncio.run(check_releases(spec, status)) == []
