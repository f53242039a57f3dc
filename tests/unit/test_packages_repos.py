"""Pure parts of airlock.packages: Release/repomd parsing, armor, URLs, plan rows, requests."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.errors import DigestMismatch, UsageError, VerificationError
from airlock.packages import (
    Checksum,
    Closure,
    PackageFile,
    closure_downloads,
    closure_file_requests,
    closure_to_plan_rows,
    package_format,
    verify_package_file,
)
from airlock.packages.repos import (
    clearsigned_body,
    dearmor,
    debian_arch,
    parse_debian_repo_url,
    parse_release,
    parse_repomd,
    rpm_arch,
)
from airlock.packages.rpm import _evr, named_base

RELEASE = """Origin: Debian
Suite: stable
Codename: bookworm
Architectures: all amd64 arm64
Components: main contrib
MD5Sum:
 0123456789abcdef0123456789abcdef  1234 main/binary-amd64/Packages
SHA256:
 {a}  1234 main/binary-amd64/Packages
 {b}  99 main/binary-amd64/Packages.xz
 not-a-hash  1 junk
"""


def test_parse_release_reads_sha256_only() -> None:
    a, b = "a" * 64, "B" * 64
    rel = parse_release(RELEASE.format(a=a, b=b))
    assert rel.architectures == ["all", "amd64", "arm64"]
    assert rel.components == ["main", "contrib"]
    assert rel.fields["codename"] == "bookworm"
    assert set(rel.files) == {"main/binary-amd64/Packages", "main/binary-amd64/Packages.xz"}
    assert rel.files["main/binary-amd64/Packages"].size == 1234
    assert rel.files["main/binary-amd64/Packages.xz"].sha256 == "b" * 64


_line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    max_size=40,
)


@given(st.lists(_line, min_size=1, max_size=12))
def test_clearsigned_body_undoes_dash_escaping(lines: list[str]) -> None:
    body = "\n".join(lines).rstrip("\n") + "\n"
    escaped = "\n".join(("- " + ln) if ln.startswith("-") else ln for ln in body.split("\n"))
    signed = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
        + escaped
        + "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    )
    assert clearsigned_body(signed).rstrip("\n") == body.rstrip("\n")


def test_clearsigned_body_passes_plain_text() -> None:
    assert clearsigned_body("Origin: x\n") == "Origin: x\n"


@given(st.binary(min_size=1, max_size=300))
def test_dearmor_round_trip(data: bytes) -> None:
    b64 = base64.b64encode(data).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    armored = (
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n"
        + "\n".join(lines)
        + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n"
    ).encode()
    assert dearmor(armored) == data
    assert dearmor(armored + armored) == data + data


def test_dearmor_leaves_binary_alone() -> None:
    assert dearmor(b"\x99\x01\x0d") == b"\x99\x01\x0d"


def test_debian_repo_url() -> None:
    assert parse_debian_repo_url("https://h/debian/dists/bookworm") == (
        "https://h/debian/",
        "bookworm",
        ["main"],
    )
    assert parse_debian_repo_url("http://h/d/dists/bookworm-updates/#main,contrib")[1:] == (
        "bookworm-updates",
        ["main", "contrib"],
    )
    with pytest.raises(UsageError, match="not a Debian repository URL"):
        parse_debian_repo_url("https://h/debian/pool/")


def test_arch_names() -> None:
    assert debian_arch("linux/amd64") == "amd64"
    assert debian_arch("linux/arm/v7") == "armhf"
    assert rpm_arch("linux/amd64") == "x86_64"
    assert rpm_arch("linux/arm64") == "aarch64"


@pytest.mark.parametrize(
    ("os_name", "fmt"),
    [("debian-12", "deb"), ("ubuntu-22.04", "deb"), ("fedora-37", "rpm"), ("rocky-9", "rpm")],
)
def test_package_format(os_name: str, fmt: str) -> None:
    assert package_format(os_name) == fmt


def test_package_format_unknown() -> None:
    with pytest.raises(UsageError, match="unknown OS family"):
        package_format("plan9")


REPOMD = b"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="primary">
    <checksum type="sha256">ABCDEF</checksum>
    <open-checksum type="sha256">0000</open-checksum>
    <location href="repodata/abc-primary.xml.zst"/>
    <size>123</size>
  </data>
  <data type="filelists">
    <checksum type="sha512">ff</checksum>
    <location href="repodata/f.xml.gz"/>
  </data>
</repomd>
"""


def test_parse_repomd() -> None:
    data = parse_repomd(REPOMD)
    assert data["primary"].href == "repodata/abc-primary.xml.zst"
    assert data["primary"].checksum == "abcdef"
    assert data["primary"].size == 123
    assert data["filelists"].algorithm == "sha512"
    with pytest.raises(VerificationError):
        parse_repomd(b"<repomd")


def test_rpm_evr_and_bases() -> None:
    assert _evr(' epoch="0" ver="1.2" rel="3.fc37"') == "1.2-3.fc37"
    assert _evr(' epoch="2" ver="1.2" rel="3"') == "2:1.2-3"
    assert "glibc" in named_base("fedora-37")
    with pytest.raises(UsageError):
        named_base("solaris")


def _closure(tmp_path: Path) -> tuple[Closure, Path]:
    payload = tmp_path / "a.deb"
    payload.write_bytes(b"package bytes")
    good = hashlib.sha256(b"package bytes").hexdigest()
    files = (
        PackageFile(
            "zlib",
            "1",
            "amd64",
            "http://h/pool/z.deb",
            Checksum("sha256", good),
            10,
            "a -> b (Depends: zlib)",
            ("a", "b"),
        ),
        PackageFile(
            "a", "2", "amd64", "http://h/pool/a.deb", Checksum("sha256", good), 32, "requested"
        ),
    )
    return Closure("deb", files), payload


def test_plan_rows_and_requests(tmp_path: Path) -> None:
    closure, _payload = _closure(tmp_path)
    assert closure.total_size == 42
    rows = closure_to_plan_rows(closure)
    assert [r["name"] for r in rows] == ["a", "zlib"]
    assert rows[1]["reason"] == "a -> b (Depends: zlib)"
    assert rows[1]["size"] == 10
    reqs = closure_file_requests(closure, mirrors={"http://h/": "http://127.0.0.1:9/m/"})
    assert reqs[0].fetch_url == "http://127.0.0.1:9/m/pool/z.deb"
    assert reqs[0].url == "http://h/pool/z.deb"
    assert reqs[0].checksum is not None and reqs[0].checksum.algorithm == "sha256"
    assert closure_downloads(closure)[1] == (
        "http://h/pool/a.deb",
        reqs[1].checksum.algorithm + ":" + reqs[1].checksum.value,
    )  # type: ignore[union-attr]


def test_sha1_only_is_refused(tmp_path: Path) -> None:
    weak = Closure(
        "rpm",
        (
            PackageFile(
                "a", "1", "x86_64", "http://h/a.rpm", Checksum("sha1", "0" * 40), 1, "requested"
            ),
        ),
    )
    with pytest.raises(VerificationError, match="sha1"):
        closure_file_requests(weak)


def test_verify_package_file(tmp_path: Path) -> None:
    closure, payload = _closure(tmp_path)
    verify_package_file(closure.packages[0], payload)
    payload.write_bytes(b"package bytes, changed")
    with pytest.raises(DigestMismatch, match="zlib 1"):
        verify_package_file(closure.packages[0], payload)
