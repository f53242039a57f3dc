"""`airlock bundle create` against the simulated upstream: the whole connected side, with the
independent readers (skopeo, umoci, openssl) and the bad inputs of the bundle issue."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from test_packages_debian import _para, make_repo, serve

from airlock_lab.upstream import Upstream
from output_schemas import check_output

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [AIRLOCK, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"airlock {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def create(
    spec: Path, *, cache: Path, out: Path, extra: Sequence[str] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`airlock bundle create -f SPEC --cache CACHE -o OUT [extra...]`."""
    return run(
        "bundle",
        "create",
        "-f",
        str(spec),
        "--cache",
        str(cache),
        "-o",
        str(out),
        *extra,
        check=check,
    )


def write_spec(tmp: Path, upstream: Upstream, **changes: object) -> Path:
    from airlock.presets import preset_text

    doc = YAML().load(preset_text("seed"))
    doc["sources"] = upstream.sources()
    for key, value in changes.items():
        doc[key] = value
    spec = tmp / "airlock.yaml"
    with spec.open("w") as fh:
        YAML().dump(doc, fh)
    return spec


@pytest.fixture(scope="module")
def built(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("create")
    # one wheelhouse target: the ratio below is about the compressible files, not wheels
    spec = write_spec(tmp, upstream, wheelhouse={"pythons": ["3.11"], "architectures": ["x86_64"]})
    run("keys", "generate", "--out", str(tmp / "k"))
    first = create(
        spec,
        cache=tmp / "cache",
        out=tmp / "a",
        extra=("--sign", str(tmp / "k.key"), "--json", "--progress=plain"),
    )
    out = json.loads(first.stdout)
    again = json.loads(
        create(
            spec,
            cache=tmp / "cache",
            out=tmp / "b",
            extra=(
                "--sign",
                str(tmp / "k.key"),
                "--json",
            ),
        ).stdout
    )
    return {"tmp": tmp, "spec": spec, "first": out, "second": again, "progress": first.stderr}


def test_plain_progress_names_images_layers_and_files(built: dict[str, object]) -> None:
    """--progress=plain (for CI logs): a line per download, labelled by image and layer or by
    file name, and one for writing the bundle; stdout keeps the one JSON document."""
    import re

    log = str(built["progress"])
    assert re.search(r"^registry\.k8s\.io/pause:3\.9 layer 1/\d+: done, ", log, re.M), log
    assert re.search(r"^registry\.k8s\.io/pause:3\.9 config 1/1: done, ", log, re.M)
    assert re.search(r"^kubeadm: done, ", log, re.M)
    assert re.search(r"^write \S+\.airlock\.tar: done, ", log, re.M)
    assert "sha256:" not in log  # never a digest for a label


def test_seed_bundle_contents(built: dict[str, object]) -> None:
    first = built["first"]
    assert isinstance(first, dict)
    assert first["images"] == 11 and first["signed"]
    assert "confirmed by the fetched kubeadm binary" in first["kubeadmImageList"]
    # the seed names Fedora packages without repositories: said plainly, not guessed
    assert [w.split(":")[0] for w in first["warnings"]] == ["packages.repositories is empty"]


def test_reproducible_and_warm_cache(built: dict[str, object]) -> None:
    first, second = built["first"], built["second"]
    assert isinstance(first, dict) and isinstance(second, dict)
    assert Path(first["bundle"]).read_bytes() == Path(second["bundle"]).read_bytes()
    assert second["bytesDownloaded"] == 0 and second["filesFromCache"] == second["files"]


def test_independent_readers_accept_it(built: dict[str, object], tmp_path: Path) -> None:
    first = built["first"]
    assert isinstance(first, dict)
    bundle = Path(first["bundle"])
    ref = "registry.k8s.io/kube-apiserver:v1.27.3"
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{bundle}:{ref}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert json.loads(raw)["schemaVersion"] == 2
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci-archive:{bundle}:{ref}", f"oci:{tmp_path / 'copy'}:x"],
        check=True,
        timeout=120,
    )
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(layout)], check=True, timeout=120)
    listed = subprocess.run(
        ["umoci", "ls", "--layout", str(layout)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert ref in listed and "ghcr.io/stefanprodan/podinfo:6.4.0" in listed
    tmp = built["tmp"]
    assert isinstance(tmp, Path)
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(tmp / "k.pub"),
            "-rawin",
            "-in",
            str(layout / "airlock.json"),
            "-sigfile",
            str(layout / "airlock.json.sig"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def test_checksum_mismatch_names_url_expected_actual(upstream: Upstream, tmp_path: Path) -> None:
    url = "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm"
    spec = write_spec(
        tmp_path, upstream, files=[{"url": url, "sha256": "0" * 64, "name": "kubeadm-pinned"}]
    )
    proc = create(spec, cache=tmp_path / "c", out=tmp_path / "o", check=False)
    assert proc.returncode == 3, proc.stderr
    assert url in proc.stderr and "0" * 64 in proc.stderr
    assert not list((tmp_path / "o").glob("*.airlock.tar")) if (tmp_path / "o").exists() else True


def test_missing_tag_names_the_reference(upstream: Upstream, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, upstream, images=["ghcr.io/stefanprodan/podinfo:9.9.9"])
    proc = create(spec, cache=tmp_path / "c", out=tmp_path / "o", check=False)
    assert proc.returncode != 0
    assert "ghcr.io/stefanprodan/podinfo:9.9.9" in proc.stderr


def test_split_below_1mib_refused(upstream: Upstream, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, upstream)
    proc = create(
        spec,
        cache=tmp_path / "c",
        out=tmp_path / "o",
        extra=(
            "--split",
            "512K",
        ),
        check=False,
    )
    assert proc.returncode == 2 and "1 MiB" in proc.stderr


def test_ctrl_c_then_create_again_downloads_nothing_twice(
    upstream: Upstream, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, upstream)
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [
            AIRLOCK,
            "bundle",
            "create",
            "-f",
            str(spec),
            "--cache",
            str(cache),
            "-o",
            str(tmp_path / "o"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any((cache / "blobs" / "sha256").glob("*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(60)
    before = {p.name for p in (cache / "blobs" / "sha256").glob("*") if not p.name.startswith(".")}
    assert before, "the interrupt came before any download finished"
    done = json.loads(create(spec, cache=cache, out=tmp_path / "o", extra=("--json",)).stdout)
    total_files = sum(p.stat().st_size for p in (cache / "blobs" / "sha256").glob("*"))
    assert done["bytesDownloaded"] < total_files  # what the first run stored was not fetched again
    assert not list((tmp_path / "o").glob(".tmp-*"))


def test_os_packages_closure_travels(upstream: Upstream, tmp_path: Path) -> None:
    paragraphs = [
        _para("app", Depends="libdep (>= 1.0)"),
        _para("libdep", "1.2"),
        _para("unrelated"),
    ]
    root = make_repo(tmp_path / "repo", paragraphs)
    for name, version in (("app", "1.0"), ("libdep", "1.2"), ("unrelated", "1.0")):
        pool = root / "pool" / f"{name}_{version}_amd64.deb"
        pool.parent.mkdir(exist_ok=True)
        pool.write_bytes(f"{name} {version}".encode())
    with serve(root) as url:
        packages = {"os": "debian-12", "names": ["app"], "repositories": [f"{url}dists/toy"]}
        spec = write_spec(tmp_path, upstream, packages=packages)
        plan = check_output("plan", json.loads(run("plan", "-f", str(spec), "--json").stdout))
        rows = {a["name"]: a for a in plan["artifacts"] if a["kind"] == "package"}
        assert set(rows) == {"app", "libdep"}
        assert rows["libdep"]["foundIn"][0].startswith("app (Depends: libdep")  # why it travels
        out = json.loads(
            create(spec, cache=tmp_path / "c", out=tmp_path / "o", extra=("--json",)).stdout
        )
    check_output("bundle create", out)
    summary = json.loads(run("bundle", "inspect", out["bundle"], "--json").stdout)
    carried = {f["name"]: f for f in summary["files"] if f["kind"] == "package"}
    assert set(carried) == {"app_1.0_amd64.deb", "libdep_1.2_amd64.deb"}
    assert (
        carried["libdep_1.2_amd64.deb"]["digest"]
        == "sha256:" + hashlib.sha256(b"libdep 1.2").hexdigest()
    )


def test_upstream_signatures_checked_and_recorded(upstream: Upstream, tmp_path: Path) -> None:
    key = upstream.release_key(tmp_path / "release.pub")
    signed = [{"prefix": "https://dl.k8s.io/", "key": str(key)}]
    spec = write_spec(tmp_path, upstream, verify={"signatures": signed})
    out = json.loads(
        create(spec, cache=tmp_path / "c", out=tmp_path / "o", extra=("--json",)).stdout
    )
    files = json.loads(run("bundle", "inspect", out["bundle"], "--json").stdout)["files"]
    signed_files = {f["name"] for f in files if f["signatureKey"]}
    assert signed_files == {"kubeadm", "kubelet", "kubectl"}
    # a key that did not sign them: refused, naming the file
    from airlock.bundle.signing import generate_keypair

    _, other = generate_keypair(tmp_path / "other")
    spec = write_spec(
        tmp_path,
        upstream,
        verify={"signatures": [{"prefix": "https://dl.k8s.io/", "key": str(other)}]},
    )
    proc = create(spec, cache=tmp_path / "c", out=tmp_path / "o2", check=False)
    assert proc.returncode == 3
    assert "https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kube" in proc.stderr
    assert "does not verify" in proc.stderr


def test_ctr_images_import_reads_the_bundle(built: dict[str, object], tmp_path: Path) -> None:
    """containerd's own importer takes the bundle as it is (its root is an OCI layout whose
    index names every image by its full reference)."""
    from airlock_lab.containerd import ContainerdDaemon

    first = built["first"]
    assert isinstance(first, dict)
    with ContainerdDaemon(tmp_path / "ctd") as ctd:
        ctd.import_archive(Path(first["bundle"]))
        images = set(ctd.images())
    assert "registry.k8s.io/kube-apiserver:v1.27.3" in images
    assert "docker.io/flannel/flannel:v0.22.0" in images
    assert not any(i.startswith("airlock.local/") for i in images)  # the files are not an image


def test_files_are_compressed_and_image_blobs_are_not(built: dict[str, object]) -> None:
    """zstd by default for the files artifact only: kubectl is stored compressed (and comes
    back as itself), every image blob is the upstream's, and inspect reports the ratio."""
    from airlock.bundle.reader import open_bundle
    from airlock.node.install import BundleSource
    from airlock.oci.digest import file_digest

    first = built["first"]
    assert isinstance(first, dict)
    assert first["filesStoredBytes"] < first["filesBytes"]
    bundle = Path(first["bundle"])
    with open_bundle(bundle) as reader:
        m = reader.manifest
        assert m.format_version == "1.1"
        kubectl = next(f for f in m.files if f.name == "kubectl" and f.platform == "linux/amd64")
        assert kubectl.stored is not None and kubectl.stored.size * 2 < kubectl.size
        with BundleSource(reader).open(kubectl.digest) as fh:
            assert file_digest(fh) == kubectl.digest
        image_blobs = {d for i in m.images for d in i.blobs}
        blobs = m.blob_map()
        assert image_blobs and all(not blobs[d].media_type.endswith("+zstd") for d in image_blobs)
        assert all(f.stored is None for f in m.files if f.kind in ("wheel", "package"))
    summary = json.loads(run("bundle", "inspect", str(bundle), "--json").stdout)
    assert summary["compressionRatio"] > 1.5 and summary["formatVersion"] == "1.1"


def test_recovery_volumes_rebuild_what_was_lost(built: dict[str, object], tmp_path: Path) -> None:
    """`--split --recovery`: the volume holding airlock.json is lost and a recovery volume is
    scratched; verify says repairable, `load --repair` rebuilds both and loads; one more lost
    volume than the recovery covers is refused, naming them."""
    tmp, spec = built["tmp"], built["spec"]
    assert isinstance(tmp, Path) and isinstance(spec, Path)
    made = json.loads(
        create(
            spec,
            cache=tmp / "cache",
            out=tmp_path / "out",
            extra=("--split", "32M", "--recovery", "50%", "--sign", str(tmp / "k.key"), "--json"),
        ).stdout
    )
    volumes = [Path(v) for v in made["volumes"]]
    recovery = [Path(v) for v in made["recoveryVolumes"]]
    assert len(volumes) >= 3 and len(recovery) == -(-len(volumes) // 2)
    assert len(made["bootVolumes"]) == len(recovery) + 1
    parts, key = Path(made["bundle"]), str(tmp / "k.pub")
    volumes[0].unlink()
    scratched = bytearray(recovery[0].read_bytes())
    scratched[1000:5000] = bytes(4000)
    recovery[0].write_bytes(bytes(scratched))
    proc = run("bundle", "verify", str(parts), "--key", key, check=False)
    assert proc.returncode == 3, proc.stderr
    assert "2 volumes damaged, repairable" in proc.stderr
    assert "airlock bundle repair" in proc.stderr
    loaded = json.loads(
        run(
            "load",
            str(parts),
            "--store",
            str(tmp_path / "store"),
            "--key",
            key,
            "--repair",
            "--json",
        ).stdout
    )
    assert sorted(loaded["repaired"]) == sorted([str(volumes[0]), str(recovery[0])])
    assert loaded["blobsAdded"] > 0
    assert "OK" in run("bundle", "verify", str(parts), "--key", key).stdout
    for victim in (*volumes[: len(recovery)], recovery[-1]):
        victim.unlink()
    proc = run("bundle", "repair", str(parts), "--key", key, check=False)
    assert proc.returncode == 3
    assert "NOT repairable" in proc.stderr and volumes[0].name in proc.stderr


def test_changed_upstream_layer_is_never_served_from_the_old_bundle(
    upstream: Upstream, tmp_path: Path
) -> None:
    """The tag of an image moves to a new layer between two creates into the same output
    with the same cache: the second bundle carries the new layer's bytes (fetched while the
    tar is written), not the old bundle's, and verifies. The layers a create downloads are
    lent to its bundle (the cache drops its copy: written once): the first bundle's serve the
    second create while it is written, are lent on to the new file, and the old layer, whose
    only copy was in the replaced file, is missing from the cache, never served from it."""
    import tarfile

    from test_oci_client import build_manifest, tag

    from airlock.blobstore import BlobStore
    from airlock.bundle.layout import blob_member
    from airlock.oci.layout import OciLayout
    from airlock_lab.distribution import start_distribution

    (tmp_path / "run").mkdir()
    reg = start_distribution("changed-test", tmp_path / "data", tmp_path / "run")
    try:
        layout = OciLayout(tmp_path / "layout")
        layout.init()
        ref = "changed.test.invalid/app:1.0"

        def publish(payload: bytes) -> str:
            desc = build_manifest(layout, "amd64", [payload])
            tag(layout, "v", desc)
            subprocess.run(
                [
                    "skopeo", "--insecure-policy", "copy", "--preserve-digests",
                    "--dest-tls-verify=false", f"oci:{layout.root}:v",
                    f"docker://127.0.0.1:{reg.port}/app:1.0",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )  # fmt: skip
            manifest = json.loads(layout.read(desc["digest"]))
            return str(manifest["layers"][0]["digest"])

        old_layer = publish(os.urandom(300_000))
        doc = YAML().load(write_spec(tmp_path, upstream).read_text())
        doc["images"] = [*doc["images"], ref]
        doc["sources"]["registries"]["changed.test.invalid"] = {"url": reg.url, "insecure": True}
        doc["wheelhouse"] = {"pythons": ["3.11"], "architectures": ["x86_64"]}
        spec = tmp_path / "changed.yaml"
        with spec.open("w") as fh:
            YAML().dump(doc, fh)
        run("keys", "generate", "--out", str(tmp_path / "k"))
        sign = ("--sign", str(tmp_path / "k.key"), "--json")
        first = json.loads(
            create(spec, cache=tmp_path / "c", out=tmp_path / "o", extra=sign).stdout
        )
        cache = BlobStore(tmp_path / "c")
        lent = {"sha256:" + p.name for p in (tmp_path / "c" / "lent").iterdir()}
        assert old_layer in lent
        for digest in lent:  # written once: only in the bundle, read from there
            assert not cache.path(digest).exists() and cache.has(digest)
            assert cache.lent_to(digest) == Path(first["bundle"]).resolve()
            cache.verify(digest)
        # nothing moved: the bundle is kept as it was, answered from the first run's record
        # (airlock.replay: the full path rewrites the record, a replay leaves it alone)
        (record,) = (tmp_path / "c" / "outputs").glob("*.replay.json")
        recorded = record.stat().st_mtime_ns
        kept = json.loads(create(spec, cache=tmp_path / "c", out=tmp_path / "o", extra=sign).stdout)
        assert kept["unchanged"] is True and kept["sha256"] == first["sha256"]
        assert record.stat().st_mtime_ns == recorded
        new_bytes = os.urandom(300_000)
        new_layer = publish(new_bytes)
        # the tag moved: the recorded answer for it differs, the full path runs
        second = json.loads(
            create(spec, cache=tmp_path / "c", out=tmp_path / "o", extra=sign).stdout
        )
        assert record.stat().st_mtime_ns != recorded
        assert not cache.has(old_layer)  # its only copy was in the replaced file
        assert cache.has(new_layer) and not cache.path(new_layer).exists()
        for digest in lent - {old_layer}:  # read from the old file, lent on to the new one
            assert cache.has(digest)
            cache.verify(digest)
        again = create(spec, cache=tmp_path / "c", out=tmp_path / "o2", extra=sign).stdout
        assert json.loads(again)["sha256"] == second["sha256"]
        for digest in (lent - {old_layer}) | {new_layer}:  # read from o, none fetched again
            assert cache.lent_to(digest) == Path(second["bundle"]).resolve()
    finally:
        reg.stop()
    assert first["bundle"] == second["bundle"] and first["sha256"] != second["sha256"]
    assert first["unchanged"] is False and second["unchanged"] is False
    bundle = Path(second["bundle"])
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        assert blob_member(old_layer) not in names
        member = tar.extractfile(blob_member(new_layer))
        assert member is not None
        assert gzip.decompress(member.read()).find(new_bytes) > 0
    run("bundle", "verify", str(bundle), "--key", str(tmp_path / "k.pub"))


def test_unchanged_bundle_is_kept_only_for_the_same_key_and_options(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A rerun with nothing changed keeps the bundle (same file, not rewritten, same
    signature); another signing key or another `--expires` rewrites and re-signs it, and
    each result verifies with its own key."""
    import tarfile

    spec = write_spec(tmp_path, upstream)
    run("keys", "generate", "--out", str(tmp_path / "a"))
    run("keys", "generate", "--out", str(tmp_path / "b"))
    cache, out = tmp_path / "c", tmp_path / "o"

    def made(key: str, *more: str) -> dict[str, object]:
        extra = ("--sign", str(tmp_path / f"{key}.key"), "--json", *more)
        return dict(json.loads(create(spec, cache=cache, out=out, extra=extra).stdout))

    def signature(bundle: Path) -> bytes:
        with tarfile.open(bundle) as tar:
            member = tar.extractfile("airlock.json.sig")
            assert member is not None
            return member.read()

    first = made("a")
    bundle = Path(str(first["bundle"]))
    ino, sig = bundle.stat().st_ino, signature(bundle)
    kept = made("a")
    assert kept["unchanged"] is True and kept["sha256"] == first["sha256"]
    assert bundle.stat().st_ino == ino and signature(bundle) == sig
    other_key = made("b")
    assert other_key["unchanged"] is False and signature(bundle) != sig
    run("bundle", "verify", str(bundle), "--key", str(tmp_path / "b.pub"))
    assert (
        run(
            "bundle", "verify", str(bundle), "--key", str(tmp_path / "a.pub"), check=False
        ).returncode
        != 0
    )
    expiring = made("b", "--expires", "2099-12-31")
    assert expiring["unchanged"] is False and expiring["sha256"] != other_key["sha256"]
    assert made("b", "--expires", "2099-12-31")["unchanged"] is True
    run("bundle", "verify", str(bundle), "--key", str(tmp_path / "b.pub"))


def test_keep_cache_keeps_every_layer_in_the_cache(upstream: Upstream, tmp_path: Path) -> None:
    """By default the layers a create downloaded are lent to its bundle (the cache drops its
    copy); --keep-cache keeps the cache's own copy of each, so moving or deleting the bundle
    costs no download."""
    from airlock.blobstore import BlobStore

    spec = write_spec(tmp_path, upstream)
    lent = json.loads(
        create(spec, cache=tmp_path / "c1", out=tmp_path / "o1", extra=["--json"]).stdout
    )
    assert any((tmp_path / "c1" / "lent").iterdir())
    kept = json.loads(
        create(
            spec, cache=tmp_path / "c2", out=tmp_path / "o2", extra=["--keep-cache", "--json"]
        ).stdout
    )
    assert kept["sha256"] == lent["sha256"]  # the same bundle either way
    assert not (tmp_path / "c2" / "lent").exists() or not any((tmp_path / "c2" / "lent").iterdir())
    Path(kept["bundle"]).unlink()
    cache = BlobStore(tmp_path / "c2")
    lent_digests = ["sha256:" + p.name for p in (tmp_path / "c1" / "lent").iterdir()]
    for digest in lent_digests:  # every layer the first run lent is a file of its own here
        assert cache.path(digest).is_file()
        cache.verify(digest)
