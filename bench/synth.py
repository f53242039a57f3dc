"""A synthetic upstream scaled to k times the seed, generated deterministically and cached.

For `make bench`'s growth curves (bench/scale.py): images and files beside the seed's real
components, with what makes real content expensive to carry:

- incompressible bytes (an AES-CTR keystream keyed by the blob's name: random to zstd and
  gzip alike, the same on every machine), so compression gains nothing;
- layers shared the way real images share them: a few base layers (distro, distroless,
  alpine-like), runtime layers used by a subset, then one to three application layers;
- realistic sizes: base layers of a few to ~30 MB, runtimes 40-60 MB, app layers log-normal
  around 12 MB, files (binaries, archives) log-normal around 35 MB, tar members of a
  few KB to a few MB.

The images are written straight into a docker-registry (distribution 2.8) storage tree (the
same files `docker push` leaves), so no second copy and no push is needed; files go in a
directory served over HTTP. Generation 2 (`--since`'s upstream) changes one image in ten
(a new top layer, new tag) and one file in ten.

    cache: ~/.cache/airlock/bench/synth-<k>x-<format>/{registry,files,synth.json}
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

FORMAT = "synth-2"
SEED_UNIT = 300 * 2**20  # about the seed bundle's unique blob bytes (295 MB measured, real builds)
HOST = "registry.bench.invalid"  # a name only: the spec's sources map it to a loopback registry
MB = 2**20
_CHUNK = 4 * MB
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def keystream(name: str) -> Iterator[bytes]:
    """Endless incompressible bytes, the same for the same name."""
    key = hashlib.sha256(f"airlock-bench:{name}".encode()).digest()
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    zeros = b"\0" * _CHUNK
    while True:
        yield enc.update(zeros)


def take(stream: Iterator[bytes], n: int, sink: Callable[[bytes], None]) -> None:
    while n > 0:
        chunk = next(stream)[: min(n, _CHUNK)]
        sink(chunk)
        n -= len(chunk)


@dataclass(frozen=True)
class LayerPlan:
    name: str
    size: int  # about the uncompressed bytes of its member files


@dataclass(frozen=True)
class ImagePlan:
    repo: str
    tag: str
    layers: tuple[LayerPlan, ...]


def _lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> int:
    return int(min(hi, max(lo, median * math.exp(rng.gauss(0, sigma)))))


def plan(scale: int) -> tuple[list[ImagePlan], list[tuple[str, int]]]:
    """The images and files of one scale (generation 1): about scale x SEED_UNIT bytes,
    80 % images, 20 % files."""
    rng = random.Random(f"airlock-bench-{scale}")
    target = scale * SEED_UNIT
    bases = [LayerPlan("base-debian", 29 * MB), LayerPlan("base-static", 2 * MB)]
    bases.append(LayerPlan("base-alpine", 3 * MB))
    runtimes = [LayerPlan("runtime-python", 47 * MB), LayerPlan("runtime-jre", 58 * MB)]
    files: list[tuple[str, int]] = []
    while sum(s for _, s in files) < 0.2 * target:
        files.append(
            (f"tool-{len(files):03d}.bin", _lognormal(rng, 35 * MB, 0.7, 4 * MB, 120 * MB))
        )
    images: list[ImagePlan] = []
    unique: dict[str, int] = {}
    while sum(unique.values()) < 0.8 * target:
        n = len(images)
        layers = [rng.choices(bases, weights=[5, 3, 2])[0]]
        if rng.random() < 0.4:
            layers.append(rng.choice(runtimes))
        for k in range(rng.choice([1, 1, 2, 3])):
            layers.append(
                LayerPlan(f"app-{n:03d}-{k}", _lognormal(rng, 12 * MB, 0.9, 256 * 1024, 90 * MB))
            )
        images.append(ImagePlan(f"bench/app-{n:03d}", "1.0", tuple(layers)))
        for layer in layers:
            unique[layer.name] = layer.size
    return images, files


def changed(
    images: list[ImagePlan], files: list[tuple[str, int]]
) -> tuple[list[ImagePlan], list[tuple[str, int]]]:
    """Generation 2: every tenth image gets a new top layer under tag 2.0, every tenth file
    new bytes under a new name; the rest is as in generation 1."""
    out_images = []
    for n, image in enumerate(images):
        if n % 10 == 3:
            top = image.layers[-1]
            image = ImagePlan(
                image.repo, "2.0", (*image.layers[:-1], LayerPlan(top.name + "-v2", top.size))
            )
        out_images.append(image)
    out_files = [
        (name.replace(".bin", "-v2.bin"), size) if n % 10 == 3 else (name, size)
        for n, (name, size) in enumerate(files)
    ]
    return out_images, out_files


# --- writing a docker-registry storage tree -------------------------------------------------


class RegistryTree:
    """distribution's filesystem layout: blobs once, per-repository links, tags."""

    def __init__(self, root: Path) -> None:
        self.v2 = root / "docker" / "registry" / "v2"

    def blob_path(self, hexd: str) -> Path:
        return self.v2 / "blobs" / "sha256" / hexd[:2] / hexd / "data"

    def has(self, hexd: str) -> bool:
        return self.blob_path(hexd).is_file()

    def put_bytes(self, data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        if not self.has(hexd):
            path = self.blob_path(hexd)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return hexd

    def put_from(self, tmp: Path, hexd: str) -> None:
        path = self.blob_path(hexd)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(path)

    def _link(self, path: Path, hexd: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "link").write_text(f"sha256:{hexd}")

    def link_blob(self, repo: str, hexd: str) -> None:
        self._link(self.v2 / "repositories" / repo / "_layers" / "sha256" / hexd, hexd)

    def tag(self, repo: str, tag: str, hexd: str) -> None:
        base = self.v2 / "repositories" / repo / "_manifests"
        self._link(base / "revisions" / "sha256" / hexd, hexd)
        self._link(base / "tags" / tag / "current", hexd)
        self._link(base / "tags" / tag / "index" / "sha256" / hexd, hexd)


def _member_sizes(rng: random.Random, total: int) -> list[int]:
    sizes: list[int] = []
    left = total
    while left > 0:
        n = min(left, _lognormal(rng, 96 * 1024, 1.6, 512, 6 * MB))
        sizes.append(n)
        left -= n
    return sizes


def write_layer(tree: RegistryTree, layer: LayerPlan, tmp_dir: Path) -> tuple[str, str, int]:
    """A gzip'd tar of incompressible files -> (blob hex, diff_id hex, blob size)."""
    rng = random.Random(layer.name)
    stream = keystream(layer.name)
    tmp = tmp_dir / f"{layer.name}.part"
    blob_hash, diff_hash = hashlib.sha256(), hashlib.sha256()
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)  # stored-like: the data is incompressible
    size = 0
    with tmp.open("wb") as fh:

        def out(data: bytes) -> None:
            nonlocal size
            diff_hash.update(data)
            packed = gz.compress(data)
            blob_hash.update(packed)
            fh.write(packed)
            size += len(packed)

        for i, n in enumerate(_member_sizes(rng, layer.size)):
            ti = tarfile.TarInfo(f"{layer.name}/d{i % 7}/f{i:05d}")
            ti.size, ti.mtime, ti.mode = n, 0, 0o644
            out(ti.tobuf(tarfile.PAX_FORMAT))
            take(stream, n, out)
            out(b"\0" * (-n % tarfile.BLOCKSIZE))
        out(b"\0" * (2 * tarfile.BLOCKSIZE))
        tail = gz.flush()
        blob_hash.update(tail)
        fh.write(tail)
        size += len(tail)
    hexd = blob_hash.hexdigest()
    if tree.has(hexd):
        tmp.unlink()
    else:
        tree.put_from(tmp, hexd)
    return hexd, diff_hash.hexdigest(), size


def write_file(root: Path, name: str, size: int) -> str:
    h = hashlib.sha256()
    with (root / name).open("wb") as fh:

        def out(data: bytes) -> None:
            h.update(data)
            fh.write(data)

        take(keystream(name), size, out)
    return h.hexdigest()


@dataclass(frozen=True)
class Synth:
    root: Path
    refs: list[str]  # generation 1
    refs_v2: list[str]
    files: list[dict[str, Any]]  # name, sha256, size (generation 1)
    files_v2: list[dict[str, Any]]
    blob_bytes: int  # unique image blob bytes + file bytes of generation 1

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def files_dir(self) -> Path:
        return self.root / "files"


def _write_images(
    tree: RegistryTree, images: list[ImagePlan], tmp: Path, done: dict[str, Any]
) -> list[str]:
    refs = []
    for image in images:
        descs, diffs = [], []
        for layer in image.layers:
            if layer.name not in done:
                done[layer.name] = write_layer(tree, layer, tmp)
            hexd, diff, size = done[layer.name]
            descs.append({"mediaType": OCI_LAYER, "digest": f"sha256:{hexd}", "size": size})
            diffs.append(f"sha256:{diff}")
            tree.link_blob(image.repo, hexd)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/app"]},
                "rootfs": {"type": "layers", "diff_ids": diffs},
            },
            sort_keys=True,
        ).encode()
        chex = tree.put_bytes(config)
        tree.link_blob(image.repo, chex)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": f"sha256:{chex}",
                    "size": len(config),
                },
                "layers": descs,
            },
            sort_keys=True,
        ).encode()
        mhex = tree.put_bytes(manifest)
        tree.tag(image.repo, image.tag, mhex)
        refs.append(f"{HOST}/{image.repo}:{image.tag}")
    return refs


def ensure(scale: int, cache_root: Path, say: Callable[[str], None]) -> Synth:
    """The scale's synthetic upstream, generated once (deterministic) and cached."""
    root = cache_root / f"synth-{scale}x-{FORMAT}"
    state = root / "synth.json"
    if state.is_file():
        doc = json.loads(state.read_text())
        return Synth(root=root, **doc)
    shutil.rmtree(root, ignore_errors=True)
    tmp = root / "tmp"
    tmp.mkdir(parents=True)
    (root / "files").mkdir()
    images, files = plan(scale)
    images2, files2 = changed(images, files)
    say(f"   generating the {scale}x synthetic upstream: {len(images)} images, {len(files)} files")
    tree = RegistryTree(root / "registry")
    done: dict[str, Any] = {}
    refs = _write_images(tree, images, tmp, done)
    refs2 = _write_images(tree, images2, tmp, done)
    sums = {}
    for name, size in sorted({*files, *files2}):
        sums[name] = write_file(root / "files", name, size)
    gen1_layers = {layer.name for image in images for layer in image.layers}
    blob_bytes = sum(done[n][2] for n in gen1_layers) + sum(size for _, size in files)
    doc = {
        "refs": refs,
        "refs_v2": refs2,
        "files": [{"name": n, "sha256": sums[n], "size": s} for n, s in files],
        "files_v2": [{"name": n, "sha256": sums[n], "size": s} for n, s in files2],
        "blob_bytes": blob_bytes,
    }
    shutil.rmtree(tmp)
    state.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return Synth(root=root, **doc)
