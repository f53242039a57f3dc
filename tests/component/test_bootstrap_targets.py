"""The bootstrap on real targets: debootstrap minbase sysroots (python3 without python3-venv)
of Debian 12 (Python 3.11) and Debian 13 (3.13), each with no network (its own empty network
namespace). Bundle, public key and airlock-bootstrap.py are copied in; bootstrap runs chrooted,
then the installed airlock verifies and loads the bundle there. Debian 11 (Python 3.9, no
python3.11 package) refuses in one line. Debian 12 arm64 under qemu-user: tests/full."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from airlock.bundle.signing import generate_keypair
from airlock.bundle.wheelhouse import build_wheelhouse
from sysroots import CARRY, offline_node, sysroot_tar
from wheel_bundles import wheel_bundle, write_script

pytestmark = [pytest.mark.component, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def carried(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What crosses the gap: the split bundle, its parts file, site.pub, the bootstrap script."""
    tmp = tmp_path_factory.mktemp("carry")
    wheels = build_wheelhouse(tmp / "wh", pythons=("3.11", "3.13"), architectures=("x86_64",))
    priv, pub = generate_keypair(tmp / "site")
    built = wheel_bundle(tmp, wheels.wheels, key=priv, split=16 << 20, pythons=("3.11", "3.13"))
    medium = tmp / "medium"
    medium.mkdir()
    for p in (*built.paths, pub):
        shutil.copy(p, medium / p.name)
    write_script(medium)
    return medium


@pytest.mark.parametrize(("suite", "python"), [("bookworm", "3.11"), ("trixie", "3.13")])
def test_bootstrap_verify_load_offline(
    suite: str, python: str, carried: Path, tmp_path: Path
) -> None:
    tar = sysroot_tar(suite, "amd64")
    with offline_node(tar, tmp_path, f"boot-{suite}-{os.getpid()}") as node:
        assert node.links() == ["lo"]  # no way out
        assert not (node.root / f"usr/lib/python{python}/ensurepip").exists()  # no python3-venv
        parts = node.carry(carried)
        key = f"{CARRY}/site.pub"
        # no key named and none trusted: refused, nothing installed
        _, _, err, code = node.bootstrap(parts)
        assert code == 3 and "no trusted key" in err, err
        assert not (node.root / "opt/airlock").exists()
        seconds, out, err, code = node.bootstrap(parts, "--key", key)
        assert code == 0, out + err
        assert f"for Python {python} on x86_64 checked against the signed airlock.json" in out
        print(f"bootstrap {suite} amd64: {seconds:.1f}s")
        airlock = "/opt/airlock/venv/bin/airlock"
        verified = node.run(airlock, "bundle", "verify", f"{CARRY}/{parts}", "--key", key)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        loaded = node.run(airlock, "load", f"{CARRY}/{parts}", "--key", key)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        assert (node.root / "var/lib/airlock/store/index.json").is_file()


def test_debian_11_refuses_in_one_line(carried: Path, tmp_path: Path) -> None:
    tar = sysroot_tar("bullseye", "amd64")
    with offline_node(tar, tmp_path, f"boot-bullseye-{os.getpid()}") as node:
        parts = node.carry(carried)
        _, out, err, code = node.bootstrap(parts, "--key", f"{CARRY}/site.pub")
        assert code == 1, out + err
        assert err.count("\n") == 1 and not out, err
        assert "this node's Python is 3.9 and airlock needs 3.11 or newer" in err
        assert "install the distribution's python3.11 package" in err
        assert not (node.root / "opt/airlock").exists()
