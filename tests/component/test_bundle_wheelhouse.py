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
    assert runtime_requirements("3.11", "manylinux2014_x86_64", source=tmp_path) == [
        "alpha[x]>=2",
        "zeta>=1",
    ]


def test_runtime_requirements_follow_the_target() -> None:
    reqs = runtime_requirements("3.11", "manylinux2014_x86_64")
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in reqs}
    assert {"pydantic", "cryptography", "backports.zstd"} <= names
    assert not any("pytest" in r for r in reqs)  # dev extras are not runtime
    assert "backports.zstd" not in " ".join(runtime_requirements("3.14", "manylinux2014_x86_64"))


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
    wheels = build_wheelhouse(tmp_path / "wh", cache=cache, source=src)
    names = [w.name for w in wheels]
    assert any(n.startswith("airlock-") for n in names)
    assert any(n.startswith("pydantic_core-") and "manylinux" in n for n in names)
    assert all(n.endswith(".whl") for n in names)

    # a second build comes from the cache: pip must not run
    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran although the wheelhouse is cached")

    monkeypatch.setattr(wheelhouse, "run", no_pip)
    again = build_wheelhouse(tmp_path / "wh2", cache=cache, source=src)
    assert [w.name for w in again] == names

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
