"""airlock-bootstrap.py installs airlock from a bundle's real wheelhouse, offline, on this host's
Python (without airlock), and the installed airlock verifies and loads that bundle."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from airlock.bundle.signing import generate_keypair
from airlock.bundle.wheelhouse import build_wheelhouse
from wheel_bundles import run_script, wheel_bundle, write_script

pytestmark = pytest.mark.component


def test_bootstrap_installs_offline_then_verify_and_load(tmp_path: Path) -> None:
    wheels = build_wheelhouse(tmp_path / "wh", pythons=("3.11",), architectures=("x86_64",))
    priv, pub = generate_keypair(tmp_path / "site")
    built = wheel_bundle(tmp_path, wheels.wheels, key=priv, split=16 << 20)
    venv = tmp_path / "opt" / "venv"
    env = {"PATH": os.environ["PATH"], "AIRLOCK_TRUSTED_KEYS": str(tmp_path / "none")}
    proc = run_script(write_script(tmp_path), built.path, "--key", pub, "--venv", venv, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"signature verified with {pub}" in proc.stdout
    assert f"airlock 0.1.0 installed in {venv}" in proc.stdout
    airlock = venv / "bin" / "airlock"
    verified = subprocess.run(
        [airlock, "bundle", "verify", built.path, "--key", pub, "--json"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    loaded = subprocess.run(
        [airlock, "load", built.path, "--key", pub, "--store", tmp_path / "store"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    # a rerun (an interrupted install, an upgrade) works over the existing venv
    again = run_script(write_script(tmp_path), built.path, "--key", pub, "--venv", venv, env=env)
    assert again.returncode == 0, again.stdout + again.stderr


def test_bootstrap_without_a_venv_module(tmp_path: Path) -> None:
    """A python3 whose venv module is missing: pip (from its wheel) installs into DIR/lib and a
    launcher DIR/bin/airlock runs it."""
    wheels = build_wheelhouse(tmp_path / "wh", pythons=("3.11",), architectures=("x86_64",))
    priv, pub = generate_keypair(tmp_path / "site")
    built = wheel_bundle(tmp_path, wheels.wheels, key=priv)
    script = write_script(tmp_path)
    blocked = tmp_path / "no_venv.py"  # runs the script with `import venv` failing
    blocked.write_text(
        "import runpy, sys\nsys.modules['venv'] = None\nsys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    target = tmp_path / "opt"
    env = {"PATH": os.environ["PATH"], "AIRLOCK_TRUSTED_KEYS": str(tmp_path / "none")}
    proc = run_script(blocked, script, built.path, "--key", pub, "--venv", target, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no venv module" in proc.stdout
    assert not (target / "pyvenv.cfg").exists()
    out = subprocess.run(
        [target / "bin/airlock", "bundle", "verify", built.path, "--key", pub, "--json"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
