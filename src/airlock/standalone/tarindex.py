"""A hardened tar indexer: where each member's bytes are, from the headers alone (stdlib only).

One indexer for every reader of a bundle: `bundle/reader.py`, the registry's bundle source and
the generated bootstrap script (which embeds this file's source, since it cannot import
airlock). It never extracts and never trusts a header before checking it:

- ustar and pax headers only (what Python's tarfile writes in PAX_FORMAT; GNU long names too),
  each header's checksum checked;
- a pax extended header above `max_pax_bytes` (1 MiB) or a long name above 4 KiB is refused
  before a byte of it is read; global pax headers, sparse files, links, devices and FIFOs are
  refused;
- names are UTF-8 relative paths without `..`, NUL or backslash;
- at most `max_members` entries; every member's data must lie inside the archive (a missing
  volume shows as a truncated member, named);
- reads go through a small window, so memory stays bounded whatever the archive holds.

`iter_entries` yields `TarEntry(name, size, offset, is_dir)` in archive order and stops at the
first zero block (end of archive). What to keep and which names are allowed is the caller's
policy. Errors are `TarIndexError` (a ValueError) naming the member and its header offset.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: `bundle verify` imports this before it forks its hashing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    ReadAt = Callable[[int, int], bytes]

__all__ = [
    "BLOCK",
    "MAX_MEMBERS",
    "MAX_NAME_BYTES",
    "MAX_PAX_BYTES",
    "TarEntry",
    "TarIndexError",
    "VolumeReader",
    "iter_entries",
]

BLOCK = 512
MAX_PAX_BYTES = 1 << 20
MAX_NAME_BYTES = 4096
MAX_MEMBERS = 1_000_000
_WINDOW = 1 << 16
_PAGE = 1 << 12
_ZERO = bytes(BLOCK)
_POSIX_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_REGULAR = (b"0", b"\x00", b"7")
_REFUSED_TYPES = {
    b"1": "is a hard link; bundles hold regular files only",
    b"2": "is a symbolic link; bundles hold regular files only",
    b"3": "is a character device; bundles hold regular files only",
    b"4": "is a block device; bundles hold regular files only",
    b"6": "is a FIFO; bundles hold regular files only",
    b"S": "is a sparse file; bundles hold none",
    b"g": "is a global pax header; bundles hold none",
    b"K": "carries a GNU long link name; bundles hold no links",
}


class TarIndexError(ValueError):
    """An archive this indexer refuses. `member` and `reason` name the entry when one is at
    fault; `truncated` says the archive's bytes end too early (a missing or short volume)."""

    def __init__(
        self,
        message: str,
        *,
        member: str | None = None,
        reason: str | None = None,
        truncated: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.member = member
        self.reason = reason or message
        self.truncated = truncated


def _entry_error(name: str, reason: str, *, truncated: bool = False) -> TarIndexError:
    return TarIndexError(
        f"tar entry {name!r}: {reason}", member=name, reason=reason, truncated=truncated
    )


class TarEntry:
    """One member (a plain class: `bundle verify` imports this before it forks its hashing, and
    importing dataclasses would cost that start about 20 ms)."""

    __slots__ = ("is_dir", "name", "offset", "size")

    def __init__(self, name: str, size: int, offset: int, is_dir: bool = False) -> None:
        self.name = name
        self.size = size
        self.offset = offset  # of the member's data in the whole archive
        self.is_dir = is_dir

    def _key(self) -> tuple[str, int, int, bool]:
        return (self.name, self.size, self.offset, self.is_dir)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TarEntry) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "TarEntry(name={!r}, size={}, offset={}, is_dir={})".format(*self._key())


class VolumeReader:
    """Files read as one archive (a bundle's volumes), by offset; the files stay open."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.sizes = [os.stat(p).st_size for p in self.paths]
        self.size = sum(self.sizes)
        self._files: dict[int, int] = {}

    def read_at(self, offset: int, length: int) -> bytes:
        out = bytearray()
        start = 0
        for i, size in enumerate(self.sizes):
            if length <= 0:
                break
            end = start + size
            if offset < end and offset + length > start:
                lo = max(offset, start)
                n = min(offset + length, end) - lo
                fd = self._files.get(i)
                if fd is None:
                    fd = self._files[i] = os.open(self.paths[i], os.O_RDONLY)
                chunk = os.pread(fd, n, lo - start)
                out += chunk
                if len(chunk) < n:
                    break  # the file shrank while we read it
                offset, length = lo + n, offset + length - (lo + n)
            start = end
        return bytes(out)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def __enter__(self) -> VolumeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Window:
    """Reads through a bounded buffer: headers of tiny members come from one read."""

    def __init__(self, read_at: ReadAt) -> None:
        self._read_at = read_at
        self._start = 0
        self._buf = b""

    def get(self, offset: int, length: int) -> bytes:
        lo = offset - self._start
        if lo < 0 or lo + length > len(self._buf):
            # past a member larger than the window, the next one is likely large too: a page
            # holds its headers, and a window's read would copy 64 KiB of its data for nothing
            skipped = offset - (self._start + len(self._buf))
            size = _PAGE if skipped >= _WINDOW else _WINDOW
            self._start = offset
            self._buf = self._read_at(offset, max(length, size))
            lo = 0
        return self._buf[lo : lo + length]


def _number(field: bytes, what: str, at: int) -> int:
    if field[0] & 0x80:
        if field[0] != 0x80:
            raise TarIndexError(f"tar header at offset {at} has a negative {what}")
        return int.from_bytes(field[1:], "big")  # GNU base-256 (sizes of 8 GiB and more)
    text = field.split(b"\x00", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarIndexError(f"tar header at offset {at} has an unreadable {what}") from None


def _signed_sum(block: bytes) -> int:
    """The checksum some old tar writers compute, with bytes read as signed."""
    rest = block[:148] + block[156:]
    return sum(rest) + 8 * 32 - 256 * sum(1 for b in rest if b > 127)


def _check_header(block: bytes, at: int) -> None:
    stored = _number(block[148:156], "checksum", at)
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if stored != unsigned and stored != _signed_sum(block):
        raise TarIndexError(
            f"tar header at offset {at} has a bad checksum (not a tar archive, or damaged)"
        )
    if block[257:265] not in (_POSIX_MAGIC, _GNU_MAGIC):
        raise TarIndexError(f"tar header at offset {at} is not a ustar or pax header")


def _text(raw: bytes, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TarIndexError(f"tar header at offset {at} has a name that is not UTF-8") from None


def _pax_records(data: bytes, at: int) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding after the last record
            break
        space = data.find(b" ", pos, pos + 12)
        length_text = data[pos:space] if space > 0 else b""
        if not length_text.isdigit():
            raise TarIndexError(f"pax header at offset {at} has a malformed record")
        end = pos + int(length_text)
        if end > len(data) or end <= space + 1 or data[end - 1 : end] != b"\n":
            raise TarIndexError(f"pax header at offset {at} has a malformed record")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise TarIndexError(f"pax header at offset {at} has a record without '='")
        records[_text(key, at)] = _text(value, at)
        pos = end
    return records


def _check_name(name: str, at: int) -> None:
    if not name:
        raise TarIndexError(f"tar header at offset {at} has an empty name")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise TarIndexError(f"tar header at offset {at} has a name longer than {MAX_NAME_BYTES}")
    why = None
    if name.startswith("/"):
        why = "absolute path"
    elif ".." in name.rstrip("/").split("/"):
        why = "path contains '..'"
    elif "\x00" in name or "\\" in name:
        why = "path contains NUL or backslash"
    if why:
        raise _entry_error(name, why)


class _Pending:
    """What extension headers (pax, GNU long name) say about the next member."""

    __slots__ = ("name", "seen", "size")

    def __init__(self) -> None:
        self.name: str | None = None
        self.size: int | None = None
        self.seen = False


def _extension(kind: bytes, data: bytes, at: int, pending: _Pending) -> None:
    if pending.seen:
        raise TarIndexError(f"tar header at offset {at}: two extension headers for one member")
    pending.seen = True
    if kind == b"L":
        pending.name = _text(data.split(b"\x00", 1)[0], at)
        return
    records = _pax_records(data, at)
    if any(k.startswith("GNU.sparse") for k in records):
        raise TarIndexError(f"pax header at offset {at} describes a sparse file; refused")
    if "path" in records:
        pending.name = records["path"]
    if "size" in records:
        if not records["size"].isdigit():
            raise TarIndexError(f"pax header at offset {at} has a bad size {records['size']!r}")
        pending.size = int(records["size"])


def iter_entries(
    read_at: ReadAt,
    size: int,
    *,
    max_members: int = MAX_MEMBERS,
    max_pax_bytes: int = MAX_PAX_BYTES,
) -> Iterator[TarEntry]:
    """Every member of the archive of `size` bytes that `read_at(offset, n)` reads; see the
    module docstring for what is refused."""
    window = _Window(read_at)
    pos = 0
    count = 0
    pending = _Pending()
    while True:
        block = window.get(pos, BLOCK)
        if len(block) < BLOCK:
            raise TarIndexError(
                f"the archive ends at offset {pos} without its end marker (truncated)",
                truncated=True,
            )
        if block == _ZERO:
            if pending.seen:
                raise TarIndexError(f"extension header without a member before offset {pos}")
            return
        _check_header(block, pos)
        kind = block[156:157]
        length = _number(block[124:136], "size", pos)
        data_at = pos + BLOCK
        if kind in (b"x", b"L"):
            limit = max_pax_bytes if kind == b"x" else MAX_NAME_BYTES
            if length > limit:
                what = "pax header" if kind == b"x" else "GNU long name"
                raise TarIndexError(
                    f"{what} at offset {pos} is {length} bytes (at most {limit} allowed)"
                )
            data = window.get(data_at, length)
            if len(data) < length:
                raise TarIndexError(f"the archive ends inside the header at {pos}", truncated=True)
            _extension(kind, data, pos, pending)
            pos = data_at + length + (-length % BLOCK)
            continue
        if not pending.seen:
            name = _text(block[0:100].split(b"\x00", 1)[0], pos)
            if block[345] and block[257:263] == _POSIX_MAGIC[:6]:
                name = _text(block[345:500].split(b"\x00", 1)[0], pos) + "/" + name
        elif pending.name is not None:
            name = pending.name
        elif block[257:263] == _POSIX_MAGIC[:6] and block[345]:
            name = _text(block[345:500].split(b"\x00", 1)[0], pos) + "/"
            name += _text(block[0:100].split(b"\x00", 1)[0], pos)
        else:
            name = _text(block[0:100].split(b"\x00", 1)[0], pos)
        if pending.seen:
            if pending.size is not None:
                length = pending.size
            pending = _Pending()
        _check_name(name, pos)
        if kind in _REFUSED_TYPES:
            raise _entry_error(name, _REFUSED_TYPES[kind])
        is_dir = kind == b"5"
        if not is_dir and kind not in _REGULAR:
            raise _entry_error(name, f"has unsupported entry type {kind!r}")
        if not is_dir and name.endswith("/"):
            raise _entry_error(name, "is a file named like a directory")
        count += 1
        if count > max_members:
            raise _entry_error(name, f"more entries than the {max_members} allowed")
        if is_dir:
            length = 0
        if data_at + length > size:
            raise _entry_error(
                name, "truncated: its data ends past the archive's last byte", truncated=True
            )
        yield TarEntry(name.rstrip("/") if is_dir else name, length, data_at, is_dir)
        pos = data_at + length + (-length % BLOCK)
