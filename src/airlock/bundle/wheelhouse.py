"""airlock's own wheelhouse, carried in every bundle so the offline side needs only python3.

airlock's wheel comes from wherever airlock runs: a source tree (a checkout, an editable
install) is built with `pip wheel --no-deps` (SOURCE_DATE_EPOCH: reproducible); an installed
airlock (a wheel, an sdist, pipx) is packed again from its installed files, each checked
against the RECORD pip wrote, into a deterministic zip. Either way the same airlock gives the
same bytes on every run.

Beside it: pip's own wheel (the node runs pip from it: no ensurepip, no python3-venv) and every
runtime dependency as a binary wheel for each target (CPython version x architecture) the spec
names, downloaded through pip's configured index (`pip download --only-binary=:all:`) for
manylinux glibc 2.17 to 2.28 (RHEL 8's glibc is the oldest a target runs). Dependencies only
the connected side uses (`solv`, for RPM closures) go in only when a wheel exists for every
target. Results are cached by (requirements, target) and by airlock's wheel, so repeated
bundle builds redo nothing. On the node: `airlock-bootstrap.py` installs them with
`pip install --no-index --no-deps`.
"""

from __future__ import annotations

import base64
import contextlib
import filecmp
import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import airlock
from airlock.atomic import TMP_PREFIX
from airlock.cachedir import default_cache_dir as user_cache_dir
from airlock.errors import AirlockError, SystemCommandError
from airlock.oci.layout import canonical_json
from airlock.system import run

__all__ = [
    "ARCHITECTURES",
    "CONNECTED_ONLY",
    "PYTHONS",
    "Target",
    "Wheelhouse",
    "build_wheelhouse",
    "copy_if_changed",
    "default_cache_dir",
    "installed_wheel",
    "measure_wheelhouse",
    "platform_tags",
    "runtime_requirements",
    "source_tree",
    "wheelhouse_sources",
]

PYTHONS = ("3.11", "3.12", "3.13")
ARCHITECTURES = ("x86_64", "aarch64")
CONNECTED_ONLY = frozenset({"solv"})  # used by `bundle create` only (RPM closures)
_OLDEST_GLIBC, _NEWEST_GLIBC = 17, 28  # manylinux_2_17 .. manylinux_2_28 (RHEL 8)
_COMPLETE = ".complete"
_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_NOT_PACKED = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


@dataclass(frozen=True)
class Target:
    python: str  # "3.12"
    arch: str  # "x86_64" | "aarch64"

    def __str__(self) -> str:
        return f"cp{self.python} {self.arch}"


@dataclass
class Wheelhouse:
    wheels: list[Path]
    added_bytes: dict[str, int] = field(default_factory=dict)  # per target, in the given order
    connected_only: list[str] = field(default_factory=list)  # requirements left out


def default_cache_dir() -> Path:
    return user_cache_dir() / "wheelhouse"


def source_tree() -> Path | None:
    """The source tree airlock runs from (src layout, editable install), if there is one."""
    root = Path(airlock.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def platform_tags(arch: str) -> list[str]:
    """The manylinux tags a target of `arch` accepts, newest glibc first."""
    tags = [f"manylinux_2_{m}_{arch}" for m in range(_NEWEST_GLIBC, _OLDEST_GLIBC - 1, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def _marker_env(python_version: str, arch: str) -> dict[str, str]:
    return {
        "python_version": python_version,
        "python_full_version": python_version + ".0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_system": "Linux",
        "platform_machine": arch,
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
    python_version: str, arch: str = "x86_64", *, source: Path | None = None
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
            _marker_env(python_version, arch)
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


# --- airlock's own wheel -----------------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _wheel_tag(dist: importlib.metadata.Distribution) -> str:
    for line in (dist.read_text("WHEEL") or "").splitlines():
        if line.startswith("Tag:"):
            return line.split(":", 1)[1].strip()
    return "py3-none-any"


def _installed_files(dist: importlib.metadata.Distribution) -> list[tuple[str, bytes]]:
    """The installed files of `dist` that its wheel held, each checked against RECORD."""
    out: list[tuple[str, bytes]] = []
    for f in dist.files or []:
        parts = f.parts
        if parts[0] == ".." or "__pycache__" in parts or f.suffix == ".pyc":
            continue  # console scripts (pip writes them again) and bytecode
        if parts[0].endswith(".dist-info") and f.name in _NOT_PACKED:
            continue
        data = Path(str(f.locate())).read_bytes()
        if f.hash is not None and _record_hash(data) != f"{f.hash.mode}={f.hash.value}":
            raise AirlockError(
                f"airlock's installed file {f} differs from what pip installed",
                "reinstall airlock (pip install --force-reinstall airlock) and try again",
            )
        out.append((f.as_posix(), data))
    return out


def installed_wheel(dest: Path) -> Path:
    """airlock's wheel packed again from the installed distribution, in `dest`: sorted members,
    fixed times and modes, a fresh RECORD; the same installed files give the same bytes."""
    try:
        dist = importlib.metadata.distribution("airlock")
    except importlib.metadata.PackageNotFoundError as exc:
        raise AirlockError(
            "cannot find airlock's installed metadata to pack its wheel",
            "install airlock with pip (or pipx), or run from an airlock checkout",
        ) from exc
    files = _installed_files(dist)
    if not any(name.startswith("airlock/") for name, _ in files):
        raise AirlockError(
            "airlock's RECORD lists none of its modules (an editable install without its tree?)",
            "install airlock from a wheel, or run from the checkout it was installed from",
        )
    info_dir = f"airlock-{dist.version}.dist-info"
    files.sort(key=lambda item: (item[0].startswith(info_dir + "/"), item[0]))
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files]
    record.append(f"{info_dir}/RECORD,,")
    files.append((f"{info_dir}/RECORD", ("\n".join(record) + "\n").encode()))
    path = dest / f"airlock-{dist.version}-{_wheel_tag(dist)}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=6)
    return path


def _own_wheel(cache: Path, source: Path | None) -> list[Path]:
    version = airlock.__version__
    if source is not None:

        def build_own(tmp: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="airlock-wheel-") as build_dir:
                # a copy of what the wheel is made of (the files `_tree_hash` reads): setuptools
                # builds in the tree's build/, which two creates at once would share
                tree = Path(build_dir) / "tree"
                (tree / "src").mkdir(parents=True)
                shutil.copy2(source / "pyproject.toml", tree / "pyproject.toml")
                shutil.copytree(
                    source / "src" / "airlock",
                    tree / "src" / "airlock",
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
                _pip(
                    ["wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp), str(tree)],
                    "build airlock's wheel",
                    env={"SOURCE_DATE_EPOCH": _EPOCH, "TMPDIR": build_dir},
                )

        return _fill(cache / f"airlock-{version}-{_tree_hash(source)}", build_own)
    with tempfile.TemporaryDirectory(prefix="airlock-wheel-") as tmp:
        packed = installed_wheel(Path(tmp))
        key = hashlib.sha256(packed.read_bytes()).hexdigest()[:16]

        def copy(out: Path) -> None:
            shutil.copyfile(packed, out / packed.name)

        return _fill(cache / f"airlock-{version}-installed-{key}", copy)


# --- dependencies per target ------------------------------------------------------------------


def _download(cache: Path, reqs: Sequence[str], target: Target, what: str) -> list[Path]:
    plats = platform_tags(target.arch)
    key = hashlib.sha256(canonical_json([sorted(reqs), target.python, plats])).hexdigest()[:16]

    def download(tmp: Path) -> None:
        args = ["download", "--quiet", "--only-binary=:all:", "--dest", str(tmp)]
        args += ["--python-version", target.python, "--implementation", "cp"]
        for plat in plats:
            args += ["--platform", plat]
        _pip([*args, *reqs], f"download {what} for {target}")

    return _fill(cache / f"deps-py{target.python}-{target.arch}-{key}", download)


def _split_connected_only(reqs: Sequence[str]) -> tuple[list[str], list[str]]:
    offline: list[str] = []
    connected: list[str] = []
    for r in reqs:
        name = canonicalize_name(Requirement(r).name)
        (connected if name in CONNECTED_ONLY else offline).append(r)
    return offline, connected


def _collect(
    pythons: Sequence[str], architectures: Sequence[str], cache: Path, source: Path | None
) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """(label, cached wheels) for airlock itself then each target; and the requirements left
    on the connected side."""
    targets = [Target(py, arch) for py in pythons for arch in architectures]
    common = _own_wheel(cache, source)
    per_target: dict[Target, list[Path]] = {}
    connected_only: set[str] = set()
    for t in targets:
        offline, connected = _split_connected_only(
            runtime_requirements(t.python, t.arch, source=source)
        )
        per_target[t] = _download(cache, [*offline, "pip"], t, "airlock's dependencies")
        connected_only.update(connected)
    kept = sorted(connected_only)
    for req in sorted(connected_only):
        try:
            extra = {t: _download(cache, [req], t, req) for t in targets}
        except AirlockError:
            continue  # no wheel for some target: it stays on the connected side
        for t in targets:
            per_target[t] += extra[t]
        kept.remove(req)
    return [("airlock", common)] + [(str(t), per_target[t]) for t in targets], kept


def _added(groups: Sequence[tuple[str, list[Path]]]) -> tuple[dict[str, Path], dict[str, int]]:
    """Each wheel once (the first group that needs it), and the bytes each group adds."""
    first: dict[str, Path] = {}
    added: dict[str, int] = {}
    for label, wheels in groups:
        added[label] = 0
        for w in wheels:
            if w.name not in first:
                first[w.name] = w
                added[label] += w.stat().st_size
    return first, added


def build_wheelhouse(
    dest: Path,
    *,
    pythons: Sequence[str] = PYTHONS,
    architectures: Sequence[str] = ARCHITECTURES,
    cache: Path | None = None,
    source: Path | None = None,
) -> Wheelhouse:
    """airlock's wheel, pip's, and every runtime dependency for each target, copied into `dest`.

    `source` is the tree to build airlock's wheel from (default: the tree airlock runs from;
    without one, the installed airlock is packed).
    """
    groups, kept = _collect(
        pythons, architectures, cache or default_cache_dir(), source or source_tree()
    )
    first, added = _added(groups)
    dest.mkdir(parents=True, exist_ok=True)
    for name, wheel in first.items():
        copy_if_changed(wheel, dest / name)
    return Wheelhouse(sorted(dest / n for n in first), added, kept)


def wheelhouse_sources(
    *,
    pythons: Sequence[str] = PYTHONS,
    architectures: Sequence[str] = ARCHITECTURES,
    cache: Path | None = None,
) -> list[Path]:
    """The wheels `build_wheelhouse` would copy, where they are cached (nothing copied):
    `bundle create` puts them straight into its blob store."""
    groups, _ = _collect(pythons, architectures, cache or default_cache_dir(), source_tree())
    first, _ = _added(groups)
    return [first[name] for name in sorted(first)]


def copy_if_changed(src: Path, dst: Path) -> bool:
    """Copy unless `dst` already holds the same bytes (compared in full, never by size or
    time): every create rebuilt the wheelhouse, writing ~60 MB that were already there.
    Returns whether it copied."""
    with contextlib.suppress(OSError):  # unreadable: copied over below
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            return False
    shutil.copyfile(src, dst)
    return True


def measure_wheelhouse(
    *,
    pythons: Sequence[str] = PYTHONS,
    architectures: Sequence[str] = ARCHITECTURES,
    cache: Path | None = None,
) -> dict[str, int]:
    """The bytes airlock itself, then each (Python, architecture) target, add to a bundle. Fills
    the same cache `bundle create` uses (pip downloads once); copies nothing."""
    groups, _ = _collect(pythons, architectures, cache or default_cache_dir(), source_tree())
    return _added(groups)[1]
