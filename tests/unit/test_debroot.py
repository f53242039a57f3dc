"""debroot's pure parts: apt sources of this machine's release, and ELF loader/library names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock_lab.debroot import NET_TOOLS, debian_repositories, debian_sources, elf_info

ARCHIVE = "http://mirror.invalid/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _etc(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_deb822_and_one_line_sources_of_the_release_only(tmp_path: Path) -> None:
    etc = _etc(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                f"Types: deb\nURIs: {ARCHIVE}\nSuites: bookworm bookworm-updates\n"
                f"Components: main contrib\nSigned-By: {KEYRING}\n\n"
                f"Types: deb-src\nURIs: {ARCHIVE}\nSuites: bookworm\nComponents: main\n\n"
                f"Types: deb\nURIs: {ARCHIVE}\nSuites: trixie\nComponents: main\n"
            ),
            "sources.list.d/old.sources.disabled": (
                f"Types: deb\nURIs: {ARCHIVE}-x\nSuites: bookworm\nComponents: main\n"
            ),
            "sources.list": f"deb {ARCHIVE}-security bookworm-security main\n"
            f"deb [arch=amd64] {ARCHIVE}-other bookworm non-free\n",
        },
    )
    assert debian_sources(etc, codename="bookworm") == [
        f"deb {ARCHIVE}-security bookworm-security main",
        f"deb [signed-by={KEYRING}] {ARCHIVE} bookworm main",
        f"deb [signed-by={KEYRING}] {ARCHIVE} bookworm-updates main",
    ]


def test_no_entry_for_the_release_is_a_clear_error(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list": f"deb {ARCHIVE} trixie main\n"})
    with pytest.raises(UsageError, match="no Debian bookworm entry"):
        debian_sources(etc, codename="bookworm")


OS_RELEASE = 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'


def test_repositories_for_the_spec_from_apts_sources_with_their_keys(tmp_path: Path) -> None:
    etc = _etc(
        tmp_path / "apt",
        {
            "sources.list.d/debian.sources": (
                f"Types: deb\nURIs: {ARCHIVE}/\nSuites: bookworm bookworm-updates\n"
                f"Components: main\nSigned-By: {KEYRING}\n"
            ),
            "sources.list": f"deb {ARCHIVE}-security bookworm-security main\n",
            "trusted.gpg.d/extra.asc": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n",
            "trusted.gpg.d/README": "not a keyring\n",
        },
    )
    release = tmp_path / "os-release"
    release.write_text(OS_RELEASE)
    repos = debian_repositories(etc, os_release=release)
    assert repos.os == "debian-12"
    assert repos.repositories == (
        f"{ARCHIVE}-security/dists/bookworm-security#main",
        f"{ARCHIVE}/dists/bookworm#main",
        f"{ARCHIVE}/dists/bookworm-updates#main",
    )
    # the security entry has no Signed-By: apt checks it with its trusted keyrings
    assert repos.keys == (KEYRING, str(etc / "trusted.gpg.d/extra.asc"))


def test_repositories_need_a_debian_release(tmp_path: Path) -> None:
    etc = _etc(tmp_path / "apt", {"sources.list": f"deb {ARCHIVE} bookworm main\n"})
    release = tmp_path / "os-release"
    release.write_text('ID=fedora\nVERSION_ID="39"\n')
    with pytest.raises(UsageError, match="not a Debian release"):
        debian_repositories(etc, os_release=release)


def test_elf_info_reads_the_loader_and_needed_libraries() -> None:
    true = Path(shutil.which("true") or "/bin/true").resolve()
    info = elf_info(true.read_bytes())
    assert info is not None
    assert info.interpreter.startswith("/lib") and "ld-linux" in info.interpreter
    assert "libc.so.6" in info.needed
    static = elf_info(Path("/usr/bin/busybox").read_bytes())  # busybox-static
    assert static is not None and static.interpreter == "" and static.needed == ()
    assert elf_info(b"#!/bin/sh\n") is None


def test_elf_info_refuses_32_bit_files() -> None:
    with pytest.raises(UsageError, match="64-bit"):
        elf_info(b"\x7fELF\x01\x01" + bytes(58))


def test_net_tools_link_iptables_to_the_nft_backend_as_debian_does() -> None:
    links = dict(NET_TOOLS.alternatives)
    assert links["usr/sbin/iptables"] == "iptables-nft"
    assert links["usr/sbin/ip6tables-restore"] == "ip6tables-nft-restore"
