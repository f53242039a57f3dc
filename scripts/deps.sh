#!/usr/bin/env bash
# Install the Debian packages airlock's demo and tests use (only the missing ones), then the venv.
# Runs on a fresh Debian 12 machine as root, with no standard input.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(docker-registry skopeo umoci containerd runc containernetworking-plugins busybox-static
      iproute2 openssl python3-solv debootstrap python3-venv curl util-linux procps
      gpgv gpg lz4 xz-utils rpm createrepo-c dnf e2fsprogs tinyproxy iptables
      qemu-user-static binfmt-support  # the bootstrap on arm64 sysroots (make test-full)
      gcc libc6-dev file  # pause.c and Flannel's cgo build (the lab's real components)
      conntrack socat ethtool ebtables)  # kubeadm's preflight on the fleet's lab nodes
# (tests/full/test_fleet_cluster.py, whose spec carries no packages yet). The demo's and the
# cluster tests' lab nodes remove these inside their overlays and install the bundle's .debs;
# the host itself uses only iptables (tests read iptables-save).
# `make test-full` builds the real components for linux/arm64 too: pause.c needs a cross gcc
if [ "${AIRLOCK_DEPS_FULL:-}" = 1 ]; then PKGS+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross); fi
# fleet: sshd on the lab's fleet nodes (cluster up -i); haproxy, the HA fleet's load balancer
PKGS+=(openssh-server); if [ "${AIRLOCK_DEPS_FULL:-}" = 1 ]; then PKGS+=(haproxy); fi

# kubectl: Debian's kubernetes-client, unless a kubectl is already there (another package may
# own /usr/bin/kubectl, and the two conflict)
command -v kubectl >/dev/null 2>&1 || PKGS+=(kubernetes-client)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  # one apt at a time on this machine (several checkouts may run make at once)
  exec 9>/tmp/airlock-apt.lock
  flock 9
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  # the packages' own services are not wanted: tests start the daemons they need themselves
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
  rm -f /usr/sbin/policy-rc.d
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.airlock-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ lab/pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip </dev/null
  .venv/bin/python -m pip install -q -e '.[dev]' -e lab </dev/null
  touch "$stamp"
fi
