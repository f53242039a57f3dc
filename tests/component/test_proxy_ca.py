"""Proxies and private CAs on every download path, with a real proxy (Debian's tinyproxy).

The lab's upstream (plain http on 127.0.0.1) is put behind HTTPS fronts of our own whose
certificates come from a private CA: one front for every file host (127.0.0.7), one per
registry (127.0.0.8). tinyproxy listens on 127.0.0.5 and opens its upstream connections from
127.0.0.6 (`Bind`), so each front knows, from the client address alone, whether a request came
through the proxy. `airlock bundle create` and `airlock plan` run as a user would run them,
with HTTPS_PROXY / HTTP_PROXY / NO_PROXY in their environment.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from registry_fronts import Loop, Tap
from ruamel.yaml import YAML

from airlock import system
from airlock.blobstore import BlobStore
from airlock.bundle.wheelhouse import build_wheelhouse
from airlock.errors import FetchError, RegistryError
from airlock.fetch.downloader import FileRequest, fetch_files
from airlock.fetch.network import NetworkOptions
from airlock.oci.certs import generate_certs, server_ssl_context
from airlock.oci.client import Endpoint, pull_images
from airlock.oci.ref import parse_reference
from airlock.presets import preset_text
from airlock_lab.distribution import free_port
from airlock_lab.upstream import Upstream

pytestmark = pytest.mark.component

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
PROXY_ADDR, PROXY_OUT, FILES_ADDR, REGISTRY_ADDR = (
    "127.0.0.5",
    "127.0.0.6",
    "127.0.0.7",
    "127.0.0.8",
)
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")


@dataclass
class Tinyproxy:
    url: str
    log: Path
    process: system.Process


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    binary = system.which("tinyproxy")
    if binary is None:
        pytest.fail("tinyproxy is required for this test (apt-get install tinyproxy)")
    tmp = tmp_path_factory.mktemp("tinyproxy")
    port = free_port(PROXY_ADDR)
    conf = tmp / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen {PROXY_ADDR}\nBind {PROXY_OUT}\nTimeout 120\nMaxClients 64\n"
        f'LogLevel Connect\nDisableViaHeader Yes\nPidFile "{tmp / "pid"}"\n'
    )
    log = tmp / "tinyproxy.log"
    proc = system.spawn([binary, "-d", "-c", str(conf)], log=log)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex((PROXY_ADDR, port)) == 0:
                    break
            if not proc.alive():
                pytest.fail(f"tinyproxy did not start: {log.read_text()[-800:]}")
            time.sleep(0.05)
        yield Tinyproxy(f"http://{PROXY_ADDR}:{port}", log, proc)
    finally:
        proc.stop()


@dataclass
class Fronts:
    loop: Loop
    ca: Path
    files: Tap
    registries: dict[str, Tap]
    sources: dict[str, object]

    def peers(self) -> dict[str, set[str]]:
        out = {"files": set(self.files.peers)}
        for host, tap in self.registries.items():
            out[host] = set(tap.peers)
        return out

    def reset(self) -> None:
        for tap in (self.files, *self.registries.values()):
            tap.peers.clear()
            tap.seen.clear()


@pytest.fixture(scope="module")
def fronts(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronts]:
    tmp = tmp_path_factory.mktemp("pki")
    # airlock's own wheelhouse is built by pip from the package index, which this test's proxy
    # (it reaches loopback only) cannot reach: build it into the user cache first, unproxied
    build_wheelhouse(tmp / "wheelhouse")
    certs = generate_certs(tmp, names=["localhost"], addresses=[FILES_ADDR, REGISTRY_ADDR])
    tls = server_ssl_context(certs.cert, certs.key)
    loop = Loop()
    try:
        origin = upstream.files_url.rstrip("/")  # http://127.0.0.1:PORT
        files = Tap(origin, admit=lambda _: True)
        files.url = loop.serve(files.app(), FILES_ADDR, tls=tls)
        sources = upstream.sources()
        sources["files"] = {k: v.replace(origin, files.url, 1) for k, v in sources["files"].items()}
        registries: dict[str, Tap] = {}
        for host, src in sources["registries"].items():
            tap = Tap(src["url"], admit=lambda _: True)
            tap.url = loop.serve(tap.app(), REGISTRY_ADDR, tls=tls)
            registries[host] = tap
            sources["registries"][host] = {"url": tap.url}
        yield Fronts(loop, certs.ca_cert, files, registries, sources)
    finally:
        loop.close()


def write_spec(tmp: Path, fronts: Fronts, *, ca: bool = True) -> Path:
    doc = YAML().load(preset_text("seed"))
    doc["sources"] = json.loads(json.dumps(fronts.sources))
    if ca:
        doc["sources"]["caBundle"] = str(fronts.ca)
    spec = tmp / "airlock.yaml"
    with spec.open("w") as fh:
        YAML().dump(doc, fh)
    return spec


def airlock_env(proxy: Tinyproxy, no_proxy: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _PROXY_VARS}
    env.update(HTTPS_PROXY=proxy.url, HTTP_PROXY=proxy.url, NO_PROXY=no_proxy)
    return env


def create(spec: Path, tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, "bundle", "create", "-f", str(spec), "--cache", str(tmp / "cache"),
         "-o", str(tmp / "out"), "--json"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def test_every_download_goes_through_the_proxy_with_the_private_ca(
    fronts: Fronts, tinyproxy: Tinyproxy, tmp_path: Path
) -> None:
    fronts.reset()
    proc = create(write_spec(tmp_path, fronts), tmp_path, airlock_env(tinyproxy))
    assert proc.returncode == 0, proc.stderr[-3000:]
    peers = fronts.peers()
    assert all(peers.values()), peers  # every front was used (files, charts, each registry)
    assert peers == {k: {PROXY_OUT} for k in peers}  # and only ever through the proxy
    tunnels = tinyproxy.log.read_text()
    assert FILES_ADDR in tunnels and REGISTRY_ADDR in tunnels


def test_no_proxy_hosts_bypass_the_proxy(
    fronts: Fronts, tinyproxy: Tinyproxy, tmp_path: Path
) -> None:
    fronts.reset()
    proc = create(
        write_spec(tmp_path, fronts), tmp_path, airlock_env(tinyproxy, no_proxy=REGISTRY_ADDR)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    peers = fronts.peers()
    assert peers.pop("files") == {PROXY_OUT}
    assert peers and all(p == {"127.0.0.1"} for p in peers.values()), peers


def test_without_the_ca_the_failure_names_the_certificate_problem(
    fronts: Fronts, tinyproxy: Tinyproxy, tmp_path: Path
) -> None:
    env = airlock_env(tinyproxy)
    spec = write_spec(tmp_path, fronts, ca=False)
    plan = subprocess.run(
        [AIRLOCK, "plan", "-f", str(spec), "--json"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert plan.returncode == 1, plan.stdout + plan.stderr
    out = plan.stdout + plan.stderr
    assert "certificate verify failed" in out and "--ca-bundle" in out
    # the same CA named on the command line instead of in the spec
    ok = subprocess.run(
        [AIRLOCK, "plan", "-f", str(spec), "--ca-bundle", str(fronts.ca), "--json"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_registry_and_file_paths_name_the_certificate_problem(
    fronts: Fronts, tmp_path: Path
) -> None:
    host, tap = next(iter(fronts.registries.items()))
    files_url = next(iter(fronts.sources["files"].values()))  # type: ignore[attr-defined]

    async def pull() -> None:
        async with NetworkOptions().session() as session:
            await pull_images(
                [parse_reference(f"{host}/nothing:1")],
                dest=BlobStore(tmp_path / "d"),
                endpoints={host: Endpoint(tap.url)},
                platforms=["linux/amd64"],
                session=session,
            )

    async def fetch() -> None:
        async with NetworkOptions().session() as session:
            url = f"{files_url}anything"
            await fetch_files(
                [FileRequest(url, url)], cache=BlobStore(tmp_path / "c"), session=session
            )

    with pytest.raises(RegistryError) as reg:
        asyncio.run(pull())
    with pytest.raises(FetchError) as files:
        asyncio.run(fetch())
    for exc in (reg.value, files.value):
        assert "certificate verify failed" in str(exc)
        assert exc.hint and "--ca-bundle" in exc.hint


def test_os_package_repository_metadata_goes_through_the_proxy(
    tinyproxy: Tinyproxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OS package repositories: their metadata is read through the same proxy settings (the
    packages themselves are files, fetched by the downloader the tests above cover)."""
    from test_packages_debian import TOY, make_repo

    from airlock.packages.closure import load_repositories
    from airlock.spec import Packages

    make_repo(tmp_path / "archive", TOY)
    peers: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(tmp_path / "archive"), **kw)

        def log_message(self, format: str, *args: Any) -> None:
            peers.append(self.client_address[0])

    server = http.server.ThreadingHTTPServer(("127.0.0.9", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for k in _PROXY_VARS:
            monkeypatch.delenv(k, raising=False)
            monkeypatch.delenv(k.lower(), raising=False)
        monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
        url = f"http://127.0.0.9:{server.server_address[1]}/"
        spec = Packages(os="debian-12", names=[], repositories=[f"{url}dists/toy"])
        (repo,) = load_repositories(spec, workdir=tmp_path / "w", opener=NetworkOptions().opener())
        assert repo.index_path.is_file()
        assert peers and set(peers) == {PROXY_OUT}
        monkeypatch.setenv("NO_PROXY", "127.0.0.9")
        peers.clear()
        load_repositories(spec, workdir=tmp_path / "w2", opener=NetworkOptions().opener())
        assert peers and set(peers) == {"127.0.0.1"}
    finally:
        server.shutdown()
        server.server_close()
