"""Any installed airlock builds a bundle: airlock's wheel is installed (not editable) into a
fresh venv, and that venv alone creates, twice, and verifies a bundle against the simulated
upstream. Its own wheel in the bundle is packed from the installed files, the same bytes on
both runs, and holds no lab code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from airlock.bundle.reader import open_bundle
from airlock.bundle.wheelhouse import build_wheelhouse, source_tree
from airlock.presets import preset_text
from airlock_lab.upstream import Upstream

pytestmark = pytest.mark.component


def sh(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env, timeout=900
    )
    assert proc.returncode == 0, f"{cmd}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with airlock installed from its wheel (pip, offline, no source tree)."""
    tmp = tmp_path_factory.mktemp("installed")
    tree = source_tree()
    assert tree is not None, "the tests run from a checkout"
    deps = build_wheelhouse(tmp / "deps", pythons=("3.11",), architectures=("x86_64",))
    wheels = tmp / "wheel"
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, tree, cwd=tmp)
    venv = tmp / "venv"
    sh(sys.executable, "-m", "venv", venv, cwd=tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # offline: only the wheels given here
    own = next(wheels.glob("airlock-*.whl"))
    sh(
        venv / "bin/pip",
        "install",
        "-q",
        "--no-index",
        "--find-links",
        deps.wheels[0].parent,
        own,
        cwd=tmp,
        env=env,
    )
    where = sh(venv / "bin/python", "-c", "import airlock; print(airlock.__file__)", cwd=tmp)
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    return venv


def test_installed_airlock_creates_and_verifies_a_bundle(
    installed: Path, upstream: Upstream, tmp_path: Path
) -> None:
    airlock = installed / "bin/airlock"
    doc = YAML().load(preset_text("seed"))
    doc["sources"] = upstream.sources()
    doc["wheelhouse"] = {"pythons": ["3.11"], "architectures": ["x86_64"]}
    spec = tmp_path / "airlock.yaml"
    with spec.open("w") as fh:
        YAML().dump(doc, fh)
    sh(airlock, "keys", "generate", "--out", tmp_path / "k", cwd=tmp_path)
    digests = []
    for out in ("a", "b"):
        created = sh(
            airlock, "bundle", "create", "-f", spec, "--cache", tmp_path / "cache",
            "-o", tmp_path / out, "--sign", tmp_path / "k.key", "--json", cwd=tmp_path,
        )  # fmt: skip
        bundle = Path(json.loads(created)["bundle"])
        verified = sh(
            airlock, "bundle", "verify", bundle, "--key", tmp_path / "k.pub", "--json",
            cwd=tmp_path,
        )  # fmt: skip
        assert json.loads(verified)["ok"] is True
        with open_bundle(bundle) as reader:
            (own,) = [f for f in reader.manifest.files if f.name.startswith("airlock-")]
            digests.append(own.digest)
            wheel = tmp_path / f"{out}-{own.name}"
            wheel.write_bytes(reader.open_blob(own.digest).read())
    assert digests[0] == digests[1]  # byte-identical across reruns
    names = zipfile.ZipFile(wheel).namelist()
    assert "airlock/cli/main.py" in names and "airlock/standalone/tarindex.py" in names
    assert not [n for n in names if "lab" in n.split("/")[0] or n.endswith(".pyc")]
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    assert len(zipfile.ZipFile(wheel).read(record).splitlines()) == len(names)
