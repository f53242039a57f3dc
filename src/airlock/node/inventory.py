"""`airlock inventory`: what a node already holds, as small deterministic JSON.

Carried back across the gap, it lets the next bundle be a delta (`bundle create --since`): the
OS and its packages, the binaries airlock installed (with their digests), every blob and image
in the store, and the mirrors containerd is configured with.
"""

from __future__ import annotations

import hashlib
import os
import platform as _platform
import tomllib
from pathlib import Path
from typing import Any

from airlock import system
from airlock.errors import NodeError
from airlock.node.install import CERTS_DIR, CNI_BIN, LOCAL_BIN, RUNC_PATH
from airlock.node.osinfo import read_os_info
from airlock.node.resources import dpkg_status
from airlock.store import DEFAULT_STORE, Store

__all__ = ["INVENTORY_SCHEMA", "collect_inventory"]

INVENTORY_SCHEMA = "airlock.inventory/v1"
_MANAGED_DIRS = (LOCAL_BIN, CNI_BIN)
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _os(root: Path) -> dict[str, Any]:
    try:
        return read_os_info(root=root).to_json()
    except NodeError as exc:
        return {"error": exc.message}


def _packages(root: Path) -> list[dict[str, str]]:
    deb = dpkg_status(root)
    if deb:
        return [{"name": n, "version": v} for n, v in sorted(deb.items())]
    rpmdb = [system.host_path(p, root) for p in ("/var/lib/rpm", "/usr/lib/sysimage/rpm")]
    if any(p.is_dir() for p in rpmdb) and system.which("rpm"):
        res = system.run(
            ["rpm", "--root", str(root), "-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\n"],
            check=False,
        )
        pairs = sorted(ln.split(" ", 1) for ln in res.stdout.splitlines() if " " in ln)
        return [{"name": n, "version": v} for n, v in pairs]
    return []


def _binaries(root: Path) -> list[dict[str, Any]]:
    paths: list[str] = [RUNC_PATH]
    for d in _MANAGED_DIRS:
        host = system.host_path(d, root)
        if host.is_dir():
            paths += [f"{d}/{p.name}" for p in host.iterdir()]
    out = []
    for node_path in sorted(set(paths)):
        host = system.host_path(node_path, root)
        if host.is_file() and not host.is_symlink():
            out.append({"path": node_path, "sha256": _sha256(host), "size": host.stat().st_size})
    return out


def _store(path: Path) -> dict[str, Any]:
    store = Store.open(path)  # read-only
    if not store.exists():
        return {"path": str(path), "present": False, "blobs": [], "images": {}}
    return {
        "path": str(path),
        "present": True,
        # the newest sequence loaded per channel: the next bundle needs a higher one
        "channels": {ch: st.sequence for ch, st in sorted(store.channels().items())},
        "blobs": store.digests(),
        "images": {ref: d["digest"] for ref, d in sorted(store.images().items())},
        # files held zstd-compressed: their own digest -> the blob that holds them, so the
        # connected side's `plan --since` knows them by the digest upstream publishes
        "compressedFiles": _compressed_files(store),
    }


def _compressed_files(store: Store) -> dict[str, str]:
    from airlock.node.install import store_source

    return {
        f.digest: f.stored.digest
        for f in store_source(store.root).records()
        if f.stored is not None and store.has(f.stored.digest)
    }


def _mirrors(root: Path) -> list[dict[str, Any]]:
    base = system.host_path(CERTS_DIR, root)
    out: list[dict[str, Any]] = []
    if not base.is_dir():
        return out
    for hosts in sorted(base.glob("*/hosts.toml")):
        entry: dict[str, Any] = {"upstream": hosts.parent.name, "sha256": _sha256(hosts)}
        try:
            doc = tomllib.loads(hosts.read_text())
            entry["server"] = doc.get("server", "")
            entry["hosts"] = sorted(doc.get("host", {}))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            entry["error"] = str(exc)
        out.append(entry)
    return out


def collect_inventory(*, root: Path = Path("/"), store: Path | None = None) -> dict[str, Any]:
    """The node's inventory; `store` is a host path (default: the store under root)."""
    root = Path(root)
    store_path = store or system.host_path(str(DEFAULT_STORE), root)
    live = root == Path("/")
    return {
        "schema": INVENTORY_SCHEMA,
        "os": _os(root),
        "arch": _platform.machine(),
        "kernel": os.uname().release if live else None,
        "packages": _packages(root),
        "binaries": _binaries(root),
        "store": _store(Path(store_path)),
        "mirrors": _mirrors(root),
    }
