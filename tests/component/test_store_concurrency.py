"""One locked Store: two `airlock load`s and a stream of registry pushes into the same store at
once lose no tag and no sequence and leave index.json valid; each writer killed with SIGKILL at
a random moment, then run again, converges to the state an undisturbed run gives."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock.oci.digest import sha256_digest
from airlock.oci.layout import canonical_json
from airlock.oci.media import ANNOTATION_REF_NAME, OCI_CONFIG, OCI_MANIFEST
from airlock.store import Store
from airlock_lab.bundle_testing import Layer, put_image, sample_content

pytestmark = pytest.mark.component
AIRLOCK = str(Path(sys.executable).with_name("airlock"))
MiB = 1 << 20

_SERVER = (
    "import asyncio, sys\n"
    "from pathlib import Path\n"
    "from airlock.oci.limits import Limits\n"
    "from airlock.oci.server import RegistryOptions, start_server\n"
    "from airlock.oci.sources import StoreSource\n"
    "from airlock.store import Store\n"
    "async def main():\n"
    "    store = Store.open(Path(sys.argv[1]), write=True)\n"
    "    store.init()\n"
    "    srv = await start_server(StoreSource(store.layout), host='127.0.0.1', port=0,\n"
    # the lock is under test, not the host's free space: no floor
    "                             options=RegistryOptions(push=True,\n"
    "                                 limits=Limits(floor_bytes=0, floor_percent=0)))\n"
    "    print(srv.url, flush=True)\n"
    "    await asyncio.Event().wait()\n"
    "asyncio.run(main())\n"
)


def make_bundle(tmp: Path, name: str, key: Path, *, images: int = 4, big: int = 12 * MiB) -> Path:
    """A signed bundle on its own channel whose images are tagged under `example.com/NAME/`."""
    blobs = BlobStore(tmp / f"blobs-{name}")
    content = sample_content(blobs, name=name, big_file_size=big)
    own = [
        put_image(blobs, f"example.com/{name}/app:{i}", [Layer({"f": f"{name}-{i}".encode()})])
        for i in range(images)
    ]
    content = dataclasses.replace(content, channel=name, images=[*content.images, *own])
    return write_bundle(content, blobs=blobs, out=tmp / f"out-{name}", sign_key=key).path


@contextmanager
def registry(store: Path, log: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(store)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), log.read_text()
            yield int(url.rsplit(":", 1)[1]), proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def _call(port: int, method: str, path: str, body: bytes, ctype: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def push(port: int, tag: str) -> None:
    """One small image (a config, no layers) pushed as `example.com/pushed/app:TAG`."""
    repo = "example.com/pushed/app"
    config = canonical_json({"architecture": "amd64", "os": "linux", "tag": tag})
    digest = sha256_digest(config)
    url = f"/v2/{repo}/blobs/uploads/?digest={digest}"
    assert _call(port, "POST", url, config, "application/octet-stream") == 201
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config)},
            "layers": [],
        }
    )
    assert _call(port, "PUT", f"/v2/{repo}/manifests/{tag}", manifest, OCI_MANIFEST) == 201


def load(bundle: Path, store: Path, pub: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AIRLOCK, "load", str(bundle), "--store", str(store), "--key", str(pub), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def expected_refs(names: list[str], tags: list[str], images: int = 4) -> set[str]:
    own = {f"example.com/{n}/app:{i}" for n in names for i in range(images)}
    shared = {"registry.k8s.io/pause:3.9", "docker.io/library/busybox:1.36"}
    return own | shared | {f"example.com/pushed/app:{t}" for t in tags}


def check_store(store: Path, refs: set[str], channels: dict[str, int]) -> None:
    index = json.loads((store / "index.json").read_bytes())  # whole, valid JSON
    names = (d.get("annotations", {}).get(ANNOTATION_REF_NAME) for d in index["manifests"])
    got = {n for n in names if n is not None}  # the files artifacts are named by digest only
    assert got == refs, (sorted(refs - got), sorted(got - refs))
    s = Store.open(store)
    assert {ch: st.sequence for ch, st in s.channels().items()} == channels
    for d in index["manifests"]:
        assert s.has(d["digest"])


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "site")


def test_two_loads_and_pushes_at_once_lose_nothing(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    a, b = make_bundle(tmp_path, "alpha", priv), make_bundle(tmp_path, "beta", priv)
    store = tmp_path / "store"
    tags = [f"t{i}" for i in range(48)]
    with registry(store, tmp_path / "registry.log") as (port, _):
        loads = [load(a, store, pub), load(b, store, pub)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda t: push(port, t), tags))
        for proc in loads:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert json.loads(out)["verified"] is True
    check_store(store, expected_refs(["alpha", "beta"], tags), {"alpha": 1, "beta": 1})
    records = sorted(p.name for p in (store / "airlock" / "bundles").iterdir())
    assert records == ["alpha.1.json", "beta.1.json"]


def _kill_at_random(proc: subprocess.Popen[str], rng: random.Random, duration: float) -> bool:
    time.sleep(rng.uniform(0.05, 0.95) * duration)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return True


def test_kill_9_inside_each_writer_then_rerun(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """Two loads and a registry taking pushes, each killed at a random moment within its
    undisturbed duration; a rerun of all three gives the undisturbed result."""
    priv, pub = keys
    a, b = make_bundle(tmp_path, "alpha", priv), make_bundle(tmp_path, "beta", priv)
    tags = [f"t{i}" for i in range(24)]
    refs = expected_refs(["alpha", "beta"], tags)
    channels = {"alpha": 1, "beta": 1}
    reference = tmp_path / "reference"
    started = time.monotonic()
    for proc in (load(a, reference, pub), load(b, reference, pub)):
        assert proc.wait(300) == 0
    load_duration = time.monotonic() - started
    rng = random.Random(11)
    store = tmp_path / "store"
    kills = 0
    for _ in range(3):
        loads = [load(a, store, pub), load(b, store, pub)]
        with registry(store, tmp_path / "registry.log") as (port, server):
            with ThreadPoolExecutor(max_workers=4) as pool:
                pushes = [pool.submit(push, port, t) for t in tags]
                time.sleep(rng.uniform(0.0, 0.5))
                os.killpg(server.pid, signal.SIGKILL)  # the registry, in the middle of pushes
                server.wait(30)
                for f in pushes:
                    f.exception(60)  # each either finished or failed: the server is gone
            kills += 1
        for proc in loads:
            kills += _kill_at_random(proc, rng, load_duration)
        if (store / "index.json").exists():  # whatever moment they died at, the index is whole
            json.loads((store / "index.json").read_bytes())
    assert kills >= 3
    for proc in (load(a, store, pub), load(b, store, pub)):  # the reruns
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with registry(store, tmp_path / "registry.log") as (port, _):
        for t in tags:
            push(port, t)
    check_store(store, refs, channels)
    assert sorted(Store.open(store).digests()) == sorted(
        set(Store.open(reference).digests()) | set(Store.open(store).digests())
    )
    assert set(Store.open(reference).digests()) <= set(Store.open(store).digests())
    leftovers = [p for p in store.rglob(".tmp-*")]
    assert leftovers == []
    assert not (store / ".staging").exists()
