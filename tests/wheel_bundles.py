"""Small bundles that carry a wheelhouse, for the bootstrap tests (no upstream needed).

`wheel_bundle` writes the lab's sample content (two images, three files) plus the given wheels
as the wheelhouse, signed with `key` when given. Fake wheels suffice for refusals (pip never
runs); the success tests pass airlock's real wheelhouse.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from airlock.blobstore import BlobStore
from airlock.bootstrap import SCRIPT_NAME, render_script
from airlock.bundle.writer import WriteResult, write_bundle
from airlock.content import FileArtifact
from airlock_lab.bundle_testing import sample_content

__all__ = ["base_python", "run_script", "wheel_bundle", "write_script"]


def wheel_bundle(
    out: Path,
    wheels: Sequence[Path],
    *,
    key: Path | None = None,
    split: int | None = None,
    pythons: Sequence[str] = ("3.11",),
    architectures: Sequence[str] = ("x86_64",),
) -> WriteResult:
    store = BlobStore(out / "store")
    content = sample_content(store)
    wheelhouse = []
    for w in wheels:
        wheelhouse.append(
            FileArtifact(
                name=w.name,
                kind="wheel",
                url=f"wheel:{w.name}",
                digest=store.put_bytes(w.read_bytes()),
                size=w.stat().st_size,
                media_type="application/zip",
            )
        )
    resolved = {
        **content.resolved,
        "wheelhouse": {"pythons": list(pythons), "architectures": list(architectures)},
    }
    content = dataclasses.replace(content, wheelhouse=wheelhouse, resolved=resolved)
    return write_bundle(content, blobs=store, out=out / "bundle", sign_key=key, split=split)


def write_script(directory: Path) -> Path:
    path = directory / SCRIPT_NAME
    path.write_bytes(render_script())
    return path


def base_python() -> str:
    """The interpreter under the test venv: it has no airlock, as an offline node has none."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


def run_script(
    script: Path, *args: str | Path, python: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python or base_python(), "-I", str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
