"""The wheelhouse installs airlock offline into a fresh venv (pip's configured index used once)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import airlock.bundle.wheelhouse as wheelhouse
from airlock.bundle.wheelhouse import build_wheelhouse, runtime_requirements, source_tree

pytestmark = pytest.mark.component


def test_runtime_requirements_come_from_the_source_tree(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "airlock"\ndependencies = ["zeta>=1", "old; python_version < \'3.0\'",'
        ' "alpha[x]>=2"]\n[project.optional-dependencies]\ndev = ["pytest"]\n'
    )
    assert runtime_requirements("3.11", "x86_64", source=tmp_path) == [
        "alpha[x]>=2",
        "zeta>=1",
    ]


def test_runtime_requirements_follow_the_target() -> None:
    reqs = runtime_requirements("3.11", "x86_64")
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in reqs}
    assert {"pydantic", "cryptography", "backports.zstd"} <= names
    assert not any("pytest" in r for r in reqs)  # dev extras are not runtime
    assert "backports.zstd" not in " ".join(runtime_requirements("3.14", "aarch64"))


def test_wheelhouse_installs_airlock_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A snapshot of the source tree: others may edit the live tree while this test runs, and
    # any change there (rightly) invalidates the cached airlock wheel.
    live = source_tree()
    assert live is not None, "tests run from an editable install of the source tree"
    src = tmp_path / "src-snapshot"
    shutil.copytree(live / "src" / "airlock", src / "src" / "airlock")
    shutil.copy2(live / "pyproject.toml", src / "pyproject.toml")
    cache = tmp_path / "cache"
    one = {"pythons": ("3.11",), "architectures": ("x86_64",)}
    built = build_wheelhouse(tmp_path / "wh", cache=cache, source=src, **one)
    names = [w.name for w in built.wheels]
    assert any(n.startswith("airlock-") for n in names)
    assert any(n.startswith("pip-") and n.endswith("-py3-none-any.whl") for n in names)
    assert set(built.added_bytes) == {"airlock", "cp3.11 x86_64"}
    assert any(n.startswith("pydantic_core-") and "manylinux" in n for n in names)
    assert all(n.endswith(".whl") for n in names)

    # a second build comes from the cache: pip must not run
    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran although the wheelhouse is cached")

    monkeypatch.setattr(wheelhouse, "run", no_pip)
    again = build_wheelhouse(tmp_path / "wh2", cache=cache, source=src, **one)
    assert [w.name for w in again.wheels] == names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no configured index or find-links: offline for real
    proc = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--no-index",
            "--find-links",
            str(tmp_path / "wh"),
            "airlock",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import airlock, airlock.bundle; print(airlock.__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=True,
    ).stdout
    assert str(venv) in out  # the installed copy, not the source tree


def test_each_target_gets_its_wheels(tmp_path: Path) -> None:
    built = build_wheelhouse(
        tmp_path / "wh", pythons=("3.11", "3.13"), architectures=("x86_64", "aarch64")
    )
    names = [w.name for w in built.wheels]
    for tag in ("cp311-cp311-manylinux", "cp313-cp313-manylinux"):
        for arch in ("x86_64", "aarch64"):
            assert [n for n in names if n.startswith("pydantic_core-") and tag in n and arch in n]
    assert list(built.added_bytes) == [
        "airlock", "cp3.11 x86_64", "cp3.11 aarch64", "cp3.13 x86_64", "cp3.13 aarch64"
    ]  # fmt: skip
    assert all(size > 0 for size in built.added_bytes.values()), built.added_bytes


def test_connected_only_stays_behind_unless_every_target_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`solv` (RPM closures, used by `bundle create` only) goes in only when a wheel exists for
    every target; here one target's download fails, so it stays on the connected side."""
    calls: list[tuple[tuple[str, ...], str]] = []

    def download(cache: Path, reqs: list[str], target: wheelhouse.Target, what: str) -> list[Path]:
        calls.append((tuple(reqs), str(target)))
        if any(r.startswith("solv") for r in reqs) and target.arch == "aarch64":
            raise wheelhouse.AirlockError("No matching distribution found for solv")
        wheel = tmp_path / f"{'-'.join(reqs)[:20]}-{target.python}-{target.arch}.whl"
        wheel.write_bytes(b"x")
        return [wheel]

    monkeypatch.setattr(wheelhouse, "_download", download)
    monkeypatch.setattr(wheelhouse, "_own_wheel", lambda cache, source: [])
    built = build_wheelhouse(
        tmp_path / "wh", pythons=("3.12",), architectures=("x86_64", "aarch64")
    )
    assert built.connected_only == ["solv>=0.7"]
    assert not [w for w in built.wheels if w.name.startswith("solv")]
    assert all("solv" not in " ".join(reqs) for reqs, _ in calls if "pip" in reqs)
