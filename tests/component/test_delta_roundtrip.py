"""Deltas against the simulated upstream: seed bundle -> store -> inventory -> v1.27.4 delta.

The delta must leave out everything the store already holds, load on top of it, and leave every
v1.27.4 image complete; a delta built on a later inventory is refused before the one it depends
on, naming the missing blobs and changing nothing; a tampered inventory signature is refused;
`plan --since` predicts what travels from metadata only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from airlock.bundle.reader import open_bundle
from airlock.bundle.signing import generate_keypair
from airlock.bundle.verify import verify_bundle
from airlock.errors import VerificationError
from airlock.node.inventory import collect_inventory
from airlock.oci.layout import OciLayout
from airlock.presets import preset_text
from airlock.spec import Spec, load_spec
from airlock.trust import TrustPolicy
from airlock.verbs.create import CreateOptions, CreateResult, create_bundle
from airlock.verbs.delta import plan_since, read_baseline, write_inventory
from airlock.verbs.load import LoadOptions, load_bundle
from airlock_lab.upstream import Upstream

pytestmark = pytest.mark.component

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
EXTRA_FILE = "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm.sha256"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [AIRLOCK, *args], capture_output=True, text=True, timeout=600, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"airlock {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
    return proc


def write_spec(path: Path, upstream: Upstream, version: str, **extra: Any) -> Spec:
    doc = YAML().load(preset_text("seed"))
    doc["kubernetes"]["version"] = version
    doc["sources"] = upstream.sources()
    doc.update(extra)
    with path.open("w") as fh:
        YAML().dump(doc, fh)
    return load_spec(path)


def build(spec: Spec, out: Path, cache: Path, **kw: Any) -> CreateResult:
    return create_bundle(
        spec, options=CreateOptions(output=out, cache=cache, wheelhouse=False, **kw)
    )


def image_complete(store: Path, ref: str) -> bool:
    """The image's index entry is there and every blob it reaches for linux/amd64 (the spec's
    platform; a multi-arch index is kept whole, its other platforms are not carried) is in the
    store."""
    layout = OciLayout(store)
    desc = layout.images().get(ref)
    if desc is None:
        return False
    todo = [desc]
    while todo:
        d = todo.pop()
        if not layout.has(d["digest"]):
            return False
        if d.get("mediaType", "").endswith(("manifest.v1+json", "list.v2+json", "index.v1+json")):
            doc = json.loads(layout.read(d["digest"]))
            todo += [
                c
                for c in doc.get("manifests", [])
                if c.get("platform", {}).get("architecture", "amd64") == "amd64"
            ]
            todo += [doc["config"]] if "config" in doc else []
            todo += doc.get("layers", [])
    return True


@dataclass
class World:
    tmp: Path
    cache: Path
    key: Path
    pub: Path
    seed: CreateResult
    spec_427: Spec
    spec_427_path: Path
    store: Path
    inventory: Path


@pytest.fixture(scope="module")
def world(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("delta")
    cache = tmp / "cache"
    key, pub = generate_keypair(tmp / "far")
    seed = build(write_spec(tmp / "seed.yaml", upstream, "v1.27.3"), tmp / "seed", cache)
    store = tmp / "store"
    load_bundle(seed.write.path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    inventory = tmp / "inventory.json"
    write_inventory(collect_inventory(root=tmp / "root", store=store), inventory, sign_key=key)
    spec_427 = write_spec(tmp / "v1.27.4.yaml", upstream, "v1.27.4")
    return World(tmp, cache, key, pub, seed, spec_427, tmp / "v1.27.4.yaml", store, inventory)


def test_delta_omits_what_is_present_and_completes_every_image(world: World) -> None:
    store = world.tmp / "store-a"
    load_bundle(world.seed.write.path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    before = set(OciLayout(store).digests())
    assert read_baseline(world.inventory).blobs == before

    delta = build(
        world.spec_427,
        world.tmp / "delta",
        world.cache,
        sequence=2,
        since=world.inventory,
        since_keys=(world.pub,),
    )
    m = delta.write.manifest
    # a file travels as its blob: compressed files by their stored digest
    wanted = {b.digest for i in delta.images for b in i.blobs}
    wanted |= {f.blob_digest for f in delta.files}
    carried = {b.digest for b in m.blobs}
    assert m.base is not None and m.base.inventory == read_baseline(world.inventory).digest
    assert set(m.omitted) == wanted & before  # everything present left out, nothing else
    assert not carried & before - {b.digest for b in m.blobs if b.role in ("sbom", "meta")} - {
        m.files_manifest
    }
    assert delta.delta is not None and delta.delta.omitted == len(m.omitted)
    with open_bundle(delta.write.path) as reader:
        assert not set(reader.blob_digests()) & set(m.omitted)  # nothing omitted is in the tar
    verify_bundle(delta.write.path, trust=TrustPolicy((), allow_unsigned=True))

    result = load_bundle(
        delta.write.path, store_dir=store, options=LoadOptions(allow_unsigned=True)
    )
    assert result.blobs_added == len(carried - before)
    images_427 = sorted(a.source for a in delta.plan.images())
    assert any("kube-apiserver:v1.27.4" in r for r in images_427)
    for ref in images_427:
        assert image_complete(store, ref), ref
    assert set(OciLayout(store).images()) >= set(images_427)
    # only what changed travelled (exactly: see `omitted` above); what stayed home outweighs it
    # (v1.27.4's kubeadm, kubelet, kubectl and kube-* images travel whole; etcd, CoreDNS, pause,
    # Flannel, the CNI plugins, Helm and k9s do not)
    assert delta.write.unique_blob_bytes < delta.delta.omitted_bytes


def test_delta_before_its_base_is_refused_and_changes_nothing(
    world: World, upstream: Upstream
) -> None:
    # A: v1.27.4 on the seed inventory. B: v1.27.4 + one file, on the inventory taken after A.
    store_after_a = world.tmp / "store-after-a"
    load_bundle(
        world.seed.write.path, store_dir=store_after_a, options=LoadOptions(allow_unsigned=True)
    )
    a = build(world.spec_427, world.tmp / "a", world.cache, sequence=2, since=world.inventory)
    load_bundle(a.write.path, store_dir=store_after_a, options=LoadOptions(allow_unsigned=True))
    inv_a = world.tmp / "inventory-a.json"
    write_inventory(collect_inventory(root=world.tmp / "root", store=store_after_a), inv_a)
    spec_b = write_spec(world.tmp / "b.yaml", upstream, "v1.27.4", files=[{"url": EXTRA_FILE}])
    b = build(spec_b, world.tmp / "b", world.cache, sequence=3, since=inv_a)
    assert len(b.write.manifest.blobs) < 6  # the extra file and the bundle's own metadata

    store = world.tmp / "store-b-first"
    load_bundle(world.seed.write.path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    layout = OciLayout(store)
    snapshot = (layout.digests(), layout.index_path.read_bytes())
    with pytest.raises(VerificationError) as refused:
        load_bundle(b.write.path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    needed = {blob.digest for blob in a.write.manifest.blobs}
    missing = sorted(set(b.write.manifest.omitted) - set(snapshot[0]))
    assert missing and set(missing) <= needed
    assert f"needs {len(missing)} blobs" in refused.value.message
    assert missing[0] in refused.value.message  # named
    assert "load the bundle this delta was built on first" in (refused.value.hint or "")
    assert (layout.digests(), layout.index_path.read_bytes()) == snapshot

    load_bundle(a.write.path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    load_bundle(b.write.path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    for ref in sorted(x.source for x in b.plan.images()):
        assert image_complete(store, ref), ref


def test_tampered_inventory_signature_is_refused_before_any_download(world: World) -> None:
    bad = world.tmp / "tampered" / "inventory.json"
    bad.parent.mkdir()
    doc = json.loads(world.inventory.read_text())
    doc["store"]["blobs"] = doc["store"]["blobs"][:-1]  # "the far side has one blob less"
    bad.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (bad.parent / "inventory.json.sig").write_bytes(
        (world.inventory.parent / "inventory.json.sig").read_bytes()
    )
    empty_cache = world.tmp / "never-filled"
    with pytest.raises(VerificationError, match="does not verify"):
        build(world.spec_427, world.tmp / "x", empty_cache, since=bad, since_keys=(world.pub,))
    assert not empty_cache.exists()  # refused before anything was fetched
    (bad.parent / "inventory.json.sig").unlink()
    with pytest.raises(VerificationError, match="is not signed"):
        read_baseline(bad, keys=[world.pub])
    _, other_pub = generate_keypair(world.tmp / "other")
    with pytest.raises(VerificationError, match="does not verify"):
        read_baseline(world.inventory, keys=[other_pub])
    assert read_baseline(world.inventory, keys=[world.pub]).signed_by


def test_inventory_cli_signs_and_openssl_verifies(world: World) -> None:
    out = world.tmp / "cli" / "inventory.json"
    out.parent.mkdir()
    res = json.loads(
        cli(
            "inventory",
            "--root",
            str(world.tmp / "root"),
            "--store",
            str(world.store),
            "-o",
            str(out),
            "--sign",
            str(world.key),
            "--json",
        ).stdout
    )
    assert res["size"] == out.stat().st_size and res["signature"] == str(out) + ".sig"
    assert res["blobs"] == len(OciLayout(world.store).digests())
    assert res["size"] < 100 * res["blobs"] + 8192  # digests, not content
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(world.pub),
            "-rawin",
            "-in",
            str(out),
            "-sigfile",
            str(out) + ".sig",
        ],
        check=True,
        capture_output=True,
    )


def test_plan_since_predicts_the_delta_without_downloading(
    world: World, upstream: Upstream
) -> None:
    before = len(upstream.request_log)
    planned = plan_since(world.spec_427, baseline=read_baseline(world.inventory))
    requests = upstream.request_log[before:]
    big = [r for r in requests if r.method == "GET" and not r.path.endswith((".sha256", ".yaml"))]
    served = {r.path: upstream.files_root.joinpath(r.path.lstrip("/")) for r in big}
    assert all(p.stat().st_size <= 256 << 10 for p in served.values()), served  # metadata only
    by_name = {e.name: e for e in planned.entries}
    assert by_name["registry.k8s.io/kube-apiserver:v1.27.4"].status == "partial"
    assert by_name["registry.k8s.io/pause:3.9"].status == "present"
    # same versions, same bytes in both specs
    assert by_name["crictl-v1.27.0-linux-amd64.tar.gz"].status == "present"
    assert by_name["helm-v3.12.2-linux-amd64.tar.gz"].status == "present"
    assert by_name["kubectl"].status == "travels"  # another release's binary
    assert by_name["kubeadm"].status == "travels"

    delta = build(world.spec_427, world.tmp / "predicted", world.cache, since=world.inventory)
    m = delta.write.manifest
    generated = {m.sbom, m.files_manifest} | {b.digest for b in m.blobs if b.role == "meta"}
    # plan --since counts files as upstream publishes them (before zstd: it downloads nothing)
    as_published = {f.stored.digest: f.size for f in m.files if f.stored}
    actual = sum(as_published.get(b.digest, b.size) for b in m.blobs if b.digest not in generated)
    assert planned.travel_bytes == actual

    res = json.loads(
        cli(
            "plan", "-f", str(world.spec_427_path), "--since", str(world.inventory), "--json"
        ).stdout
    )
    assert res["travelBytes"] == actual and res["base"] == planned.base
    text = cli("plan", "-f", str(world.spec_427_path), "--since", str(world.inventory)).stdout
    assert "will travel" in text and "kube-apiserver:v1.27.4" in text
