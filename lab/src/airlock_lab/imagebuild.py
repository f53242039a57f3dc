"""Build OCI and Docker images into an `OciLayout`, byte for byte deterministic.

The simulated upstream needs real images (real tars, configs, manifests, indexes, shared base
layers) without a Docker engine or the internet. This is a small image writer: tar entries are
sorted, mtimes 0, uid/gid 0, gzip carries mtime 0 and no file name, JSON is canonical; so the
same inputs always give the same digests (on one zlib version).

`build_seed_images` builds the seed set of the blog post (kube-* for each requested version,
pause, etcd, coredns, flannel, the registry and podinfo) from Debian's static busybox plus
clearly labelled stand-in payloads.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import tarfile
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from airlock.atomic import atomic_writer
from airlock.errors import UsageError
from airlock.oci.layout import OciLayout, canonical_json, image_descriptor
from airlock.oci.media import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from airlock_lab import standins

__all__ = [
    "AMD64",
    "ARCH_NOTE_LABEL",
    "ARM64",
    "BUSYBOX_APPLETS",
    "BUSYBOX_PATH",
    "STANDIN_LABEL",
    "BuiltImage",
    "Descriptor",
    "ImageBuilder",
    "ImageConfig",
    "Layer",
    "MediaFlavor",
    "Platform",
    "TarEntry",
    "build_seed_images",
    "busybox_base_layer",
    "gzip_bytes",
    "seed_image_refs",
    "tar_bytes",
    "write_tar",
    "write_tgz",
]

MediaFlavor = Literal["oci", "docker"]

BUSYBOX_PATH = Path("/usr/bin/busybox")
BUSYBOX_APPLETS = (
    "ash", "cat", "chmod", "cp", "echo", "env", "false", "grep", "gzip", "head", "hostname",
    "httpd", "id", "kill", "ln", "ls", "mkdir", "mv", "nc", "printf", "ps", "rm", "sed", "sh",
    "sleep", "tail", "tar", "test", "touch", "true", "uname", "wget",
)  # fmt: skip
STANDIN_LABEL = "io.airlock.standin"
ARCH_NOTE_LABEL = "io.airlock.standin.arch-note"
_EPOCH = "1970-01-01T00:00:00Z"
_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MiB = 1 << 20


@dataclass(frozen=True)
class TarEntry:
    """One tar member. Files carry `data` (bytes) or `source` (a host file streamed in)."""

    path: str  # relative, no leading "/", e.g. "bin/busybox"
    kind: Literal["file", "dir", "symlink"] = "file"
    data: bytes = b""
    source: Path | None = None
    mode: int = 0o644
    target: str = ""  # symlink target


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _normalise(entries: Iterable[TarEntry]) -> list[TarEntry]:
    """Add missing parent directories, refuse duplicates, sort by path (tar order is stable)."""
    by_path: dict[str, TarEntry] = {}
    for e in entries:
        p = e.path.strip("/")
        if not p or ".." in p.split("/"):
            raise UsageError(f"bad tar entry path {e.path!r}")
        if p in by_path:
            raise UsageError(f"duplicate tar entry {p!r}")
        by_path[p] = TarEntry(p, e.kind, e.data, e.source, e.mode, e.target)
    for p in list(by_path):
        for parent in _parents(p):
            by_path.setdefault(parent, TarEntry(parent, "dir", mode=0o755))
    return [by_path[p] for p in sorted(by_path)]


def write_tar(out: BinaryIO, entries: Iterable[TarEntry], *, dot_root: bool = False) -> None:
    """Write a deterministic tar: sorted, mtime 0, uid/gid 0, no user or group names.

    `dot_root` names members `./x` under a `./` entry, as some release tarballs do (CNI plugins).
    """
    normalised = _normalise(entries)
    if dot_root:
        normalised.insert(0, TarEntry(".", "dir", mode=0o755))
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in normalised:
            name = e.path if not dot_root or e.path == "." else "./" + e.path
            info = tarfile.TarInfo(name if e.kind != "dir" else name + "/")
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                tar.addfile(info)
            elif e.source is not None:
                info.size = e.source.stat().st_size
                with e.source.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))


def write_tgz(
    target: Path, entries: Iterable[TarEntry], *, dot_root: bool = False, level: int = 6
) -> None:
    """A deterministic .tar.gz written atomically (gzip mtime 0, no file name in the header)."""
    with (
        atomic_writer(target) as fh,
        gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=level, mtime=0) as gz,
    ):
        write_tar(gz, entries, dot_root=dot_root)  # type: ignore[arg-type]


def tar_bytes(entries: Iterable[TarEntry]) -> bytes:
    buf = io.BytesIO()
    write_tar(buf, entries)
    return buf.getvalue()


def gzip_bytes(data: bytes, *, level: int = 6) -> bytes:
    """gzip with mtime 0 and no file name in the header, so the bytes depend on data only."""
    return gzip.compress(data, compresslevel=level, mtime=0)


@dataclass(frozen=True)
class Platform:
    architecture: str
    os: str = "linux"
    variant: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)


AMD64 = Platform("amd64")
ARM64 = Platform("arm64", variant="v8")


@dataclass(frozen=True)
class Layer:
    """A layer to build: its entries and a history line (`created_by`)."""

    entries: tuple[TarEntry, ...]
    created_by: str


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (_PATH_ENV,)
    exposed_ports: tuple[str, ...] = ()  # "9898/tcp"
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


@dataclass(frozen=True)
class BuiltImage:
    """An image written into the layout under its full reference."""

    ref: str
    descriptor: Descriptor  # top level: a manifest or an index
    platforms: tuple[Platform, ...]
    layer_digests: tuple[str, ...]  # every layer of every platform (compressed digests)
    push_as: MediaFlavor = "oci"  # how the upstream serves it ("docker": skopeo --format v2s2)


@dataclass(frozen=True)
class _LayerBlob:
    digest: str
    size: int
    diff_id: str


class ImageBuilder:
    """Writes layers, configs, manifests and indexes into one layout; shared layers once."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout
        self.layout.init()
        self._layers: dict[tuple[str, ...], _LayerBlob] = {}

    def _put_json(self, obj: dict[str, Any]) -> tuple[str, int]:
        data = canonical_json(obj)
        return self.layout.put_bytes(data), len(data)

    def add_layer(self, layer: Layer) -> _LayerBlob:
        raw = tar_bytes(layer.entries)
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        key = (diff_id,)
        if key not in self._layers:
            gz = gzip_bytes(raw)
            self._layers[key] = _LayerBlob(self.layout.put_bytes(gz), len(gz), diff_id)
        return self._layers[key]

    def add_manifest(
        self,
        layers: Sequence[Layer],
        config: ImageConfig,
        *,
        platform: Platform = AMD64,
        flavor: MediaFlavor = "oci",
    ) -> tuple[Descriptor, tuple[str, ...]]:
        """One platform's image: layers, config, manifest. Returns its descriptor and layers."""
        blobs = [self.add_layer(layer) for layer in layers]
        cfg: dict[str, Any] = {
            "Env": list(config.env),
            "Labels": dict(sorted(config.labels.items())),
        }
        if config.entrypoint:
            cfg["Entrypoint"] = list(config.entrypoint)
        if config.cmd:
            cfg["Cmd"] = list(config.cmd)
        if config.exposed_ports:
            cfg["ExposedPorts"] = {p: {} for p in sorted(config.exposed_ports)}
        if config.working_dir:
            cfg["WorkingDir"] = config.working_dir
        if config.user:
            cfg["User"] = config.user
        image_config: dict[str, Any] = {
            **platform.to_json(),
            "created": _EPOCH,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in blobs]},
            "history": [{"created": _EPOCH, "created_by": layer.created_by} for layer in layers],
        }
        config_type, layer_type, manifest_type = (
            (OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST)
            if flavor == "oci"
            else (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST)
        )
        config_digest, config_size = self._put_json(image_config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config_size},
            "layers": [
                {"mediaType": layer_type, "digest": b.digest, "size": b.size} for b in blobs
            ],
        }
        digest, size = self._put_json(manifest)
        return Descriptor(manifest_type, digest, size, platform), tuple(b.digest for b in blobs)

    def add_index(
        self, manifests: Sequence[Descriptor], *, flavor: MediaFlavor = "oci"
    ) -> Descriptor:
        media_type = OCI_INDEX if flavor == "oci" else DOCKER_MANIFEST_LIST
        index = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [m.to_json() for m in manifests],
        }
        digest, size = self._put_json(index)
        return Descriptor(media_type, digest, size)

    def add_image(
        self,
        ref: str,
        variants: Sequence[tuple[Platform, Sequence[Layer], ImageConfig]],
        *,
        flavor: MediaFlavor = "oci",
        force_index: bool = False,
    ) -> BuiltImage:
        """An image under `ref`: a plain manifest for one platform, an index for several."""
        if not variants:
            raise UsageError(f"image {ref} has no platform")
        built = [self.add_manifest(ls, c, platform=p, flavor=flavor) for p, ls, c in variants]
        layer_digests = tuple(dict.fromkeys(d for _, ds in built for d in ds))
        if len(built) == 1 and not force_index:
            top = Descriptor(built[0][0].media_type, built[0][0].digest, built[0][0].size)
        else:
            top = self.add_index([desc for desc, _ in built], flavor=flavor)
        self.layout.merge_index([image_descriptor(ref, top.media_type, top.digest, top.size)])
        return BuiltImage(ref, top, tuple(p for p, _, _ in variants), layer_digests)


# --- the seed set ------------------------------------------------------------------------


def busybox_base_layer(busybox: Path = BUSYBOX_PATH) -> Layer:
    """Debian's static busybox with its applet symlinks and a minimal /etc: the shared base."""
    if not busybox.is_file():
        raise UsageError(
            f"{busybox} not found: the simulated upstream builds its images on busybox",
            "install Debian's busybox-static (apt-get install busybox-static)",
        )
    entries = [
        TarEntry("bin/busybox", source=busybox, mode=0o755),
        *(TarEntry(f"bin/{a}", "symlink", target="busybox") for a in BUSYBOX_APPLETS),
        TarEntry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        TarEntry("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n"),
        TarEntry("etc/hosts", data=b"127.0.0.1\tlocalhost\n"),
        TarEntry("root", "dir", mode=0o700),
        TarEntry("tmp", "dir", mode=0o1777),
        TarEntry("usr/local/bin", "dir", mode=0o755),
        TarEntry("var/run", "dir", mode=0o755),
    ]  # fmt: skip
    return Layer(tuple(entries), "COPY busybox-static /bin/busybox (+ applet symlinks)")


def _kube_base_layer() -> Layer:
    """Shared by every kube-* image of every version, as go-runner/distroless is upstream."""
    return Layer(
        (
            TarEntry("go-runner", data=standins.go_runner_script(), mode=0o755),
            TarEntry("etc/nsswitch.conf", data=b"hosts: files dns\n"),
            TarEntry("etc/ssl/certs", "dir", mode=0o755),
        ),
        "COPY go-runner /go-runner",
    )


@dataclass(frozen=True)
class _Seed:
    ref: str
    binary_path: str  # where the stand-in payload lives in the image
    payload_mib: float  # size of its pseudo-random weight
    config: ImageConfig
    arches: tuple[Platform, ...] = (AMD64,)
    # skopeo reads only OCI media types from a layout, so every seed is built as OCI and the
    # "docker" ones are converted on push (`--format v2s2`), as real registries serve both.
    push_as: MediaFlavor = "oci"
    kube_base: bool = False
    extra: tuple[TarEntry, ...] = ()


def _kube_seeds(version: str) -> list[_Seed]:
    sizes = {
        "kube-apiserver": 3.0,
        "kube-controller-manager": 2.5,
        "kube-scheduler": 1.0,
        "kube-proxy": 1.5,
    }
    return [
        _Seed(
            f"registry.k8s.io/{name}:{version}",
            f"usr/local/bin/{name}",
            mib,
            ImageConfig(entrypoint=(f"/usr/local/bin/{name}",)),
            kube_base=True,
        )
        for name, mib in sizes.items()
    ]


def _seeds(kubernetes_versions: Sequence[str]) -> list[_Seed]:
    multi = (AMD64, ARM64)
    seeds = [s for v in kubernetes_versions for s in _kube_seeds(v)]
    seeds += [
        _Seed(
            "registry.k8s.io/pause:3.9",
            "pause",
            0,
            ImageConfig(entrypoint=("/pause",), user="65535:65535"),
            arches=multi,
        ),
        _Seed(
            "registry.k8s.io/etcd:3.5.7-0",
            "usr/local/bin/etcd",
            2.5,
            ImageConfig(cmd=("/usr/local/bin/etcd",), exposed_ports=("2379/tcp", "2380/tcp")),
        ),
        _Seed(
            "registry.k8s.io/coredns/coredns:v1.10.1",
            "coredns",
            1.0,
            ImageConfig(entrypoint=("/coredns",), exposed_ports=("53/tcp", "53/udp")),
            arches=multi,
            push_as="docker",
        ),
        _Seed(
            "docker.io/flannel/flannel:v0.22.0",
            "opt/bin/flanneld",
            1.0,
            ImageConfig(entrypoint=("/opt/bin/flanneld",)),
            arches=multi,
            push_as="docker",
        ),
        _Seed(
            "docker.io/flannel/flannel-cni-plugin:v1.1.2",
            "flannel",
            0.5,
            ImageConfig(cmd=("/bin/sh",)),
            arches=multi,
            push_as="docker",
        ),
        _Seed(
            "docker.io/library/registry:2.8.2",
            "bin/registry",
            1.0,
            ImageConfig(
                entrypoint=("/bin/registry",),
                cmd=("serve", "/etc/docker/registry/config.yml"),
                exposed_ports=("5000/tcp",),
            ),
            push_as="docker",
            extra=(TarEntry("etc/docker/registry/config.yml", data=standins.REGISTRY_CONFIG),),
        ),
        _Seed(
            "ghcr.io/stefanprodan/podinfo:6.4.0",
            "usr/local/bin/podinfo",
            0.75,
            ImageConfig(
                entrypoint=("/usr/local/bin/podinfo",),
                exposed_ports=("9898/tcp",),
                working_dir="/home/app",
            ),
            arches=multi,
            extra=(TarEntry("home/app", "dir", mode=0o755),),
        ),
    ]
    return seeds


def seed_image_refs(kubernetes_versions: Sequence[str] = ("v1.27.3", "v1.27.4")) -> list[str]:
    """The full references `build_seed_images` writes, in build order."""
    return [s.ref for s in _seeds(kubernetes_versions)]


def _seed_variant(seed: _Seed, platform: Platform, base: Layer) -> tuple[Layer, ...]:
    name = seed.ref.rsplit("/", 1)[-1]
    payload = standins.standin_executable(
        seed.ref, platform=str(platform), payload_size=int(seed.payload_mib * _MiB)
    )
    top = Layer(
        (TarEntry(seed.binary_path, data=payload, mode=0o755), *seed.extra),
        f"COPY {name} stand-in /{seed.binary_path}",
    )
    layers = [base]
    if seed.kube_base:
        layers.append(_kube_base_layer())
    layers.append(top)
    return tuple(layers)


def build_seed_images(
    layout: OciLayout,
    *,
    kubernetes_versions: Sequence[str] = ("v1.27.3", "v1.27.4"),
    busybox: Path = BUSYBOX_PATH,
    replaced: Collection[str] = (),
) -> list[BuiltImage]:
    """Write the blog's image set into `layout`; every image shares the busybox base layer.

    `replaced` names the references that are built from the real components instead
    (`realimages`); no stand-in is written for them.
    """
    builder = ImageBuilder(layout)
    base = busybox_base_layer(busybox)
    images: list[BuiltImage] = []
    for seed in _seeds(kubernetes_versions):
        if seed.ref in replaced:
            continue
        variants = []
        for platform in seed.arches:
            labels = {
                STANDIN_LABEL: f"airlock stand-in for {seed.ref}: busybox plus a pseudo-random "
                "payload, not the real software",
                "org.opencontainers.image.ref.name": seed.ref,
            }
            if platform != AMD64:
                labels[ARCH_NOTE_LABEL] = (
                    f"{platform} variant carries the amd64 busybox binary; it is a stand-in "
                    "and will not run on that architecture"
                )
            config = dataclasses.replace(seed.config, labels=labels)
            variants.append((platform, _seed_variant(seed, platform, base), config))
        built = builder.add_image(seed.ref, variants, force_index=len(variants) > 1)
        images.append(dataclasses.replace(built, push_as=seed.push_as))
    return images
