"""Upstream checksum files in their real shapes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.content import UpstreamChecksum
from airlock.errors import FetchError, UsageError
from airlock.fetch.checksums import (
    ChecksumHasher,
    checksum_from_spec,
    checksum_matches_digest,
    parse_checksum_file,
    url_filename,
)

SRC = "https://example.test/x.sha256"
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
hex128 = st.text(alphabet="0123456789abcdef", min_size=128, max_size=128)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True)


@given(value=hex64)
def test_bare_hex_file_like_dl_k8s_io(value: str) -> None:
    got = parse_checksum_file(value + "\n", filename="kubeadm", source=SRC)
    assert got == UpstreamChecksum("sha256", value, SRC)


@given(value=hex128)
def test_bare_sha512(value: str) -> None:
    got = parse_checksum_file(value.upper(), filename="kubeadm", source=SRC)
    assert got == UpstreamChecksum("sha512", value, SRC)


@given(
    entries=st.dictionaries(names, hex64, min_size=1, max_size=8),
    binary=st.booleans(),
    data=st.data(),
)
def test_sha256sum_multi_line_picks_our_file(
    entries: dict[str, str], binary: bool, data: st.DataObject
) -> None:
    mark = "*" if binary else " "
    text = "".join(f"{h} {mark}{n}\n" for n, h in entries.items())
    name = data.draw(st.sampled_from(sorted(entries)))
    got = parse_checksum_file(text, filename=name, source=SRC)
    assert (got.algorithm, got.value) == ("sha256", entries[name])


def test_k9s_checksums_txt() -> None:
    text = (
        "0a2d8f3e5f2bca0a6e3c2b1f8a7d9e6c5b4a39281706f5e4d3c2b1a09f8e7d6c  k9s_Darwin_amd64.tar.gz\n"
        "1b3e9f4a6a3cdb1b7f4d3c2a9b8e0f7d6c5b4a39281706f5e4d3c2b1a09f8e7d  k9s_Linux_amd64.tar.gz\n"
        "2c4fa05b7b4dec2c805e4d3bac9f1a8e7d6c5b4a39281706f5e4d3c2b1a09f8e  k9s_Linux_arm64.tar.gz\n"
    )
    got = parse_checksum_file(text, filename="k9s_Linux_amd64.tar.gz", source=SRC)
    assert got.value.startswith("1b3e9f4a")


def test_bsd_style_and_paths() -> None:
    h = "ab" * 32
    got = parse_checksum_file(f"SHA256 (dist/helm.tgz) = {h}\n", filename="helm.tgz", source=SRC)
    assert got.value == h
    got = parse_checksum_file(f"{h}  ./out/helm.tgz\n", filename="helm.tgz", source=SRC)
    assert got.value == h


def test_missing_file_is_named() -> None:
    with pytest.raises(FetchError) as exc:
        parse_checksum_file("ab" * 32 + "  other.tgz\n", filename="mine.tgz", source=SRC)
    assert "mine.tgz" in str(exc.value) and "other.tgz" in str(exc.value) and SRC in str(exc.value)


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "nothex  file\n", "abcd  file\n", "a" * 40 + "  file\n"]
)
def test_rejects_garbage(text: str) -> None:
    with pytest.raises(FetchError):
        parse_checksum_file(text, filename="file", source=SRC)


def test_conflicting_lines_refused() -> None:
    text = f"{'a' * 64}  f\n{'b' * 64}  f\n"
    with pytest.raises(FetchError):
        parse_checksum_file(text, filename="f", source=SRC)


@given(value=hex64)
def test_spec_values(value: str) -> None:
    assert checksum_from_spec(f"sha256:{value}").value == value
    assert checksum_from_spec(value.upper()).algorithm == "sha256"
    with pytest.raises(UsageError):
        checksum_from_spec(f"sha512:{value}")


@given(payload=st.binary(max_size=4096), cut=st.integers(min_value=0, max_value=4096))
def test_hasher_streaming_equals_one_shot(payload: bytes, cut: int) -> None:
    h = ChecksumHasher("sha512")
    h.update(payload[:cut])
    h.update(payload[cut:])
    assert h.upstream_value == hashlib.sha512(payload).hexdigest()
    assert h.digest == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert h.size == len(payload)
    ck = UpstreamChecksum("sha256", hashlib.sha256(payload).hexdigest(), "spec")
    assert checksum_matches_digest(ck, h.digest)


def test_url_filename() -> None:
    assert url_filename("https://dl.k8s.io/release/v1.27.3/bin/linux/amd64/kubeadm") == "kubeadm"
    assert url_filename("https://x/a%20b.tgz?x=1") == "a b.tgz"
