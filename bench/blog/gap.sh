#!/usr/bin/env bash
# The blog's way, air-gapped side: "Bootstrap an Air Gapped Cluster With Kubeadm" (Kubernetes
# blog, 2023-10-12) by hand on a lab node, from the files connected.sh fetched, as carried.
#
#     gap.sh install | init | podinfo | reset      (bench/blog_figures.py runs the phases)
#
# Environment: MEDIUM (the carried directory), NODE_ADDRESS (this node's address),
# CGROUP_ROOT (the kubelet's cgroup root on this host).
#
# What this machine imposes (the same values airlock's lab spec carries, typed here by hand:
# airlock_lab.cluster.LAB_NODE_SETTINGS; bench/blog_figures.py checks they still agree):
# no systemd (a daemonless systemctl is first on the node's PATH), so the cgroupfs driver in
# containerd and the kubelet; a kubelet cgroup root of its own; restrict_oom_score_adj (no
# CAP_SYS_RESOURCE); kube-proxy's conntrack maxPerCore 0 (nf_conntrack_max is read-only in a
# child network namespace); eviction thresholds for a shared disk; preflight waivers for the
# lab's version-only crictl and for kubeadm v1.27.3 built with Go 1.26. The kernel has overlay
# and br_netfilter built in and there is no modprobe: the post's `modprobe` becomes a check.
#
# The post runs its registry as a container from a carried image; here Debian's docker-registry
# (already on the host's disk) is the registry, and `skopeo copy docker-archive:FILE
# docker://REGISTRY/NAME:TAG` stands in for `load`, `tag` and `push` of each image.
# Nothing is verified: the files and images are used as they came off the medium.
set -euo pipefail

K8S=v1.27.3
M=${MEDIUM:?}
ADDR=${NODE_ADDRESS:?}
REG=$ADDR:5000

phase_install() {
  # kernel modules and settings
  printf 'overlay\nbr_netfilter\n' > /etc/modules-load.d/k8s.conf
  grep -qw overlay /proc/filesystems && test -d /proc/sys/net/bridge
  printf 'net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n' > /etc/sysctl.d/99-k8s-cri.conf
  sysctl -q -p /etc/sysctl.d/99-k8s-cri.conf
  swapoff -a

  # binaries
  install -m 0755 "$M/kubeadm" "$M/kubelet" "$M/kubectl" /usr/local/bin/
  mkdir -p /opt/cni/bin
  tar -C /opt/cni/bin -xzf "$M"/cni-plugins-linux-amd64-*.tgz
  tar -C /usr/local/bin -xzf "$M"/crictl-*-linux-amd64.tar.gz
  tar -C /usr/local -xzf "$M"/containerd-*-linux-amd64.tar.gz
  install -m 0755 "$M/runc.amd64" /usr/local/sbin/runc
  tar -C /usr/local/bin --strip-components=1 -xzf "$M"/helm-*-linux-amd64.tar.gz linux-amd64/helm

  # units: the kubelet's from the release templates, moved to /usr/local/bin; containerd's
  sed 's:/usr/bin:/usr/local/bin:g' "$M/kubelet.service" > /etc/systemd/system/kubelet.service
  mkdir -p /etc/systemd/system/kubelet.service.d
  sed 's:/usr/bin:/usr/local/bin:g' "$M/10-kubeadm.conf" > /etc/systemd/system/kubelet.service.d/10-kubeadm.conf
  cat > /etc/systemd/system/containerd.service <<'EOF'
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
EOF

  # containerd: the default config, the local registry's pause, cgroupfs, plain HTTP to it
  mkdir -p /etc/containerd "/etc/containerd/certs.d/$REG"
  containerd config default > /etc/containerd/config.toml
  sed -i -e "s|sandbox_image = .*|sandbox_image = \"$(kubeadm config images list --kubernetes-version $K8S --image-repository "$REG" | grep /pause:)\"|" -e 's|restrict_oom_score_adj = false|restrict_oom_score_adj = true|' -e 's|SystemdCgroup = true|SystemdCgroup = false|' -e 's|config_path = ""|config_path = "/etc/containerd/certs.d"|' /etc/containerd/config.toml
  printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REG" "$REG" > "/etc/containerd/certs.d/$REG/hosts.toml"
  printf 'runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\ntimeout: 10\n' > /etc/crictl.yaml

  # the local registry
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\nhttp:\n  addr: %s\n' "$REG" > /etc/docker/registry/config.yml

  systemctl daemon-reload
  systemctl enable --now containerd
  systemctl enable --now docker-registry
  systemctl enable kubelet
  timeout 60 sh -c "until curl -fsS -o /dev/null http://$REG/v2/; do sleep 1; done"

  # load, tag, push: kubeadm's images under the names kubeadm gives them with imageRepository,
  # the others under the local registry with their upstream path
  paste -d ' ' <(kubeadm config images list --kubernetes-version $K8S) <(kubeadm config images list --kubernetes-version $K8S --image-repository "$REG") > /root/push.txt
  grep -v -x -F -f <(kubeadm config images list --kubernetes-version $K8S) "$M/images.txt" | awk -v reg="$REG" '{ p = $1; sub("^[^/]*/", "", p); print $1, reg "/" p }' >> /root/push.txt
  while read -r src dest; do skopeo copy -q --dest-tls-verify=false "docker-archive:$M/images/$(echo "$src" | tr '/:' '__').tar" "docker://$dest" < /dev/null; done < /root/push.txt
}

phase_init() {
  cat > /root/kubeadm.yaml <<EOF
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: $ADDR
nodeRegistration:
  criSocket: unix:///var/run/containerd/containerd.sock
  kubeletExtraArgs:
    node-ip: $ADDR
    cgroup-root: ${CGROUP_ROOT:?}
  ignorePreflightErrors: [CRI, ImagePull, HTTPProxyCIDR]
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: $K8S
imageRepository: $REG
networking:
  podSubnet: $(grep -o '"Network": "[^"]*"' "$M/kube-flannel.yml" | cut -d '"' -f 4)
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2Gi
  nodefs.inodesFree: 5%
  imagefs.available: 2Gi
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 0
EOF
  kubeadm init --config /root/kubeadm.yaml
  mkdir -p /root/.kube && cp /etc/kubernetes/admin.conf /root/.kube/config
  kubectl taint nodes --all node-role.kubernetes.io/control-plane-

  # Flannel, its images renamed to the local registry
  cp "$M/kube-flannel.yml" /root/kube-flannel.yml
  for img in $(grep -E '^ *image:' /root/kube-flannel.yml | awk '{print $2}' | sort -u); do sed -i "s|$img|$REG/${img#*/}|g" /root/kube-flannel.yml; done
  kubectl apply -f /root/kube-flannel.yml
  kubectl wait node --all --for=condition=Ready --timeout=300s
  kubectl -n kube-system wait --for=condition=Available deployment/coredns --timeout=300s
}

phase_podinfo() {
  helm install podinfo "$M"/podinfo-*.tgz --set image.repository="$REG/$(tar -xzOf "$M"/podinfo-*.tgz podinfo/values.yaml | awk '/repository:/ {print $2}' | cut -d / -f 2-)" --wait --timeout 300s
}

phase_reset() {
  kubeadm reset -f
}

# --- dispatch (not an operator command)
case "${1:-}" in
  install | init | podinfo | reset) "phase_$1" ;;
  *) echo "usage: $0 install|init|podinfo|reset" >&2; exit 2 ;;
esac
