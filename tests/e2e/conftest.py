"""e2e fixtures: a signed, split seed bundle built from the simulated upstream, and the gap.

The e2e tests share one gap topology (namespace `airlock-gap`, 198.18.0.0/30, a bridge
198.18.1.0/24 for node2/node3), so they run serially (`make test` runs tests/e2e without -n).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from airlock_lab.cluster import ClusterBundle, add_node_settings, build_cluster_bundle
from airlock_lab.gap import LabState, lab_down, lab_up
from airlock_lab.upstream import Upstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def airlock(
    *args: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [AIRLOCK, *args]
    if netns:
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class SeedBundle:
    dir: Path
    parts: Path  # the parts file (the bundle's name for every command)
    volumes: list[Path]
    key: Path
    pub: Path
    images: list[str]


@pytest.fixture(scope="session")
def seed_bundle(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> SeedBundle:
    work = tmp_path_factory.mktemp("connected")
    sources = work / "sources.yaml"
    with sources.open("w") as fh:
        YAML().dump({"sources": upstream.sources()}, fh)
    spec = work / "airlock.yaml"
    airlock("init", "--sources", str(sources), "-o", str(spec))
    # the lab nodes' settings; no OS packages: test_fleet installs into bare sysroots, which
    # have no dpkg database (the real lab nodes get theirs from `node_bundle`)
    add_node_settings(spec, packages=False)
    airlock("keys", "generate", "--out", str(work / "site"))
    out = work / "out"
    created = json.loads(
        airlock(
            "bundle",
            "create",
            "-f",
            str(spec),
            "--cache",
            str(work / "cache"),
            "--sign",
            str(work / "site.key"),
            "--split",
            "32M",
            "-o",
            str(out),
            "--json",
        ).stdout
    )
    plan = json.loads(airlock("plan", "-f", str(spec), "--json").stdout)["artifacts"]
    return SeedBundle(
        dir=out,
        parts=Path(created["bundle"]),
        volumes=[Path(v) for v in created["volumes"]],
        key=work / "site.key",
        pub=work / "site.pub",
        images=sorted(a["source"] for a in plan if a["kind"] == "image"),
    )


@pytest.fixture(scope="session")
def node_bundle(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> ClusterBundle:
    """The seed bundle for real lab nodes: the lab's node settings and the node's OS packages
    (resolved against this machine's apt repositories, carried as .debs), signed."""
    work = tmp_path_factory.mktemp("node-bundle")
    return build_cluster_bundle(upstream.sources(), work, airlock=Path(AIRLOCK))


@pytest.fixture
def gap() -> Iterator[LabState]:
    lab_down()
    state = lab_up(nodes=1)
    try:
        yield state
    finally:
        lab_down()


@pytest.fixture
def gap3() -> Iterator[LabState]:
    lab_down()
    state = lab_up(nodes=3)
    try:
        yield state
    finally:
        lab_down()
