#!/usr/bin/env bash
# The blog's way, connected side: "Bootstrap an Air Gapped Cluster With Kubeadm" (Kubernetes
# blog, 2023-10-12), the same versions as airlock's seed preset, by hand, in the current
# directory (which is then copied onto the medium as it is).
#
# Differences from the post, each forced by this machine:
# - no docker daemon here: `skopeo copy docker://REF docker-archive:FILE:REF` stands in for
#   `docker pull REF && docker save -o FILE REF` (the same docker-archive tar, one per image);
# - the upstream hosts are the lab's simulated upstream: `u URL` and `r HOST` (marked "lab",
#   not counted as operator commands) say where each host is served; the post reaches the hosts.
# - the post's registry image is not carried: the gap runs Debian's docker-registry (on the
#   host's disk already), not a registry container.
#
# Nothing is verified: no checksum or signature of any binary, chart or image is checked,
# here or after the copy (the post does not either).
set -euo pipefail

K8S=v1.27.3 RELEASE_TOOLS=v0.15.1 CNI=v1.3.0 CRICTL=v1.27.0 CONTAINERD=1.7.2 RUNC=v1.1.7
HELM=v3.12.2 FLANNEL=v0.22.0 PODINFO=6.4.0
u() { echo "${UPSTREAM_FILES:?}${1#https://}"; }  # lab
r() { printf '%s\n' ${UPSTREAM_REGISTRIES:?} | sed -n "s|^$1=||p"; }  # lab

# binaries, units, manifests, chart (curl by hand)
curl -fsSLO "$(u https://dl.k8s.io/release/$K8S/bin/linux/amd64/kubeadm)"
curl -fsSLO "$(u https://dl.k8s.io/release/$K8S/bin/linux/amd64/kubelet)"
curl -fsSLO "$(u https://dl.k8s.io/release/$K8S/bin/linux/amd64/kubectl)"
curl -fsSLO "$(u https://github.com/containernetworking/plugins/releases/download/$CNI/cni-plugins-linux-amd64-$CNI.tgz)"
curl -fsSLO "$(u https://github.com/kubernetes-sigs/cri-tools/releases/download/$CRICTL/crictl-$CRICTL-linux-amd64.tar.gz)"
curl -fsSLO "$(u https://github.com/containerd/containerd/releases/download/v$CONTAINERD/containerd-$CONTAINERD-linux-amd64.tar.gz)"
curl -fsSLO "$(u https://github.com/opencontainers/runc/releases/download/$RUNC/runc.amd64)"
curl -fsSLO "$(u https://get.helm.sh/helm-$HELM-linux-amd64.tar.gz)"
curl -fsSLO "$(u https://raw.githubusercontent.com/kubernetes/release/$RELEASE_TOOLS/cmd/kubepkg/templates/latest/deb/kubelet/lib/systemd/system/kubelet.service)"
curl -fsSLO "$(u https://raw.githubusercontent.com/kubernetes/release/$RELEASE_TOOLS/cmd/kubepkg/templates/latest/deb/kubeadm/10-kubeadm.conf)"
curl -fsSLO "$(u https://github.com/flannel-io/flannel/releases/download/$FLANNEL/kube-flannel.yml)"
curl -fsSLO "$(u https://stefanprodan.github.io/podinfo/podinfo-$PODINFO.tgz)"
chmod +x kubeadm

# the images: kubeadm's list, the Flannel manifest's, the chart's
./kubeadm config images list --kubernetes-version "$K8S" > images.txt
grep -E '^ *image:' kube-flannel.yml | awk '{print $2}' | sort -u >> images.txt
tar -xzOf "podinfo-$PODINFO.tgz" podinfo/values.yaml | awk '/repository:/ {r=$2} /tag:/ {t=$2} END {print r ":" t}' >> images.txt

# one docker-archive per image (`docker pull` + `docker save`)
mkdir -p images
while read -r ref; do skopeo copy -q --src-tls-verify=false "docker://$(r "${ref%%/*}")/${ref#*/}" "docker-archive:images/$(echo "$ref" | tr '/:' '__').tar:$ref" < /dev/null; done < images.txt
