"""Debian closures with libsolv, checked against apt itself and dpkg.

Oracles:
- the real bookworm metadata apt keeps in /var/lib/apt/lists (`apt-get update` runs first if
  it is missing; it talks to this machine's own configured mirror). airlock's closure for the
  seed's packages is compared with `apt-get install --simulate --no-install-recommends` against
  the same lists and the same installed base (the dpkg status of a debootstrap minbase sysroot
  when one is cached, else the Priority: required closure airlock builds).
- small repositories made here, served on 127.0.0.1, and read by apt-get too (alternatives).
- the resolved .deb files installed with `dpkg --root` into a minbase sysroot; `--audit` clean.
Bad input: an unknown package, an unsatisfiable dependency, a tampered Packages file, a bad or
missing GPG signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import aiohttp
import pytest

from airlock import system
from airlock.blobstore import BlobStore
from airlock.errors import DigestMismatch
from airlock.fetch.downloader import fetch_files
from airlock.packages import (
    Installed,
    PackageNotFound,
    RepoMetadata,
    SignatureError,
    UnsatisfiableDependencies,
    closure_file_requests,
    load_repositories,
    resolve_closure,
    verify_package_file,
)
from airlock.packages.debian import required_base_status
from airlock.packages.repos import load_apt_lists, load_debian_repository
from airlock.spec import Packages

pytestmark = pytest.mark.component

LISTS = Path("/var/lib/apt/lists")
CACHE = Path(os.environ.get("AIRLOCK_TEST_CACHE", "/tmp/airlock-test-cache"))
MINBASE_TAR = CACHE / "debian-bookworm-minbase.tar"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SEED = ["socat", "conntrack", "iptables", "ebtables", "ethtool", "cgroup-tools"]


def require(*binaries: str) -> None:
    missing = [b for b in binaries if system.which(b) is None]
    if missing:
        pytest.fail(f"required binaries missing: {', '.join(missing)} (apt-get install them)")


# ------------------------------------------------------------------------- real bookworm


@pytest.fixture(scope="module")
def bookworm(tmp_path_factory: pytest.TempPathFactory) -> list[RepoMetadata]:
    require("apt-get", "lz4", "gpgv", "/usr/bin/python3")
    if not list(LISTS.glob("*_binary-amd64_Packages*")):
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600)
    repos = load_apt_lists(
        LISTS,
        arch="amd64",
        workdir=tmp_path_factory.mktemp("lists"),
        keys=[DEBIAN_KEYRING],
    )
    assert all(r.signed for r in repos)
    return repos


@pytest.fixture(scope="module")
def base_status(bookworm: list[RepoMetadata], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dpkg status of a minbase install: the cached debootstrap sysroot's, or airlock's."""
    dest = tmp_path_factory.mktemp("base") / "status"
    if MINBASE_TAR.is_file():
        with tarfile.open(MINBASE_TAR) as tar:
            member = tar.extractfile("./var/lib/dpkg/status")
            assert member is not None
            dest.write_bytes(member.read())
        return dest
    return required_base_status(bookworm, arch="amd64", dest=dest, extra=["apt"])


def apt_simulate(status: Path, names: list[str], *extra: str) -> set[tuple[str, str]]:
    """(name, version) that `apt-get install --simulate` would unpack."""
    out = subprocess.run(
        [
            "apt-get",
            "install",
            "--simulate",
            "-q",
            f"-o=Dir::State::status={status}",
            "-o=Debug::NoLocking=1",
            *extra,
            *names,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return {
        (m.group(1), m.group(2))
        for m in re.finditer(r"^Inst (\S+) (?:\[\S+\] )?\((\S+)", out, re.M)
    }


def test_seed_closure_equals_apt(bookworm: list[RepoMetadata], base_status: Path) -> None:
    closure = resolve_closure(
        Packages(os="debian-12", names=SEED),
        installed=Installed(dpkg_status=base_status),
        repos=bookworm,
    )
    ours = {(p.name, p.version) for p in closure.packages}
    expected = apt_simulate(base_status, SEED, "--no-install-recommends")
    assert ours == expected, f"only airlock: {ours - expected}; only apt: {expected - ours}"
    # nothing installed is carried; every file is a full URL with a sha256 and a size
    installed = set(re.findall(r"^Package: (\S+)", base_status.read_text(), re.M))
    assert not {p.name for p in closure.packages if p.replaces is None} & installed
    assert all(p.size > 0 and len(p.checksum.value) == 64 for p in closure.packages)
    assert closure.total_size == sum(p.size for p in closure.packages)
    by_name = {p.name: p for p in closure.packages}
    assert by_name["socat"].reason == "requested"
    assert by_name["libwrap0"].chain[0] == "socat"
    assert by_name["libcgroup2"].chain == ("cgroup-tools",)
    assert all(p.reason == "requested" or p.chain[0] in SEED for p in closure.packages)


def test_recommends_like_apt(bookworm: list[RepoMetadata], base_status: Path) -> None:
    """apt installs Recommends by default; with recommends=True airlock carries them too."""
    names = ["iptables", "socat"]
    closure = resolve_closure(
        Packages(os="debian-12", names=names),
        installed=Installed(dpkg_status=base_status),
        repos=bookworm,
        recommends=True,
    )
    ours = {(p.name, p.version) for p in closure.packages}
    assert ours == apt_simulate(base_status, names)
    assert "nftables" in {p.name for p in closure.packages}  # iptables Recommends: nftables


def test_minimal_base_built_by_airlock_gives_same_closure(
    bookworm: list[RepoMetadata], base_status: Path
) -> None:
    spec = Packages(os="debian-12", names=SEED)
    ours = resolve_closure(spec, installed=Installed(base="minimal"), repos=bookworm)
    apt_base = resolve_closure(spec, installed=Installed(dpkg_status=base_status), repos=bookworm)
    assert {p.name for p in ours.packages} == {p.name for p in apt_base.packages}


def test_unknown_package_names_it_and_the_repositories(
    bookworm: list[RepoMetadata], base_status: Path
) -> None:
    with pytest.raises(PackageNotFound) as err:
        resolve_closure(
            Packages(os="debian-12", names=["socat", "conntrack-tools-nope"]),
            installed=Installed(dpkg_status=base_status),
            repos=bookworm,
        )
    assert "conntrack-tools-nope" in err.value.message
    assert all(r.name in err.value.message for r in bookworm)


def _minbase_sysroot(dest: Path, archive: str) -> None:
    if not MINBASE_TAR.is_file():
        require("debootstrap")
        build = CACHE / f"packages-build-{os.getpid()}"
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(build), archive],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("debootstrap took more than 5 minutes: no sysroot to install into")
        tmp = MINBASE_TAR.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["tar", "-C", str(build), "-cf", str(tmp), "."], check=True)
        tmp.replace(MINBASE_TAR)
        shutil.rmtree(build, ignore_errors=True)
    dest.mkdir()
    subprocess.run(["tar", "-C", str(dest), "-xf", str(MINBASE_TAR)], check=True)


def test_resolved_debs_install_with_dpkg(bookworm: list[RepoMetadata], tmp_path: Path) -> None:
    require("dpkg", "tar")
    sysroot = tmp_path / "root"
    main = next(r for r in bookworm if re.search(r" bookworm main$", r.name))
    _minbase_sysroot(sysroot, main.base_url)
    status = sysroot / "var/lib/dpkg/status"
    closure = resolve_closure(
        Packages(os="debian-12", names=SEED),
        installed=Installed(dpkg_status=status),
        repos=bookworm,
    )

    # apt fetches the files from this machine's configured archive (as when CI installs
    # packages); airlock's own downloader then reads them from loopback only, by metadata
    # checksum, through a `sources`-style mirror of each package's upstream URL.
    pool = tmp_path / "pool"
    pool.mkdir()
    pool.chmod(0o777)
    subprocess.run(
        [
            "apt-get",
            "download",
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            *(f"{p.name}={p.version}" for p in closure.packages),
        ],
        cwd=pool,
        check=True,
        capture_output=True,
        timeout=600,
    )
    by_name = {p.name: p for p in closure.packages}
    for f in pool.iterdir():  # apt names files with an escaped epoch: rename as the metadata does
        name = f.name.split("_", 1)[0]
        f.rename(pool / by_name[name].filename)

    async def download(url: str) -> list[Path]:
        cache = BlobStore(tmp_path / "cache")
        mirrors = {p.url.rsplit("/", 1)[0] + "/": url for p in closure.packages}
        async with aiohttp.ClientSession() as session:
            got = await fetch_files(
                closure_file_requests(closure, mirrors=mirrors), cache=cache, session=session
            )
        debs = tmp_path / "debs"
        debs.mkdir()
        out = []
        for pkg, fetched in zip(closure.packages, got, strict=True):
            dest = debs / pkg.filename
            shutil.copyfile(cache.path(fetched.digest), dest)
            verify_package_file(pkg, dest)
            out.append(dest)
        return out

    with serve(pool) as url:
        debs = asyncio.run(download(url))
    # the node engine's offline install: one dpkg transaction, then nothing left to do
    from airlock.node import engine
    from airlock.node.resources import Package, PackageSet

    class _Local:
        def __init__(self, path: Path) -> None:
            self.path = path
            self.label = path.name

        def digest(self) -> str:
            return "sha256:" + hashlib.sha256(self.path.read_bytes()).hexdigest()

        def open(self) -> contextlib.AbstractContextManager[BinaryIO]:
            return self.path.open("rb")

    pkgs = PackageSet([Package(_Local(d), filename=d.name, family="deb") for d in debs])
    ctx = engine.Context(root=sysroot)
    first, _ = engine.plan_and_apply([pkgs], ctx)
    assert first.changes and f"install {len(debs)} packages offline" in first.changes[0].change.msg
    assert engine.plan([pkgs], ctx).empty
    audit = subprocess.run(["dpkg", f"--root={sysroot}", "--audit"], capture_output=True, text=True)
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout
    listed = subprocess.run(
        ["dpkg-query", f"--root={sysroot}", "-W", "-f=${Package} ${Status}\n", *SEED],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed.count("install ok installed") == len(SEED), listed
    # a downloaded file that differs from the metadata is named
    debs[0].write_bytes(debs[0].read_bytes() + b"x")
    with pytest.raises(DigestMismatch, match=closure.packages[0].name):
        verify_package_file(closure.packages[0], debs[0])


# --------------------------------------------------------------- repositories made here


def _para(name: str, version: str = "1.0", **fields: str) -> str:
    lines = [
        f"Package: {name}",
        f"Version: {version}",
        "Architecture: amd64",
        "Maintainer: airlock <t@example.invalid>",
    ]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in fields.items()]
    payload = f"{name} {version}".encode()
    lines += [
        f"Filename: pool/{name}_{version}_amd64.deb",
        f"Size: {len(payload)}",
        f"SHA256: {hashlib.sha256(payload).hexdigest()}",
        "Description: test",
    ]
    return "\n".join(lines) + "\n"


TOY = [
    _para("a", Depends="zeta | alpha"),
    _para("b", Depends="missing-thing | alpha"),
    _para("c", Depends="alpha (>= 2) | zeta"),
    _para("d", Depends="alpha | zeta, zeta"),
    _para("zeta"),
    _para("alpha"),
    _para("app", Depends="libdep (>= 1.0)"),
    _para("libdep", "1.2"),
    _para("broken", Depends="libdep (>= 3)"),
    _para("needs-ghost", Depends="ghost"),
    _para("left", Conflicts="right"),
    _para("right"),
    _para("both", Depends="left, right"),
]


def make_repo(
    root: Path,
    paragraphs: list[str],
    *,
    suite: str = "toy",
    gnupghome: Path | None = None,
    inrelease: bool = True,
) -> Path:
    """A Debian archive under root: dists/<suite>/{Release,InRelease}, main/binary-amd64."""
    d = root / "dists" / suite
    comp = d / "main/binary-amd64"
    comp.mkdir(parents=True)
    text = "\n".join(paragraphs).encode()
    (comp / "Packages").write_bytes(text)
    (comp / "Packages.xz").write_bytes(lzma.compress(text))
    files = ["main/binary-amd64/Packages", "main/binary-amd64/Packages.xz"]
    sums = "".join(
        f" {hashlib.sha256((d / f).read_bytes()).hexdigest()} {(d / f).stat().st_size} {f}\n"
        for f in files
    )
    (d / "Release").write_text(
        f"Origin: airlock-test\nSuite: {suite}\nCodename: {suite}\n"
        f"Architectures: amd64\nComponents: main\nSHA256:\n{sums}"
    )
    if gnupghome is not None:
        gpg = ["gpg", "--homedir", str(gnupghome), "--batch", "--yes"]
        if inrelease:
            subprocess.run(
                [*gpg, "--clearsign", "-o", str(d / "InRelease"), str(d / "Release")],
                check=True,
                capture_output=True,
            )
        else:
            subprocess.run(
                [*gpg, "--detach-sign", "-o", str(d / "Release.gpg"), str(d / "Release")],
                check=True,
                capture_output=True,
            )
    return root


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def gpg_key(home: Path, uid: str) -> bytes:
    """A fresh ed25519 signing key in `home`; its armored public key."""
    require("gpg")
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--yes", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return subprocess.run(
        [*gpg, "--armor", "--export", uid], check=True, capture_output=True
    ).stdout


@pytest.fixture(scope="module")
def toy_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = make_repo(tmp_path_factory.mktemp("toy"), TOY)
    with serve(root) as url:
        yield url


def toy_repos(url: str, tmp: Path) -> list[RepoMetadata]:
    spec = Packages(os="debian-12", names=[], repositories=[f"{url}dists/toy"])
    return load_repositories(spec, workdir=tmp)


def closure_names(url: str, tmp: Path, names: list[str]) -> set[str]:
    c = resolve_closure(
        Packages(os="debian-12", names=names), installed=Installed(), repos=toy_repos(url, tmp)
    )
    return {p.name for p in c.packages}


def apt_on_toy(url: str, tmp: Path, names: list[str]) -> set[str]:
    """What real apt-get would install from the toy archive on an empty system."""
    (tmp / "lists/partial").mkdir(parents=True, exist_ok=True)
    (tmp / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
    (tmp / "sources.list").write_text(f"deb [trusted=yes] {url} toy main\n")
    (tmp / "status").write_text("")
    opts = [
        f"-o=Dir::Etc::sourcelist={tmp / 'sources.list'}",
        "-o=Dir::Etc::sourceparts=-",
        f"-o=Dir::State::Lists={tmp / 'lists'}",
        f"-o=Dir::State::status={tmp / 'status'}",
        f"-o=Dir::Cache={tmp / 'cache'}",
        "-o=Debug::NoLocking=1",
        "-o=APT::Sandbox::User=root",
        "-o=Dir::Etc::preferencesparts=-",
    ]
    subprocess.run(["apt-get", "update", "-q", *opts], check=True, capture_output=True, timeout=120)
    out = subprocess.run(
        ["apt-get", "install", "--simulate", "--no-install-recommends", *opts, *names],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return set(re.findall(r"^Inst (\S+)", out, re.M))


@pytest.mark.parametrize(
    ("request_", "chosen"),
    [(["a"], "zeta"), (["b"], "alpha"), (["c"], "zeta")],
)
def test_alternatives_chosen_as_apt_does(
    toy_archive: str, tmp_path: Path, request_: list[str], chosen: str
) -> None:
    ours = closure_names(toy_archive, tmp_path / "airlock", request_)
    apt = apt_on_toy(toy_archive, tmp_path / "apt", request_)
    assert ours == apt
    assert chosen in ours


def test_alternative_already_needed_elsewhere_differs_from_apt(
    toy_archive: str, tmp_path: Path
) -> None:
    """`Depends: alpha | zeta, zeta`: apt walks the groups in order and marks alpha for the first
    before it sees that zeta (needed by the second) satisfies it too, so it installs both;
    libsolv installs only zeta. A known, harmless difference: airlock carries one package less,
    and what it carries still satisfies every dependency.
    """
    ours = closure_names(toy_archive, tmp_path / "airlock", ["d"])
    apt = apt_on_toy(toy_archive, tmp_path / "apt", ["d"])
    assert ours == {"d", "zeta"}
    assert apt - ours == {"alpha"} and ours <= apt


def test_reason_chain_and_versions(toy_archive: str, tmp_path: Path) -> None:
    c = resolve_closure(
        Packages(os="debian-12", names=["app"]),
        installed=Installed(),
        repos=toy_repos(toy_archive, tmp_path),
    )
    dep = next(p for p in c.packages if p.name == "libdep")
    assert dep.version == "1.2" and dep.chain == ("app",)
    assert dep.reason == "app (Depends: libdep >= 1.0)"
    assert dep.url == f"{toy_archive}pool/libdep_1.2_amd64.deb"
    assert dep.size == len(b"libdep 1.2")


def test_already_installed_is_not_carried(toy_archive: str, tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        _para("libdep", "1.5").replace(
            "Package: libdep\n", "Package: libdep\nStatus: install ok installed\n"
        )
        + "\n"
        + _para("app").replace(
            "Package: app\n", "Package: app\nStatus: deinstall ok config-files\n"
        )
    )
    c = resolve_closure(
        Packages(os="debian-12", names=["app"]),
        installed=Installed(dpkg_status=status),
        repos=toy_repos(toy_archive, tmp_path / "r"),
    )
    assert [p.name for p in c.packages] == ["app"]  # config-files only: app is not installed


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (["broken"], ["libdep >= 3", "broken"]),
        (["needs-ghost"], ["ghost"]),
        (["both"], ["left", "right", "conflict"]),
    ],
)
def test_unsatisfiable_explains_the_chain(
    toy_archive: str, tmp_path: Path, names: list[str], words: list[str]
) -> None:
    with pytest.raises(UnsatisfiableDependencies) as err:
        resolve_closure(
            Packages(os="debian-12", names=names),
            installed=Installed(),
            repos=toy_repos(toy_archive, tmp_path),
        )
    for word in words:
        assert word in err.value.message, err.value.message


def test_tampered_packages_file_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "archive", TOY)
    xz = root / "dists/toy/main/binary-amd64/Packages.xz"
    xz.write_bytes(lzma.compress(b"Package: evil\nVersion: 1\n"))
    with serve(root) as url, pytest.raises(DigestMismatch) as err:
        load_debian_repository(f"{url}dists/toy", arch="amd64", workdir=tmp_path / "w")
    assert "Packages.xz" in err.value.message


def test_gpg_signatures(tmp_path: Path) -> None:
    require("gpg", "gpgv")
    good_key = gpg_key(tmp_path / "signer", "airlock signer <s@example.invalid>")
    other_key = gpg_key(tmp_path / "other", "someone else <o@example.invalid>")
    root = make_repo(tmp_path / "archive", TOY, gnupghome=tmp_path / "signer")
    detached = make_repo(tmp_path / "detached", TOY, gnupghome=tmp_path / "signer", inrelease=False)
    unsigned = make_repo(tmp_path / "unsigned", TOY)
    with serve(root) as url, serve(detached) as url2, serve(unsigned) as url3:
        repos = load_debian_repository(
            f"{url}dists/toy", arch="amd64", workdir=tmp_path / "1", keys=[good_key]
        )
        assert repos[0].signed
        repos = load_debian_repository(
            f"{url2}dists/toy", arch="amd64", workdir=tmp_path / "2", keys=[good_key]
        )
        assert repos[0].signed
        assert not load_debian_repository(f"{url3}dists/toy", arch="amd64", workdir=tmp_path / "3")[
            0
        ].signed
        with pytest.raises(SignatureError, match="InRelease"):
            load_debian_repository(
                f"{url}dists/toy", arch="amd64", workdir=tmp_path / "4", keys=[other_key]
            )
        with pytest.raises(SignatureError, match="missing"):
            load_debian_repository(
                f"{url3}dists/toy", arch="amd64", workdir=tmp_path / "5", keys=[good_key]
            )
        # tamper with the signed text: the signature no longer verifies
        inrel = root / "dists/toy/InRelease"
        inrel.write_text(inrel.read_text().replace("Origin: airlock-test", "Origin: evil-test"))
        with pytest.raises(SignatureError, match="does not verify"):
            load_debian_repository(
                f"{url}dists/toy", arch="amd64", workdir=tmp_path / "6", keys=[good_key]
            )
        rel = detached / "dists/toy/Release"
        rel.write_text(rel.read_text() + "Label: changed\n")
        with pytest.raises(SignatureError):
            load_debian_repository(
                f"{url2}dists/toy", arch="amd64", workdir=tmp_path / "7", keys=[good_key]
            )


def test_real_inrelease_refused_with_the_wrong_key(tmp_path: Path) -> None:
    if not list(LISTS.glob("*_InRelease")):
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600)
    wrong = gpg_key(tmp_path / "k", "not debian <n@example.invalid>")
    with pytest.raises(SignatureError):
        load_apt_lists(LISTS, arch="amd64", workdir=tmp_path / "w", keys=[wrong])
