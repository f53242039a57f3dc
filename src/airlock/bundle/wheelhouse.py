"""airlock's own wheelhouse, carried in every bundle so the offline side needs only python3.

`build_wheelhouse` builds airlock's wheel from the installed source tree (`pip wheel --no-deps`,
with SOURCE_DATE_EPOCH so the zip is reproducible) and downloads every runtime dependency as a
binary wheel for the target platforms and Python versions (`pip download --only-binary=:all:`),
through pip's configured index. Results are cached: dependency wheels by (requirements, Python
versions, platforms), airlock's wheel by (version, hash of the source tree), so repeated bundle
builds redo nothing. The caller turns the returned files into FileArtifacts of kind "wheel".

On the far side: `pip install --no-index --find-links WHEELHOUSE airlock`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement

import airlock
from airlock.atomic import TMP_PREFIX
from airlock.errors import AirlockError, SystemCommandError
from airlock.oci.layout import canonical_json
from airlock.system import run

__all__ = [
    "build_wheelhouse",
    "default_cache_dir",
    "runtime_requirements",
    "source_tree",
]

_COMPLETE = ".complete"
_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airlock" / "wheelhouse"


def source_tree() -> Path | None:
    """The source tree airlock runs from (src layout, editable install), if there is one."""
    root = Path(airlock.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def _marker_env(python_version: str, platform: str) -> dict[str, str]:
    machine = "aarch64" if "aarch64" in platform or "arm64" in platform else "x86_64"
    return {
        "python_version": python_version,
        "python_full_version": python_version + ".0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_system": "Linux",
        "platform_machine": machine,
        "extra": "",
    }


def _declared_requirements(source: Path | None) -> list[str]:
    # The wheel gets its metadata from pyproject.toml, which may be newer than the installed
    # metadata (an editable install is not refreshed when dependencies change).
    if source is not None and (source / "pyproject.toml").is_file():
        with (source / "pyproject.toml").open("rb") as fh:
            project = tomllib.load(fh).get("project", {})
        return [str(r) for r in project.get("dependencies", [])]
    return list(importlib.metadata.requires("airlock") or [])


def runtime_requirements(
    python_version: str, platform: str, *, source: Path | None = None
) -> list[str]:
    """airlock's runtime requirements whose markers hold on the target (no extras), from the
    source tree's pyproject.toml when given, else from the installed metadata."""
    out: list[str] = []
    for text in _declared_requirements(source):
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise AirlockError(f"airlock's metadata has a bad requirement {text!r}") from exc
        if req.marker is not None and not Marker(str(req.marker)).evaluate(
            _marker_env(python_version, platform)
        ):
            continue
        req.marker = None
        out.append(str(req))
    return sorted(out)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    files = [root / "pyproject.toml", *sorted((root / "src" / "airlock").rglob("*"))]
    for p in files:
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _fill(cache_dir: Path, produce: Callable[[Path], None]) -> list[Path]:
    """Run `produce(tmpdir)` unless `cache_dir` is complete; publish the result atomically."""
    if (cache_dir / _COMPLETE).is_file():
        return sorted(p for p in cache_dir.glob("*.whl"))
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=cache_dir.parent))
    try:
        produce(tmp)
        (tmp / _COMPLETE).write_text("")
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(tmp, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in cache_dir.glob("*.whl"))


def _pip(args: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    try:
        run([sys.executable, "-m", "pip", *args], env=env, timeout=1800)
    except SystemCommandError as exc:
        raise AirlockError(
            f"could not {what}: {exc.message}",
            "the wheelhouse is built on the connected side; check pip's index settings",
        ) from exc


def build_wheelhouse(
    dest: Path,
    *,
    python_versions: Sequence[str] = ("3.11",),
    platforms: Sequence[str] = ("manylinux2014_x86_64",),
    cache: Path | None = None,
    source: Path | None = None,
) -> list[Path]:
    """airlock's wheel plus every runtime dependency as binary wheels, copied into `dest`.

    `source` is the tree to build airlock's wheel from (default: the tree airlock runs from).
    """
    cache = cache or default_cache_dir()
    src = source or source_tree()
    if src is None:
        raise AirlockError(
            "cannot build airlock's wheel: it is not running from a source tree",
            "run `bundle create` from an airlock checkout (pip install -e .)",
        )
    version = airlock.__version__
    own_dir = cache / f"airlock-{version}-{_tree_hash(src)}"

    def build_own(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="airlock-wheel-") as build_dir:
            _pip(
                ["wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp), str(src)],
                "build airlock's wheel",
                env={"SOURCE_DATE_EPOCH": _EPOCH, "TMPDIR": build_dir},
            )

    wheels = _fill(own_dir, build_own)
    for py in python_versions:
        reqs = runtime_requirements(py, platforms[0], source=src)
        key = hashlib.sha256(canonical_json([reqs, py, sorted(platforms)])).hexdigest()[:16]

        def download(tmp: Path, reqs: list[str] = reqs, py: str = py) -> None:
            args = ["download", "--quiet", "--only-binary=:all:", "--dest", str(tmp)]
            args += ["--python-version", py, "--implementation", "cp"]
            for plat in platforms:
                args += ["--platform", plat]
            _pip([*args, *reqs], f"download airlock's dependencies for Python {py}")

        wheels += _fill(cache / f"deps-py{py}-{key}", download)

    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for w in wheels:
        target = dest / w.name
        if target.name not in out:
            shutil.copyfile(w, target)
            out[target.name] = target
    return sorted(out.values())
