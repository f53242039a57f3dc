"""Progress of long steps: a live display on a terminal (a real pty), plain lines with
--progress=plain, nothing with --progress=none, never anything on stdout under --json; Ctrl-C
typed at a terminal ends a command with what was kept and how to resume."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock.cli.progress import StepProgress, _label
from airlock_lab.bundle_testing import sample_content

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = generate_keypair(tmp_path / "keys" / "site")
    store = BlobStore(tmp_path / "blobs")
    result = write_bundle(
        sample_content(store, big_file_size=1 << 20),
        blobs=store,
        out=tmp_path / "out",
        sign_key=priv,
    )
    return result.path, pub


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def _controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_on_terminal(
    args: list[str], cwd: Path, *, then: Callable[[int, bytes], bool] | None = None
) -> tuple[int, str]:
    """Run airlock with a pty as its terminal (stdin, stdout, stderr); returns (exit code,
    everything the terminal received). `then(master, seen)` may type into the terminal; it
    returns True once it did what it wanted."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [AIRLOCK, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_controlling_tty,  # the child needs the pty as its controlling terminal
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
    )
    os.close(slave)
    seen = b""
    acted = then is None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not acted and then is not None:
                acted = then(master, seen)
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        os.close(master)
    return code, seen.decode(errors="replace")


def test_verify_and_load_show_progress_on_a_terminal(
    tmp_path: Path, bundle: tuple[Path, Path]
) -> None:
    path, pub = bundle
    code, screen = run_on_terminal(["bundle", "verify", str(path), "--key", str(pub)], cwd=tmp_path)
    assert code == 0, screen
    assert f"verify {path.name}" in screen  # the live display, labelled by the bundle
    assert "━" in screen  # its bar
    assert "OK " in screen
    code, screen = run_on_terminal(
        ["load", str(path), "--key", str(pub), "--store", str(tmp_path / "store")], cwd=tmp_path
    )
    assert code == 0, screen
    assert f"load {path.name}" in screen and "━" in screen
    assert "loaded" in screen


def test_plain_progress_is_lines_on_stderr_and_json_stays_one_document(
    tmp_path: Path, bundle: tuple[Path, Path]
) -> None:
    path, pub = bundle
    out = run(
        "bundle", "verify", str(path), "--key", str(pub), "--progress=plain", "--json", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] is True  # stdout: the document alone
    assert f"verify {path.name}: done, " in out.stderr
    out = run(
        "--progress", "plain", "load", str(path), "--key", str(pub),
        "--store", str(tmp_path / "store"), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"load {path.name}: done, " in out.stderr
    assert "load" not in out.stdout.split("loaded", 1)[0]  # progress never on stdout


def test_no_progress_when_asked_or_not_a_terminal(
    tmp_path: Path, bundle: tuple[Path, Path]
) -> None:
    path, pub = bundle
    for extra in (["--progress=none"], []):  # not a terminal: auto shows nothing
        out = run("bundle", "verify", str(path), "--key", str(pub), *extra, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "verify " not in out.stderr and "━" not in out.stderr
    env_none = subprocess.run(
        [AIRLOCK, "bundle", "verify", str(path), "--key", str(pub)],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRLOCK_PROGRESS": "plain"},
        check=False,
    )
    assert f"verify {path.name}: done" in env_none.stderr


def test_a_bad_progress_mode_is_a_usage_error(tmp_path: Path) -> None:
    out = run("--progress=fancy", "init", "-o", str(tmp_path / "x.yaml"), cwd=tmp_path)
    assert out.returncode == 2
    assert "--progress 'fancy' is not a mode" in out.stderr
    assert not (tmp_path / "x.yaml").exists()
    env = subprocess.run(
        [AIRLOCK, "version"],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRLOCK_PROGRESS": "loud"},
        check=False,
    )
    assert env.returncode == 2 and "'loud' (from AIRLOCK_PROGRESS)" in env.stderr


def test_plain_sink_counts_and_labels(capsys: pytest.CaptureFixture[str]) -> None:
    with StepProgress(unit="changes", mode="plain") as progress:
        progress.start("apply changes", 3)
        for _ in range(3):
            progress.advance("apply changes", 1)
        progress.done("apply changes")
    err = capsys.readouterr().err
    assert "apply changes: started, 3 changes" in err
    assert "apply changes: done, 3 changes in " in err
    # an image layer keeps its name and tag; a URL shows its file
    assert _label("ghcr.io/stefanprodan/podinfo:6.4.0 layer 2/3") == (
        "ghcr.io/stefanprodan/podinfo:6.4.0 layer 2/3"
    )
    assert _label("http://127.0.0.1:1/dl.k8s.io/v1.27.3/bin/linux/amd64/kubeadm") == "kubeadm"


def test_ctrl_c_at_a_terminal(tmp_path: Path) -> None:
    """Ctrl-C typed at the terminal (the tty driver sends SIGINT to the foreground group) while
    `plan` waits on an upstream that never answers: exit 130 and what to do."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    mirror = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f'sources:\n  files:\n    "https://dl.k8s.io/": "{mirror}dl.k8s.io/"\n'
        f'    "https://github.com/": "{mirror}github.com/"\n'
    )
    spec = tmp_path / "airlock.yaml"
    assert run("init", "-o", str(spec), "--sources", str(sources), cwd=tmp_path).returncode == 0
    silent.settimeout(30)

    def interrupt(master: int, _seen: bytes) -> bool:
        conn, _ = silent.accept()  # the plan waits on us now
        os.write(master, b"\x03")
        conn.close()
        return True

    try:
        code, screen = run_on_terminal(["plan", "-f", str(spec)], cwd=tmp_path, then=interrupt)
    finally:
        silent.close()
    assert code == 130, screen
    assert "interrupted" in screen and "run the same command again" in screen
    assert "Traceback" not in screen


class _Recorder:
    """A ProgressSink that keeps every event (thread-safe enough: the GIL orders list appends)."""

    def __init__(self) -> None:
        self.totals: dict[str, int | None] = {}
        self.seen: dict[str, int] = {}
        self.finished: list[str] = []
        self.steps: list[int] = []

    def start(self, name: str, total: int | None) -> None:
        self.totals[name] = total
        self.seen.setdefault(name, 0)

    def advance(self, name: str, nbytes: int) -> None:
        self.seen[name] += nbytes
        self.steps.append(nbytes)

    def done(self, name: str) -> None:
        self.finished.append(name)


def test_core_verbs_report_every_byte_under_a_readable_name(tmp_path: Path) -> None:
    """write, verify and load each start a step named after the bundle, advance by chunks (a
    big blob moves the bar before it ends) up to the total, and finish it."""
    from airlock.bundle.verify import verify_bundle
    from airlock.trust import TrustPolicy
    from airlock.verbs.load import LoadOptions, load_bundle

    priv, pub = generate_keypair(tmp_path / "keys" / "site")
    blobs = BlobStore(tmp_path / "blobs")
    rec = _Recorder()
    made = write_bundle(
        sample_content(blobs, big_file_size=5 << 20),
        blobs=blobs,
        out=tmp_path / "out",
        sign_key=priv,
        progress=rec,
    )
    verify_bundle(made.path, trust=TrustPolicy((pub,)), progress=rec)
    load_bundle(
        made.path, store_dir=tmp_path / "store", options=LoadOptions(keys=(pub,), progress=rec)
    )
    name = made.path.name
    assert set(rec.totals) == {f"write {name}", f"verify {name}", f"load {name}"}
    for step, total in rec.totals.items():
        assert total and rec.seen[step] == total, step
    assert sorted(rec.finished) == sorted(rec.totals)
    assert max(rec.steps) <= 1 << 20 < 5 << 20  # chunks, not whole blobs
