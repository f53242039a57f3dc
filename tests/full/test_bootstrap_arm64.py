"""The bootstrap on Debian 12 arm64, run under qemu-user emulation (binfmt_misc): a debootstrap
minbase sysroot (python3 without python3-venv), no network (its own empty network namespace),
the bundle's aarch64 wheels installed offline, then verify and load inside. Minutes under
emulation, so it runs in `make test-full`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from airlock.bundle.signing import generate_keypair
from airlock.bundle.wheelhouse import build_wheelhouse
from sysroots import CARRY, offline_node, sysroot_tar
from wheel_bundles import wheel_bundle, write_script

pytestmark = pytest.mark.timeout(7200)


def test_bootstrap_verify_load_on_debian_12_arm64(tmp_path: Path) -> None:
    tar = sysroot_tar("bookworm", "arm64")
    wheels = build_wheelhouse(tmp_path / "wh", pythons=("3.11",), architectures=("aarch64",))
    priv, pub = generate_keypair(tmp_path / "site")
    built = wheel_bundle(
        tmp_path, wheels.wheels, key=priv, split=16 << 20, architectures=("aarch64",)
    )
    medium = tmp_path / "medium"
    medium.mkdir()
    for p in (*built.paths, pub):
        shutil.copy(p, medium / p.name)
    write_script(medium)
    with offline_node(tar, tmp_path, f"boot-arm64-{os.getpid()}") as node:
        assert node.links() == ["lo"]
        arch = node.run("python3", "-c", "import platform; print(platform.machine())")
        assert arch.stdout.strip() == "aarch64", arch.stderr  # emulated, not the host's
        parts = node.carry(medium)
        key = f"{CARRY}/site.pub"
        seconds, out, err, code = node.bootstrap(parts, "--key", key)
        assert code == 0, out + err
        assert "for Python 3.11 on aarch64 checked against the signed airlock.json" in out
        print(f"bootstrap bookworm arm64 (qemu-user): {seconds:.1f}s")
        airlock = "/opt/airlock/venv/bin/airlock"
        verified = node.run(airlock, "bundle", "verify", f"{CARRY}/{parts}", "--key", key)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        loaded = node.run(airlock, "load", f"{CARRY}/{parts}", "--key", key)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
