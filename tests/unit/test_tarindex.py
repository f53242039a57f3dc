"""The one hardened tar indexer: what tarfile writes is indexed exactly; hostile archives (pax
bombs, links, devices, traversal, a million tiny members) are refused or indexed within bounds."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.standalone.tarindex import (
    MAX_PAX_BYTES,
    TarEntry,
    TarIndexError,
    VolumeReader,
    iter_entries,
)

FORMATS = [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]


def index(raw: bytes, **kw: int) -> list[TarEntry]:
    return list(iter_entries(lambda o, n: raw[o : o + n], len(raw), **kw))


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def special(kind: bytes, name: str = "x", linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info)
    return buf.getvalue()


def raw_header(name: bytes, size_field: bytes, kind: bytes, magic: bytes = b"ustar\x0000") -> bytes:
    """A ustar header with any size field (no tarfile checks), its checksum right."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\x00"
    block[124:136] = size_field
    block[156:157] = kind
    block[257:265] = magic
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


@pytest.mark.parametrize("fmt", FORMATS)
def test_offsets_match_tarfile(fmt: int) -> None:
    long = "d/" + "n" * 150 + "/file"
    members = [("airlock.json", b"{}"), ("blobs/", b""), (long, b"x" * 700), ("ü-ñ", b"")]
    if fmt == tarfile.USTAR_FORMAT:
        members = [(n, d) for n, d in members if n.isascii()]
    raw = make_tar(members, fmt)
    got = index(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        expected = [TarEntry(m.name, m.size, m.offset_data, m.isdir()) for m in tf]
    assert got == expected
    for entry, (_, data) in zip(got, members, strict=True):
        assert raw[entry.offset : entry.offset + entry.size] == data


@given(
    st.lists(
        st.tuples(
            st.text(
                st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/\\"),
                min_size=1,
                max_size=120,
            ).filter(lambda s: s not in (".", "..")),
            st.binary(max_size=1500),
        ),
        max_size=8,
        unique_by=lambda m: m[0],
    )
)
def test_any_tarfile_archive_indexes_like_tarfile(members: list[tuple[str, bytes]]) -> None:
    raw = make_tar(members)
    assert [(e.name, raw[e.offset : e.offset + e.size]) for e in index(raw)] == members


def test_pax_header_bomb_is_refused_before_reading() -> None:
    reads: list[int] = []
    huge = raw_header(b"././@PaxHeader", b"%011o\x00" % (8 << 30), b"x")

    def read_at(offset: int, n: int) -> bytes:
        reads.append(n)
        return huge[offset : offset + n]

    with pytest.raises(TarIndexError, match=r"pax header at offset 0 is 8589934592 bytes"):
        list(iter_entries(read_at, 1 << 40))
    assert max(reads) <= 1 << 16  # the declared 8 GiB was never asked for


def test_pax_header_limit_is_one_mib() -> None:
    ok = _pax_member("a" * (MAX_PAX_BYTES - 64))
    assert [e.name for e in index(ok)] == ["f"]
    with pytest.raises(TarIndexError, match="at most 1048576 allowed"):
        index(_pax_member("a" * MAX_PAX_BYTES))


def _pax_member(comment: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": comment}
        tf.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (special(tarfile.SYMTYPE, "l", "/etc/passwd"), "symbolic link"),
        (special(tarfile.LNKTYPE, "h", "airlock.json"), "hard link"),
        (special(tarfile.CHRTYPE), "character device"),
        (special(tarfile.BLKTYPE), "block device"),
        (special(tarfile.FIFOTYPE), "FIFO"),
        (make_tar([("/etc/cron.d/x", b"")]), "absolute path"),
        (make_tar([("blobs/../../x", b"")]), r"'\.\.'"),
        (make_tar([("a\\b", b"")]), "backslash"),
        (raw_header(b"f", b"00000000001\x00", b"S") + bytes(1024), "sparse"),
        (raw_header(b"g", b"00000000000\x00", b"g") + bytes(1024), "global pax"),
        (raw_header(b"f", b"00000000000\x00", b"Z") + bytes(1024), "unsupported entry type"),
        (raw_header(b"\xff\xfe", b"00000000000\x00", b"0") + bytes(1024), "not UTF-8"),
    ],
)
def test_hostile_entries_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(TarIndexError, match=message):
        index(raw)


def test_damage_is_named() -> None:
    raw = make_tar([("airlock.json", b"{}"), ("blob", b"x" * 5000)])
    bad = bytearray(raw)
    bad[1024 + 10] ^= 0xFF  # inside the second header (after airlock.json's data block)
    with pytest.raises(TarIndexError, match="bad checksum"):
        index(bytes(bad))
    with pytest.raises(TarIndexError, match="'blob': truncated") as info:
        index(raw[:3000])
    assert info.value.truncated and info.value.member == "blob"
    end = 1536 + 5000 + 120  # blob's data, padded to a block: the end marker would follow
    with pytest.raises(TarIndexError, match="without its end marker"):
        index(raw[:end])
    with pytest.raises(TarIndexError, match="bad checksum"):
        index(b"PK\x03\x04" + bytes(2000))
    v7 = raw_header(b"f", b"00000000000\x00", b"0", magic=bytes(8))
    with pytest.raises(TarIndexError, match="not a ustar or pax header"):
        index(v7 + bytes(1024))


def test_member_cap() -> None:
    raw = make_tar([(f"m{i}", b"") for i in range(20)])
    assert len(index(raw, max_members=20)) == 20
    with pytest.raises(TarIndexError, match="more entries than the 19 allowed"):
        index(raw, max_members=19)


def test_volume_reader_reads_across_files(tmp_path: Path) -> None:
    raw = make_tar([("a", b"1" * 3000), ("b", b"2" * 9000)])
    cuts = [0, 700, 5000, 5001, len(raw)]
    paths = []
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        p = tmp_path / f"v.{i:03d}"
        p.write_bytes(raw[lo:hi])
        paths.append(p)
    with VolumeReader(paths) as reader:
        assert reader.size == len(raw)
        assert reader.read_at(650, 5000) == raw[650:5650]
        entries = list(iter_entries(reader.read_at, reader.size))
        assert [reader.read_at(e.offset, e.size) for e in entries] == [b"1" * 3000, b"2" * 9000]


# A subprocess writes and indexes the archive, so its peak memory is its own.
_MILLION = textwrap.dedent(
    """
    import json, sys, time
    from airlock.standalone.tarindex import VolumeReader, iter_entries

    path = sys.argv[1]

    def header(name):
        block = bytearray(512)
        block[0:len(name)] = name
        block[100:108] = b"0000644\\x00"
        block[124:136] = b"00000000001\\x00"
        block[156:157] = b"0"
        block[257:265] = b"ustar\\x0000"
        block[148:156] = b"%06o\\x00 " % (sum(block) + 256)
        return bytes(block)

    with open(path, "wb", buffering=1 << 20) as fh:
        data = b"x" + bytes(511)
        for i in range(1_000_000):
            fh.write(header(b"m%07d" % i))
            fh.write(data)
        fh.write(bytes(1024))
    start = time.monotonic()
    with VolumeReader([path]) as reader:
        count = sum(1 for _ in iter_entries(reader.read_at, reader.size))
    seconds = time.monotonic() - start
    # VmHWM belongs to this program's memory; ru_maxrss would carry the forking pytest
    # worker's high-water mark across exec
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    peak = int(hwm.split()[1]) * 1024
    print(json.dumps({"count": count, "seconds": seconds, "peak": peak}))
    """
)


def test_a_million_tiny_members_index_in_bounds(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _MILLION, str(tmp_path / "million.tar")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    got = json.loads(proc.stdout)
    assert got["count"] == 1_000_000
    assert got["seconds"] < 60, got
    assert got["peak"] < 256 << 20, got


@pytest.mark.parametrize(
    "raw",
    [
        raw_header(b"././@PaxHeader", b"%011o\x00" % (8 << 30), b"x"),
        special(tarfile.SYMTYPE, "blobs/sha256/x", "/etc/shadow"),
        make_tar([("../../etc/passwd", b"x")]),
    ],
    ids=["pax-bomb", "symlink", "traversal"],
)
def test_every_bundle_reader_refuses_through_the_one_indexer(raw: bytes, tmp_path: Path) -> None:
    from airlock.bundle.handle import Bundle
    from airlock.bundle.reader import open_bundle
    from airlock.errors import VerificationError
    from airlock.trust import TrustPolicy

    path = tmp_path / "hostile.airlock.tar"
    path.write_bytes(raw + bytes(10240))
    with pytest.raises(VerificationError):
        open_bundle(path)
    with pytest.raises(VerificationError):  # the handle load, serve and install open bundles with
        Bundle.open(path, trust=TrustPolicy((), allow_unsigned=True))
