"""Node resources: files, directories, symlinks, sysctls, kernel modules, swap, services,
guarded commands and local OS packages, each with `check -> Change` and `apply`.

Every resource reads the current state under the context's root and compares it with the
desired state; live effects (sysctl -w, modprobe, swapoff, systemctl) go through
`Context.run_live`, so in a sysroot they are recorded, not run. Files are written atomically
(temp file beside the target, rename), keeping the owner of a file they replace.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from airlock import system
from airlock.atomic import atomic_writer
from airlock.errors import NodeError
from airlock.node.engine import Change, Context, Resource
from airlock.node.scratch import Scratch

__all__ = [
    "SWAP_LINE",
    "Absent",
    "BytesPayload",
    "Command",
    "Directory",
    "File",
    "KernelModule",
    "ManagedFile",
    "Package",
    "Payload",
    "Probe",
    "Service",
    "ServiceDisabled",
    "Swap",
    "Symlink",
    "Sysctl",
    "comment_swap_lines",
    "dpkg_status",
    "render_diff",
]

_CHUNK = 1 << 20
_TEXT_LIMIT = 256 << 10  # larger files are summarised by digest, never diffed line by line


class Payload(Protocol):
    """Content for a File that may be large (a binary from the bundle): streamed, not held."""

    @property
    def label(self) -> str: ...

    def digest(self) -> str: ...

    def open(self) -> contextlib.AbstractContextManager[BinaryIO]: ...


@dataclass(frozen=True)
class BytesPayload:
    data: bytes
    label: str = "inline"

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        import io

        yield io.BytesIO(self.data)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _as_text(data: bytes | None) -> str | None:
    if data is None:
        return ""
    if len(data) > _TEXT_LIMIT or b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def render_diff(node_path: str, old: bytes | None, new: bytes) -> str:
    """A unified diff (text), or `binary PATH: sha256 A -> B`; `old=None` means absent."""
    old_text, new_text = _as_text(old), _as_text(new)
    if old_text is None or new_text is None:
        before = "absent" if old is None else "sha256:" + hashlib.sha256(old).hexdigest()
        after = "sha256:" + hashlib.sha256(new).hexdigest()
        return f"binary {node_path}: {before} -> {after}\n"
    return _text_diff(node_path, old_text if old is not None else None, new_text)


def _text_diff(node_path: str, old: str | None, new: str) -> str:
    def lines(text: str) -> list[str]:
        out = text.splitlines(keepends=True)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
        return out

    fromfile = node_path if old is not None else "/dev/null"
    return "".join(
        difflib.unified_diff(lines(old or ""), lines(new), fromfile=fromfile, tofile=node_path)
    )


class File(Resource):
    """A regular file with exact content (bytes, text, a streamed payload or a transform of the
    current text), mode and optionally owner. Without `owner`, a replaced file keeps its owner.
    """

    kind = "file"

    def __init__(
        self,
        path: str,
        *,
        content: str | bytes | None = None,
        source: Payload | None = None,
        transform: Callable[[str], str] | None = None,
        mode: int | None = 0o644,
        owner: tuple[int, int] | None = None,
    ) -> None:
        if sum(x is not None for x in (content, source, transform)) != 1:
            raise ValueError("File needs exactly one of content, source, transform")
        if not path.startswith("/"):
            raise ValueError(f"File path must be absolute: {path}")
        self.path = path
        self.content = content.encode() if isinstance(content, str) else content
        self.source = source
        self.transform = transform
        self.mode = mode
        self.owner = owner

    @property
    def name(self) -> str:
        return self.path

    def writes(self) -> list[str]:
        return [self.path]

    def _current(self, ctx: Context) -> bytes | None:
        host = ctx.path(self.path)
        if host.is_dir() and not host.is_symlink():
            raise NodeError(
                f"{self.path} is a directory, but a file is wanted there",
                "move the directory aside and run it again",
            )
        if host.is_symlink() or not host.exists():
            return None
        return host.read_bytes() if self.source is None else None

    def desired_bytes(self, ctx: Context) -> bytes | None:
        """The full desired content (None for a streamed source)."""
        if self.content is not None:
            return self.content
        if self.transform is not None:
            host = ctx.path(self.path)
            current = host.read_bytes() if host.is_file() and not host.is_symlink() else b""
            try:
                text = current.decode()
            except UnicodeDecodeError as exc:
                raise NodeError(f"{self.path} is not UTF-8 text; cannot edit it") from exc
            return self.transform(text).encode()
        return None

    def check(self, ctx: Context) -> Change:
        host = ctx.path(self.path)
        old = self._current(ctx)
        exists = host.is_file() and not host.is_symlink()
        parts: list[str] = []
        diff = ""
        if self.source is not None:
            want = self.source.digest()
            have = _file_digest(host) if exists else None
            if have != want:
                diff = f"binary {self.path}: {have or 'absent'} -> {want}\n"
        else:
            new = self.desired_bytes(ctx)
            assert new is not None
            if not exists or old != new:
                diff = render_diff(self.path, old if exists else None, new)
        if diff:
            parts.append("update" if exists else "create")
        if exists:
            st = host.stat()
            if self.mode is not None and stat.S_IMODE(st.st_mode) != self.mode:
                parts.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {self.mode:04o}")
            if self.owner is not None and (st.st_uid, st.st_gid) != self.owner:
                parts.append(f"owner {st.st_uid}:{st.st_gid} -> {self.owner[0]}:{self.owner[1]}")
        return Change(bool(parts), diff, ", ".join(parts))

    def apply(self, ctx: Context) -> None:
        host = ctx.path(self.path)
        exists = host.is_file() and not host.is_symlink()
        st = host.stat() if exists else None
        mode = self.mode if self.mode is not None else (stat.S_IMODE(st.st_mode) if st else 0o644)
        owner = self.owner or ((st.st_uid, st.st_gid) if st else None)
        needs_write = not exists or (
            self.source.digest() != _file_digest(host)
            if self.source is not None
            else self.desired_bytes(ctx) != host.read_bytes()
        )
        if not needs_write:
            os.chmod(host, mode)
            if owner is not None:
                os.chown(host, *owner)
            return
        with atomic_writer(host, mode=mode) as out:
            if owner is not None:
                os.fchown(out.fileno(), *owner)
            if self.source is not None:
                self._copy_source(out)
            else:
                data = self.desired_bytes(ctx)
                assert data is not None
                out.write(data)

    def _copy_source(self, out: BinaryIO) -> None:
        assert self.source is not None
        # The bytes written are the bytes hashed: a payload that changed since the plan (or
        # that was tampered with) never lands under the final name.
        h = hashlib.sha256()
        with self.source.open() as src:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        got = "sha256:" + h.hexdigest()
        want = self.source.digest()
        if got != want:
            from airlock.errors import DigestMismatch

            raise DigestMismatch(f"{self.source.label} (for {self.path})", want, got)


class Directory(Resource):
    kind = "directory"

    def __init__(self, path: str, *, mode: int = 0o755) -> None:
        self.path = path
        self.mode = mode

    @property
    def name(self) -> str:
        return self.path

    def writes(self) -> list[str]:
        return [self.path]

    def check(self, ctx: Context) -> Change:
        host = ctx.path(self.path)
        if host.is_symlink() or (host.exists() and not host.is_dir()):
            raise NodeError(f"{self.path} exists and is not a directory", "move it aside")
        if not host.exists():
            return Change(True, msg=f"create (mode {self.mode:04o})")
        have = stat.S_IMODE(host.stat().st_mode)
        if have != self.mode:
            return Change(True, msg=f"mode {have:04o} -> {self.mode:04o}")
        return Change(False)

    def apply(self, ctx: Context) -> None:
        host = ctx.path(self.path)
        host.mkdir(parents=True, exist_ok=True)
        os.chmod(host, self.mode)


class Symlink(Resource):
    """`path` -> `target` (the target as the node sees it, not prefixed by the sysroot)."""

    kind = "symlink"

    def __init__(self, path: str, *, target: str) -> None:
        self.path = path
        self.target = target

    @property
    def name(self) -> str:
        return self.path

    def writes(self) -> list[str]:
        return [self.path]

    def check(self, ctx: Context) -> Change:
        host = ctx.path(self.path)
        if host.is_symlink():
            have = os.readlink(host)
            if have == self.target:
                return Change(False)
            return Change(True, msg=f"retarget {have} -> {self.target}")
        if host.is_dir():
            raise NodeError(f"{self.path} is a directory, a symlink is wanted", "move it aside")
        return Change(
            True,
            msg=f"{'replace file with' if host.exists() else 'create'} symlink -> {self.target}",
        )

    def apply(self, ctx: Context) -> None:
        host = ctx.path(self.path)
        host.parent.mkdir(parents=True, exist_ok=True)
        tmp = host.parent / f".tmp-{host.name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(self.target, tmp)
        os.replace(tmp, host)


class Absent(Resource):
    """`path` (a file or symlink) does not exist."""

    kind = "absent"

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def name(self) -> str:
        return self.path

    def writes(self) -> list[str]:
        return [self.path]

    def check(self, ctx: Context) -> Change:
        host = ctx.path(self.path)
        if host.is_dir() and not host.is_symlink():
            raise NodeError(f"{self.path} is a directory; airlock removes only files")
        if host.is_symlink() or host.exists():
            return Change(True, msg="remove")
        return Change(False)

    def apply(self, ctx: Context) -> None:
        ctx.path(self.path).unlink(missing_ok=True)


class _Composite(Resource):
    """A resource made of files plus live actions: the files' diffs are its diff."""

    def __init__(self) -> None:
        self.files: list[Resource] = []

    def writes(self) -> list[str]:
        return [p for f in self.files for p in f.writes()]

    def _file_changes(self, ctx: Context) -> list[tuple[Resource, Change]]:
        return [(f, c) for f in self.files if (c := f.check(ctx)).changed]

    def live_actions(self, ctx: Context, *, files_changed: bool) -> list[list[str]]:
        raise NotImplementedError

    def check(self, ctx: Context) -> Change:
        changes = self._file_changes(ctx)
        actions = self.live_actions(ctx, files_changed=bool(changes))
        if not changes and not actions:
            return Change(False)
        msgs = [c.msg if f.name == self.name else f"{f.name}: {c.msg}" for f, c in changes]
        if actions:
            msgs.append("then " + "; ".join(" ".join(a) for a in actions))
        return Change(True, "".join(c.diff for _, c in changes), "; ".join(msgs))

    def apply(self, ctx: Context) -> None:
        changes = self._file_changes(ctx)
        actions = self.live_actions(ctx, files_changed=bool(changes))
        for f, _ in changes:
            f.apply(ctx)
        for argv in actions:
            ctx.run_live(argv)


def _sysctl_file(values: Mapping[str, str]) -> str:
    return "# Managed by airlock: Kubernetes networking.\n" + "".join(
        f"{k} = {v}\n" for k, v in values.items()
    )


class Sysctl(_Composite):
    """A sysctl.d drop-in, and the values set now (`sysctl -w`) where they differ."""

    kind = "sysctl"

    def __init__(self, path: str, values: Mapping[str, str]) -> None:
        super().__init__()
        self.path = path
        self.values = dict(values)
        self.files = [File(path, content=_sysctl_file(self.values))]

    @property
    def name(self) -> str:
        return self.path

    def live_actions(self, ctx: Context, *, files_changed: bool) -> list[list[str]]:
        if ctx.live:
            wrong = []
            for key, value in self.values.items():
                proc = Path("/proc/sys") / key.replace(".", "/")
                have = proc.read_text().strip() if proc.exists() else None
                if have != value:
                    wrong.append(key)
        else:
            # A sysroot has no running kernel of its own: set everything when the file changes.
            wrong = list(self.values) if files_changed else []
        return [["sysctl", "-w", f"{k}={self.values[k]}"] for k in wrong]


# What a module provides, for kernels that build it in: br_netfilter compiled into the kernel
# has no /sys/module entry (and such kernels often have no modprobe), but its sysctls exist.
_MODULE_FEATURES = {"br_netfilter": "/proc/sys/net/bridge"}


def module_present(module: str) -> bool:
    """Loaded, or built into the running kernel (its feature is there)."""
    if Path("/sys/module", module).exists():
        return True
    feature = _MODULE_FEATURES.get(module)
    return feature is not None and Path(feature).exists()


class KernelModule(_Composite):
    """A modules-load.d file, and the modules loaded now (`modprobe`) where missing."""

    kind = "modules"

    def __init__(self, path: str, modules: Sequence[str]) -> None:
        super().__init__()
        self.path = path
        self.modules = list(modules)
        self.files = [
            File(path, content="# Managed by airlock\n" + "".join(f"{m}\n" for m in modules))
        ]

    @property
    def name(self) -> str:
        return self.path

    def live_actions(self, ctx: Context, *, files_changed: bool) -> list[list[str]]:
        if ctx.live:
            missing = [m for m in self.modules if not module_present(m)]
        else:
            missing = self.modules if files_changed else []
        return [["modprobe", m] for m in missing]


SWAP_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s+swap\b")


def comment_swap_lines(fstab: str) -> str:
    """fstab with every active swap entry commented out (the blog's sed, but by field)."""
    out = []
    for line in fstab.splitlines(keepends=True):
        if not line.lstrip().startswith("#") and SWAP_LINE.match(line):
            line = "#" + line
        out.append(line)
    return "".join(out)


ZRAM_ETC = "/etc/systemd/zram-generator.conf"
ZRAM_USR = "/usr/lib/systemd/zram-generator.conf"


class Swap(_Composite):
    """Swap off: now (`swapoff -a`), in fstab (entries commented), and zram (an empty
    /etc/systemd/zram-generator.conf overrides the distribution's and creates no device)."""

    kind = "swap"

    def __init__(self) -> None:
        super().__init__()
        self._base = [File("/etc/fstab", transform=comment_swap_lines, mode=None)]

    @property
    def name(self) -> str:
        return "off"

    def _zram_file(self, ctx: Context) -> File | None:
        etc, usr = ctx.path(ZRAM_ETC), ctx.path(ZRAM_USR)
        if etc.exists() or etc.is_symlink() or usr.exists():
            return File(ZRAM_ETC, content=b"# Managed by airlock: no zram swap (kubelet)\n")
        return None

    def _select(self, ctx: Context) -> None:
        fstab = ctx.path("/etc/fstab")
        self.files = [f for f in self._base if fstab.exists()]
        zram = self._zram_file(ctx)
        if zram is not None:
            self.files.append(zram)

    def writes(self) -> list[str]:
        return ["/etc/fstab", ZRAM_ETC]

    def check(self, ctx: Context) -> Change:
        self._select(ctx)
        return super().check(ctx)

    def apply(self, ctx: Context) -> None:
        self._select(ctx)
        super().apply(ctx)

    def live_actions(self, ctx: Context, *, files_changed: bool) -> list[list[str]]:
        if ctx.live:
            swaps = Path("/proc/swaps")
            active = swaps.exists() and len(swaps.read_text().strip().splitlines()) > 1
        else:
            active = files_changed
        return [["swapoff", "-a"]] if active else []


SYSTEMD_DIR = "/etc/systemd/system"


class Service(Resource):
    """A systemd unit enabled (its `WantedBy` symlink) and started; restarted after
    `daemon-reload` when a file it depends on changes in the same run."""

    kind = "service"

    def __init__(
        self,
        unit: str,
        *,
        unit_path: str | None = None,
        depends_on: Sequence[str] = (),
        wanted_by: str = "multi-user.target",
        start: bool = True,
    ) -> None:
        self.unit = unit
        self.unit_path = unit_path or f"{SYSTEMD_DIR}/{unit}"
        self.depends_on = [self.unit_path, *depends_on]
        self.link = f"{SYSTEMD_DIR}/{wanted_by}.wants/{unit}"
        self.start = start
        self._symlink = Symlink(self.link, target=self.unit_path)

    @property
    def name(self) -> str:
        return self.unit

    def writes(self) -> list[str]:
        return [self.link]

    def _state(self, ctx: Context) -> tuple[bool, bool, bool]:
        link_change = self._symlink.check(ctx).changed
        deps_changed = any(p in ctx.pending_paths for p in self.depends_on)
        inactive = False
        if ctx.live and self.start:
            res = system.run(["systemctl", "is-active", self.unit], check=False)
            inactive = res.stdout.strip() != "active"
        return link_change, deps_changed, inactive

    def check(self, ctx: Context) -> Change:
        link_change, deps_changed, inactive = self._state(ctx)
        msgs = []
        if link_change:
            msgs.append(f"enable ({self.link})")
        if deps_changed:
            msgs.append("daemon-reload" + (", restart" if self.start else ""))
        elif self.start and (inactive or (link_change and not ctx.live)):
            msgs.append("start")
        return Change(bool(msgs), msg=", ".join(msgs))

    def apply(self, ctx: Context) -> None:
        link_change, deps_changed, inactive = self._state(ctx)
        # Planning put the unit files in pending_paths; apply runs after they are written.
        if link_change:
            self._symlink.apply(ctx)
        if deps_changed or link_change:
            ctx.run_live(["systemctl", "daemon-reload"])
        if not self.start:
            return
        if deps_changed:
            ctx.run_live(["systemctl", "restart", self.unit])
        elif inactive or (link_change and not ctx.live):
            ctx.run_live(["systemctl", "start", self.unit])


class ServiceDisabled(Resource):
    """A unit not enabled (no `*.wants` symlinks in /etc) and, live, stopped."""

    kind = "service-disabled"

    def __init__(self, unit: str) -> None:
        self.unit = unit

    @property
    def name(self) -> str:
        return self.unit

    def _links(self, ctx: Context) -> list[Path]:
        base = ctx.path(SYSTEMD_DIR)
        if not base.is_dir():
            return []
        # Not glob: the links usually dangle in a sysroot, and glob skips dangling links.
        wants = [d / self.unit for d in base.iterdir() if d.name.endswith((".wants", ".requires"))]
        return sorted(p for p in wants if p.is_symlink())

    def writes(self) -> list[str]:
        return [f"{SYSTEMD_DIR}/multi-user.target.wants/{self.unit}"]

    def _active(self, ctx: Context) -> bool:
        if not ctx.live:
            return False
        res = system.run(["systemctl", "is-active", self.unit], check=False)
        return res.stdout.strip() == "active"

    def check(self, ctx: Context) -> Change:
        links = self._links(ctx)
        active = self._active(ctx)
        if not links and not active:
            return Change(False)
        msgs = (
            [f"disable ({', '.join(str(p.relative_to(ctx.root)) for p in links)})"] if links else []
        )
        if active or (links and not ctx.live):
            msgs.append("stop")
        return Change(True, msg=", ".join(msgs))

    def apply(self, ctx: Context) -> None:
        links = self._links(ctx)
        for link in links:
            link.unlink()
        if self._active(ctx) or (links and not ctx.live):
            ctx.run_live(["systemctl", "stop", self.unit])


class Command(Resource):
    """A one-shot command, run only while `creates` (an on-node path) does not exist."""

    kind = "command"

    def __init__(self, argv: Sequence[str], *, creates: str, label: str | None = None) -> None:
        self.argv = list(argv)
        self.creates = creates
        self.label = label or " ".join(self.argv)

    @property
    def name(self) -> str:
        return self.label

    def check(self, ctx: Context) -> Change:
        if ctx.path(self.creates).exists():
            return Change(False)
        return Change(True, msg=f"run `{' '.join(self.argv)}` ({self.creates} is absent)")

    def apply(self, ctx: Context) -> None:
        ctx.run_live(self.argv)


class Probe(Resource):
    """A read-only check that only reports: it never changes anything, it may warn."""

    kind = "check"

    def __init__(self, label: str, probe: Callable[[Context], list[str]]) -> None:
        self.label = label
        self.probe = probe

    @property
    def name(self) -> str:
        return self.label

    def check(self, ctx: Context) -> Change:
        return Change(False, warnings=tuple(self.probe(ctx)))

    def apply(self, ctx: Context) -> None:
        return None


def dpkg_status(root: Path) -> dict[str, str]:
    """Installed Debian packages: name -> version, from var/lib/dpkg/status under root."""
    status = system.host_path("/var/lib/dpkg/status", root)
    out: dict[str, str] = {}
    if not status.exists():
        return out
    for para in status.read_text(errors="replace").split("\n\n"):
        fields = dict(
            line.split(":", 1) for line in para.splitlines() if ":" in line and line[:1] != " "
        )
        name = fields.get("Package", "").strip()
        if name and "installed" in fields.get("Status", "").split():
            out[name] = fields.get("Version", "").strip()
    return out


@contextlib.contextmanager
def _workdir(scratch: Scratch | None, prefix: str) -> Iterator[Path]:
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix=f"airlock-{prefix}") as tmp:
            yield Path(tmp)
        return
    path = scratch.subdir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Package(Resource):
    """A local OS package file (.deb with dpkg, .rpm with rpm), installed offline.

    A first version: the package's own name and version decide whether it is installed; its
    dependencies must be installed first (list them earlier in the plan).
    """

    kind = "package"

    def __init__(
        self, source: Payload, *, filename: str, family: str, scratch: Scratch | None = None
    ) -> None:
        if family not in ("deb", "rpm"):
            raise NodeError(f"unknown package family {family!r}", "use deb or rpm")
        self.source = source
        self.filename = filename
        self.family = family
        # where the file is copied for dpkg/rpm: the node's state directory (what a killed
        # run left is removed by the next), else the system's temp directory
        self.scratch = scratch
        self._meta: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return self.filename

    @contextlib.contextmanager
    def _local_file(self) -> Iterator[Path]:
        with _workdir(self.scratch, "pkg-") as tmp:
            path = tmp / self.filename
            with self.source.open() as src, path.open("wb") as out:
                shutil.copyfileobj(src, out)
            yield path

    def _identity(self) -> tuple[str, str]:
        if self._meta is None:
            with self._local_file() as path:
                if self.family == "deb":
                    res = system.run(["dpkg-deb", "-f", str(path), "Package", "Version"])
                    fields = dict(
                        line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line
                    )
                    self._meta = (fields.get("Package", ""), fields.get("Version", ""))
                else:
                    res = system.run(
                        ["rpm", "-qp", "--qf", "%{NAME} %{VERSION}-%{RELEASE}", str(path)]
                    )
                    name, _, version = res.stdout.strip().partition(" ")
                    self._meta = (name, version)
        return self._meta

    def _installed(self, ctx: Context) -> str | None:
        name, _ = self._identity()
        if self.family == "deb":
            return dpkg_status(ctx.root).get(name)
        res = system.run(
            ["rpm", "--root", str(ctx.root), "-q", "--qf", "%{VERSION}-%{RELEASE}", name],
            check=False,
        )
        return res.stdout.strip() if res.returncode == 0 else None

    def check(self, ctx: Context) -> Change:
        name, version = self._identity()
        have = self._installed(ctx)
        if have == version:
            return Change(False)
        return Change(True, msg=f"install {name} {version}" + (f" (have {have})" if have else ""))

    def apply(self, ctx: Context) -> None:
        with self._local_file() as path:
            if self.family == "deb":
                argv = ["dpkg", "-i", str(path)]
                if ctx.is_sysroot:
                    argv[1:1] = [f"--root={ctx.root}"]
            else:
                argv = ["rpm", "-i", "--root", str(ctx.root), str(path)]
            # It writes under the root (like a file), so it runs in a sysroot too.
            system.run(argv)


class PackageSet(Resource):
    """The OS packages a bundle carries (the libsolv closure), installed offline in one
    transaction: dpkg (or rpm) orders them by their dependencies itself. Each file is checked
    by name and version, so a second run finds nothing to do."""

    kind = "packages"

    def __init__(self, packages: Sequence[Package]) -> None:
        families = {p.family for p in packages}
        if len(families) > 1:
            raise NodeError("the bundle mixes .deb and .rpm packages", "build it for one OS")
        self.packages = list(packages)
        self.family = families.pop() if families else "deb"

    @property
    def name(self) -> str:
        return f"{len(self.packages)} OS packages"

    def _missing(self, ctx: Context) -> list[Package]:
        return [p for p in self.packages if p.check(ctx).changed]

    def check(self, ctx: Context) -> Change:
        missing = self._missing(ctx)
        if not missing:
            return Change(False)
        names = ", ".join(f"{n} {v}" for n, v in (p._identity() for p in missing))
        return Change(True, msg=f"install {len(missing)} packages offline: {names}")

    def apply(self, ctx: Context) -> None:
        missing = self._missing(ctx)
        if not missing:
            return
        with _workdir(missing[0].scratch, "pkgs-") as tmp:
            paths = []
            for p in missing:
                path = tmp / p.filename
                with p.source.open() as src, path.open("wb") as out:
                    shutil.copyfileobj(src, out)
                paths.append(str(path))
            if self.family == "deb":
                argv = [
                    "dpkg",
                    *([f"--root={ctx.root}"] if ctx.is_sysroot else []),
                    "--install",
                    *paths,
                ]
            else:
                argv = ["rpm", "-U", "--root", str(ctx.root), *paths]
            system.run(argv, timeout=1800)


class ManagedFile(_Composite):
    """A file plus live actions that make the running system pick it up (`firewall-cmd
    --reload`, `ufw reload`, `setenforce 0`), run only when the file changes."""

    def __init__(
        self, file: File, *, then: Sequence[Sequence[str]] = (), kind: str = "file"
    ) -> None:
        super().__init__()
        self.kind = kind
        self.files = [file]
        self.then = [list(a) for a in then]
        self._path = file.path

    @property
    def name(self) -> str:
        return self._path

    def live_actions(self, ctx: Context, *, files_changed: bool) -> list[list[str]]:
        return self.then if files_changed else []
