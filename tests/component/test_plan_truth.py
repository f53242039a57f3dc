"""`airlock plan` tells the truth before downloading, against the lab's upstream: a version that
was never released fails (exit 1) naming the nearest one that was; a plan that succeeds shows
every artifact's digest and size and the bundle total, from HEAD requests, checksum files and
manifests only."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from airlock.presets import preset_text
from airlock_lab.upstream import Upstream

pytestmark = pytest.mark.component

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
# what plan may GET from a file host: metadata, never an artifact
_METADATA = re.compile(
    r"(\.sha256|\.sha256sum|\.sha512|checksums\.txt|checksums\.sha256|kube-flannel\.yml|"
    r"index\.yaml|\.tgz|constants\.go)$"
)


def spec_file(tmp: Path, upstream: Upstream, preset: str = "seed", **changes: Any) -> Path:
    doc = YAML().load(preset_text(preset))  # type: ignore[arg-type]
    doc["sources"] = upstream.sources()
    for key, value in changes.items():
        doc[key] = value
    path = tmp / "airlock.yaml"
    with path.open("w") as fh:
        YAML().dump(doc, fh)
    return path


def plan(spec: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, "plan", "-f", str(spec), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_seed_plan_shows_digests_sizes_and_total_without_downloading(
    upstream: Upstream, tmp_path: Path
) -> None:
    spec = spec_file(tmp_path, upstream)
    before = len(upstream.request_log)
    out = plan(spec, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    requests = upstream.request_log[before:]
    doc = json.loads(out.stdout)
    artifacts = doc["artifacts"]
    files = [a for a in artifacts if a["kind"] not in ("image", "package")]
    images = [a for a in artifacts if a["kind"] == "image"]
    assert files and images
    # airlock's own wheelhouse: the bytes airlock, then each (Python, architecture), adds
    wheelhouse = {w["name"]: w["size"] for w in doc["wheelhouse"]}
    targets = [
        f"cp{py} {arch}" for py in ("3.11", "3.12", "3.13") for arch in ("x86_64", "aarch64")
    ]
    assert list(wheelhouse) == ["airlock", *targets]
    assert all(size > 0 for size in wheelhouse.values()), wheelhouse
    for a in files + images:
        assert isinstance(a["size"], int) and a["size"] > 0, a
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", a["digest"] or ""), a
    for a in files:  # the digest plan names is the digest of the bytes upstream serves
        data = upstream.local_path(a["source"]).read_bytes()
        assert a["digest"] == "sha256:" + hashlib.sha256(data).hexdigest(), a["source"]
        assert a["size"] == len(data)
    gets = [r.path for r in requests if r.method == "GET"]
    # the systemd templates publish no checksum: being tiny, they are hashed from a GET
    big = [
        p
        for p in gets
        if not _METADATA.search(p) and (upstream.files_root / p[1:]).stat().st_size > 65536
    ]
    assert gets and big == [], big
    heads = {r.path for r in requests if r.method == "HEAD"}
    assert any(p.endswith("/kubeadm") for p in heads)
    text = plan(spec)
    assert text.returncode == 0
    total = re.search(r"bundle total: .*\((\d+) bytes", text.stdout)
    assert total and int(total.group(1)) >= sum(a["size"] for a in files)


def test_version_never_released_fails_naming_the_nearest(
    upstream: Upstream, tmp_path: Path
) -> None:
    spec = spec_file(tmp_path, upstream, kubernetes={"version": "v1.27.99"})
    out = plan(spec)
    assert out.returncode == 1, out.stdout + out.stderr
    msg = out.stderr
    assert "release not found upstream" in msg and "kubernetes.version v1.27.99" in msg
    near = re.search(r"the nearest release that exists: (v1\.27\.\d+)", msg)
    assert near, msg
    kubeadm = f"https://dl.k8s.io/release/{near.group(1)}/bin/linux/amd64/kubeadm"
    assert upstream.local_path(kubeadm).is_file()  # it does exist there
    json_out = plan(spec, "--json")
    assert json_out.returncode == 1 and "v1.27.99" in json_out.stdout + json_out.stderr
    before = len(upstream.request_log)
    create = subprocess.run(
        [AIRLOCK, "bundle", "create", "-f", str(spec), "--cache", str(tmp_path / "c"),
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert create.returncode == 1 and f"nearest release that exists: {near.group(1)}" in (
        create.stderr
    )
    assert all(r.method == "HEAD" for r in upstream.request_log[before:])  # nothing fetched


def test_current_preset_plans_or_names_every_missing_release(
    upstream: Upstream, tmp_path: Path
) -> None:
    """The lab serves the current preset's versions once the real-components work builds them;
    until then plan must say exactly which releases the upstream lacks (never a guess)."""
    out = plan(spec_file(tmp_path, upstream, preset="current"))
    if out.returncode == 0:
        assert "bundle total:" in out.stdout
        return
    assert out.returncode == 1
    lines = [ln.strip() for ln in out.stderr.splitlines() if ": HTTP 404 for " in ln]
    assert lines, out.stderr
    for ln in lines:
        assert re.match(r"^[\w.]+ v?\d+\.\d+\.\d+: HTTP 404 for https://", ln), ln
        assert "nearest release that exists" in ln or "no release near it" in ln
