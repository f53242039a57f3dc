"""The seed's images built from the real components (`components`), as their upstreams ship them.

Each image is the binary plus only what it needs at run time, with the entrypoint, user and
ports of the upstream image's own Dockerfile at its tag (cited per image below):

- registry.k8s.io/kube-*:VERSION: build/lib/release.sh of k8s.io/kubernetes copies the binary to
  /usr/local/bin/ on a distroless base; kubeadm's static pods name the command, so no entrypoint
  is needed (upstream's is go-runner, which is not built here). kube-proxy's base is
  distroless-iptables: Debian's iptables (legacy and nft), ip6tables, conntrack, ipset and
  their libraries; here the same Debian packages, unpacked (`debroot`). Upstream's
  iptables-wrapper, which picks legacy or nft from the rules the host already has, is not built
  (its module is not served here): `iptables` is Debian's default alternative, nft.
- registry.k8s.io/pause:3.9: build/pause/Dockerfile: /pause, USER 65535:65535.
- registry.k8s.io/etcd:3.5.7-0: cluster/images/etcd of k8s.io/kubernetes: etcd, etcdctl and
  etcdutl in /usr/local/bin, ports 2379 and 2380.
- registry.k8s.io/coredns/coredns:v1.10.1: the module's Dockerfile: scratch, the CA bundle,
  /coredns as entrypoint, 53 and 53/udp.
- docker.io/flannel/flannel:v0.22.0: images/Dockerfile.ARCH of the flannel module: flanneld in
  /opt/bin as entrypoint on alpine with iptables, ip6tables and iproute2; here busybox (`cp` and
  `sh` for the manifest's init container; the lab has no alpine) plus the same Debian layer as
  kube-proxy's.
- docker.io/flannel/flannel-cni-plugin:v1.1.2: the plugin as /flannel on a base with `cp`, which
  the Flannel manifest's init container runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import UsageError
from airlock_lab.components import Built
from airlock_lab.imagebuild import (
    AMD64,
    ARM64,
    BuiltImage,
    ImageBuilder,
    ImageConfig,
    Layer,
    MediaFlavor,
    Platform,
    TarEntry,
)

__all__ = ["BUILT_FROM_LABEL", "RealImage", "build_real_images", "real_images"]

BUILT_FROM_LABEL = "io.airlock.lab.built-from"
_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_PLATFORMS = {"amd64": AMD64, "arm64": ARM64}


@dataclass(frozen=True)
class RealImage:
    """One image: which component binaries go where, on which base, with what config."""

    ref: str
    component: str  # recipe key ("etcd-v3.5.7")
    files: tuple[tuple[str, str], ...]  # (path in image, command name)
    config: ImageConfig
    base: str = "minimal"  # "minimal" (passwd, group, nsswitch, CA bundle), "scratch", "busybox"
    push_as: MediaFlavor = "oci"
    index: bool = False  # upstream publishes an index (multi-arch) for it
    net_tools: bool = False  # iptables, iproute2 and friends from Debian (`debroot`)


def real_images(
    kubernetes_versions: Sequence[str], etcd_versions: Sequence[str] = ("3.5.7",)
) -> list[RealImage]:
    """Every image of the seed that a component build makes (`component` is a recipe key);
    etcd 3.5.15 too when the upgrade set is built (v1.28.15's kubeadm upgrades etcd to it)."""
    kube = [
        RealImage(
            f"registry.k8s.io/{name}:{version}",
            f"kubernetes-{version}",
            ((f"usr/local/bin/{name}", name),),
            ImageConfig(),
            net_tools=name == "kube-proxy",
        )
        for version in kubernetes_versions
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
    ]
    return [
        *kube,
        RealImage(
            "registry.k8s.io/pause:3.9",
            "pause-3.9",
            (("pause", "pause"),),
            ImageConfig(entrypoint=("/pause",), user="65535:65535"),
            base="scratch",
            index=True,
        ),
        *(
            RealImage(
                f"registry.k8s.io/etcd:{version}-0",
                f"etcd-v{version}",
                tuple((f"usr/local/bin/{c}", c) for c in ("etcd", "etcdctl", "etcdutl")),
                ImageConfig(exposed_ports=("2379/tcp", "2380/tcp")),
                index=True,
            )
            for version in etcd_versions
        ),
        RealImage(
            "registry.k8s.io/coredns/coredns:v1.10.1",
            "coredns-v1.10.1",
            (("coredns", "coredns"),),
            ImageConfig(entrypoint=("/coredns",), exposed_ports=("53/tcp", "53/udp")),
            base="scratch",
            push_as="docker",
            index=True,
        ),
        RealImage(
            "docker.io/flannel/flannel:v0.22.0",
            "flannel-v0.22.0",
            (("opt/bin/flanneld", "flanneld"),),
            ImageConfig(entrypoint=("/opt/bin/flanneld",)),
            base="busybox",
            push_as="docker",
            index=True,
            net_tools=True,
        ),
        RealImage(
            "docker.io/flannel/flannel-cni-plugin:v1.1.2",
            "flannel-cni-plugin-v1.1.2",
            (("flannel", "flannel"),),
            ImageConfig(cmd=("/bin/sh",)),
            base="busybox",
            push_as="docker",
            index=True,
        ),
    ]


def _minimal_layer(*, ca_bundle: bool) -> Layer:
    entries = [
        TarEntry("etc/passwd", data=b"root:x:0:0:root:/root:/sbin/nologin\n"
                 b"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
                 b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
        TarEntry("etc/group", data=b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"),
        TarEntry("etc/nsswitch.conf", data=b"hosts: files dns\n"),
        TarEntry("tmp", "dir", mode=0o1777),
    ]  # fmt: skip
    if ca_bundle and _CA_BUNDLE.is_file():
        entries.append(TarEntry("etc/ssl/certs/ca-certificates.crt", source=_CA_BUNDLE.resolve()))
    return Layer(tuple(entries), "COPY passwd group nsswitch.conf ca-certificates.crt /etc/")


def _base_layers(image: RealImage, busybox: Layer) -> tuple[Layer, ...]:
    if image.base == "busybox":
        return (busybox,)
    if image.base == "scratch":
        ca = image.component.startswith("coredns-")
        return (_minimal_layer(ca_bundle=True),) if ca else ()
    return (_minimal_layer(ca_bundle=True),)


def _net_tools_layer(
    image: RealImage, arch: str, net_tools: Mapping[str, Layer]
) -> tuple[Layer, ...]:
    if not image.net_tools:
        return ()
    if arch not in net_tools:
        raise UsageError(
            f"{image.ref} needs Debian's network tools for {arch}, which were not prepared",
            "pass debroot.net_tools_layer(debroot.unpacked_root(arch)) for every built arch",
        )
    return (net_tools[arch],)


def build_real_images(
    builder: ImageBuilder,
    images: Sequence[RealImage],
    built: Mapping[tuple[str, str], Built],
    *,
    busybox: Layer,
    net_tools: Mapping[str, Layer] | None = None,
    label: Callable[[RealImage, Built], dict[str, str]] | None = None,
) -> list[BuiltImage]:
    """Write every image whose component is built, for each architecture it was built for.

    `built` maps (recipe key, goarch) to the cached build; `net_tools` maps goarch to the
    Debian layer (`debroot.net_tools_layer`) for the images that need it.
    """
    out: list[BuiltImage] = []
    for image in images:
        arches = sorted(a for (name, a) in built if name == image.component)
        if not arches:
            continue
        variants: list[tuple[Platform, Sequence[Layer], ImageConfig]] = []
        for arch in arches:
            b = built[(image.component, arch)]
            top = Layer(
                tuple(
                    TarEntry(path, source=b.path(command), mode=0o755)
                    for path, command in image.files
                ),
                f"COPY {' '.join(c for _, c in image.files)} ({b.recipe.key}, built from its "
                "Go module)",
            )
            labels = {
                "org.opencontainers.image.ref.name": image.ref,
                "org.opencontainers.image.version": b.recipe.built_version or b.recipe.version,
                BUILT_FROM_LABEL: f"lab/components/{b.recipe.module}"
                + (f" ({b.recipe.note})" if b.recipe.note else ""),
                **(label(image, b) if label else {}),
            }
            config = ImageConfig(
                entrypoint=image.config.entrypoint,
                cmd=image.config.cmd,
                env=image.config.env,
                exposed_ports=image.config.exposed_ports,
                working_dir=image.config.working_dir,
                user=image.config.user,
                labels=labels,
            )
            layers = (
                *_base_layers(image, busybox),
                *_net_tools_layer(image, arch, net_tools or {}),
                top,
            )
            variants.append((_PLATFORMS[arch], layers, config))
        built_image = builder.add_image(image.ref, variants, force_index=image.index)
        out.append(
            BuiltImage(
                built_image.ref,
                built_image.descriptor,
                built_image.platforms,
                built_image.layer_digests,
                push_as=image.push_as,
            )
        )
    return out
