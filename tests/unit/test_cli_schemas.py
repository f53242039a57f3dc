"""Every command's --json document against its own schema in docs/schemas (success and failure),
beside the envelope every command shares; and every schema names a real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer

from airlock.blobstore import BlobStore
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import write_bundle
from airlock.cli.main import app
from airlock_lab.bundle_testing import sample_content
from output_schemas import SCHEMAS, check_output, schema

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def run_json(*args: str, cwd: Path, ok: bool = True) -> dict[str, Any]:
    out = subprocess.run(
        [AIRLOCK, *args, "--json"], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    assert doc["ok"] is ok and (out.returncode == 0) is ok, out.stderr
    return doc


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    priv, pub = generate_keypair(tmp_path / "keys" / "site")
    blobs = BlobStore(tmp_path / "blobs")
    made = write_bundle(
        sample_content(blobs, big_file_size=1 << 12),
        blobs=blobs,
        out=tmp_path / "out",
        sign_key=priv,
    )
    sysroot = tmp_path / "sysroot"
    (sysroot / "etc").mkdir(parents=True)
    (sysroot / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    return {"bundle": made.path, "pub": pub, "key": priv, "root": sysroot, "tmp": tmp_path}


def test_every_schema_is_valid_and_names_a_command() -> None:
    commands = {" ".join(p) for p in _paths(typer.main.get_command(app))}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        name = path.name.removesuffix(".schema.json")
        schema(name)  # a valid JSON Schema
        if name != "output":
            assert any(c.replace(" ", "-") == name for c in commands), name


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(command, "commands", None)
    if not subs:
        return [path]
    return [p for name, sub in subs.items() for p in _paths(sub, (*path, name))]


def test_offline_side_documents(world: dict[str, Path]) -> None:
    tmp, bundle, pub, root = world["tmp"], str(world["bundle"]), str(world["pub"]), world["root"]
    store = str(tmp / "store")
    check_output("init", run_json("init", "-o", str(tmp / "a.yaml"), cwd=tmp))
    check_output("keys generate", run_json("keys", "generate", "-o", str(tmp / "k"), cwd=tmp))
    check_output("keys fingerprint", run_json("keys", "fingerprint", pub, cwd=tmp))
    check_output("bundle inspect", run_json("bundle", "inspect", bundle, "--key", pub, cwd=tmp))
    check_output("bundle verify", run_json("bundle", "verify", bundle, "--key", pub, cwd=tmp))
    loaded = check_output("load", run_json("load", bundle, "--key", pub, "--store", store, cwd=tmp))
    assert loaded["changed"]
    check_output("registry gc", run_json("registry", "gc", "--store", store, cwd=tmp))
    check_output("registry certs", run_json("registry", "certs", "-o", str(tmp / "pki"), cwd=tmp))
    for verb in ("prepare", "install"):
        args = ["--store", store] if verb == "install" else []
        doc = run_json(
            "node", verb, "--root", str(root), "--dry-run", *args, cwd=tmp, ok=verb == "prepare"
        )
        check_output(f"node {verb}", doc)
    check_output(
        "node mirrors",
        run_json(
            "node",
            "mirrors",
            "--registry",
            "127.0.0.1:5000",
            "--root",
            str(root),
            "--store",
            store,
            cwd=tmp,
        ),
    )
    check = subprocess.run(
        [AIRLOCK, "node", "check", "--root", str(root), "--store", store, "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    check_output("node check", json.loads(check.stdout))
    check_output("inventory", run_json("inventory", "--root", str(root), "--store", store, cwd=tmp))
    check_output(
        "inventory",
        run_json(
            "inventory", "--root", str(root), "--store", store, "-o", str(tmp / "i.json"), cwd=tmp
        ),
    )
    check_output("version", run_json("version", cwd=tmp))


def test_failure_documents(world: dict[str, Path]) -> None:
    tmp, bundle = world["tmp"], str(world["bundle"])
    _, other = generate_keypair(tmp / "other")
    failed = run_json("bundle", "verify", bundle, "--key", str(other), cwd=tmp, ok=False)
    check_output("bundle verify", failed)
    assert failed["problems"] and failed["error"]["code"] == "VERIFICATION_FAILED"
    failed = run_json(
        "load", bundle, "--key", str(other), "--store", str(tmp / "s"), cwd=tmp, ok=False
    )
    check_output("load", failed)
    check_output(
        "init", run_json("init", "-o", str(tmp / "no" / "dir" / "x.yaml"), cwd=tmp, ok=False)
    )
    spec = tmp / "bad.yaml"
    spec.write_text("apiVersion: airlock/v1alpha1\nkind: Bundel\n")
    check_output("plan", run_json("plan", "-f", str(spec), cwd=tmp, ok=False))


def test_a_schema_refuses_a_wrong_document() -> None:
    """The schemas are not empty shells: a success missing a field, or with a wrong type, fails."""
    good = {
        "schemaVersion": 1,
        "ok": True,
        "private": "k.key",
        "public": "k.pub",
        "keyId": "sha256:x",
    }
    check_output("keys generate", good)
    with pytest.raises(jsonschema.ValidationError):
        check_output("keys generate", {k: v for k, v in good.items() if k != "keyId"})
    with pytest.raises(jsonschema.ValidationError):
        check_output("load", {"schemaVersion": 1, "ok": True, "bundle": 3})


def test_registry_serve_readiness_document(world: dict[str, Path]) -> None:
    tmp = world["tmp"]
    proc = subprocess.Popen(
        [AIRLOCK, "registry", "serve", "--bundle", str(world["bundle"]), "--key", str(world["pub"]),
         "--listen", "127.0.0.1:0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line)
        doc = check_output("registry serve", json.loads("".join(lines)))
        assert doc["url"].startswith("http://127.0.0.1:") and doc["mode"] == "pull only"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)


def test_bundle_repair_document(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "k")
    blobs = BlobStore(tmp_path / "blobs")
    made = write_bundle(
        sample_content(blobs, big_file_size=3 << 20),
        blobs=blobs,
        out=tmp_path / "out",
        split=1 << 20,
        recovery=50,
        sign_key=priv,
    )
    made.volumes[1].unlink()
    doc = check_output(
        "bundle repair",
        run_json("bundle", "repair", str(made.path), "--key", str(pub), cwd=tmp_path),
    )
    assert doc["verified"] and doc["rebuilt"] == [str(made.volumes[1])]
    made.recovery_volumes[0].unlink()
    made.volumes[0].unlink()
    made.volumes[2].write_bytes(b"x")
    failed = run_json("bundle", "repair", str(made.path), "--key", str(pub), cwd=tmp_path, ok=False)
    check_output("bundle repair", failed)
