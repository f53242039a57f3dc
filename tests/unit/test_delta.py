"""Delta logic: what a `--since` bundle leaves out, the baseline readers, the inventory signature
and `plan --since` arithmetic (pure, small bundles made in memory)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.verify import verify_bundle
from airlock.bundle.writer import write_bundle
from airlock.errors import UsageError, VerificationError
from airlock.oci.digest import sha256_digest
from airlock.trust import TrustPolicy
from airlock.verbs.delta import (
    INVENTORY_SCHEMA,
    ArtifactBlobs,
    apply_baseline,
    inventory_bytes,
    omitted_digests,
    read_baseline,
    travel_summary,
    write_inventory,
)
from airlock.verbs.load import LoadOptions, load_bundle
from airlock_lab.bundle_testing import put_file, sample_content


def inventory_doc(blobs: list[str], images: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "schema": INVENTORY_SCHEMA,
        "store": {
            "path": "/var/lib/airlock/store",
            "present": True,
            "blobs": blobs,
            "images": images or {},
        },
    }


def d(n: int) -> str:
    return sha256_digest(str(n).encode())


# --- omission -----------------------------------------------------------------------------------


@given(st.lists(st.integers(0, 50)), st.sets(st.integers(0, 50)))
def test_omitted_is_the_sorted_intersection(candidates: list[int], present: set[int]) -> None:
    got = omitted_digests([d(c) for c in candidates], {d(p) for p in present})
    assert list(got) == sorted({d(c) for c in candidates} & {d(p) for p in present})


def test_apply_baseline_leaves_out_what_the_far_side_holds(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    content = sample_content(blobs, big_file_size=1 << 16)
    kubeadm = next(f for f in content.files if f.name == "kubeadm")
    pause = next(i for i in content.images if i.reference.startswith("registry.k8s.io/pause"))
    inv = tmp_path / "inventory.json"
    present = [kubeadm.digest, *(b.digest for b in pause.blobs), d(999)]  # d(999): unrelated
    write_inventory(inventory_doc(present), inv)
    delta, summary = apply_baseline(content, read_baseline(inv))
    assert delta.base == sha256_digest(inv.read_bytes())
    assert set(delta.omitted) == set(present) - {d(999)}
    assert summary.omitted == len(delta.omitted)
    assert summary.omitted_bytes == kubeadm.size + sum(b.size for b in pause.blobs)

    written = write_bundle(delta, blobs=blobs, out=tmp_path / "out")
    carried = {b.digest for b in written.manifest.blobs}
    assert not carried & set(delta.omitted)
    assert written.manifest.base is not None
    assert written.manifest.base.inventory == delta.base
    full = write_bundle(content, blobs=blobs, out=tmp_path / "full")
    assert written.size < full.size
    verify_bundle(written.path, trust=TrustPolicy((), allow_unsigned=True))


def test_a_shared_layer_present_is_omitted_for_every_image(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    content = sample_content(blobs, big_file_size=1 << 12)
    shared = set.intersection(*({b.digest for b in i.blobs} for i in content.images))
    assert shared  # the base layer of both images
    inv = tmp_path / "inv.json"
    write_inventory(inventory_doc(sorted(shared)), inv)
    delta, _ = apply_baseline(content, read_baseline(inv))
    assert set(delta.omitted) == shared


def test_an_empty_inventory_omits_nothing_and_says_so(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    content = sample_content(blobs, big_file_size=1 << 12)
    inv = tmp_path / "inv.json"
    doc = inventory_doc([])
    doc["store"] = {"path": "/s", "present": False, "blobs": [], "images": {}}
    write_inventory(doc, inv)
    baseline = read_baseline(inv)
    delta, summary = apply_baseline(content, baseline)
    assert delta.omitted == () and summary.omitted == 0
    assert baseline.warnings and "carries everything" in baseline.warnings[0]


# --- baselines ----------------------------------------------------------------------------------


def test_old_bundle_baseline_is_carried_plus_omitted(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    content = sample_content(blobs, big_file_size=1 << 12)
    extra = put_file(blobs, "extra.txt", b"extra\n", kind="file")
    old = dataclasses.replace(content, omitted=(extra.digest,), files=[*content.files, extra])
    written = write_bundle(old, blobs=blobs, out=tmp_path / "old", split=1 << 20)
    baseline = read_baseline(written.path)  # the parts file
    assert baseline.kind == "bundle"
    assert baseline.blobs == {b.digest for b in written.manifest.blobs} | {extra.digest}
    assert baseline.digest == sha256_digest(written.manifest.to_bytes())
    assert baseline.images == {i.reference: i.digest for i in content.images}


def test_signed_inventory_verifies_and_tampering_is_refused(tmp_path: Path) -> None:
    key, pub = generate_keypair(tmp_path / "far")
    inv = tmp_path / "inventory.json"
    written = write_inventory(inventory_doc([d(1), d(2)]), inv, sign_key=key)
    assert written.signature == tmp_path / "inventory.json.sig"
    assert len(written.signature.read_bytes()) == 64
    assert written.size == len(inv.read_bytes()) and written.blobs == 2
    assert read_baseline(inv, keys=[pub]).signed_by
    inv.write_bytes(inv.read_bytes().replace(d(2).encode(), d(3).encode()))
    with pytest.raises(VerificationError, match="does not verify") as err:
        read_baseline(inv, keys=[pub])
    assert "inventory" in err.value.message
    assert read_baseline(inv).blobs == {d(1), d(3)}  # without a key, no check (the user's choice)
    # rewriting without --sign removes the stale signature rather than leaving a wrong one
    write_inventory(inventory_doc([d(1)]), inv)
    assert not (tmp_path / "inventory.json.sig").exists()
    with pytest.raises(VerificationError, match="is not signed"):
        read_baseline(inv, keys=[pub])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": "something/v1"}', "not an airlock inventory"),
        ('{"schema": "airlock.inventory/v1"}', "no `store` section"),
        ('{"schema": "airlock.inventory/v1", "store": {"blobs": ["md5:x"]}}', "invalid digests"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_inventories_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "inventory.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_baseline(path)


def test_missing_since_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_baseline(tmp_path / "nope.json")


def test_inventory_bytes_are_stable() -> None:
    a = inventory_bytes({"b": 1, "a": {"y": 2, "x": 1}})
    assert a == inventory_bytes({"a": {"x": 1, "y": 2}, "b": 1})
    assert a.endswith(b"\n") and json.loads(a) == {"a": {"x": 1, "y": 2}, "b": 1}


# --- order: a delta before its base -------------------------------------------------------------


def test_delta_before_its_base_is_refused_naming_blobs(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    content = sample_content(blobs, big_file_size=1 << 12)
    a_file = put_file(blobs, "a.txt", b"only in A\n", kind="file")
    a = dataclasses.replace(content, sequence=2, files=[*content.files, a_file])
    inv = tmp_path / "after-a.json"
    write_inventory(inventory_doc([a_file.digest]), inv)
    b_file = put_file(blobs, "b.txt", b"only in B\n", kind="file")
    b, _ = apply_baseline(
        dataclasses.replace(content, sequence=3, files=[*content.files, a_file, b_file]),
        read_baseline(inv),
    )
    a_path = write_bundle(a, blobs=blobs, out=tmp_path / "a").path
    b_path = write_bundle(b, blobs=blobs, out=tmp_path / "b").path
    store = tmp_path / "store"
    with pytest.raises(VerificationError) as err:
        load_bundle(b_path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    assert a_file.digest in err.value.message and "needs 1 blobs" in err.value.message
    assert not (store / "index.json").exists()  # nothing changed
    load_bundle(a_path, store_dir=store, options=LoadOptions(allow_unsigned=True))
    assert (
        load_bundle(b_path, store_dir=store, options=LoadOptions(allow_unsigned=True)).blobs_added
        >= 1
    )


# --- plan --since arithmetic --------------------------------------------------------------------


def test_travel_summary_counts_shared_blobs_once() -> None:
    items = [
        ArtifactBlobs("image", "a", blobs=((d(1), 100), (d(2), 10), (d(3), 5))),
        ArtifactBlobs("image", "b", blobs=((d(1), 100), (d(4), 7))),
        ArtifactBlobs("binary", "kubectl", blobs=((d(5), 1000),)),
        ArtifactBlobs("systemd", "unit", blobs=((None, 3),), note="no checksum"),
    ]
    entries, travel, present = travel_summary(items, {d(2), d(5)})
    by = {e.name: e for e in entries}
    assert [by[n].status for n in ("a", "b", "kubectl", "unit")] == [
        "partial",
        "travels",
        "present",
        "unknown",
    ]
    assert (by["a"].travel_bytes, by["a"].present_bytes, by["a"].blobs_travel) == (105, 10, 2)
    assert by["b"].travel_bytes == 107  # per entry, the shared layer counts for each image
    assert travel == 100 + 5 + 7 + 3  # in total, once
    assert present == 10 + 1000


blob = st.tuples(st.integers(0, 30), st.integers(0, 10_000))


@given(
    st.lists(st.lists(blob, max_size=6), max_size=6),
    st.sets(st.integers(0, 30)),
)
def test_travel_plus_present_is_the_unique_content(
    artifacts: list[list[tuple[int, int]]], present_ids: set[int]
) -> None:
    sizes: dict[int, int] = {}
    items = []
    for n, blobs in enumerate(artifacts):
        fixed = []
        for i, size in blobs:
            size = sizes.setdefault(i, size)  # one digest, one size
            fixed.append((d(i), size))
        items.append(ArtifactBlobs("image", f"i{n}", blobs=tuple(fixed)))
    present = {d(i) for i in present_ids}
    entries, travel, here = travel_summary(items, present)
    assert travel + here == sum(sizes.values())
    assert travel == sum(s for i, s in sizes.items() if d(i) not in present)
    assert all(e.travel_bytes <= travel for e in entries)
    for e, item in zip(entries, items, strict=True):
        if e.status == "present":
            assert all(dg in present for dg, _ in item.blobs)


def test_next_sequence_is_one_above_what_the_far_side_loaded(tmp_path: Path) -> None:
    import json as _json

    from airlock.verbs.delta import next_sequence, read_baseline

    inv = tmp_path / "inventory.json"
    inv.write_text(
        _json.dumps(
            {
                "schema": "airlock.inventory/v1",
                "store": {"present": True, "blobs": [], "images": {}, "channels": {"stable": 4}},
            }
        )
    )
    baseline = read_baseline(inv)
    assert next_sequence(baseline, "stable") == 5
    assert next_sequence(baseline, "edge") == 1
