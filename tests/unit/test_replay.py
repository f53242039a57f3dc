"""airlock.replay and airlock.fetch.recording: a create answered from its record only while
every local file, the environment and every recorded upstream answer are still the same."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.server
import os
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock import replay
from airlock.fetch import recording
from airlock.fetch.network import NetworkOptions


class _Upstream:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 whose answers a test changes."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.seen: list[str] = []
        pages, seen = self.pages, self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _answer(self, body: bool) -> None:
                seen.append(f"{self.command} {self.path}")
                status, headers, data = pages.get(self.path, (404, {}, b"no such page"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    up = _Upstream()
    up.pages["/v2/app/manifests/1.0"] = (
        200,
        {"Docker-Content-Digest": "sha256:" + "a" * 64, "Content-Type": "application/json"},
        b'{"manifest": 1}',
    )
    up.pages["/v2/app/blobs/sha256:" + "b" * 64] = (200, {}, b"layer bytes")
    up.pages["/kubeadm.sha256"] = (200, {"ETag": '"1"'}, b"c" * 64)
    up.pages["/index.yaml"] = (200, {}, b"entries: {}")
    up.pages["/zipped"] = (200, {"Content-Encoding": "gzip"}, gzip.compress(b"plain text"))
    up.pages["/moved"] = (302, {"Location": "/index.yaml"}, b"")
    yield up
    up.close()


async def _ask(up: _Upstream, *, note: bool = True) -> None:
    """What a create does: a manifest by tag, a blob by digest, a HEAD, a checksum file, a
    compressed answer and a followed redirect (aiohttp), and a metadata file (urllib)."""
    async with NetworkOptions().session() as session:
        async with session.get(f"{up.url}/v2/app/manifests/1.0") as resp:
            data = await resp.content.read()
            if note:
                recording.saw(data)
        with recording.verified():
            async with session.get(f"{up.url}/v2/app/blobs/sha256:{'b' * 64}") as resp:
                await resp.read()
        async with session.head(f"{up.url}/kubeadm.sha256") as resp:
            pass
        async with session.get(f"{up.url}/kubeadm.sha256") as resp:
            recording.saw(await resp.read())
        async with session.get(f"{up.url}/zipped") as resp:
            recording.saw(await resp.read())
        async with session.get(f"{up.url}/moved") as resp:
            recording.saw(await resp.read())
    with NetworkOptions().opener().open(f"{up.url}/index.yaml", timeout=10) as r:
        assert r.read() == b"entries: {}"


ARGV = ["bundle", "create", "-f", "airlock.yaml", "--json"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "airlock.yaml").write_text("spec: 1\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.airlock.tar").write_bytes(b"bundle")
    return tmp_path


def _record(home: Path, up: _Upstream, *, note: bool = True) -> dict[str, Any] | None:
    root = replay.cache_root(ARGV)
    with recording.start() as rec:
        (home / "airlock.yaml").read_text()  # the spec, as the full path reads it
        asyncio.run(_ask(up, note=note))
    doc = rec.record(
        argv=ARGV,
        cache=root,
        outputs=[home / "out" / "b.airlock.tar"],
        ca=None,
        stdout='{"unchanged": true}\n',
        stderr="",
    )
    if doc is not None:
        replay.save(replay.record_path(root, ARGV, os.getcwd()), doc)
    return doc


def _fast(capsys: pytest.CaptureFixture[str]) -> bool:
    done = replay.fast_create(ARGV)
    out = capsys.readouterr().out
    assert out == ('{"unchanged": true}\n' if done else "")
    return done


def test_recorded_create_is_answered_until_anything_changes(
    home: Path, upstream: _Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _record(home, upstream)
    assert doc is not None
    asked = {(r["method"], r["url"].removeprefix(upstream.url)) for r in doc["requests"]}
    assert asked == {
        ("GET", "/v2/app/manifests/1.0"),
        ("HEAD", "/kubeadm.sha256"),
        ("GET", "/kubeadm.sha256"),
        ("GET", "/zipped"),
        ("GET", "/moved"),
        ("GET", "/index.yaml"),
    }  # the blob, named by its digest, is not asked again
    assert str(home / "airlock.yaml") in dict(doc["inputs"])
    assert _fast(capsys)
    # an upstream answer that differs: the manifest's tag moved
    upstream.pages["/v2/app/manifests/1.0"] = (200, {}, b'{"manifest": 2}')
    assert not _fast(capsys)


@pytest.mark.parametrize(
    "change",
    [
        "checksum body",
        "etag",
        "status",
        "redirect target",
        "compressed body",
        "metadata body",
        "spec edited",
        "bundle replaced",
        "environment",
        "proxy",
        "other command line",
        "code",
    ],
)
def test_any_difference_means_the_full_path(
    home: Path,
    upstream: _Upstream,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    assert _record(home, upstream) is not None
    assert _fast(capsys)
    pages = upstream.pages
    if change == "checksum body":
        pages["/kubeadm.sha256"] = (200, {"ETag": '"1"'}, b"d" * 64)
    elif change == "etag":
        pages["/kubeadm.sha256"] = (200, {"ETag": '"2"'}, b"c" * 64)
    elif change == "status":
        del pages["/index.yaml"]
    elif change == "redirect target":
        pages["/moved"] = (302, {"Location": "/kubeadm.sha256"}, b"")
    elif change == "compressed body":
        pages["/zipped"] = (200, {"Content-Encoding": "gzip"}, gzip.compress(b"other text"))
    elif change == "metadata body":
        pages["/index.yaml"] = (200, {}, b"entries: {a: 1}")
    elif change == "spec edited":
        (home / "airlock.yaml").write_text("spec: 2\n")
    elif change == "bundle replaced":
        (home / "out" / "b.airlock.tar").write_bytes(b"bundle")
    elif change == "environment":
        monkeypatch.setenv("AIRLOCK_SOMETHING", "1")
    elif change == "proxy":
        monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    elif change == "other command line":
        monkeypatch.setattr(replay, "record_path", lambda *_: home / "nothing.json")
    elif change == "code":
        monkeypatch.setattr(replay, "code_fingerprint", lambda: ["another version"])
    assert not _fast(capsys)


def test_debug_says_the_answer_came_from_the_record(
    home: Path, upstream: _Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*ARGV, "--debug"]
    with recording.start() as rec:
        asyncio.run(_ask(upstream))
    doc = rec.record(
        argv=argv, cache=replay.cache_root(argv), outputs=[home / "out" / "b.airlock.tar"],
        ca=None, stdout="kept\n", stderr="warning: w\n",
    )  # fmt: skip
    assert doc is not None
    replay.save(replay.record_path(replay.cache_root(argv), argv, os.getcwd()), doc)
    assert replay.fast_create(argv)
    out, err = capsys.readouterr()
    assert out == "kept\n"
    assert err.startswith("debug: nothing changed since the run recorded in ")
    assert err.endswith("answered from it\nwarning: w\n")


def test_a_body_nobody_noted_leaves_no_record(home: Path, upstream: _Upstream) -> None:
    """A reading site that forgets to note its body costs the fast path, never a stale bundle."""
    assert _record(home, upstream, note=False) is None


def test_credentials_or_a_changed_input_leave_no_record(home: Path, upstream: _Upstream) -> None:
    root = replay.cache_root(ARGV)
    with recording.start() as rec:

        async def with_token() -> None:
            async with NetworkOptions().session() as session:
                headers = {"Authorization": "Bearer x"}
                async with session.head(f"{upstream.url}/index.yaml", headers=headers):
                    pass

        asyncio.run(with_token())
    assert rec.record(argv=ARGV, cache=root, outputs=[], ca=None, stdout="", stderr="") is None
    assert rec.spoiled is not None and "credentials" in rec.spoiled

    with recording.start() as rec:
        (home / "airlock.yaml").read_text()
        (home / "airlock.yaml").write_text("spec: 3\n")  # edited while the command ran
    assert rec.record(argv=ARGV, cache=root, outputs=[], ca=None, stdout="", stderr="") is None


def test_temporaries_of_the_run_and_the_cache_are_not_inputs(home: Path) -> None:
    root = replay.cache_root(ARGV)
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / "x").write_bytes(b"cached")
    with recording.start() as rec:
        tmp = home / "scratch"
        tmp.write_bytes(b"made here")
        tmp.read_bytes()
        tmp.unlink()
        (root / "blobs" / "x").read_bytes()
        (root / "blobs" / "x").write_bytes(b"cache changed by the run")
        (home / "airlock.yaml").read_bytes()
    doc = rec.record(argv=ARGV, cache=root, outputs=[], ca=None, stdout="", stderr="")
    assert doc is not None
    assert [p for p, _ in doc["inputs"] if p.startswith(str(home))] == [str(home / "airlock.yaml")]


def test_only_plain_creates_are_replayed() -> None:
    assert replay.eligible(["bundle", "create", "-f", "a.yaml", "--cache", "c"])
    assert not replay.eligible(["bundle", "verify", "b.tar"])
    for option in ("--since", "--since=old.tar", "--registry-auth", "--expires", "--help"):
        assert not replay.eligible(["bundle", "create", option])
    assert replay.cache_root(["bundle", "create", "--cache", "c"]) == Path("c")
    assert replay.cache_root(["bundle", "create", "--cache=d"]) == Path("d")


def test_urllib_answers_are_handed_on_whole(upstream: _Upstream) -> None:
    """The urllib hook reads each answer to note it; the caller still gets every byte."""
    with recording.start() as rec:
        opener = NetworkOptions().opener()
        with opener.open(f"{upstream.url}/index.yaml", timeout=10) as r:
            assert r.read() == b"entries: {}"
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(f"{upstream.url}/absent", timeout=10)
        assert err.value.code == 404
    got = {(r.url.removeprefix(upstream.url), r.status) for r in rec.requests}
    assert got == {("/index.yaml", 200), ("/absent", 404)}
    body = hashlib.sha256(b"entries: {}").hexdigest()
    assert [r.sha256 for r in rec.requests if r.status == 200] == [body]
