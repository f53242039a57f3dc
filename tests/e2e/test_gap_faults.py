"""Faults across the gap: a cut transfer, a corrupted volume, a registry killed during pulls,
and `lab up/down` run twice or after a crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from airlock import system
from airlock.verbs.mirrors import MirrorOptions, configure_mirrors
from airlock_lab.containerd import ContainerdDaemon
from airlock_lab.demo import CarryServer, carry, check_volumes
from airlock_lab.gap import GAP_NETNS, STATE_FILE, LabState, lab_down, lab_status, lab_up
from airlock_lab.netns import link_exists, netns_exists
from conftest import AIRLOCK, SeedBundle, airlock

PORT = 8091


def test_cut_transfer_resumes(seed_bundle: SeedBundle, gap: LabState, tmp_path: Path) -> None:
    vol = seed_bundle.volumes[1]
    dest = tmp_path / "gap"
    dest.mkdir()
    half = vol.stat().st_size // 2
    with vol.open("rb") as src:  # the first half arrived before the link was cut
        (dest / vol.name).write_bytes(src.read(half))
    with CarryServer(seed_bundle.dir, gap.host_ip, PORT) as server:
        carry([vol], src_url=f"http://{gap.host_ip}:{PORT}", dest=dest, netns=GAP_NETNS)
    assert server.requests == [(f"/{vol.name}", f"bytes={half}-")]  # only the rest was sent
    assert (dest / vol.name).read_bytes() == vol.read_bytes()


def test_corrupt_volume_is_named_and_only_it_is_sent_again(
    seed_bundle: SeedBundle, gap: LabState, tmp_path: Path
) -> None:
    dest = tmp_path / "gap"
    with CarryServer(seed_bundle.dir, gap.host_ip, PORT) as server:
        src = f"http://{gap.host_ip}:{PORT}"
        carry([*seed_bundle.volumes, seed_bundle.parts], src_url=src, dest=dest, netns=GAP_NETNS)
        bad = dest / seed_bundle.volumes[2].name
        with bad.open("r+b") as fh:  # a bit flipped on the way
            fh.seek(12345)
            byte = fh.read(1)
            fh.seek(12345)
            fh.write(bytes([byte[0] ^ 0x01]))
        assert check_volumes(dest / seed_bundle.parts.name) == [bad.name]
        verify = airlock(
            "bundle",
            "verify",
            str(dest / seed_bundle.parts.name),
            "--key",
            str(seed_bundle.pub),
            netns=GAP_NETNS,
            check=False,
        )
        assert verify.returncode == 3
        assert bad.name in verify.stderr
        server.requests.clear()
        bad.unlink()
        carry([seed_bundle.volumes[2]], src_url=src, dest=dest, netns=GAP_NETNS)
        assert [p for p, _ in server.requests] == [f"/{bad.name}"]  # nothing else travelled again
    assert check_volumes(dest / seed_bundle.parts.name) == []
    airlock(
        "bundle",
        "verify",
        str(dest / seed_bundle.parts.name),
        "--key",
        str(seed_bundle.pub),
        netns=GAP_NETNS,
    )


def _serve(store: Path, listen: str, log: Path, netns: str) -> system.Process:
    proc = system.spawn(
        [AIRLOCK, "registry", "serve", "--store", str(store), "--listen", listen],
        log=log,
        netns=netns,
    )
    for _ in range(100):
        r = system.run(
            ["curl", "-fsS", "--max-time", "1", f"http://{listen}/v2/"], netns=netns, check=False
        )
        if r.returncode == 0:
            return proc
        system.run(["sleep", "0.1"])
    proc.stop()
    raise AssertionError(f"registry on {listen} did not start: {log.read_text()}")


def test_registry_killed_during_pulls_then_restarted(
    seed_bundle: SeedBundle, gap: LabState, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    airlock("load", str(seed_bundle.parts), "--store", str(store), "--key", str(seed_bundle.pub))
    listen = f"{gap.gap_ip}:5000"
    configure_mirrors(
        root=tmp_path / "root", store=store, options=MirrorOptions(registries=[listen])
    )
    hosts = tmp_path / "root" / "etc" / "containerd" / "certs.d"
    reg = _serve(store, listen, tmp_path / "registry.log", GAP_NETNS)
    try:
        with ContainerdDaemon(tmp_path / "ctd", netns=GAP_NETNS, hosts_dir=hosts) as ctd:
            ctd.pull(seed_bundle.images[0])
            os.killpg(reg.pid, signal.SIGKILL)  # the registry dies mid-way through the pulls
            reg.popen.wait(10)
            with pytest.raises(Exception) as failed:
                ctd.pull(seed_bundle.images[1], timeout=60)
            assert "connection refused" in str(failed.value).lower()
            reg = _serve(store, listen, tmp_path / "registry.log", GAP_NETNS)
            for ref in seed_bundle.images[1:]:
                ctd.pull(ref)
            assert set(seed_bundle.images) <= set(ctd.images())
    finally:
        reg.stop()


def test_lab_up_down_twice_and_after_a_crash() -> None:
    lab_down()
    first = lab_up(nodes=3)
    second = lab_up(nodes=3)
    assert first == second
    status = lab_status()
    assert status["hostReachable"] and status["gapHolds"]
    assert set(lab_down()) >= {"airlock-gap", "airlock-node2", "airlock-node3", "alh0"}
    assert lab_down() == []
    # a crash: the state file is gone but the namespaces stay; `down` still finds them by name
    lab_up(nodes=2)
    STATE_FILE.unlink()
    assert set(lab_down()) >= {"airlock-gap", "airlock-node2"}
    assert not netns_exists(GAP_NETNS) and not link_exists("alh0")
    # a crash the other way: the state file stays, the namespaces are gone
    lab_up(nodes=1)
    subprocess.run(["ip", "netns", "delete", GAP_NETNS], check=True)
    lab_down()
    assert not STATE_FILE.exists() and not link_exists("alh0")


def test_lab_cli_status_json(tmp_path: Path) -> None:
    lab_down()
    try:
        airlock("lab", "up")
        status = json.loads(airlock("lab", "status", "--json").stdout)
        assert status["up"] and status["gapHolds"] and status["hostReachable"]
    finally:
        airlock("lab", "down")
    assert json.loads(airlock("lab", "status", "--json").stdout)["up"] is False
    shutil.rmtree(tmp_path, ignore_errors=True)
