"""`bundle send` / `bundle receive` through a lossy one-way link: two network namespaces of
this test's own (medium-tx, medium-rx) joined by a veth, addresses from 198.19.222.0/30, and
the receiver's side dropping UDP at random with iptables' statistic match (this kernel has no
netem), at 1 %, 5 % and 20 % loss with recovery packets sized for each. Nothing is sent back.
Slow (a real transfer per loss rate): `make test-full`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock_lab.bundle_testing import sample_content

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
TX, RX = "medium-tx", "medium-rx"
TX_ADDR, RX_ADDR = "198.19.222.1", "198.19.222.2"
PORT = 7600
MiB = 1 << 20


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    full = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv] if netns else list(argv)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(full)}: {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _down() -> None:
    for ns in (TX, RX):
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def link() -> Iterator[None]:
    _down()
    for ns in (TX, RX):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", netns=ns)
    sh("ip", "link", "add", "medium-a", "netns", TX, "type", "veth", "peer", "name", "medium-b",
       "netns", RX)  # fmt: skip
    sh("ip", "addr", "add", f"{TX_ADDR}/30", "dev", "medium-a", netns=TX)
    sh("ip", "addr", "add", f"{RX_ADDR}/30", "dev", "medium-b", netns=RX)
    sh("ip", "link", "set", "medium-a", "up", netns=TX)
    sh("ip", "link", "set", "medium-b", "up", netns=RX)
    try:
        yield
    finally:
        _down()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("oneway")
    key, pub = generate_keypair(tmp / "k")
    store = BlobStore(tmp / "store")
    content = sample_content(store, big_file_size=6 * MiB)
    written = write_bundle(
        content, blobs=store, out=tmp / "src", split=MiB, recovery=30, sign_key=key
    )
    return written.path, pub


def _drop(loss: float) -> None:
    sh("iptables", "-F", "INPUT", netns=RX)
    sh("iptables", "-Z", "INPUT", netns=RX)
    sh("iptables", "-A", "INPUT", "-p", "udp", "--dport", str(PORT), "-m", "statistic",
       "--mode", "random", "--probability", str(loss), "-j", "DROP", netns=RX)  # fmt: skip


def _dropped() -> int:
    out = sh("iptables", "-L", "INPUT", "-v", "-x", "-n", netns=RX)
    line = next(x for x in out.splitlines() if "statistic" in x)
    return int(line.split()[0])


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.20])
def test_send_receive_through_loss(
    link: None, bundle: tuple[Path, Path], tmp_path: Path, loss: float
) -> None:
    parts, pub = bundle
    _drop(loss)
    log = tmp_path / "receive.json"
    receiver = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{RX}", "--", AIRLOCK, "bundle", "receive",
         "--listen", f"{RX_ADDR}:{PORT}", "-o", str(tmp_path / "out"), "--idle", "3",
         "--timeout", "240", "--key", str(pub), "--json"],
        stdout=log.open("w"), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2)  # bound before the first datagram
        send = [AIRLOCK, "bundle", "send", str(parts), "--to", f"{RX_ADDR}:{PORT}"]
        send += ["--rate", "20M", "--loss", f"{loss * 100:g}%", "--json"]
        sent = json.loads(sh(*send, netns=TX))
        _, err = receiver.communicate(timeout=300)
    finally:
        receiver.kill()
    assert receiver.returncode == 0, err
    got = json.loads(log.read_text())
    dropped = _dropped()
    # the link really lost packets (positive control), and the bundle still arrived whole
    assert dropped > sent["packets"] * loss * 0.5, (dropped, sent["packets"])
    assert got["verified"] is True
    for name in sent["files"]:
        assert (tmp_path / "out" / name).read_bytes() == (parts.parent / name).read_bytes()


def test_too_much_loss_names_what_is_missing(
    link: None, bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    """Recovery sized for 1 % on a 40 % link: the receiver names what was lost, exit 3 (here
    the boot copies and recovery volumes are lost too, so nothing can rebuild it)."""
    parts, pub = bundle
    _drop(0.40)
    receiver = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{RX}", "--", AIRLOCK, "bundle", "receive",
         "--listen", f"{RX_ADDR}:{PORT}", "-o", str(tmp_path / "out"), "--idle", "3",
         "--timeout", "240", "--key", str(pub)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2)
        send = [AIRLOCK, "bundle", "send", str(parts), "--to", f"{RX_ADDR}:{PORT}"]
        sh(*send, "--rate", "20M", "--loss", "1%", netns=TX)
        _, err = receiver.communicate(timeout=300)
    finally:
        receiver.kill()
    assert receiver.returncode == 3, err
    assert "lab.airlock.tar.000: " in err and "groups lost (bytes" in err
