"""RPM closures with libsolv, checked against dnf on a repository built here.

The repository is made with `rpmbuild` and `createrepo_c` (Debian packages `rpm` and
`createrepo-c`) and has versioned requires, a virtual provide, a rich dependency
`(backend-a or backend-b)`, an obsoletes and a file dependency. dnf (Debian package `dnf`) works
on Debian 12: `dnf --installroot ... install --downloadonly --downloaddir` against the same
repository, with the same installed package in the root's rpmdb, is the oracle.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_packages_debian import gpg_key, serve

from airlock import system
from airlock.errors import DigestMismatch
from airlock.packages import (
    Installed,
    InstalledPackage,
    PackageNotFound,
    RepoMetadata,
    SignatureError,
    UnsatisfiableDependencies,
    load_repositories,
    resolve_closure,
    verify_package_file,
)
from airlock.packages.repos import load_rpm_repository
from airlock.spec import Packages

pytestmark = pytest.mark.component

# name, version, spec lines
RPMS = [
    (
        "app",
        "1.0",
        [
            "Requires: libfoo >= 1.5",
            "Requires: (backend-a or backend-b)",
            "Requires: virt-thing",
            "Requires: /usr/bin/helper-tool",
        ],
    ),
    ("libfoo", "1.0", []),
    ("libfoo", "2.0", []),
    ("backend-a", "1.0", []),
    ("backend-b", "1.0", []),
    ("provider", "1.0", ["Provides: virt-thing"]),
    (
        "helper",
        "1.0",
        [
            "%install",
            "mkdir -p %{buildroot}/usr/bin",
            "touch %{buildroot}/usr/bin/helper-tool",
            "%files",
            "/usr/bin/helper-tool",
        ],
    ),
    ("oldtool", "1.0", []),
    ("newtool", "2.0", ["Obsoletes: oldtool < 2", "Provides: oldtool = 2.0"]),
    ("broken", "1.0", ["Requires: libfoo >= 3"]),
    ("needs-b", "1.0", ["Requires: backend-b", "Requires: (backend-a or backend-b)"]),
]


def require_rpm_tools() -> None:
    missing = [b for b in ("rpmbuild", "createrepo_c", "dnf", "rpm") if system.which(b) is None]
    if missing:
        # Debian packages rpm, createrepo-c, dnf (scripts/deps.sh should install them)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "rpm", "createrepo-c", "dnf"],
            capture_output=True,
            timeout=600,
            check=False,
        )
    missing = [b for b in ("rpmbuild", "createrepo_c", "dnf", "rpm") if system.which(b) is None]
    if missing:
        pytest.fail(f"missing {missing}: apt-get install rpm createrepo-c dnf")


def build_repo(root: Path) -> Path:
    require_rpm_tools()
    repo, top = root / "repo", root / "top"
    repo.mkdir(parents=True)
    for name, version, lines in RPMS:
        body = [
            f"Name: {name}",
            f"Version: {version}",
            "Release: 1",
            "Summary: t",
            "License: MIT",
            "BuildArch: noarch",
        ]
        body += [ln for ln in lines if ln.startswith(("Requires", "Provides", "Obsoletes"))]
        body += ["%description", "t"]
        rest = [ln for ln in lines if not ln.startswith(("Requires", "Provides", "Obsoletes"))]
        body += rest if rest else ["%files"]
        spec = root / f"{name}-{version}.spec"
        spec.write_text("\n".join(body) + "\n")
        subprocess.run(
            [
                "rpmbuild",
                "-bb",
                "--quiet",
                "--define",
                f"_topdir {top}",
                "--define",
                f"_rpmdir {repo}",
                str(spec),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    subprocess.run(["createrepo_c", "-q", str(repo)], check=True, capture_output=True, timeout=120)
    return repo


@pytest.fixture(scope="module")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    repo = build_repo(tmp_path_factory.mktemp("rpm"))
    with serve(repo) as url:
        yield repo, url


def repos_for(url: str, tmp: Path) -> list[RepoMetadata]:
    return load_repositories(Packages(os="fedora-37", repositories=[url]), workdir=tmp)


def dnf_downloads(repo: Path, tmp: Path, names: list[str], installed: list[str]) -> set[str]:
    """NEVRAs dnf would download for `names` into a root holding `installed` rpm files."""
    root, reposdir, dl = tmp / "root", tmp / "repos.d", tmp / "dl"
    for d in (root, reposdir, dl):
        d.mkdir(parents=True)
    (reposdir / "local.repo").write_text(
        f"[local]\nname=local\nbaseurl=file://{repo}\ngpgcheck=0\nenabled=1\n"
    )
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True, capture_output=True)
    for name in installed:
        rpm = next(repo.glob(f"noarch/{name}.noarch.rpm"))
        subprocess.run(
            ["rpm", "--root", str(root), "-i", "--nodeps", "--justdb", str(rpm)],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [
            "dnf",
            "-q",
            "--installroot",
            str(root),
            f"--setopt=reposdir={reposdir}",
            f"--setopt=cachedir={tmp / 'cache'}",
            "--releasever=37",
            "--setopt=install_weak_deps=False",
            "install",
            "-y",
            "--downloadonly",
            "--downloaddir",
            str(dl),
            *names,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {p.name.removesuffix(".rpm") for p in dl.glob("*.rpm")}


@pytest.mark.parametrize(
    ("names", "installed"),
    [(["app"], []), (["app", "newtool"], ["oldtool-1.0-1"]), (["needs-b"], [])],
)
def test_closure_equals_dnf(
    rpm_repo: tuple[Path, str], tmp_path: Path, names: list[str], installed: list[str]
) -> None:
    repo, url = rpm_repo
    have = tuple(
        InstalledPackage(n.rsplit("-", 2)[0], "-".join(n.rsplit("-", 2)[1:]), "noarch")
        for n in installed
    )
    closure = resolve_closure(
        Packages(os="fedora-37", names=names),
        installed=Installed(packages=have),
        repos=repos_for(url, tmp_path / "meta"),
    )
    ours = {f"{p.name}-{p.version}.{p.arch}" for p in closure.packages}
    assert ours == dnf_downloads(repo, tmp_path / "dnf", names, installed)


def test_rich_dep_provides_obsoletes_and_reasons(
    rpm_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo, url = rpm_repo
    closure = resolve_closure(
        Packages(os="fedora-37", names=["app", "newtool"]),
        installed=Installed(packages=(InstalledPackage("oldtool", "1.0-1", "noarch"),)),
        repos=repos_for(url, tmp_path),
    )
    by = {p.name: p for p in closure.packages}
    assert set(by) == {"app", "libfoo", "backend-a", "provider", "helper", "newtool"}
    assert by["libfoo"].version == "2.0-1"  # the only one that meets >= 1.5
    assert by["backend-a"].reason == "app (Requires: (backend-a or backend-b))"
    assert by["provider"].reason == "app (Requires: virt-thing)"
    assert by["helper"].chain == ("app",)  # a file dependency
    assert by["newtool"].replaces == "oldtool-1.0-1.noarch"
    for p in closure.packages:
        assert p.url.startswith(url) and p.checksum.algorithm == "sha256"
        local = repo / p.url[len(url) :]
        assert p.size == local.stat().st_size
        verify_package_file(p, local)
    tampered = tmp_path / "x.rpm"
    tampered.write_bytes(b"not an rpm")
    with pytest.raises(DigestMismatch):
        verify_package_file(by["app"], tampered)


def test_installed_base_and_already_installed(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    _repo, url = rpm_repo
    closure = resolve_closure(
        Packages(os="fedora-37", names=["app", "libfoo"]),
        installed=Installed(
            packages=(
                InstalledPackage("libfoo", "2.0-1", "noarch"),
                InstalledPackage("provider", "1.0-1", "noarch"),
            )
        ),
        repos=repos_for(url, tmp_path),
    )
    assert {p.name for p in closure.packages} == {"app", "backend-a", "helper"}
    assert closure.already_installed == ("libfoo",)


def test_bad_input(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    _repo, url = rpm_repo
    repos = repos_for(url, tmp_path)
    with pytest.raises(PackageNotFound, match="nope-pkg") as err:
        resolve_closure(
            Packages(os="fedora-37", names=["nope-pkg"]), installed=Installed(), repos=repos
        )
    assert url in err.value.message
    with pytest.raises(UnsatisfiableDependencies, match=r"libfoo >= 3"):
        resolve_closure(
            Packages(os="fedora-37", names=["broken"]), installed=Installed(), repos=repos
        )


@contextlib.contextmanager
def copied(repo: Path, dest: Path) -> Iterator[Path]:
    shutil.copytree(repo, dest)
    yield dest


def test_tampered_primary_and_signatures(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    repo, _url = rpm_repo
    key = gpg_key(tmp_path / "signer", "rpm signer <r@example.invalid>")
    other = gpg_key(tmp_path / "other", "other <o@example.invalid>")
    with copied(repo, tmp_path / "signed") as signed, serve(signed) as url:
        with pytest.raises(SignatureError, match="missing"):
            load_rpm_repository(url, workdir=tmp_path / "0", keys=[key])
        repomd = signed / "repodata/repomd.xml"
        subprocess.run(
            [
                "gpg",
                "--homedir",
                str(tmp_path / "signer"),
                "--batch",
                "--yes",
                "--armor",
                "--detach-sign",
                "-o",
                f"{repomd}.asc",
                str(repomd),
            ],
            check=True,
            capture_output=True,
        )
        assert load_rpm_repository(url, workdir=tmp_path / "1", keys=[key]).signed
        with pytest.raises(SignatureError):
            load_rpm_repository(url, workdir=tmp_path / "2", keys=[other])
        repomd.write_bytes(repomd.read_bytes().replace(b"<revision>", b"<revision>9"))
        with pytest.raises(SignatureError, match="does not verify"):
            load_rpm_repository(url, workdir=tmp_path / "3", keys=[key])
    with copied(repo, tmp_path / "tampered") as bad, serve(bad) as url:
        primary = next((bad / "repodata").glob("*-primary.xml.gz"))
        text = gzip.decompress(primary.read_bytes()).replace(b"libfoo", b"libbar")
        primary.write_bytes(gzip.compress(text))
        with pytest.raises(DigestMismatch, match="primary"):
            load_rpm_repository(url, workdir=tmp_path / "4")


def test_system_python_fallback_gives_the_same_closure(
    rpm_repo: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PyPI's `solv` in the venv, Debian's python3-solv solves rpm-md the same way."""
    _repo, url = rpm_repo
    repos = repos_for(url, tmp_path)
    spec = Packages(os="fedora-37", names=["app", "newtool"])
    have = Installed(packages=(InstalledPackage("oldtool", "1.0-1", "noarch"),))
    in_process = resolve_closure(spec, installed=have, repos=repos)
    monkeypatch.setattr("airlock.packages.rpm.load_solv", lambda: None)
    via_system = resolve_closure(spec, installed=have, repos=repos)
    assert via_system == in_process
