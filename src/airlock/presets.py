"""Spec presets for `airlock init`: `seed` is the blog's versions exactly; `current` a recent line."""

from __future__ import annotations

from typing import Literal

__all__ = ["PRESETS", "Preset", "preset_text"]

Preset = Literal["seed", "current"]

_SEED = """\
# airlock spec: the versions of the Kubernetes blog post
# "Bootstrap an Air Gapped Cluster With Kubeadm" (kubeadm v1.27.3, Flannel v0.22.0, podinfo 6.4.0).
apiVersion: airlock/v1alpha1
kind: Bundle
metadata:
  name: seed
  channel: stable
platforms: [linux/amd64]
kubernetes:
  version: v1.27.3
  releaseTools: v0.15.1          # kubelet.service and 10-kubeadm.conf templates
runtime:
  containerd: 1.7.2
  runc: v1.1.7
  crictl: v1.27.0
  cniPlugins: v1.3.0
network:
  cni: flannel                   # its images (flannel, flannel-cni-plugin v1.1.2) come from its manifest
  version: v0.22.0
  podSubnet: 10.244.0.0/16
tools:
  helm: v3.12.2
  k9s: v0.27.4
images:
  - docker.io/library/registry:2.8.2     # the blog's local registry
  - ghcr.io/stefanprodan/podinfo:6.4.0
charts:
  - name: podinfo
    repo: https://stefanprodan.github.io/podinfo
    version: 6.4.0
packages:
  os: fedora-37
  names: [socat, conntrack-tools, libcgroup]
  # Without repositories these names are only listed (plan warns) and `node check` looks for
  # them on the node. With repositories the packages and their dependency closure travel in the
  # bundle; point at mirrors you can reach (docs/spec.md), e.g.
  # repositories: ["http://127.0.0.1:8080/fedora/37/x86_64/os"]
"""

_CURRENT = """\
# airlock spec: a maintained recent Kubernetes line with containerd 2.x.
apiVersion: airlock/v1alpha1
kind: Bundle
metadata:
  name: current
  channel: stable
platforms: [linux/amd64]
kubernetes:
  version: v1.34.1
  releaseTools: v0.18.0
runtime:
  containerd: 2.1.4
  runc: v1.3.0
  crictl: v1.34.0
  cniPlugins: v1.8.0
network:
  cni: flannel
  version: v0.27.3
  podSubnet: 10.244.0.0/16
tools:
  helm: v3.19.0
  k9s: v0.50.9
images: []
charts: []
packages:
  os: debian-12
  names: [socat, conntrack, iptables, ebtables, ethtool]
  # Without repositories these names are only listed (plan warns) and `node check` looks for
  # them on the node. With repositories the packages and their dependency closure travel in the
  # bundle; point at mirrors you can reach (docs/spec.md), e.g.
  # repositories: ["http://127.0.0.1:8080/debian/dists/bookworm#main"]
"""

PRESETS: dict[str, str] = {"seed": _SEED, "current": _CURRENT}


def preset_text(preset: Preset, *, sources: str | None = None) -> str:
    """The preset's YAML; `sources` (a YAML block) is appended, e.g. from `airlock lab upstream`."""
    text = PRESETS[preset]
    if sources:
        text += sources if sources.endswith("\n") else sources + "\n"
    return text
