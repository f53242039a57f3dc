"""`airlock node install`: binaries, CNI plugins, containerd, units and mirrors from a bundle.

Everything comes from an `ArtifactSource`: the bundle's file entries (name, kind, upstream URL,
digest, platform, version) and a way to open a blob by digest. Every blob used is verified
against its manifest digest while the resources are built, i.e. before anything is installed;
a tampered blob is a VerificationError naming the file. Archives are unpacked once into a
private working directory in the same pass that verifies them; members are then installed from
there (and hashed again while they are written). That directory is under the node's state
directory (`airlock.node.scratch`), and what a killed run left there is removed by the next.

`StoreSource` reads a plain store directory (the OCI layout `airlock load` fills, where the
files are the titled layers of the bundle's files artifact manifest).

A file stored zstd-compressed (bundle format 1.1) is opened through its stored blob and
decompressed as it streams; every check above is made over the decompressed bytes against the
file's own digest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform as _platform
import re
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from airlock.blobstore import BlobStore
from airlock.bundle.compression import (
    ANNOTATION_CONTENT_DIGEST,
    ANNOTATION_CONTENT_SIZE,
    open_content,
)
from airlock.bundle.handle import Bundle
from airlock.bundle.layout import (
    ANNOTATION_BUNDLE_SEQUENCE,
    ANNOTATION_FILE_KIND,
    ANNOTATION_FILE_PLATFORM,
    ANNOTATION_FILE_URL,
    ANNOTATION_FILE_VERSION,
    FILES_ARTIFACT_TYPE,
)
from airlock.errors import DigestMismatch, NodeError, VerificationError
from airlock.node.engine import Context, Resource
from airlock.node.mirrors import Mirror, mirror_files, render_containerd_config
from airlock.node.registry_pki import RegistryCredentials
from airlock.node.resources import (
    Directory,
    File,
    Package,
    PackageSet,
    Probe,
    Service,
    Symlink,
)
from airlock.node.scratch import Scratch
from airlock.node.units import (
    CONTAINERD_UNIT,
    REGISTRY_UNIT_NAME,
    kubelet_unit_for_local_bin,
    render_registry_unit,
)
from airlock.oci.media import ANNOTATION_TITLE
from airlock.store import DEFAULT_STORE as _DEFAULT_STORE
from airlock.store import Store

__all__ = [
    "CERTS_DIR",
    "CONTAINERD_CONFIG",
    "CRICTL_YAML",
    "ArtifactSource",
    "BundleSource",
    "FileRecord",
    "FileRecordLike",
    "StoreSource",
    "StoredBlob",
    "host_platform",
    "install_resources",
    "store_source",
]

LOCAL_BIN = "/usr/local/bin"
CNI_BIN = "/opt/cni/bin"
RUNC_PATH = "/usr/local/sbin/runc"
SYSTEMD_DIR = "/etc/systemd/system"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CERTS_DIR = "/etc/containerd/certs.d"
CRICTL_YAML = "/etc/crictl.yaml"
KUBELET_UNIT = f"{SYSTEMD_DIR}/kubelet.service"
KUBEADM_DROPIN = f"{SYSTEMD_DIR}/kubelet.service.d/10-kubeadm.conf"
DEFAULT_STORE = str(_DEFAULT_STORE)
_CHUNK = 1 << 20
__all__ += ["CNI_BIN", "LOCAL_BIN", "RUNC_PATH"]


class FileRecordLike(Protocol):
    """What install needs of a bundle file entry (airlock.json `files`)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def platform(self) -> str: ...
    @property
    def version(self) -> str: ...


@dataclass(frozen=True)
class StoredBlob:
    compression: str
    digest: str


@dataclass(frozen=True)
class FileRecord:
    name: str
    kind: str
    url: str
    digest: str  # of the file itself
    size: int
    platform: str = ""
    version: str = ""
    stored: StoredBlob | None = None  # the compressed blob that holds it, if any


class ArtifactSource(Protocol):
    """The files of a bundle and their bytes: a bundle reader, or a store directory."""

    def files(self) -> Sequence[FileRecordLike]: ...

    def open(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]: ...


class StoreSource:
    """An ArtifactSource over a blob directory and a list of file entries."""

    def __init__(self, store: BlobStore, files: Sequence[FileRecord]) -> None:
        self.store = store
        self._files = list(files)
        self._by_digest = {f.digest: f for f in self._files}

    def files(self) -> Sequence[FileRecordLike]:
        return self._files

    def records(self) -> Sequence[FileRecord]:
        return self._files

    def _blob(self, digest: str) -> BinaryIO:
        path = self.store.path(digest)
        if not path.is_file():
            raise NodeError(
                f"blob {digest} is not in the store {self.store.root}",
                "load the bundle first: airlock load BUNDLE",
            )
        return path.open("rb")

    @contextlib.contextmanager
    def open(self, digest: str) -> Iterator[BinaryIO]:
        """The file's own bytes (decompressed as they stream when stored compressed)."""
        rec = self._by_digest.get(digest)
        if rec is None or rec.stored is None:
            with self._blob(digest) as fh:
                yield fh
            return
        with open_content(
            self._blob(rec.stored.digest), rec.stored.compression, size=rec.size, what=rec.name
        ) as fh:
            yield fh

    def materialize(self, record: FileRecordLike, cache_dir: Path) -> Path:
        """A path holding the file's own bytes: its blob, or (stored compressed) a checked,
        decompressed copy kept in `cache_dir` by digest (for tools that want a path)."""
        rec = self._by_digest.get(record.digest)
        if rec is None or rec.stored is None:
            return self.store.path(record.digest)
        cache = BlobStore(cache_dir)
        if not cache.has(rec.digest):
            with self.open(rec.digest) as src:
                cache.put_stream(src, rec.digest, what=f"{rec.name} (decompressed)")
        return cache.path(rec.digest)


class BundleSource:
    """An ArtifactSource over an open, verified Bundle (its readers hash as they read)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._by_digest = {f.digest: f for f in bundle.manifest.files}

    def files(self) -> Sequence[FileRecordLike]:
        return list(self.bundle.manifest.files)

    @contextlib.contextmanager
    def open(self, digest: str) -> Iterator[BinaryIO]:
        """The file's own bytes (decompressed as they stream when stored compressed); the
        blob is hashed as it is read (the handle's verifying reader)."""
        entry = self._by_digest.get(digest)
        if entry is None or entry.stored is None:
            with self.bundle.open_blob(digest) as fh:
                yield fh
            return
        stored = self.bundle.open_blob(entry.stored.digest)
        with open_content(stored, entry.stored.compression, size=entry.size, what=entry.name) as fh:
            yield fh


def store_source(store_dir: Path) -> StoreSource:
    """The files of every bundle loaded into a store (its files artifact manifests)."""
    layout = Store.open(store_dir).layout  # read-only
    records: dict[str, FileRecord] = {}
    # oldest bundle first, so a file of a newer bundle (same name) wins
    descs = sorted(
        layout.manifests(),
        key=lambda d: int(d.get("annotations", {}).get(ANNOTATION_BUNDLE_SEQUENCE, "0") or 0),
    )
    for desc in descs:
        if desc.get("artifactType") not in (None, FILES_ARTIFACT_TYPE):
            continue
        digest = desc.get("digest", "")
        if not layout.has(digest) or desc.get("size", 0) > 16 << 20:
            continue
        try:
            manifest = json.loads(layout.read(digest))
        except ValueError:
            continue
        if manifest.get("artifactType") != FILES_ARTIFACT_TYPE:
            continue
        for layer in manifest.get("layers", []):
            ann = layer.get("annotations", {})
            kind = ann.get(ANNOTATION_FILE_KIND)
            if not kind or ANNOTATION_TITLE not in ann:
                continue  # the SBOM and anything that is not a carried file
            rec = FileRecord(
                name=ann[ANNOTATION_TITLE],
                kind=kind,
                url=ann.get(ANNOTATION_FILE_URL, ""),
                digest=layer["digest"],
                size=layer["size"],
                platform=ann.get(ANNOTATION_FILE_PLATFORM, ""),
                version=ann.get(ANNOTATION_FILE_VERSION, ""),
            )
            rec = _with_stored(rec, layer, ann)
            records[rec.name] = rec
    return StoreSource(layout, [records[k] for k in sorted(records)])


def _with_stored(rec: FileRecord, layer: dict[str, Any], ann: dict[str, str]) -> FileRecord:
    """A layer stored compressed (`...+zstd`, the file's digest in an annotation): the record
    names the file by its own digest and size, and keeps the blob as its stored form."""
    media = str(layer.get("mediaType", ""))
    content = ann.get(ANNOTATION_CONTENT_DIGEST)
    if not media.endswith("+zstd") or not content:
        return rec
    try:
        size = int(ann.get(ANNOTATION_CONTENT_SIZE, ""))
    except ValueError:
        return rec
    return dataclasses.replace(
        rec, digest=content, size=size, stored=StoredBlob("zstd", rec.digest)
    )


def host_platform() -> str:
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}
    return f"linux/{arch.get(machine, machine)}"


# --- verification and payloads -----------------------------------------------------------


def _label(entry: FileRecordLike) -> str:
    return f"{entry.name} ({entry.url})" if entry.url else entry.name


def _hint_tampered(entry: FileRecordLike) -> str:
    return (
        f"{entry.name} in the bundle does not match airlock.json: nothing was installed; "
        "load the bundle again from a good copy (airlock bundle verify names bad volumes)"
    )


def _read_verified(source: ArtifactSource, entry: FileRecordLike) -> bytes:
    h = hashlib.sha256()
    chunks = []
    with source.open(entry.digest) as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            chunks.append(chunk)
    got = "sha256:" + h.hexdigest()
    if got != entry.digest:
        raise DigestMismatch(_label(entry), entry.digest, got, _hint_tampered(entry))
    return b"".join(chunks)


def _verify_stream(source: ArtifactSource, entry: FileRecordLike) -> None:
    h = hashlib.sha256()
    with source.open(entry.digest) as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    got = "sha256:" + h.hexdigest()
    if got != entry.digest:
        raise DigestMismatch(_label(entry), entry.digest, got, _hint_tampered(entry))


@dataclass(frozen=True)
class BlobPayload:
    """A whole blob (a binary): its digest is the manifest's, checked while written."""

    source: ArtifactSource
    entry: FileRecordLike

    @property
    def label(self) -> str:
        return _label(self.entry)

    def digest(self) -> str:
        return self.entry.digest

    def open(self) -> contextlib.AbstractContextManager[BinaryIO]:
        return self.source.open(self.entry.digest)


class _HashingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hasher.update(data)
        return data


@dataclass(frozen=True)
class Member:
    name: str  # normalized: no leading ./
    digest: str
    mode: int
    path: Path  # the extracted copy


class Archive:
    """A release tar.gz from the bundle, verified and unpacked in one pass (regular files only,
    each to a private numbered file: no member name is ever used as a path)."""

    def __init__(self, source: ArtifactSource, entry: FileRecordLike, *, scratch: Scratch) -> None:
        self.entry = entry
        self.scratch = scratch  # kept alive as long as a member may be read
        self._dir = scratch.subdir("archive-")
        self.members: dict[str, Member] = {}
        with source.open(entry.digest) as raw:
            reader = _HashingReader(raw)
            try:
                with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                    for n, info in enumerate(tar):
                        if not info.isfile():
                            continue
                        name = str(PurePosixPath(info.name.lstrip("/")))
                        name = name[2:] if name.startswith("./") else name
                        src = tar.extractfile(info)
                        assert src is not None
                        dest = self._dir / str(n)
                        h = hashlib.sha256()
                        with dest.open("wb") as out:
                            while chunk := src.read(_CHUNK):
                                h.update(chunk)
                                out.write(chunk)
                        self.members[name] = Member(
                            name, "sha256:" + h.hexdigest(), info.mode & 0o7777, dest
                        )
            except (tarfile.TarError, EOFError, OSError) as exc:
                # A damaged archive is reported by its digest below when the bytes differ.
                while reader.read(_CHUNK):
                    pass
                if "sha256:" + reader.hasher.hexdigest() != entry.digest:
                    shutil.rmtree(self._dir, ignore_errors=True)
                    got = "sha256:" + reader.hasher.hexdigest()
                    raise DigestMismatch(
                        _label(entry), entry.digest, got, _hint_tampered(entry)
                    ) from exc
                raise NodeError(f"{entry.name} is not a readable tar archive: {exc}") from exc
            while reader.read(_CHUNK):  # hash any trailing bytes the tar reader left
                pass
        got = "sha256:" + reader.hasher.hexdigest()
        if got != entry.digest:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise DigestMismatch(_label(entry), entry.digest, got, _hint_tampered(entry))

    def member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise NodeError(
                f"{self.entry.name} has no member {name!r}",
                f"it has: {', '.join(sorted(self.members)) or 'no files'}",
            ) from None

    def payload(self, name: str) -> MemberPayload:
        return MemberPayload(self, self.member(name))


@dataclass(frozen=True)
class MemberPayload:
    archive: Archive  # kept alive (its temp directory) as long as a resource needs it
    member: Member

    @property
    def label(self) -> str:
        return f"{self.member.name} from {self.archive.entry.name}"

    def digest(self) -> str:
        return self.member.digest

    def open(self) -> contextlib.AbstractContextManager[BinaryIO]:
        return self.member.path.open("rb")


# --- choosing the bundle's files ---------------------------------------------------------


def _basename(entry: FileRecordLike) -> str:
    return PurePosixPath(entry.url).name if entry.url else entry.name


# tool -> pattern over the upstream file name (the URL's last part, else the entry's name)
_PATTERNS: dict[str, str] = {
    "kubeadm": r"kubeadm",
    "kubelet": r"kubelet",
    "kubectl": r"kubectl",
    "runc": r"runc(\.[a-z0-9]+)?",
    "crictl": r"crictl-v?[0-9.]+.*-linux-[a-z0-9]+\.tar\.gz",
    "containerd": r"containerd-[0-9][0-9.]*[^/]*-linux-[a-z0-9]+\.tar\.gz",
    "cni-plugins": r"cni-plugins-linux-[a-z0-9]+-v?[0-9.]+\.tgz",
    "helm": r"helm-v?[0-9.]+.*-linux-[a-z0-9]+\.tar\.gz",
    "k9s": r"k9s_Linux_[a-z0-9]+\.tar\.gz",
    "kubelet.service": r"kubelet\.service",
    "10-kubeadm.conf": r"10-kubeadm\.conf",
}
REQUIRED = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "runc",
    "crictl",
    "containerd",
    "cni-plugins",
    "kubelet.service",
    "10-kubeadm.conf",
)


def _select(files: Sequence[FileRecordLike], platform: str) -> dict[str, FileRecordLike]:
    chosen: dict[str, FileRecordLike] = {}
    for tool, pattern in _PATTERNS.items():
        hits = [
            f
            for f in files
            if f.platform in ("", platform)
            and (re.fullmatch(pattern, _basename(f)) or re.fullmatch(pattern, f.name))
        ]
        # A platform-specific file wins over a generic one; then the name decides (stable).
        hits.sort(key=lambda f: (f.platform != platform, f.name))
        if hits:
            chosen[tool] = hits[0]
    missing = [t for t in REQUIRED if t not in chosen]
    if missing:
        raise NodeError(
            f"the bundle has no {', '.join(missing)} for {platform}",
            "build the bundle for this platform (spec `platforms:`) and load it again",
        )
    return chosen


def _as_mirror(addr: str) -> Mirror:
    return Mirror(addr if "://" in addr else f"http://{addr}")


def _version(entry: FileRecordLike) -> str:
    if entry.version:
        return entry.version.lstrip("v")
    m = re.search(r"containerd-([0-9][0-9.]*)", _basename(entry))
    if not m:
        raise NodeError(f"cannot tell the containerd version of {entry.name}")
    return m.group(1).rstrip(".")


AIRLOCK_VENV = "/opt/airlock/venv"
AIRLOCK_LINK = "/usr/local/bin/airlock"


def _airlock_installed(ctx: Context) -> list[str]:
    if ctx.path(f"{AIRLOCK_VENV}/bin/airlock").exists():
        return []
    return [
        f"{AIRLOCK_VENV}/bin/airlock is missing: airlock-registry.service needs it; run "
        f"`python3 airlock-bootstrap.py BUNDLE --venv {AIRLOCK_VENV}` on this node"
    ]


def install_resources(
    source: ArtifactSource,
    *,
    root: Path,
    registry_addrs: Sequence[str],
    containerd_version: str | None = None,
    sandbox_image: str,
    upstreams: Sequence[str],
    platform: str | None = None,
    registry_listen: Sequence[str] = ("127.0.0.1:5000",),
    store: str = DEFAULT_STORE,
    cgroup_driver: str = "systemd",
    restrict_oom_score_adj: bool = False,
    serve_registry: bool = True,
) -> list[Resource]:
    """The resources that install the node's software from `source`, in the order they apply.

    Verifies every blob it uses first (VerificationError naming the file): nothing is
    installed from a bundle that does not match its manifest.
    """
    plat = platform or host_platform()
    chosen = _select(source.files(), plat)
    for tool in ("kubeadm", "kubelet", "kubectl", "runc"):
        _verify_stream(source, chosen[tool])
    scratch = Scratch.create(root)  # removed when the last resource that reads it is gone
    archives = {
        tool: Archive(source, chosen[tool], scratch=scratch)
        for tool in ("crictl", "containerd", "cni-plugins", "helm", "k9s")
        if tool in chosen
    }
    kubelet_unit = _read_verified(source, chosen["kubelet.service"])
    kubeadm_dropin = _read_verified(source, chosen["10-kubeadm.conf"])
    try:
        kubelet_text = kubelet_unit_for_local_bin(kubelet_unit.decode())
        dropin_text = kubelet_unit_for_local_bin(kubeadm_dropin.decode())
    except UnicodeDecodeError as exc:
        raise VerificationError("the kubelet unit in the bundle is not text") from exc

    exe = 0o755
    package_files = [
        f
        for f in source.files()
        if f.kind == "package" and f.platform in ("", plat) and f.name.endswith((".deb", ".rpm"))
    ]
    for f in package_files:  # checked against the manifest before dpkg or rpm sees it
        _verify_stream(source, f)
    packages = [
        Package(
            BlobPayload(source, f),
            filename=f.name,
            family=f.name.rsplit(".", 1)[-1],
            scratch=scratch,
        )
        for f in package_files
    ]
    out: list[Resource] = [
        *([PackageSet(packages)] if packages else []),
        Directory(LOCAL_BIN),
        Directory("/usr/local/sbin"),
        Directory("/opt/cni"),
        Directory(CNI_BIN),
    ]
    for tool in ("kubeadm", "kubelet", "kubectl"):
        out.append(File(f"{LOCAL_BIN}/{tool}", source=BlobPayload(source, chosen[tool]), mode=exe))
    out.append(File(RUNC_PATH, source=BlobPayload(source, chosen["runc"]), mode=exe))
    single = {"crictl": "crictl", "helm": "linux-{arch}/helm", "k9s": "k9s"}
    arch = plat.split("/")[1]
    for tool, member in single.items():
        if tool in archives:
            payload = archives[tool].payload(member.format(arch=arch))
            out.append(File(f"{LOCAL_BIN}/{tool}", source=payload, mode=exe))
    containerd = archives["containerd"]
    bins = sorted(m for m in containerd.members if m.startswith("bin/"))
    if "bin/containerd" not in bins:
        raise NodeError(
            f"{containerd.entry.name} has no bin/containerd", "is it a containerd release?"
        )
    containerd_paths = []
    for member in bins:
        target = f"{LOCAL_BIN}/{PurePosixPath(member).name}"
        containerd_paths.append(target)
        out.append(File(target, source=containerd.payload(member), mode=exe))
    cni = archives["cni-plugins"]
    for name in sorted(cni.members):
        if "/" in name:
            continue  # upstream tarballs are flat; anything nested is not a plugin
        mode = exe if cni.members[name].mode & stat.S_IXUSR else 0o644
        out.append(File(f"{CNI_BIN}/{name}", source=cni.payload(name), mode=mode))

    out.append(
        File(
            CRICTL_YAML,
            content="runtime-endpoint: unix:///run/containerd/containerd.sock\n"
            "image-endpoint: unix:///run/containerd/containerd.sock\n"
            "timeout: 10\n",
        )
    )
    # Mirrors: one hosts.toml per upstream registry, then config.toml pointing at them.
    mirrors = [_as_mirror(a) for a in registry_addrs]
    # no fallback to the real upstream: on an air-gapped node it could only time out (or leak)
    for rel, text in sorted(mirror_files(upstreams, mirrors, upstream_fallback=False).items()):
        out.append(File(f"{CERTS_DIR}/{rel}", content=text))
    version = containerd_version or _version(containerd.entry)

    def containerd_config(existing: str) -> str:
        return render_containerd_config(
            containerd_version=version,
            sandbox_image=sandbox_image,
            existing=existing,
            config_path=CERTS_DIR,
            cgroup_driver=cgroup_driver,
            restrict_oom_score_adj=restrict_oom_score_adj,
            # where the plugins are installed (a distribution's config may say /usr/lib/cni)
            cni_bin_dir=CNI_BIN,
        )

    out.append(File(CONTAINERD_CONFIG, transform=containerd_config, mode=None))
    containerd_unit = f"{SYSTEMD_DIR}/containerd.service"
    registry_unit = f"{SYSTEMD_DIR}/{REGISTRY_UNIT_NAME}"
    out += [
        # airlock itself: installed into /opt/airlock/venv by airlock-bootstrap.py from the
        # bundle's wheelhouse; the registry unit runs it through this link
        Probe("airlock installed (airlock-bootstrap.py)", _airlock_installed),
        Symlink(AIRLOCK_LINK, target=f"{AIRLOCK_VENV}/bin/airlock"),
        File(containerd_unit, content=CONTAINERD_UNIT),
    ]
    if serve_registry:  # a node installed from another node's share has no store to serve
        out += [
            File(registry_unit, content=render_registry_unit(listen=registry_listen, store=store)),
            RegistryCredentials(listen=registry_listen),
        ]
    out += [
        File(KUBELET_UNIT, content=kubelet_text),
        File(KUBEADM_DROPIN, content=dropin_text),
    ]
    if serve_registry:
        out.append(Service(REGISTRY_UNIT_NAME, unit_path=registry_unit))
    out += [
        Service(
            "containerd.service",
            unit_path=containerd_unit,
            depends_on=[CONTAINERD_CONFIG, RUNC_PATH, *containerd_paths],
        ),
        # enabled, not started: until `kubeadm init|join` writes its config the kubelet only
        # exits (a crash loop under systemd, a failed start elsewhere); kubeadm starts it
        Service(
            "kubelet.service",
            unit_path=KUBELET_UNIT,
            depends_on=[KUBEADM_DROPIN, f"{LOCAL_BIN}/kubelet"],
            start=False,
        ),
    ]
    return out
