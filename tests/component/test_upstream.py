"""The simulated upstream against real tools: skopeo, docker-registry, HTTP clients, sh."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from airlock.oci.media import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from airlock.oci.ref import parse_reference
from airlock_lab import standins
from airlock_lab.internet import INTERNET_RANGE
from airlock_lab.netns import link_exists, netns_exists
from airlock_lab.realimages import BUILT_FROM_LABEL, real_images
from airlock_lab.upstream import FILE_HOSTS, REGISTRY_HOSTS, Upstream, serve_forever

pytestmark = pytest.mark.component

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ACCEPT = ", ".join(
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with _HTTP.open(req, timeout=30) as resp:
            return int(resp.status), resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers)


def registry_json(upstream: Upstream, ref: str, reference: str | None = None) -> dict[str, Any]:
    r = parse_reference(ref)
    url = f"{upstream.registries[r.registry]}/v2/{r.repository}/manifests/{reference or r.tag}"
    status, body, _ = get(url, {"Accept": _ACCEPT})
    assert status == 200, (ref, status)
    data: dict[str, Any] = json.loads(body)
    return data


def amd64_manifest(upstream: Upstream, ref: str) -> dict[str, Any]:
    top = registry_json(upstream, ref)
    if top["mediaType"] in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        (desc,) = [d for d in top["manifests"] if d["platform"]["architecture"] == "amd64"]
        return registry_json(upstream, ref, desc["digest"])
    return top


def skopeo_inspect(upstream: Upstream, ref: str, *, raw: bool) -> dict[str, Any]:
    r = parse_reference(ref)
    host = upstream.registries[r.registry].removeprefix("http://")
    argv = ["skopeo", "inspect", "--tls-verify=false"]
    if raw:
        argv.append("--raw")
    out = subprocess.run(
        [*argv, f"docker://{host}/{r.repository}:{r.tag}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _in_internet(url: str) -> bool:
    """On an address of the upstream's own namespace (not loopback: the gap proof needs an
    address the gap could reach but for its routes)."""
    host = url.removeprefix("http://").split("/")[0].split(":")[0]
    return ipaddress.ip_address(host) in INTERNET_RANGE


def test_sources_have_the_spec_shape(upstream: Upstream) -> None:
    sources = upstream.sources()
    assert set(sources) == {"files", "registries"}
    assert set(sources["files"]) == {f"https://{h}/" for h in FILE_HOSTS}
    for prefix, mirror in sources["files"].items():
        host = prefix.removeprefix("https://").rstrip("/")
        assert mirror == f"{upstream.files_url}{host}/"
        assert _in_internet(mirror)
    assert set(sources["registries"]) == set(REGISTRY_HOSTS)
    for host, entry in sources["registries"].items():
        assert entry == {"url": upstream.registries[host], "insecure": True}
        assert _in_internet(entry["url"])


def test_skopeo_inspects_every_image(upstream: Upstream) -> None:
    assert len(upstream.images) >= 15
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(
            zip(
                upstream.images,
                pool.map(lambda ref: skopeo_inspect(upstream, ref, raw=False), upstream.images),
                strict=True,
            )
        )
    real = {i.ref for i in real_images(upstream.kubernetes_versions)}
    seen_real = set()
    for ref, info in results.items():
        assert info["Architecture"] == "amd64", ref
        assert info["Os"] == "linux", ref
        labels = info["Labels"] or {}
        if BUILT_FROM_LABEL in labels:
            # built from the real component's Go module (or pause.c), never a stand-in
            assert labels[BUILT_FROM_LABEL].startswith("lab/components/"), ref
            assert "io.airlock.standin" not in labels, ref
            seen_real.add(ref)
        else:
            assert "airlock stand-in" in labels["io.airlock.standin"], ref
    # the seed's Kubernetes, etcd, CoreDNS, pause and Flannel are real; podinfo, the registry
    # and the second Kubernetes version (no build of their own here) are labelled stand-ins
    assert seen_real == {r for r in real if "v1.27.4" not in r}
    assert "registry.k8s.io/kube-apiserver:v1.27.3" in seen_real


@pytest.mark.parametrize(
    ("ref", "media_type"),
    [
        ("registry.k8s.io/pause:3.9", OCI_INDEX),
        ("ghcr.io/stefanprodan/podinfo:6.4.0", OCI_INDEX),
        ("docker.io/flannel/flannel:v0.22.0", DOCKER_MANIFEST_LIST),
        ("docker.io/flannel/flannel-cni-plugin:v1.1.2", DOCKER_MANIFEST_LIST),
        ("registry.k8s.io/coredns/coredns:v1.10.1", DOCKER_MANIFEST_LIST),
    ],
)
def test_multi_arch_images_are_indexes(upstream: Upstream, ref: str, media_type: str) -> None:
    raw = skopeo_inspect(upstream, ref, raw=True)
    assert raw["mediaType"] == media_type
    arches = {d["platform"]["architecture"] for d in raw["manifests"]}
    if "podinfo" in ref:  # a stand-in, built for both
        assert arches == {"amd64", "arm64"}
    else:  # one variant per platform the components were built for (arm64 in test-full)
        assert arches == {p.split("/")[1] for p in upstream.platforms}


def test_media_types_are_mixed(upstream: Upstream) -> None:
    kube = registry_json(upstream, "registry.k8s.io/kube-apiserver:v1.27.3")
    reg = registry_json(upstream, "docker.io/library/registry:2.8.2")
    # one platform built: a plain OCI manifest; several (make test-full): an OCI index
    assert kube["mediaType"] == (OCI_MANIFEST if len(upstream.platforms) == 1 else OCI_INDEX)
    assert reg["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert reg["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"


def test_layers_are_shared_across_images_and_registries(upstream: Upstream) -> None:
    refs = [
        "registry.k8s.io/kube-apiserver:v1.27.3",
        "registry.k8s.io/kube-scheduler:v1.27.3",
        "registry.k8s.io/etcd:3.5.7-0",
        "docker.io/flannel/flannel:v0.22.0",
        "ghcr.io/stefanprodan/podinfo:6.4.0",
    ]
    layers = {ref: [d["digest"] for d in amd64_manifest(upstream, ref)["layers"]] for ref in refs}
    api, sched, etcd, flannel, podinfo = (layers[r] for r in refs)
    assert api[0] == sched[0] == etcd[0]  # the minimal base (passwd, group, CA bundle)
    assert api[-1] != sched[-1]  # each image's own binary
    assert flannel[0] == podinfo[0]  # the busybox base, across registries
    base = flannel[0]
    status, blob, _ = get(f"{upstream.registries['ghcr.io']}/v2/stefanprodan/podinfo/blobs/{base}")
    assert status == 200 and "sha256:" + hashlib.sha256(blob).hexdigest() == base


def _checksum_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.suffix in (".sha1", ".sha256", ".sha256sum", ".sha512") or path.name in (
            "checksums.txt"
        ):
            yield path


def test_every_checksum_file_matches_its_file(upstream: Upstream) -> None:
    root = upstream.files_root
    checked = 0
    for sums in _checksum_files(root):
        rel = sums.relative_to(root).as_posix()
        status, text, _ = get(upstream.files_url + rel)
        assert status == 200, rel
        algo = {".sha512": hashlib.sha512, ".sha1": hashlib.sha1}.get(sums.suffix, hashlib.sha256)
        lines = text.decode().strip().splitlines()
        if sums.suffix in (".sha256", ".sha512") and rel.startswith("dl.k8s.io/"):
            # dl.k8s.io publishes the hex alone, no file name and no newline
            assert len(lines) == 1 and " " not in lines[0] and not text.endswith(b"\n")
            pairs = [(lines[0], sums.name.removesuffix(sums.suffix))]
        elif len(lines) == 1 and " " not in lines[0]:
            pairs = [(lines[0], sums.name.rsplit(".", 1)[0])]
        else:
            pairs = [(h, name) for h, name in (line.split("  ", 1) for line in lines)]
        for hexdigest, name in pairs:
            target = sums.parent.relative_to(root).as_posix() + "/" + name
            status, body, _ = get(upstream.files_url + target)
            assert status == 200, target
            assert algo(body).hexdigest() == hexdigest, target
            checked += 1
    # per built platform: dl.k8s.io's 7 real v1.27.3 binaries (.sha256 + .sha512), 3 CNI sums,
    # a k9s checksums.txt line, 2 helm sums; once: 3 v1.27.4 stand-ins (amd64, 2 sums each),
    # crictl, containerd, runc
    n = len(upstream.platforms)
    assert checked == n * (2 * 7 + 3 + 1 + 2) + 2 * 3 + 1 + 1 + 1


def test_real_content_is_built_or_debians(upstream: Upstream) -> None:
    status, body, _ = get(
        upstream.mirror_url(
            "https://github.com/containernetworking/plugins/releases/download/v1.3.0/"
            "cni-plugins-linux-amd64-v1.3.0.tgz"
        )
    )
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
        bridge = tar.extractfile("./bridge")
        assert bridge is not None
        assert b"CNI bridge plugin v1.3.0" in run_bytes(bridge.read(), [])
    # scripts/release.sh at v1.3.0 packs every plugin of plugins/{ipam,main,meta}, no more
    assert names[0] == "." and len(names) == 1 + 18
    assert "./host-local" in names and "./loopback" in names and "./tap" in names
    kubectl = upstream.local_path("https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubectl")
    out = subprocess.run(
        [str(kubectl), "version", "--client", "-o", "json"], capture_output=True, text=True
    )
    assert json.loads(out.stdout)["clientVersion"]["gitVersion"] == "v1.27.3"
    containerd = upstream.local_path(
        "https://github.com/containerd/containerd/releases/download/v1.7.2/"
        "containerd-1.7.2-linux-amd64.tar.gz"
    )
    with tarfile.open(containerd) as tar:
        names = tar.getnames()
    assert {"bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"} <= set(names)


def run_bytes(exe: bytes, args: list[str]) -> bytes:
    """Run an executable given as bytes (from an archive) and return its output."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exe"
        path.write_bytes(exe)
        path.chmod(0o755)
        out = subprocess.run([str(path), *args], capture_output=True, timeout=30, env={})
        return out.stdout + out.stderr


def test_range_head_and_not_found(upstream: Upstream) -> None:
    url = upstream.mirror_url(
        "https://github.com/opencontainers/runc/releases/download/v1.1.7/runc.amd64"
    )
    status, body, headers = get(url, {"Range": "bytes=1-3"})
    assert status == 206 and body == b"ELF"
    assert headers["Content-Range"].startswith("bytes 1-3/")
    req = urllib.request.Request(url, method="HEAD")
    with _HTTP.open(req, timeout=10) as resp:
        assert int(resp.headers["Content-Length"]) == Path("/usr/sbin/runc").stat().st_size
    assert get(upstream.files_url + "dl.k8s.io/release/v9.9.9/bin/linux/amd64/kubeadm")[0] == 404
    assert get(upstream.files_url + "dl.k8s.io/%2e%2e/%2e%2e/etc/passwd")[0] == 404
    log = upstream.request_log
    mine = [r for r in log if r.path.endswith("runc.amd64") and r.range == "bytes=1-3"]
    assert mine and mine[-1].remote == upstream.internet.host_ip and mine[-1].status == 206


def test_tarballs_have_upstream_layouts(upstream: Upstream) -> None:
    helm = "https://get.helm.sh/helm-v3.12.2-linux-amd64.tar.gz"
    k9s = "https://github.com/derailed/k9s/releases/download/v0.27.4/k9s_Linux_amd64.tar.gz"
    crictl = (
        "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.27.0/"
        "crictl-v1.27.0-linux-amd64.tar.gz"
    )
    layouts = {
        helm: (
            ["linux-amd64", "linux-amd64/LICENSE", "linux-amd64/README.md", "linux-amd64/helm"],
            "linux-amd64/helm",
            ["version", "--short"],
            b"v3.12.2",
        ),
        k9s: (["LICENSE", "README.md", "k9s"], "k9s", ["version", "--short"], b"v0.27.4"),
    }
    for url, (names, member, args, version) in layouts.items():
        with tarfile.open(upstream.local_path(url)) as tar:
            assert sorted(tar.getnames()) == names, url
            fh = tar.extractfile(member)
            assert fh is not None, url
            assert version in run_bytes(fh.read(), args), url
    # crictl v1.27.0 cannot be built here (the module proxy does not serve it): still a
    # labelled stand-in
    with tarfile.open(upstream.local_path(crictl)) as tar:
        fh = tar.extractfile("crictl")
        assert fh is not None
        assert standins.STANDIN_MARKER in fh.read(300).decode()


def test_systemd_templates(upstream: Upstream) -> None:
    base = (
        "https://raw.githubusercontent.com/kubernetes/release/v0.15.1/cmd/kubepkg/templates/"
        "latest/deb"
    )
    status, unit, _ = get(upstream.mirror_url(f"{base}/kubelet/lib/systemd/system/kubelet.service"))
    assert status == 200 and b"ExecStart=/usr/bin/kubelet\n" in unit
    status, dropin, _ = get(upstream.mirror_url(f"{base}/kubeadm/10-kubeadm.conf"))
    assert status == 200 and b"ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in dropin


def test_kube_flannel_manifest_names_three_images(upstream: Upstream) -> None:
    url = "https://github.com/flannel-io/flannel/releases/download/v0.22.0/kube-flannel.yml"
    status, body, _ = get(upstream.mirror_url(url))
    assert status == 200
    docs = [d for d in YAML(typ="safe").load_all(body.decode()) if d]
    kinds = [d["kind"] for d in docs]
    assert {"Namespace", "ClusterRole", "ServiceAccount", "ConfigMap", "DaemonSet"} <= set(kinds)
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    images = [c["image"] for c in pod["initContainers"] + pod["containers"]]
    assert images == [
        "docker.io/flannel/flannel-cni-plugin:v1.1.2",
        "docker.io/flannel/flannel:v0.22.0",
        "docker.io/flannel/flannel:v0.22.0",
    ]
    assert [c["name"] for c in pod["initContainers"]] == ["install-cni-plugin", "install-cni"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert json.loads(cm["data"]["net-conf.json"])["Network"] == "10.244.0.0/16"
    assert set(images) <= set(upstream.images)


def test_chart_repo_points_at_a_chart_that_exists(upstream: Upstream) -> None:
    status, body, _ = get(upstream.mirror_url("https://stefanprodan.github.io/podinfo/index.yaml"))
    assert status == 200
    index = YAML(typ="safe").load(body.decode())
    (entry,) = index["entries"]["podinfo"]
    assert entry["version"] == "6.4.0"
    (url,) = entry["urls"]
    assert url == "https://stefanprodan.github.io/podinfo/podinfo-6.4.0.tgz"
    status, chart, _ = get(upstream.mirror_url(url))
    assert status == 200
    assert hashlib.sha256(chart).hexdigest() == entry["digest"]
    with tarfile.open(fileobj=io.BytesIO(chart), mode="r:gz") as tar:

        def read(name: str) -> Any:
            fh = tar.extractfile(name)
            assert fh is not None
            return YAML(typ="safe").load(fh.read().decode())

        values = read("podinfo/values.yaml")
        meta = read("podinfo/Chart.yaml")
        deployment = tar.extractfile("podinfo/templates/deployment.yaml")
        assert deployment is not None
        template = deployment.read().decode()
    assert values["image"]["repository"] == "ghcr.io/stefanprodan/podinfo"
    assert str(values["image"]["tag"]) == "6.4.0"
    annotated = YAML(typ="safe").load(meta["annotations"]["artifacthub.io/images"])
    assert annotated == [{"name": "podinfo", "image": "ghcr.io/stefanprodan/podinfo:6.4.0"}]
    assert "{{ .Values.image.repository }}:{{ .Values.image.tag }}" in template
    assert "ghcr.io/stefanprodan/podinfo:6.4.0" in upstream.images


@pytest.mark.parametrize("version", ["v1.27.3", "v1.27.4"])
def test_served_kubeadm_lists_images_the_registries_hold(
    upstream: Upstream, version: str, tmp_path: Path
) -> None:
    url = f"https://dl.k8s.io/release/{version}/bin/linux/amd64/kubeadm"
    status, body, _ = get(upstream.mirror_url(url))
    assert status == 200
    kubeadm = tmp_path / "kubeadm"
    kubeadm.write_bytes(body)
    kubeadm.chmod(0o755)
    short = subprocess.run([str(kubeadm), "version", "-o", "short"], capture_output=True, text=True)
    assert short.stdout.strip() == version
    listed = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version", version],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(listed) == 7
    assert set(listed) <= set(upstream.images)
    status, constants, _ = get(
        upstream.mirror_url(
            f"https://raw.githubusercontent.com/kubernetes/kubernetes/{version}/"
            "cmd/kubeadm/app/constants/constants.go"
        )
    )
    assert status == 200 and b'DefaultEtcdVersion = "3.5.7-0"' in constants


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _port_closed(url: str) -> bool:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) != 0


def test_stop_leaves_no_process(upstream: Upstream) -> None:
    # Same cache as the session fixture: this start only starts daemons.
    second = Upstream.start(upstream.workdir)
    pids = second.pids
    urls = [*second.registries.values(), second.files_url]
    assert len(pids) == 3 and all(not _gone(p) for p in pids)
    assert second.registries != upstream.registries  # its own ports
    status, _, _ = get(second.registries["docker.io"] + "/v2/")
    assert status == 200
    second.stop()
    assert all(_gone(p) for p in pids)
    assert not netns_exists(second.internet.netns) and not link_exists(second.internet.host_link)
    assert all(_port_closed(u) for u in urls)  # the host's blackhole for the range answers
    assert not second.run_dir.exists()
    second.stop()  # idempotent
    assert upstream.alive()  # the session's upstream is untouched


def test_serve_forever_writes_sources_and_stops(upstream: Upstream, tmp_path: Path) -> None:
    out = tmp_path / "sources.yaml"
    stop = threading.Event()
    seen: list[Upstream] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve_forever(upstream.workdir, sources_out=out, ready=seen.append, stop_event=stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not seen and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen, errors
    up = seen[0]
    written = YAML(typ="safe").load(out.read_text())
    assert written == {"sources": up.sources()}
    pids = up.pids
    stop.set()
    thread.join(60)
    assert not thread.is_alive() and not errors
    assert all(_gone(p) for p in pids)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_podinfo_and_pause_run_under_containerd(upstream: Upstream, tmp_path: Path) -> None:
    """Pulled by original name from the upstream registries, run by containerd + runc."""
    from airlock_lab.containerd import ContainerdDaemon

    daemon = ContainerdDaemon(tmp_path / "ctd")
    for host, url in upstream.registries.items():
        hosts = daemon.hosts_dir / host / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(
            f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
    port = _free_port()
    try:
        daemon.start()
        podinfo, pause = "ghcr.io/stefanprodan/podinfo:6.4.0", "registry.k8s.io/pause:3.9"
        daemon.pull(podinfo)
        daemon.pull(pause)
        daemon.run(podinfo, "podinfo", args=["/usr/local/bin/podinfo", f"--port={port}"])
        daemon.run(pause, "pause")
        body = b""
        for _ in range(100):  # 10 s at most
            status, body, _ = get(f"http://127.0.0.1:{port}/")
            if status == 200:
                break
            time.sleep(0.1)
        doc = json.loads(body)
        assert doc["version"] == "6.4.0" and doc["message"] == "podinfo stand-in"
        assert doc["hostname"]
        assert get(f"http://127.0.0.1:{port}/healthz")[1] == b'{"status":"OK"}\n'
        assert daemon.tasks() == {"pause": "RUNNING", "podinfo": "RUNNING"}
        # Both trap SIGTERM (as PID 1 they would ignore it otherwise): they stop at once.
        daemon.kill("pause", sig="SIGTERM")
        daemon.kill("podinfo", sig="SIGTERM")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and set(daemon.tasks().values()) != {"STOPPED"}:
            time.sleep(0.2)
        assert set(daemon.tasks().values()) == {"STOPPED"}
    finally:
        daemon.stop()
