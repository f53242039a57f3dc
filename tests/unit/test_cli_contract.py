"""The --json contract: one document on stdout, success or failure, valid against the schema
in docs/schemas; and user mistakes answered with a cause and a hint, never "internal error"."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock_lab.bundle_testing import sample_content

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
SCHEMA = json.loads(
    (Path(__file__).parents[2] / "docs" / "schemas" / "output.schema.json").read_text()
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def one_document(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Exactly one JSON document, valid against the schema, with camelCase keys throughout."""
    doc = json.loads(out.stdout)  # raises on a second document or on stray text
    jsonschema.validate(doc, SCHEMA)
    assert not _snake_keys(doc), _snake_keys(doc)
    assert doc["ok"] is (out.returncode == 0)
    return doc  # type: ignore[no-any-return]


def _snake_keys(node: Any, data_maps: tuple[str, ...] = ("resolved", "annotations")) -> list[str]:
    if isinstance(node, list):
        return [k for item in node for k in _snake_keys(item)]
    if not isinstance(node, dict):
        return []
    bad = [k for k in node if "_" in k and k.islower() and " " not in k]
    for k, v in node.items():
        if k not in data_maps:
            bad += _snake_keys(v)
    return bad


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, Path]:
    pub_dir = tmp_path / "keys"
    priv, pub = generate_keypair(pub_dir / "site")
    store = BlobStore(tmp_path / "store")
    result = write_bundle(
        sample_content(store, big_file_size=1 << 16),
        blobs=store,
        out=tmp_path / "out",
        sign_key=priv,
    )
    return result.path, pub


def test_success_documents_validate(tmp_path: Path, bundle: tuple[Path, Path]) -> None:
    path, pub = bundle
    assert one_document(run("init", "-o", str(tmp_path / "a.yaml"), "--json", cwd=tmp_path))["ok"]
    keys = one_document(
        run("keys", "generate", "--out", str(tmp_path / "k"), "--json", cwd=tmp_path)
    )
    assert keys["ok"]
    doc = one_document(run("bundle", "inspect", str(path), "--json", cwd=tmp_path))
    assert doc["images"] and "mediaType" in doc["images"][0]
    verified = one_document(
        run("bundle", "verify", str(path), "--key", str(pub), "--json", cwd=tmp_path)
    )
    assert verified["ok"] and verified["name"]


def test_json_anywhere_on_the_line(tmp_path: Path) -> None:
    for argv in (
        ("--json", "init", "-o", str(tmp_path / "b.yaml")),
        ("init", "--json", "-o", str(tmp_path / "c.yaml")),
        ("init", "-o", str(tmp_path / "d.yaml"), "--json", "--debug"),
    ):
        assert one_document(run(*argv, cwd=tmp_path))["ok"]


def test_a_failed_verify_is_one_document(tmp_path: Path, bundle: tuple[Path, Path]) -> None:
    path, pub = bundle
    data = bytearray(path.read_bytes())
    at = data.index(b'"sequence"')
    data[at + 1] ^= 0x01  # alter airlock.json, the signed manifest
    path.write_bytes(bytes(data))
    out = run("bundle", "verify", str(path), "--key", str(pub), "--json", cwd=tmp_path)
    doc = one_document(out)
    assert out.returncode == 3
    assert doc["error"]["code"] in ("VERIFICATION_FAILED", "DIGEST_MISMATCH")
    assert doc["error"]["hint"]


@pytest.mark.parametrize(
    ("argv", "rc", "code", "message"),
    [
        (("bundle", "verify", "missing.airlock.tar"), 2, "USAGE", "not found"),
        (("no-such-command",), 2, "USAGE", "No such command"),
        (("init", "--preset", "nope"), 2, "USAGE", "unknown preset"),
        (("init", "-o", "/nonexistent/dir/x.yaml"), 2, "USAGE", "does not exist"),
        (("bundle", "create", "--expires", "tomorrow"), 2, "USAGE", "not a date"),
        (("bundle", "create", "--expires", "2001-01-01"), 2, "USAGE", "in the past"),
        (("plan", "-f", "absent.yaml"), 2, None, "absent.yaml"),
    ],
)
def test_user_mistakes_get_a_cause_and_a_hint(
    tmp_path: Path, argv: tuple[str, ...], rc: int, code: str | None, message: str
) -> None:
    text = run(*argv, cwd=tmp_path)
    assert text.returncode == rc
    assert message in text.stderr
    assert "hint:" in text.stderr or "for help" in text.stderr
    assert "internal error" not in text.stderr
    doc = one_document(run(*argv, "--json", cwd=tmp_path))
    if code:
        assert doc["error"]["code"] == code
    assert message in doc["error"]["message"]


def test_a_read_only_filesystem_is_named_not_internal(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=False
    )
    assert mount.returncode == 0, "the test mounts a read-only tmpfs (needs root)"
    try:
        out = run("init", "-o", str(ro / "x.yaml"), "--json", cwd=tmp_path)
        doc = one_document(out)
        assert doc["error"]["code"] == "OS_ERROR"
        assert "Read-only file system" in doc["error"]["message"]
        assert "read-only" in doc["error"]["hint"]
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_spec_typos_get_did_you_mean(tmp_path: Path) -> None:
    spec = tmp_path / "airlock.yaml"
    assert run("init", "-o", str(spec), cwd=tmp_path).returncode == 0
    text = spec.read_text()
    text = text.replace("platforms:", "platfroms:").replace("podSubnet:", "podSubnett:")
    text = text.replace("  version: v1.27.3", "  version: 1.27").replace(
        "kind: Bundle", "kind: Bundel"
    )
    spec.write_text(text)
    out = run("plan", "-f", str(spec), cwd=tmp_path)
    assert out.returncode == 2
    assert "platfroms: unknown field; did you mean 'platforms'?" in out.stderr
    assert "network.podSubnett: unknown field; did you mean 'podSubnet'?" in out.stderr
    assert "kind: input should be 'Bundle', got 'Bundel'; did you mean 'Bundle'?" in out.stderr
    assert "kubernetes.version: must be text, but YAML read 1.27 as a number" in out.stderr
    assert (
        one_document(run("plan", "-f", str(spec), "--json", cwd=tmp_path))["error"]["code"]
        == "SPEC_INVALID"
    )


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path: Path) -> None:
    """`plan` waits on an upstream that accepts and never answers; Ctrl-C (SIGINT) ends it
    with a word and exit 130."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    spec = tmp_path / "airlock.yaml"
    mirror = f"http://127.0.0.1:{port}/"
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f'sources:\n  files:\n    "https://dl.k8s.io/": "{mirror}dl.k8s.io/"\n'
        f'    "https://github.com/": "{mirror}github.com/"\n'
    )
    assert run("init", "-o", str(spec), "--sources", str(sources), cwd=tmp_path).returncode == 0
    proc = subprocess.Popen(
        [AIRLOCK, "plan", "-f", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        conn, _ = silent.accept()  # the plan is waiting on us now
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        conn.close()
    finally:
        proc.kill()
        silent.close()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in err
