"""The inventory round trip across the gap: a signed inventory taken INSIDE the gap is carried
out, a v1.27.4 delta is built on it outside, carried in over the lab link, loaded inside, and
containerd inside the gap pulls every v1.27.4 image through the local registry."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from airlock import system
from airlock.bundle.manifest import parse_manifest
from airlock.verbs.mirrors import MirrorOptions, configure_mirrors
from airlock_lab.containerd import ContainerdDaemon
from airlock_lab.demo import CarryServer, carry
from airlock_lab.gap import GAP_NETNS, LabState
from conftest import AIRLOCK, SeedBundle, airlock

PORT = 8093


def _serve(store: Path, listen: str, log: Path) -> system.Process:
    proc = system.spawn(
        [AIRLOCK, "registry", "serve", "--store", str(store), "--listen", listen],
        log=log,
        netns=GAP_NETNS,
    )
    for _ in range(100):
        r = system.run(
            ["curl", "-fsS", "--max-time", "1", f"http://{listen}/v2/"],
            netns=GAP_NETNS,
            check=False,
        )
        if r.returncode == 0:
            return proc
        system.run(["sleep", "0.1"])
    proc.stop()
    raise AssertionError(f"registry on {listen} did not start: {log.read_text()}")


def test_inventory_out_delta_in(seed_bundle: SeedBundle, gap: LabState, tmp_path: Path) -> None:
    inside = tmp_path / "gap"
    outside = tmp_path / "connected"
    inside.mkdir()
    outside.mkdir()
    store = inside / "store"

    # --- inside the gap: the seed bundle is loaded; take a signed inventory
    airlock(
        "load",
        str(seed_bundle.parts),
        "--store",
        str(store),
        "--key",
        str(seed_bundle.pub),
        netns=GAP_NETNS,
    )
    airlock("keys", "generate", "--out", str(inside / "node"), netns=GAP_NETNS)
    inv = json.loads(
        airlock(
            "inventory",
            "--store",
            str(store),
            "-o",
            str(inside / "inventory.json"),
            "--sign",
            str(inside / "node.key"),
            "--json",
            netns=GAP_NETNS,
        ).stdout
    )
    assert inv["blobs"] > 0 and inv["signature"]

    # --- carried out (both files), then the delta is built on the connected side
    for name in ("inventory.json", "inventory.json.sig", "node.pub"):
        shutil.copy(inside / name, outside / name)
    work = seed_bundle.dir.parent
    spec = outside / "v1.27.4.yaml"
    text = (work / "airlock.yaml").read_text()
    assert "  version: v1.27.3" in text
    spec.write_text(text.replace("  version: v1.27.3", "  version: v1.27.4"))
    plan = json.loads(
        airlock(
            "plan", "-f", str(spec), "--since", str(outside / "inventory.json"), "--json"
        ).stdout
    )
    created = json.loads(
        airlock(
            "bundle",
            "create",
            "-f",
            str(spec),
            "--cache",
            str(work / "cache"),
            "--since",
            str(outside / "inventory.json"),
            "--since-key",
            str(outside / "node.pub"),
            "--sequence",
            "2",
            "--sign",
            str(seed_bundle.key),
            "-o",
            str(outside / "out"),
            "--json",
        ).stdout
    )
    delta = Path(created["bundle"])
    assert created["delta"]["omittedBlobs"] > 0
    full_size = sum(v.stat().st_size for v in seed_bundle.volumes)
    assert created["size"] < full_size / 4  # what changed, not the release again
    # plan --since counts files as upstream publishes them (it downloads nothing); the bundle
    # stores them zstd-compressed: compare like with like
    with tarfile.open(created["bundle"]) as tar:
        member = tar.extractfile("airlock.json")
        assert member is not None
        m = parse_manifest(member.read())
    as_published = {f.stored.digest: f.size for f in m.files if f.stored}
    carried_as_published = sum(as_published.get(b.digest, b.size) for b in m.blobs)
    assert plan["travelBytes"] <= carried_as_published  # plan omits only the wheelhouse/meta

    # --- carried in over the lab link, loaded inside the gap
    with CarryServer(delta.parent, gap.host_ip, PORT) as server:
        carry([delta], src_url=f"http://{gap.host_ip}:{PORT}", dest=inside / "in", netns=GAP_NETNS)
    assert [p for p, _ in server.requests] == [f"/{delta.name}"]
    loaded = json.loads(
        airlock(
            "load",
            str(inside / "in" / delta.name),
            "--store",
            str(store),
            "--key",
            str(seed_bundle.pub),
            "--json",
            netns=GAP_NETNS,
        ).stdout
    )
    assert loaded["blobsAdded"] > 0
    images = sorted(
        a["source"]
        for a in json.loads(airlock("plan", "-f", str(spec), "--json").stdout)["artifacts"]
        if a["kind"] == "image"
    )
    assert "registry.k8s.io/kube-apiserver:v1.27.4" in images
    assert set(images) <= set(loaded["images"])

    # --- containerd inside the gap pulls every v1.27.4 image by its original name
    listen = f"{gap.gap_ip}:5000"
    configure_mirrors(
        root=tmp_path / "root", store=store, options=MirrorOptions(registries=[listen])
    )
    hosts = tmp_path / "root" / "etc" / "containerd" / "certs.d"
    reg = _serve(store, listen, tmp_path / "registry.log")
    try:
        with ContainerdDaemon(tmp_path / "ctd", netns=GAP_NETNS, hosts_dir=hosts) as ctd:
            for ref in images:
                ctd.pull(ref)
            assert set(images) <= set(ctd.images())
    finally:
        reg.stop()
