"""The real seams of cluster bring-up: node detection with `ip -j`, the kubectl probe (against a
recording kubectl script that answers like the API server would), wait deadlines, and reading the
cluster CA from a cluster-info ConfigMap served over TLS on loopback."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from airlock.cluster.joinfile import ca_cert_hash, fetch_cluster_ca
from airlock.cluster.kubeadm_config import detect_node_facts
from airlock.cluster.runner import KubectlProbe, wait_until
from airlock.errors import FetchError, NodeError

pytestmark = pytest.mark.component


def test_detect_node_facts_reads_this_host() -> None:
    facts = detect_node_facts()
    assert facts.hostname
    assert any(addr.startswith("127.0.0.1/") for _, addr in facts.addresses)
    if facts.default_interface is not None and facts.default_address is not None:
        assert facts.interface_of(facts.default_address) == facts.default_interface


def fake_kubectl(tmp_path: Path, *, readyz: str, node_ready: str, coredns: int) -> Path:
    node = json.dumps({"status": {"conditions": [{"type": "Ready", "status": node_ready}]}})
    dns = json.dumps({"status": {"availableReplicas": coredns}})
    script = tmp_path / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        'case "$*" in\n'
        f"  *'get --raw /readyz') echo {readyz} ;;\n"
        f"  *'get node cp-1 -o json') echo '{node}' ;;\n"
        f"  *'get deployment coredns -o json') echo '{dns}' ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return script


def test_kubectl_probe_ready(tmp_path: Path) -> None:
    kubectl = fake_kubectl(tmp_path, readyz="ok", node_ready="True", coredns=2)
    probe = KubectlProbe(tmp_path / "admin.conf", kubectl=str(kubectl))
    assert probe.api_server_ready() and probe.node_ready("cp-1") and probe.coredns_ready()
    assert not probe.node_ready("other")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == f"--kubeconfig {tmp_path}/admin.conf get --raw /readyz"


def test_kubectl_probe_not_ready(tmp_path: Path) -> None:
    kubectl = fake_kubectl(tmp_path, readyz="[-]etcd failed", node_ready="False", coredns=0)
    probe = KubectlProbe(tmp_path / "admin.conf", kubectl=str(kubectl))
    assert not probe.api_server_ready()
    assert not probe.node_ready("cp-1")
    assert not probe.coredns_ready()
    missing = KubectlProbe(tmp_path / "admin.conf", kubectl=str(tmp_path / "no-kubectl"))
    assert not missing.api_server_ready()


def test_wait_until_deadline() -> None:
    now = [0.0]
    seen: list[str] = []

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(NodeError, match="timed out after 10s waiting for the API server"):
        wait_until(
            lambda: False,
            what="the API server",
            timeout=10,
            interval=3,
            progress=seen.append,
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert seen[0] == "waiting for the API server (0s of 10s)" and len(seen) == 4
    polls = iter([False, False, True])
    assert wait_until(lambda: next(polls), what="x", timeout=10, interval=0) == 3


@pytest.fixture
def cluster_info(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """An HTTPS server on 127.0.0.1 answering the cluster-info ConfigMap with a CA."""
    key, crt = tmp_path / "srv.key", tmp_path / "srv.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "1",
            "-subj",
            "/CN=kubernetes",
        ],
        capture_output=True,
        check=True,
    )
    ca_pem = crt.read_bytes()
    kubeconfig = (
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
        f"    certificate-authority-data: {base64.b64encode(ca_pem).decode()}\n"
        "    server: https://127.0.0.1:6443\n  name: ''\n"
    )
    body = json.dumps({"kind": "ConfigMap", "data": {"kubeconfig": kubeconfig}}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/api/v1/namespaces/kube-public/configmaps/cluster-info"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", ca_pem
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_cluster_ca(cluster_info: tuple[str, bytes]) -> None:
    endpoint, ca_pem = cluster_info
    got = fetch_cluster_ca(endpoint, timeout=5)
    assert got == ca_pem and ca_cert_hash(got) == ca_cert_hash(ca_pem)


def test_fetch_cluster_ca_unreachable() -> None:
    with pytest.raises(FetchError, match="cannot read the cluster CA"):
        fetch_cluster_ca("127.0.0.1:1", timeout=2)
