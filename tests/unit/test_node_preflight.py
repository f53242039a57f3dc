"""Preflight checks on sysroots (before and after prepare+install), ports by binding loopback,
the registry and kubeadm images against a local HTTP server (pytest-httpserver on 127.0.0.1);
and the inventory of a sysroot."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from pytest_httpserver import HTTPServer

from airlock.node.engine import Context, apply, plan
from airlock.node.inventory import collect_inventory
from airlock.node.osinfo import read_os_info
from airlock.node.preflight import (
    PreflightOptions,
    check_cgroups,
    check_images,
    check_modules,
    check_packages,
    check_ports,
    check_registry,
    module_present,
    run_preflight,
    summary,
)
from airlock.node.prepare import prepare_resources
from airlock.oci.layout import OciLayout, image_descriptor

sys.path.insert(0, str(Path(__file__).parent))
from test_node_install import make_source, resources_for


def by_name(results: list) -> dict:  # type: ignore[type-arg]
    return {r.name: r for r in results}


def debian_like(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    (root / "etc/fstab").write_text("/swapfile none swap sw 0 0\n")
    (root / "etc/hostname").write_text("node1\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")


def test_sysroot_checks_fail_then_pass_after_prepare_and_install(tmp_path: Path) -> None:
    root = tmp_path / "root"
    debian_like(root)
    opts = PreflightOptions(binaries=("kubeadm", "kubelet", "containerd", "runc"), min_free_bytes=1)
    before = by_name(run_preflight(root=root, options=opts))
    assert before["swap"].status == "fail" and "/swapfile" in before["swap"].message
    assert before["swap"].fix.startswith("airlock node prepare")
    assert before["modules"].status == "warn"
    assert before["sysctls"].status == "warn"
    assert before["cgroups"].status == "fail"
    assert before["binaries"].status == "fail" and "kubeadm" in before["binaries"].message
    assert before["hostname"].status == "warn" and "node1" in before["hostname"].message
    assert "ports" not in before  # the sysroot's ports are not this machine's

    ctx = Context(root=root)
    resources = prepare_resources(root=root, os_info=read_os_info(root=root))
    resources += resources_for(make_source(tmp_path), root)
    apply(plan(resources, ctx), ctx)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.0.0.1 node1\n")
    after = run_preflight(root=root, options=opts)
    assert {r.name: r.status for r in after} == {
        "swap": "ok",
        "modules": "ok",
        "sysctls": "ok",
        "cgroups": "ok",
        "binaries": "ok",
        "hostname": "ok",
        "disk": "ok",
    }
    assert summary(after)["status"] == "ok"


def test_the_specs_os_packages_are_looked_for_in_dpkgs_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: socat\nStatus: install ok installed\nVersion: 1.7.4-2\n\n"
        "Package: iptables\nStatus: deinstall ok config-files\nVersion: 1.8.9-2\n"
    )
    missing = check_packages(tmp_path, ["socat", "iptables", "conntrack"])
    assert missing.status == "fail"
    assert missing.message == "not installed: iptables, conntrack"  # removed is not installed
    assert missing.fix.startswith("airlock node install")
    opts = PreflightOptions(packages=("socat",), min_free_bytes=1)
    assert by_name(run_preflight(root=tmp_path, options=opts))["packages"].status == "ok"
    assert "packages" not in by_name(run_preflight(root=tmp_path))  # the spec names none


def test_cgroup_driver_is_the_specs_for_containerd_and_kubelet_alike(tmp_path: Path) -> None:
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    runc = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
    config.write_text(runc + "SystemdCgroup = false\n")
    assert check_cgroups(tmp_path, live=False, driver="cgroupfs").status == "ok"
    systemd = check_cgroups(tmp_path, live=False)  # the default driver: systemd
    assert systemd.status == "fail" and "does not use the systemd" in systemd.message
    kubelet = tmp_path / "var/lib/kubelet/config.yaml"
    kubelet.parent.mkdir(parents=True)
    kubelet.write_text("cgroupDriver: systemd\n")
    mixed = check_cgroups(tmp_path, live=False, driver="cgroupfs")
    assert mixed.status == "fail" and "kubelet uses systemd" in mixed.message
    config.write_text(runc + "SystemdCgroup = true\n")
    assert check_cgroups(tmp_path, live=False).status == "ok"


def test_modules_loaded_or_built_into_the_kernel(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "proc/sys/net/bridge").mkdir(parents=True)
    (host / "proc/filesystems").write_text("nodev\ttmpfs\nnodev\toverlayfs-not\n")
    assert not module_present("overlay", host=host) and not module_present(
        "br_netfilter", host=host
    )
    res = check_modules(tmp_path, live=True, host=host)
    assert res.status == "fail" and "overlay, br_netfilter" in res.message
    (host / "sys/module/overlay").mkdir(parents=True)  # loaded
    # built in: no /sys/module entry, but its sysctl is there
    (host / "proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")
    assert module_present("overlay", host=host) and module_present("br_netfilter", host=host)
    assert check_modules(tmp_path, live=True, host=host).status == "warn"  # not set for boot
    assert not module_present("nf_conntrack", host=host)
    loads = tmp_path / "etc/modules-load.d"
    loads.mkdir(parents=True)
    (loads / "modules.conf").symlink_to("../modules")  # Debian's link, its target gone
    (loads / "k8s.conf").write_text("overlay\nbr_netfilter\n")
    assert check_modules(tmp_path, live=True, host=host).status == "ok"


def test_disk_check_fails_when_too_small(tmp_path: Path) -> None:
    res = by_name(run_preflight(root=tmp_path, options=PreflightOptions(min_free_bytes=1 << 62)))
    assert res["disk"].status == "fail" and "GiB wanted" in res["disk"].message


def test_ports_bind_loopback_only() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        result = check_ports([port, free])
    assert result.status == "fail" and result.message == f"in use: {port}"
    assert check_ports([free]).status == "ok"


def test_registry_and_images(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2/").respond_with_data("{}", status=200)
    httpserver.expect_request(
        "/v2/registry.k8s.io/pause/manifests/3.9", method="HEAD"
    ).respond_with_data("", status=200)
    httpserver.expect_request(
        "/v2/registry.k8s.io/etcd/manifests/3.5.7-0", method="HEAD"
    ).respond_with_data("", status=404)
    url = httpserver.url_for("/").rstrip("/")
    assert url.startswith("http://localhost") or url.startswith("http://127.0.0.1")
    assert check_registry(url, 3).status == "ok"
    ok = check_images(url, ["registry.k8s.io/pause:3.9"], 3)
    assert ok.status == "ok"
    bad = check_images(url, ["registry.k8s.io/pause:3.9", "registry.k8s.io/etcd:3.5.7-0"], 3)
    assert bad.status == "fail" and "registry.k8s.io/etcd:3.5.7-0" in bad.message
    assert bad.message == f"1 of 2 not in {url}: registry.k8s.io/etcd:3.5.7-0"


def test_registry_unreachable_names_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    res = by_name(
        run_preflight(
            root=Path("/nonexistent-root"),
            options=PreflightOptions(
                registry_url=url,
                images=("registry.k8s.io/pause:3.9",),
                live=False,
                min_free_bytes=1,
            ),
        )
    )
    assert res["registry"].status == "fail" and url in res["registry"].message
    assert res["images"].status == "fail"


def test_inventory_of_a_sysroot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    debian_like(root)
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
    )
    ctx = Context(root=root)
    apply(plan(resources_for(make_source(tmp_path), root), ctx), ctx)
    store = OciLayout(root / "var/lib/airlock/store")
    store.init()
    digest = store.put_bytes(b"{}")
    store.merge_index([image_descriptor("registry.k8s.io/pause:3.9", "x", digest, 2)])
    inv = collect_inventory(root=root)
    assert inv["os"]["id"] == "debian" and inv["kernel"] is None
    assert inv["packages"] == [
        {"name": "bash", "version": "5.2.15-2"},
        {"name": "zlib1g", "version": "1:1.2.13"},
    ]
    paths = [b["path"] for b in inv["binaries"]]
    assert (
        paths == sorted(paths)
        and "/usr/local/sbin/runc" in paths
        and "/opt/cni/bin/bridge" in paths
    )
    assert inv["store"]["blobs"] == [digest]
    assert inv["store"]["images"] == {"registry.k8s.io/pause:3.9": digest}
    assert [m["upstream"] for m in inv["mirrors"]] == ["docker.io", "registry.k8s.io"]
    assert inv["mirrors"][1]["hosts"] == [
        "http://127.0.0.1:5000/v2/registry.k8s.io",
        "https://198.18.1.2:5000/v2/registry.k8s.io",
    ]
    # Deterministic: the same node gives the same bytes.
    assert json.dumps(inv, sort_keys=True) == json.dumps(
        collect_inventory(root=root), sort_keys=True
    )
