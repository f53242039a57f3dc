"""Small, real OCI content for tests: gzip layers, configs, manifests, multi-arch indexes, files.

Everything is deterministic (fixed gzip mtime, seeded bytes), so the same calls give the same
digests. Used by the bundle tests (and usable by any test that needs images in a BlobStore
without a registry); not used by airlock at run time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from airlock.blobstore import BlobStore
from airlock.bundle.writer import BundleContent
from airlock.content import Blob, BlobRole, FileArtifact, ImageArtifact, UpstreamChecksum
from airlock.oci.digest import sha256_digest
from airlock.oci.layout import canonical_json
from airlock.oci.media import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST

__all__ = [
    "Layer",
    "flip_byte",
    "make_layer",
    "put_file",
    "put_image",
    "put_index",
    "sample_content",
]


class Layer:
    """A gzip-compressed layer tar: its bytes, digest and diff id (digest of the tar)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(files):
                info = tarfile.TarInfo(name)
                info.size = len(files[name])
                info.mode = 0o755
                tar.addfile(info, io.BytesIO(files[name]))
        self.diff_id = sha256_digest(raw.getvalue())
        self.data = gzip.compress(raw.getvalue(), mtime=0)
        self.digest = sha256_digest(self.data)
        self.size = len(self.data)


def make_layer(files: Mapping[str, bytes]) -> Layer:
    return Layer(files)


def put_image(
    store: BlobStore,
    reference: str,
    layers: Sequence[Layer],
    *,
    platform: str = "linux/amd64",
) -> ImageArtifact:
    """Store an OCI image (config, layers, manifest) and describe it as the fetcher would."""
    os_name, arch = platform.split("/")[:2]
    config = canonical_json(
        {
            "architecture": arch,
            "os": os_name,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        }
    )
    for data in (config, manifest, *(layer.data for layer in layers)):
        store.put_bytes(data)
    blobs = (
        Blob(sha256_digest(manifest), len(manifest), OCI_MANIFEST, BlobRole.MANIFEST, reference),
        Blob(sha256_digest(config), len(config), OCI_CONFIG, BlobRole.CONFIG, reference),
        *(
            Blob(layer.digest, layer.size, OCI_LAYER_GZIP, BlobRole.LAYER, reference)
            for layer in layers
        ),
    )
    return ImageArtifact(
        reference, sha256_digest(manifest), OCI_MANIFEST, len(manifest), blobs, (platform,)
    )


def put_index(
    store: BlobStore, reference: str, images: Sequence[ImageArtifact], *, extra_platforms: int = 0
) -> ImageArtifact:
    """A multi-arch index over single-platform images; `extra_platforms` adds entries whose
    manifests are not stored (platforms a bundle does not carry)."""
    entries = []
    for image in images:
        os_name, arch = image.platforms[0].split("/")[:2]
        entries.append(
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": image.size,
                "platform": {"os": os_name, "architecture": arch},
            }
        )
    for n in range(extra_platforms):
        fake = hashlib.sha256(f"{reference}-{n}".encode()).hexdigest()
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": f"sha256:{fake}",
                "size": 500 + n,
                "platform": {"os": "linux", "architecture": f"s390x-{n}"},
            }
        )
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    store.put_bytes(index)
    blobs: list[Blob] = [
        Blob(sha256_digest(index), len(index), OCI_INDEX, BlobRole.INDEX, reference)
    ]
    seen = {blobs[0].digest}
    for image in images:
        for b in image.blobs:
            if b.digest not in seen:
                seen.add(b.digest)
                blobs.append(Blob(b.digest, b.size, b.media_type, b.role, reference))
    return ImageArtifact(
        reference,
        sha256_digest(index),
        OCI_INDEX,
        len(index),
        tuple(blobs),
        tuple(p for i in images for p in i.platforms),
    )


def put_file(
    store: BlobStore,
    name: str,
    data: bytes,
    *,
    kind: str = "binary",
    url: str | None = None,
    version: str = "",
    platform: str = "",
) -> FileArtifact:
    digest = store.put_bytes(data)
    url = url or f"https://example.invalid/{name}"
    return FileArtifact(
        name=name,
        kind=kind,
        url=url,
        digest=digest,
        size=len(data),
        platform=platform,
        version=version,
        checksum=UpstreamChecksum("sha256", digest.split(":", 1)[1], url + ".sha256"),
    )


def _seeded_bytes(rng: random.Random, n: int) -> bytes:
    return b"".join(rng.randbytes(min(1 << 20, n - i)) for i in range(0, n, 1 << 20))


def sample_content(
    store: BlobStore, *, name: str = "lab", big_file_size: int = 3 << 20, sequence: int = 1
) -> BundleContent:
    """Two images sharing a base layer (one multi-arch), three files (one of them big)."""
    rng = random.Random(1234)
    base = Layer({"bin/sh": b"#!busybox\n" + rng.randbytes(20000)})
    pause_amd64 = put_image(
        store, "registry.k8s.io/pause:3.9", [base, Layer({"pause": b"pause-amd64"})]
    )
    pause_arm64 = put_image(
        store,
        "registry.k8s.io/pause:3.9",
        [Layer({"pause": b"pause-arm64"})],
        platform="linux/arm64",
    )
    pause = put_index(store, "registry.k8s.io/pause:3.9", [pause_amd64, pause_arm64])
    busybox = put_image(
        store, "docker.io/library/busybox:1.36", [base, Layer({"etc/motd": b"hello\n"})]
    )
    files = [
        put_file(
            store,
            "kubeadm",
            _seeded_bytes(rng, big_file_size),
            url="https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm",
            version="v1.27.3",
            platform="linux/amd64",
        ),
        put_file(
            store,
            "kube-flannel.yml",
            b"apiVersion: v1\nkind: Namespace\n",
            kind="manifest",
            version="v0.22.0",
        ),
        put_file(store, "podinfo-6.4.0.tgz", gzip.compress(b"chart", mtime=0), kind="chart"),
    ]
    spec = {"apiVersion": "airlock/v1alpha1", "kind": "Bundle", "metadata": {"name": name}}
    return BundleContent(
        name=name,
        channel="stable",
        sequence=sequence,
        spec=spec,
        resolved={"kubernetes": "v1.27.3"},
        images=[pause, busybox],
        files=files,
    )


def flip_byte(path: Path, offset: int, mask: int = 0x01) -> None:
    """Damage a file in place: the byte at `offset` XOR `mask` (a bit flip on the medium)."""
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ mask]))
