"""`bundle verify` answered before the command line's libraries are imported, when every check
passes (standard library only).

Importing typer, rich, pydantic and cryptography costs an interpreter about 0.25 s of CPU, and
`bundle verify` shares the machine's cores with its own hashing (`airlock.earlyhash`): on a
1.5 GiB bundle that start-up is a quarter of the run. `answer` makes the handle's checks here,
by the handle's own rules (`airlock.bundle.rules`: the archive's entries, airlock.json's facts,
the padding, the graph, the report's words) over the bytes `airlock.standalone` reads (the
hardened tar indexer, the volume finder, the Ed25519 check the bootstrap script uses), with the
blob digests `earlyhash` computed. It prints what the CLI prints (`airlock.cli.verify_view`)
only when all of it holds:

- the command line is `bundle verify [--key PUB]... [--json] [--debug] [--progress none] PATH`
  (`--progress auto` too), with neither stdout nor stderr a terminal (where the CLI would show
  a live display);
- airlock.json is signed and its signature verifies with a trusted key (given with --key, else
  the trusted-keys directory); not expired; its facts parse as strictly as the typed model
  parses them;
- the archive's entries, index.json, every blob's sha256 (each hashed early, from files that
  are still the files hashed), the padding of a split bundle and the graph are as the handle
  requires; a split bundle has no recovery volumes beside it.

Anything else (an unsigned bundle, `--allow-unsigned`, a problem, a doubt, an error of any
kind) returns False, and the full command runs and decides as always: it names the problem.
So a bundle this path accepts is one the handle accepts, and every refusal comes from the handle.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airlock.bundle.rules import Member, VerifyReport
    from airlock.standalone.tarindex import TarEntry, VolumeReader
    from airlock.standalone.volumes import Located

__all__ = ["PARTS_KEYS", "VOLUME_KEYS", "answer", "command"]

_VERB = ["bundle", "verify"]
# the parts file's keys (required, optional) and a volume's: `bundle.volumes.PartsFile`'s aliases
PARTS_KEYS = (
    frozenset({"name", "tar", "volumeSize", "size", "sha256", "volumes"}),
    frozenset({"schema"}),
)
VOLUME_KEYS = frozenset({"name", "size", "sha256"})
# rich reads `:name:` as an emoji code: text holding such a pair is left to the CLI's console
_EMOJI_LIKE = re.compile(r":\S*?:")


class _Declined(Exception):
    """Leave it to the full command."""


def command(argv: Sequence[str]) -> tuple[str, list[str], bool, bool] | None:
    """(PATH, keys, --json, --debug) of a `bundle verify` this path may answer, else None."""
    if "--" in argv:
        return None
    rest: list[str] = []
    as_json = debug = False
    mode = os.environ.get("AIRLOCK_PROGRESS") or "auto"
    args = iter(argv)
    for arg in args:
        if arg == "--json":
            as_json = True
        elif arg == "--debug":
            debug = True
        elif arg == "--progress":
            mode = next(args, "")
        elif arg.startswith("--progress="):
            mode = arg.partition("=")[2]
        else:
            rest.append(arg)
    if rest[:2] != _VERB or mode not in ("auto", "none"):
        return None
    keys: list[str] = []
    paths: list[str] = []
    args = iter(rest[2:])
    for arg in args:
        if arg == "--key":
            keys.append(next(args, "-"))
        elif arg.startswith("--key="):
            keys.append(arg.partition("=")[2])
        elif arg.startswith("-"):
            return None  # --allow-unsigned, --help, anything else: the CLI's to read
        else:
            paths.append(arg)
    if len(paths) != 1 or any(not k or k.startswith("-") for k in keys):
        return None
    return paths[0], keys, as_json, debug


def answer(argv: Sequence[str]) -> bool:
    """Print the CLI's output for `airlock ARGV` when it verifies a bundle that passes every
    check; False: run the full command."""
    found = command(argv)
    if found is None or os.environ.get("AIRLOCK_NO_EARLY_VERIFY"):
        return False
    if os.isatty(1) or os.isatty(2):
        return False
    path, keys, as_json, debug = found
    try:
        lines = _verified(path, keys, as_json)
    except KeyboardInterrupt:  # said as the CLI says it, not as a traceback
        from airlock import earlyhash
        from airlock.cli.main import interrupted

        earlyhash.stop()
        interrupted(list(argv))
    except Exception:  # a doubt of any kind: the full command decides, and names it
        return False
    if debug:
        sys.stderr.write("debug: verified before the command line's libraries were imported\n")
        sys.stderr.flush()
    sys.stdout.write(lines)
    sys.stdout.flush()
    return True


def _verified(path: str, key_args: list[str], as_json: bool) -> str:
    """What the CLI would print for the bundle at `path`; _Declined (or any error) otherwise."""
    from airlock import earlyhash
    from airlock.bundle.rules import VerifyReport
    from airlock.standalone.tarindex import VolumeReader
    from airlock.standalone.volumes import locate

    located = locate(path)
    parts = _parts(located) if located.parts is not None else None
    display = str(located.parts_path or located.paths[0])
    with VolumeReader(located.paths) as reader:
        if parts is not None and reader.sizes != parts:
            raise _Declined("a volume's size differs from the parts file")
        seen = _Seen(reader, display, key_args)
        nbytes = seen.blobs()
        if parts is not None:
            seen.zeros()
        seen.graph()
    checked, not_checked = _words(seen, parts, display, nbytes)
    report = VerifyReport(
        ok=True,
        path=Path(path),
        name=seen.facts.name,
        sequence=seen.facts.sequence,
        signed=True,
        signed_by=seen.signer[0],
        signed_by_path=seen.signer[1],
        blobs_checked=len(seen.facts.blobs),
        bytes_checked=nbytes + len(seen.index_bytes) + len(seen.manifest_bytes),
        volumes_checked=len(parts) if parts is not None else 0,
        expires=seen.facts.expires,
        checked=tuple(checked),
        not_checked=tuple(not_checked),
    )
    earlyhash.stop()
    return _render(report, Path(path), as_json)


class _Seen:
    """A bundle read as the handle reads it, checked by the handle's rules up to its blobs."""

    def __init__(self, reader: VolumeReader, display: str, key_args: list[str]) -> None:
        from airlock import earlyhash
        from airlock.bundle.facts import manifest_facts
        from airlock.bundle.layout import INDEX_JSON, MAX_JSON_BLOB_BYTES, MAX_MEMBERS
        from airlock.bundle.rules import blob_sizes, check_first, index_members
        from airlock.oci.digest import sha256_digest
        from airlock.standalone.tarindex import iter_entries
        from airlock.trust import check_expiry, trusted_keys

        self.reader = reader
        read_at = reader.read_at
        known = earlyhash.index(reader.paths)  # the headers earlyhash read before its fork
        entries: Iterator[TarEntry] = (
            iter(known)
            if known is not None and len(known) <= MAX_MEMBERS
            else iter_entries(read_at, reader.size, max_members=MAX_MEMBERS)
        )
        first = check_first(next(entries, None), display)
        self.manifest_bytes = read_at(first.offset, first.size)
        self.facts = manifest_facts(self.manifest_bytes)
        self.members, sig = index_members(
            first,
            entries,
            blob_sizes=blob_sizes(self.facts),
            index_size=self.facts.index_size,
            max_members=MAX_MEMBERS,
        )
        if sig is None:
            raise _Declined("unsigned")
        keys = [Path(k) for k in key_args] or trusted_keys([])
        self.signer = _signer(self.manifest_bytes, read_at(sig.offset, sig.size), keys)
        check_expiry(self.facts.expires)
        index = self.members[INDEX_JSON]
        if index.size > MAX_JSON_BLOB_BYTES:
            raise _Declined("index.json too big")
        self.index_bytes = read_at(index.offset, index.size)
        if sha256_digest(self.index_bytes) != self.facts.index_digest:
            raise _Declined("index.json is not what airlock.json pins")

    def member(self, digest: str) -> Member:
        from airlock.bundle.layout import blob_member

        return self.members[blob_member(digest)]

    def blobs(self) -> int:
        """Bytes of every blob, each hashed early (airlock.earlyhash) as airlock.json names it."""
        from airlock import earlyhash
        from airlock.oci.digest import digest_hex

        volumes = list(zip(self.reader.paths, self.reader.sizes, strict=True))
        nbytes = 0
        for digest, size in self.facts.blobs:
            m = self.member(digest)
            early = earlyhash.hashed(earlyhash.pieces(volumes, m.offset, m.size))
            if early is None or early[0] != digest_hex(digest) or early[1] != size:
                raise _Declined("a blob was not hashed early, or differs")
            nbytes += early[1]
        return nbytes

    def zeros(self) -> None:
        """A split bundle's padding and oci-layout marker, as the handle checks them."""
        from airlock.bundle.layout import OCI_LAYOUT
        from airlock.bundle.rules import padding_ranges, zeros
        from airlock.oci.media import OCI_LAYOUT_CONTENT

        read_at = self.reader.read_at
        if next(zeros(padding_ranges(self.members.values(), self.reader.size), read_at), None):
            raise _Declined("padding")
        layout = self.members.get(OCI_LAYOUT)
        if layout is not None and read_at(layout.offset, layout.size) != OCI_LAYOUT_CONTENT:
            raise _Declined("oci-layout")

    def graph(self) -> None:
        from airlock.bundle.rules import graph_problems, json_blob

        def load_json(digest: str) -> dict[str, Any] | None:
            m = self.member(digest)
            return json_blob(m.size, lambda: self.reader.read_at(m.offset, m.size))

        index = _json_object(self.index_bytes)
        if graph_problems(index, self.facts, {d for d, _ in self.facts.blobs}, load_json):
            raise _Declined("graph")


def _words(
    seen: _Seen, parts: list[int] | None, display: str, nbytes: int
) -> tuple[list[str], list[str]]:
    """The report's checked and not-checked lines, in the handle's order."""
    from airlock.bundle.rules import words

    facts = seen.facts
    checked = [words.archive(len(seen.members)), words.signature(*seen.signer)]
    if parts is not None:
        checked.append(words.volumes_signed(len(parts), display))
    checked += [words.expiry(facts.expires), words.INDEX, words.blobs(len(facts.blobs), nbytes)]
    not_checked: list[str] = []
    if facts.stored_files:
        checked.append(words.compressed(facts.stored_files))
        not_checked.append(words.COMPRESSED_CONTENT)
    checked.append(words.GRAPH)
    if facts.omitted:
        not_checked.append(words.omitted(len(facts.omitted)))
    return checked, [*not_checked, words.ROLLBACK, words.UPSTREAM]


def _json_object(data: bytes) -> dict[str, Any]:
    import json

    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise _Declined("index.json is not a JSON object")
    return doc


def _parts(located: Located) -> list[int]:
    """The volume sizes a parts file lists, checked as strictly as `bundle.volumes` reads it
    (and no recovery volumes beside it: the handle reports on those)."""
    from airlock.bundle.rules import may_have_recovery

    doc = located.parts
    if doc is None or located.parts_path is None or may_have_recovery(located.parts_path):
        raise _Declined("recovery files, or no parts file")
    hex64 = re.compile(r"^[a-f0-9]{64}\Z")
    required, optional = PARTS_KEYS
    if not required <= doc.keys() <= required | optional:
        raise _Declined("parts file keys")
    if doc.get("schema", "airlock.parts/v1") != "airlock.parts/v1":
        raise _Declined("parts file schema")
    ok = (
        isinstance(doc["name"], str)
        and isinstance(doc["tar"], str)
        and type(doc["volumeSize"]) is int
        and doc["volumeSize"] >= 1
        and type(doc["size"]) is int
        and isinstance(doc["sha256"], str)
        and hex64.match(doc["sha256"]) is not None
        and isinstance(doc["volumes"], list)
    )
    if not ok:
        raise _Declined("parts file fields")
    sizes: list[int] = []
    for v in doc["volumes"]:
        if (
            not isinstance(v, dict)
            or v.keys() != VOLUME_KEYS
            or not isinstance(v["name"], str)
            or not v["name"]
            or "/" in v["name"]
            or "\\" in v["name"]
            or type(v["size"]) is not int
            or v["size"] < 0
            or not isinstance(v["sha256"], str)
            or hex64.match(v["sha256"]) is None
        ):
            raise _Declined("parts file volume")
        sizes.append(v["size"])
    if sum(sizes) != doc["size"]:
        raise _Declined("parts file sizes do not add up")
    return sizes


def _signer(data: bytes, signature: bytes, keys: Sequence[Path]) -> tuple[str, Path]:
    """(key id, key) of the first trusted key that verifies the signature, as the handle
    takes them (in order)."""
    from airlock.standalone import ed25519

    if not keys:
        raise _Declined("no trusted key")
    for key in keys:
        raw = ed25519.public_key_from_pem(key.read_bytes())
        if ed25519.verify(raw, data, signature):
            return ed25519.key_id(raw), key
    raise _Declined("no trusted key verifies the signature")


def _render(report: VerifyReport, bundle: Path, as_json: bool) -> str:
    from airlock.cli.verify_view import verify_data, verify_text

    if as_json:
        from airlock.cli.jsondoc import document, json_text

        return json_text(document(verify_data(report)))
    lines, warnings = verify_text(report, bundle)
    if warnings or any(_EMOJI_LIKE.search(line) for line in lines):
        raise _Declined("the CLI's console would render this text its own way")
    return "".join(f"{line}\n" for line in lines)
