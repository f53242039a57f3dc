"""Several nodes pull at once from the registry on node 1; when it stops, node 3 still pulls
from node 2's registry (the mirror list gives redundancy)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from test_gap_faults import _serve

from airlock.verbs.mirrors import MirrorOptions, configure_mirrors
from airlock_lab.containerd import ContainerdDaemon
from airlock_lab.gap import BRIDGE_NET, GAP_NETNS, LabState, node_netns
from conftest import SeedBundle, airlock


def test_nodes_pull_together_and_survive_a_registry_loss(
    seed_bundle: SeedBundle, gap3: LabState, tmp_path: Path
) -> None:
    node1, node2, node3 = GAP_NETNS, node_netns(2), node_netns(3)
    reg1_addr, reg2_addr = f"{BRIDGE_NET}.1:5000", f"{BRIDGE_NET}.2:5000"
    store1, store2 = tmp_path / "store1", tmp_path / "store2"
    for store in (store1, store2):
        airlock(
            "load", str(seed_bundle.parts), "--store", str(store), "--key", str(seed_bundle.pub)
        )
    reg1 = _serve(store1, reg1_addr, tmp_path / "reg1.log", node1)
    reg2 = _serve(store2, reg2_addr, tmp_path / "reg2.log", node2)

    def pull_all(ctd: ContainerdDaemon) -> list[str]:
        for ref in seed_bundle.images:
            ctd.pull(ref)
        return ctd.images()

    try:
        hosts = {}
        for n in (2, 3):
            root = tmp_path / f"root{n}"
            configure_mirrors(
                root=root, store=store1, options=MirrorOptions(registries=[reg1_addr, reg2_addr])
            )
            hosts[n] = root / "etc" / "containerd" / "certs.d"
        with (
            ContainerdDaemon(tmp_path / "ctd2", netns=node2, hosts_dir=hosts[2]) as c2,
            ContainerdDaemon(tmp_path / "ctd3", netns=node3, hosts_dir=hosts[3]) as c3,
        ):
            with ThreadPoolExecutor(2) as pool:  # both nodes at once, from node 1's registry
                got = list(pool.map(pull_all, [c2, c3]))
            for images in got:
                assert set(seed_bundle.images) <= set(images)

        reg1.stop()  # node 1's registry goes away
        # a fresh containerd on node 3 (empty content store): every byte must come from node 2
        with ContainerdDaemon(tmp_path / "ctd3b", netns=node3, hosts_dir=hosts[3]) as c3b:
            assert set(seed_bundle.images) <= set(pull_all(c3b))
    finally:
        reg1.stop()
        reg2.stop()
