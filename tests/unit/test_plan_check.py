"""The release check of `airlock plan`: which versions are probed, and what is reported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from airlock.presets import preset_text
from airlock.spec import parse_spec
from airlock.verbs.plan import check_releases, nearest_candidates

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
_HOSTS = ("dl.k8s.io", "github.com", "get.helm.sh", "raw.githubusercontent.com")


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


def test_bad_options_fail_before_any_network(tmp_path: Path) -> None:
    """A missing --registry-auth or --ca-bundle file is a usage error (exit 2) named before
    any request (the spec's sources point at a closed loopback port, in case one were made)."""
    doc = YAML().load(preset_text("seed"))
    closed = "http://127.0.0.1:9/"
    doc["sources"] = {"files": {f"https://{h}/": f"{closed}{h}/" for h in _HOSTS}}
    spec = tmp_path / "airlock.yaml"
    with spec.open("w") as fh:
        YAML().dump(doc, fh)
    base = ["-f", str(spec)]
    cases = [
        (["plan", *base, "--ca-bundle", str(tmp_path / "none.pem")], "cannot read the CA bundle"),
        (["plan", *base, "--registry-auth", str(tmp_path / "none.json")], "no such file"),
        (
            [
                "bundle",
                "create",
                *base,
                "--registry-auth",
                str(tmp_path / "none.json"),
                "-o",
                str(tmp_path / "out"),
                "--cache",
                str(tmp_path / "c"),
            ],
            "no such file",
        ),
    ]
    for args, needle in cases:
        out = subprocess.run(
            [AIRLOCK, *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert needle in out.stderr, out.stderr
