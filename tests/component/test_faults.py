"""Fault injection: `bundle create` and `node install` killed with SIGKILL at random moments,
then run again: the result is complete and identical to an uninterrupted run, with no
leftover temp files. (`load` and `registry push` have theirs beside their own tests.)"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from airlock.oci.htpasswd import load_htpasswd
from airlock.presets import preset_text
from airlock_lab.upstream import Upstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
ROUNDS = int(os.environ.get("AIRLOCK_FAULT_ROUNDS", "8"))


def run(*args: str) -> str:
    out = subprocess.run([AIRLOCK, *args], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return out.stdout


def kill_randomly(
    argv: list[str],
    *,
    rounds: int,
    rng: random.Random,
    duration: float,
    finished: Callable[[], None] = lambda: None,
) -> int:
    """Run `argv` up to `rounds` times, SIGKILL at a random moment within `duration` (an
    uninterrupted run's time); stop after three kills. Returns how many runs were killed.

    A run that finished before its kill calls `finished` (which may remove what it made, so
    the next run has the whole work to do again): on a machine whose load falls during the
    test, every later run would otherwise be a warm one, done before any kill."""
    kills = 0
    for _ in range(rounds):
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(rng.uniform(0.05, 0.9) * duration)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        elif proc.returncode == 0:
            finished()
        proc.wait(30)
        if kills >= 3:
            break
    return kills


def timed(*args: str) -> tuple[str, float]:
    started = time.monotonic()
    out = run(*args)
    return out, time.monotonic() - started


def tree_digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + os.readlink(p)
    return out


def generated_masked(tree: dict[str, str]) -> dict[str, str]:
    """Files whose content is generated at random (keys, passwords) compared by name only."""
    return {k: "generated" if k.startswith("etc/airlock/pki/") else v for k, v in tree.items()}


def temp_leftovers(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob(".tmp-*")]


@pytest.fixture(scope="module")
def spec(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    doc = YAML().load(preset_text("seed"))
    doc["sources"] = upstream.sources()
    path = tmp_path_factory.mktemp("faults") / "airlock.yaml"
    with path.open("w") as fh:
        YAML().dump(doc, fh)
    return path


def test_bundle_create_killed_then_rerun_is_identical(spec: Path, tmp_path: Path) -> None:
    out0, duration = timed(
        "bundle",
        "create",
        "-f",
        str(spec),
        "--cache",
        str(tmp_path / "c0"),
        "-o",
        str(tmp_path / "ref"),
        "--json",
    )
    reference = json.loads(out0)
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = [AIRLOCK, "bundle", "create", "-f", str(spec), "--cache", str(cache), "-o", str(out)]

    def start_cold() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)

    kills = kill_randomly(
        argv, rounds=ROUNDS, rng=random.Random(11), duration=duration, finished=start_cold
    )
    final = json.loads(
        run("bundle", "create", "-f", str(spec), "--cache", str(cache), "-o", str(out), "--json")
    )
    assert Path(final["bundle"]).read_bytes() == Path(reference["bundle"]).read_bytes()
    assert temp_leftovers(out, cache) == []
    assert not list((cache / "partial").glob("*")) if (cache / "partial").exists() else True
    assert kills >= 1


def test_node_install_killed_then_rerun_converges(spec: Path, tmp_path: Path) -> None:
    created = json.loads(
        run(
            "bundle",
            "create",
            "-f",
            str(spec),
            "--cache",
            str(tmp_path / "c"),
            "-o",
            str(tmp_path / "out"),
            "--json",
        )
    )
    store = tmp_path / "store"
    run("load", created["bundle"], "--store", str(store), "--allow-unsigned")
    reference = tmp_path / "ref-root"
    _, duration = timed("node", "install", "--store", str(store), "--root", str(reference))
    root = tmp_path / "root"
    argv = [AIRLOCK, "node", "install", "--store", str(store), "--root", str(root)]
    kills = kill_randomly(argv, rounds=ROUNDS, rng=random.Random(5), duration=duration)
    run("node", "install", "--store", str(store), "--root", str(root))
    again = json.loads(
        run("node", "install", "--store", str(store), "--root", str(root), "--dry-run", "--json")
    )
    assert again["plan"]["changes"] == []
    assert generated_masked(tree_digests(root)) == generated_masked(tree_digests(reference))
    assert temp_leftovers(root) == []
    assert kills >= 1
    # the registry's keys and push credentials are random by design: the same files, and
    # after the kills still a matching pair
    pki = root / "etc/airlock/pki"
    password = (pki / "registry-password").read_text().strip()
    assert load_htpasswd(pki / "htpasswd").verify("airlock", password)
