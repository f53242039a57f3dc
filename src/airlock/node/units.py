"""systemd units airlock writes on a node: containerd's (upstream-equivalent), the local
registry's, and the kubelet unit and drop-in from the bundle with their binary path moved to
/usr/local/bin (what the blog does with `sed`)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CONTAINERD_UNIT",
    "REGISTRY_UNIT_NAME",
    "kubelet_unit_for_local_bin",
    "render_registry_unit",
]

REGISTRY_UNIT_NAME = "airlock-registry.service"

# containerd's own containerd.service (1.7), with the binary where the release tarball puts it.
CONTAINERD_UNIT = """\
# Managed by airlock: containerd's upstream unit, binary in /usr/local/bin.
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target dbus.service

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd

Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5

# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNPROC=infinity
LimitCORE=infinity

# Comment TasksMax if your systemd version does not supports it.
# Only systemd 226 and above support this version.
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"""


def _systemd_quote(arg: str) -> str:
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\n\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_registry_unit(
    *,
    listen: str | Sequence[str],
    store: str = "/var/lib/airlock/store",
    airlock_bin: str = "/usr/local/bin/airlock",
    tls_cert: str | None = None,
    tls_key: str | None = None,
    htpasswd: str | None = None,
) -> str:
    """airlock-registry.service: serves the store (Type=notify: the server says when it is
    ready) before the kubelet starts, so kubeadm's image pulls resolve through the mirrors from
    the first boot."""
    from airlock.oci.server import parse_listen  # the same check the server makes at start

    addresses = [listen] if isinstance(listen, str) else list(listen)
    argv = [airlock_bin, "registry", "serve", "--store", store]
    for address in addresses:
        parse_listen(address)
        argv += ["--listen", address]
    if tls_cert and tls_key:
        argv += ["--tls-cert", tls_cert, "--tls-key", tls_key]
    if htpasswd:
        argv += ["--htpasswd", htpasswd]
    exec_start = " ".join(_systemd_quote(a) for a in argv)
    return f"""\
# Managed by airlock: the node's local OCI registry (images by their upstream names).
[Unit]
Description=airlock registry: serves the offline image store to containerd
After=network-online.target local-fs.target
Wants=network-online.target
Before=containerd.service kubelet.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=always
RestartSec=2
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ReadWritePaths={_systemd_quote(store)}

[Install]
WantedBy=multi-user.target
"""


def kubelet_unit_for_local_bin(text: str) -> str:
    """The kubelet unit or 10-kubeadm.conf with `/usr/bin` replaced by `/usr/local/bin`
    (the blog's `sed "s:/usr/bin:/usr/local/bin:g"`), idempotent."""
    marker = "\x00"
    return (
        text.replace("/usr/local/bin", marker)
        .replace("/usr/bin", "/usr/local/bin")
        .replace(marker, "/usr/local/bin")
    )
