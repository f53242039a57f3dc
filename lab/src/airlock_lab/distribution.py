"""Debian's docker-registry (distribution 2.8.2, the blog's registry), started for the lab,
the tests and the benchmarks on a free loopback port with its own storage, and stopped;
optionally with TLS and htpasswd credentials, as an operator would run it for pushes."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from airlock import system
from airlock.errors import SystemCommandError, UsageError

__all__ = ["Distribution", "free_port", "http_ok", "start_distribution"]


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _https_answers(url: str, ca_file: Path) -> bool:
    """Whether `url` answers over TLS verified with `ca_file` (a 401 is an answer)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Distribution:
    host: str  # the name it stands for (an upstream host, or any label)
    port: int
    process: system.Process
    log: Path
    address: str = "127.0.0.1"
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.port}"

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Distribution:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _registry_config(
    storage: Path,
    address: str,
    port: int,
    *,
    delete: bool,
    tls: tuple[Path, Path] | None = None,
    htpasswd: Path | None = None,
) -> str:
    text = (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        f"  delete:\n    enabled: {'true' if delete else 'false'}\n"
        f"http:\n  addr: {address}:{port}\n  secret: airlock-lab\n"
    )
    if tls is not None:
        text += f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n"
    if htpasswd is not None:
        text += f"auth:\n  htpasswd:\n    realm: airlock\n    path: {htpasswd}\n"
    return text


def start_distribution(
    host: str,
    storage: Path,
    run_dir: Path,
    *,
    address: str = "127.0.0.1",
    delete: bool = True,
    tls: tuple[Path, Path] | None = None,
    htpasswd: Path | None = None,
    ca_file: Path | None = None,
    netns: str | None = None,
    port: int | None = None,
) -> Distribution:
    """Start one on a free port of `address` (loopback, or a lab veth address), storing under
    `storage`; config and log go to `run_dir`. Waits (bounded) until /v2/ answers. With `tls`
    (certificate, key) it serves HTTPS (`ca_file` verifies it while waiting); with `htpasswd`
    every request needs those credentials. With `netns` it runs inside that network namespace,
    on `port` of `address` there (a fresh namespace has every port free), reached by the host
    through the namespace's routes."""
    if netns is not None and port is None:
        raise UsageError("docker-registry in a network namespace: name its port")
    if tls is not None and ca_file is None:
        raise UsageError("docker-registry with TLS: name the CA that verifies it (ca_file)")
    if htpasswd is not None and tls is None:
        raise UsageError("docker-registry with credentials needs TLS (never basic auth in clear)")
    binary = system.which("docker-registry")
    if binary is None:
        raise UsageError(
            "docker-registry not found: the simulated upstream runs one per registry host",
            "install Debian's docker-registry (apt-get install docker-registry)",
        )
    storage.mkdir(parents=True, exist_ok=True)
    last = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry
        chosen = port or free_port(address)
        config = run_dir / f"registry-{host}.yml"
        config.write_text(
            _registry_config(storage, address, chosen, delete=delete, tls=tls, htpasswd=htpasswd)
        )
        log = run_dir / f"registry-{host}.log"
        proc = system.spawn([binary, "serve", str(config)], log=log, netns=netns)
        for _ in range(150):  # 15 s at most
            if not proc.alive():
                break
            ready = (
                _https_answers(f"https://{address}:{chosen}/v2/", ca_file)
                if tls is not None and ca_file is not None
                else http_ok(f"http://{address}:{chosen}/v2/")
            )
            if ready:
                return Distribution(host, chosen, proc, log, address, tls is not None)
            time.sleep(0.1)
        proc.stop()
        last = log.read_text(errors="replace")[-1000:] if log.exists() else ""
    raise SystemCommandError(
        f"docker-registry for {host} did not become ready: {last.strip()}",
        hint=f"see {run_dir}",
    )
