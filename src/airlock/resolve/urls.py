"""Upstream URLs of every release artifact, and the spec's mirrors applied to them (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FileSpec", "apply_mirror", "release_files"]


@dataclass(frozen=True)
class FileSpec:
    kind: str
    name: str
    version: str
    url: str
    checksum_url: str | None
    platform: str = ""


def apply_mirror(url: str, mirrors: Mapping[str, str]) -> str:
    """Replace the longest matching prefix (the spec's `sources.files`)."""
    best = max((p for p in mirrors if url.startswith(p)), key=len, default=None)
    return url if best is None else mirrors[best] + url[len(best) :]


def _arch(platform: str) -> str:
    return platform.split("/")[1]


def release_files(
    *,
    kubernetes: str,
    release_tools: str,
    containerd: str,
    runc: str,
    crictl: str,
    cni_plugins: str,
    platforms: list[str],
    helm: str | None,
    k9s: str | None,
) -> list[FileSpec]:
    """Every binary, archive and systemd file of the blog's list, per platform."""
    out: list[FileSpec] = []
    gh = "https://github.com"
    for platform in platforms:
        a = _arch(platform)
        for b in ("kubeadm", "kubelet", "kubectl"):
            url = f"https://dl.k8s.io/release/{kubernetes}/bin/linux/{a}/{b}"
            out.append(FileSpec("binary", b, kubernetes, url, url + ".sha256", platform))
        url = f"{gh}/containernetworking/plugins/releases/download/{cni_plugins}/cni-plugins-linux-{a}-{cni_plugins}.tgz"
        out.append(FileSpec("archive", "cni-plugins", cni_plugins, url, url + ".sha256", platform))
        url = f"{gh}/kubernetes-sigs/cri-tools/releases/download/{crictl}/crictl-{crictl}-linux-{a}.tar.gz"
        out.append(FileSpec("archive", "crictl", crictl, url, url + ".sha256", platform))
        url = f"{gh}/containerd/containerd/releases/download/v{containerd}/containerd-{containerd}-linux-{a}.tar.gz"
        out.append(FileSpec("archive", "containerd", containerd, url, url + ".sha256sum", platform))
        base = f"{gh}/opencontainers/runc/releases/download/{runc}"
        out.append(
            FileSpec("binary", "runc", runc, f"{base}/runc.{a}", f"{base}/runc.sha256sum", platform)
        )
        if helm:
            url = f"https://get.helm.sh/helm-{helm}-linux-{a}.tar.gz"
            out.append(FileSpec("archive", "helm", helm, url, url + ".sha256sum", platform))
        if k9s:
            base = f"{gh}/derailed/k9s/releases/download/{k9s}"
            k9s_arch = {"amd64": "amd64", "arm64": "arm64"}.get(a, a)
            url = f"{base}/k9s_Linux_{k9s_arch}.tar.gz"
            out.append(FileSpec("archive", "k9s", k9s, url, f"{base}/checksums.txt", platform))
    tmpl = f"https://raw.githubusercontent.com/kubernetes/release/{release_tools}/cmd/kubepkg/templates/latest/deb"
    out.append(
        FileSpec(
            "systemd",
            "kubelet.service",
            release_tools,
            f"{tmpl}/kubelet/lib/systemd/system/kubelet.service",
            None,
        )
    )
    out.append(
        FileSpec(
            "systemd", "10-kubeadm.conf", release_tools, f"{tmpl}/kubeadm/10-kubeadm.conf", None
        )
    )
    return out


def cni_manifest_url(cni: str, version: str) -> str:
    if cni == "flannel":
        return f"https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml"
    if cni == "calico":
        return f"https://raw.githubusercontent.com/projectcalico/calico/{version}/manifests/calico.yaml"
    raise ValueError(cni)


__all__ += ["cni_manifest_url"]
