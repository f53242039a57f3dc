"""airlock-bootstrap.py trusts nothing before the signature: each bad input is refused before
pip runs, and the install directory does not exist afterwards. The script runs on an
interpreter without airlock (-I), so it stands on the standard library and its embedded modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.bootstrap import render_script
from airlock.bundle.reader import open_bundle
from airlock.bundle.signing import generate_keypair
from airlock.standalone import bootstrap
from wheel_bundles import base_python, run_script, wheel_bundle, write_script

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No trusted keys unless a test names one (the host's /etc/airlock is not consulted)."""
    (tmp_path / "trusted").mkdir()
    return {"PATH": os.environ["PATH"], "AIRLOCK_TRUSTED_KEYS": str(tmp_path / "trusted")}


@pytest.fixture
def fake_wheels(tmp_path: Path) -> list[Path]:
    out = []
    for name in ("airlock-0.1.0-py3-none-any.whl", "pip-24.0-py3-none-any.whl"):
        (tmp_path / "wheels").mkdir(exist_ok=True)
        p = tmp_path / "wheels" / name
        p.write_bytes(name.encode() * 100)
        out.append(p)
    return out


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    priv, pub = generate_keypair(tmp_path / "site")
    _, other = generate_keypair(tmp_path / "other")
    return priv, pub, other


def flip_in_member(bundle: Path, member: str, at: int = 10) -> None:
    with open_bundle(bundle) as reader:
        offset = reader.members[member].offset
    with bundle.open("r+b") as fh:
        fh.seek(offset + at)
        byte = fh.read(1)
        fh.seek(offset + at)
        fh.write(bytes([byte[0] ^ 0x20]))


def refused(proc: subprocess.CompletedProcess[str], venv: Path, message: str) -> None:
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "bootstrap: refused:" in proc.stderr
    assert not venv.exists()  # nothing installed, not even an empty directory


def test_script_is_self_contained_and_deterministic() -> None:
    script = render_script()
    assert script == render_script()
    text = script.decode()
    preamble = text.split("MODULES = ", 1)[0]
    ast.parse(preamble, feature_version=(3, 7))  # an old python3 reaches the refusal line
    for name in ("ed25519", "tarindex", "volumes", "bootstrap"):
        assert f"'{name}': " in text


def test_help_runs_without_airlock(tmp_path: Path) -> None:
    script = write_script(tmp_path)
    probe = subprocess.run(
        [base_python(), "-I", "-c", "import airlock"], capture_output=True, check=False
    )
    assert probe.returncode != 0, "the base interpreter must not have airlock"
    proc = run_script(script, "--help")
    assert proc.returncode == 0 and "--allow-unsigned" in proc.stdout


def test_no_key_refused(tmp_path: Path, fake_wheels: list[Path], keys: tuple[Path, Path, Path],
                        env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels, key=keys[0])
    venv = tmp_path / "venv"
    proc = run_script(write_script(tmp_path), built.path, "--venv", venv, env=env)
    refused(proc, venv, "no trusted key: name the bundle's public key with --key PUB")


def test_trusted_keys_directory_is_used(tmp_path: Path, fake_wheels: list[Path],
                                        keys: tuple[Path, Path, Path],
                                        env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels, key=keys[0])
    (Path(env["AIRLOCK_TRUSTED_KEYS"]) / "site.pub").write_bytes(keys[1].read_bytes())
    wheel = next(f for f in built.manifest.files if f.name.startswith("airlock-"))
    flip_in_member(built.path, f"blobs/sha256/{wheel.digest[7:]}")
    venv = tmp_path / "venv"
    proc = run_script(write_script(tmp_path), built.path, "--venv", venv, env=env)
    assert "signature verified with" in proc.stdout  # the directory's key, then the wheels
    refused(proc, venv, "does not match airlock.json")


def test_wrong_key_refused(tmp_path: Path, fake_wheels: list[Path], keys: tuple[Path, Path, Path],
                           env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels, key=keys[0])
    venv = tmp_path / "venv"
    proc = run_script(write_script(tmp_path), built.path, "--key", keys[2], "--venv", venv, env=env)
    refused(proc, venv, "does not verify with")


def test_altered_airlock_json_refused(tmp_path: Path, fake_wheels: list[Path],
                                      keys: tuple[Path, Path, Path],
                                      env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels, key=keys[0])
    flip_in_member(built.path, "airlock.json", at=200)
    venv = tmp_path / "venv"
    proc = run_script(write_script(tmp_path), built.path, "--key", keys[1], "--venv", venv, env=env)
    refused(proc, venv, "does not verify with")


def test_altered_wheel_refused(tmp_path: Path, fake_wheels: list[Path],
                               keys: tuple[Path, Path, Path], env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels, key=keys[0])
    wheel = next(f for f in built.manifest.files if f.name.startswith("airlock-"))
    flip_in_member(built.path, f"blobs/sha256/{wheel.digest[7:]}")
    venv = tmp_path / "venv"
    proc = run_script(write_script(tmp_path), built.path, "--key", keys[1], "--venv", venv, env=env)
    refused(proc, venv, f"wheel {wheel.name} does not match airlock.json")


def test_missing_volume_refused(tmp_path: Path, fake_wheels: list[Path],
                                keys: tuple[Path, Path, Path], env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels, key=keys[0], split=1 << 20)
    assert len(built.volumes) >= 3
    built.volumes[1].unlink()
    venv = tmp_path / "venv"
    script = write_script(tmp_path)
    proc = run_script(script, built.path, "--key", keys[1], "--venv", venv, env=env)
    refused(proc, venv, f"volume {built.volumes[1].name} missing")
    # without the parts file, the first volume alone: the tar ends early, which is named
    built.path.unlink()
    proc = run_script(script, built.volumes[0], "--key", keys[1], "--venv", venv, env=env)
    refused(proc, venv, "a volume is missing or short")


def test_unsigned_bundle(tmp_path: Path, fake_wheels: list[Path], keys: tuple[Path, Path, Path],
                         env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels)
    venv = tmp_path / "venv"
    script = write_script(tmp_path)
    proc = run_script(script, built.path, "--key", keys[1], "--venv", venv, env=env)
    refused(proc, venv, "airlock.json is not signed")
    # --allow-unsigned goes on, says UNVERIFIED, and still checks every wheel's digest
    wheel = next(f for f in built.manifest.files if f.name.startswith("pip-"))
    flip_in_member(built.path, f"blobs/sha256/{wheel.digest[7:]}")
    proc = run_script(script, built.path, "--allow-unsigned", "--venv", venv, env=env)
    assert "UNVERIFIED" in proc.stdout
    refused(proc, venv, f"wheel {wheel.name} does not match airlock.json")


def test_hostile_archive_refused(tmp_path: Path, env: dict[str, str]) -> None:
    bomb = bytearray(512)
    bomb[0:14] = b"././@PaxHeader"
    bomb[124:136] = b"%011o\x00" % (8 << 30)
    bomb[156:157] = b"x"
    bomb[257:265] = b"ustar\x0000"
    bomb[148:156] = b" " * 8
    bomb[148:156] = b"%06o\x00 " % sum(bomb)
    path = tmp_path / "bomb.airlock.tar"
    path.write_bytes(bytes(bomb) + bytes(10240))
    venv = tmp_path / "venv"
    proc = run_script(write_script(tmp_path), path, "--allow-unsigned", "--venv", venv, env=env)
    refused(proc, venv, "pax header at offset 0 is 8589934592 bytes")


def test_wrong_target_named_before_install(tmp_path: Path, fake_wheels: list[Path],
                                           keys: tuple[Path, Path, Path],
                                           env: dict[str, str]) -> None:  # fmt: skip
    built = wheel_bundle(tmp_path, fake_wheels, key=keys[0], pythons=("3.13",))
    venv = tmp_path / "venv"
    proc = run_script(write_script(tmp_path), built.path, "--key", keys[1], "--venv", venv, env=env)
    assert proc.returncode == 1 and not venv.exists()
    assert "wheelhouse is for Python 3.13 on x86_64, not Python 3.11" in proc.stderr


@pytest.mark.parametrize(
    ("name", "version", "arch", "fits"),
    [
        ("airlock-0.1.0-py3-none-any.whl", (3, 11), "aarch64", True),
        ("aiohttp-3.9.5-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", (3, 12), "x86_64", True),
        ("aiohttp-3.9.5-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", (3, 11), "x86_64", False),
        ("aiohttp-3.9.5-cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", (3, 12), "x86_64", False),
        ("cryptography-43.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", (3, 13), "x86_64", True),
        ("cryptography-43.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", (3, 13), "aarch64", False),
    ],
)  # fmt: skip
def test_wheels_for_this_interpreter(
    name: str, version: tuple[int, int], arch: str, fits: bool
) -> None:
    assert bootstrap.fits(name, version, arch) is fits


def test_cli_prints_and_writes_the_script(tmp_path: Path) -> None:
    airlock = str(Path(sys.executable).with_name("airlock"))
    printed = subprocess.run(
        [airlock, "bundle", "bootstrap-script"], capture_output=True, timeout=120, check=True
    )
    assert printed.stdout == render_script()
    out = tmp_path / "airlock-bootstrap.py"
    subprocess.run(
        [airlock, "bundle", "bootstrap-script", "-o", str(out)], capture_output=True, check=True
    )
    assert out.read_bytes() == render_script() and out.stat().st_mode & 0o777 == 0o755
