"""Verify a bundle end to end, naming what is wrong.

Order matters, so the first problem reported is the cause, not a symptom:

1. volumes against the parts file: missing or wrong-sized ones are named (stop there); their
   bytes are not hashed as wholes up front: every byte of the tar is checked below (blobs by
   digest, headers by checksum, padding and the end as zeros), and when anything fails the
   volumes are hashed to name the damaged or swapped one first (`airlock.bundle.handle`);
2. the archive's entries (hostile or truncated archives are refused; stop there);
3. the signature of airlock.json (with keys: a missing or bad signature stops here);
4. index.json against the digest airlock.json pins;
5. every blob's size and sha256, hashed in parallel threads (hashlib releases the GIL);
6. the graph: every descriptor in index.json reachable, with all its child manifests,
   configs and layers present (or listed as omitted by a delta bundle).

Trust fails closed: the caller passes a `TrustPolicy` (airlock.trust.trust_policy), which has
keys, or says `allow_unsigned`; a signature is then required and checked, or the report says
UNVERIFIED. An expired bundle fails here as it does in `load`.

API: `verify_bundle` returns a VerifyReport only when everything is right; its `checked` and
`not_checked` say what was checked and what could not be. Otherwise it raises
BundleVerificationError (a VerificationError: exit code 3), whose message names the first
problem and whose `.report` lists them all (the CLI renders `report.problems`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock import earlyhash
from airlock.bundle.facts import Facts
from airlock.bundle.layout import (
    INDEX_JSON,
    MAX_JSON_BLOB_BYTES,
    OCI_LAYOUT,
    blob_member,
)
from airlock.bundle.manifest import BundleManifest
from airlock.bundle.reader import BundleReader
from airlock.bundle.rules import (
    VerifyReport,
    graph_problems,
    json_blob,
    may_have_recovery,
    padding_ranges,
    words,
    zeros,
)
from airlock.bundle.volumes import Span, hash_spans, read_span
from airlock.errors import VerificationError
from airlock.oci.digest import digest_hex, sha256_digest
from airlock.oci.layout import OCI_LAYOUT_CONTENT
from airlock.progress import ProgressSink, report_done, report_start
from airlock.trust import UNVERIFIED, TrustPolicy, check_expiry

__all__ = [
    "BundleVerificationError",
    "RecoveryStatus",
    "Verified",
    "VerifyReport",
    "recovery_status",
    "verify_bundle",
    "verify_reader",
]


class BundleVerificationError(VerificationError):
    """The bundle failed verification; `.report.problems` lists every problem found."""

    def __init__(self, report: VerifyReport, hint: str | None = None) -> None:
        self.report = report
        first = report.problems[0] if report.problems else "unknown problem"
        more = len(report.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        super().__init__(
            f"bundle {report.path} failed verification: {first}{suffix}",
            hint or "do not load it; copy the named volume or file again from the source",
        )


def _describe(manifest: BundleManifest, digest: str) -> str:
    entry = manifest.blob_map().get(digest)
    if entry is None:
        return f"blob {digest}"
    origin = entry.source or "airlock"
    return f"blob {digest} ({entry.role} of {origin})"


def _volume_names(reader: BundleReader, pieces: Sequence[Span]) -> str:
    """The names of the volumes holding `pieces` (the parts file's names, not held paths)."""
    vs = reader.volumes
    if vs.parts is None:
        return vs.display()
    names = [v.name for v in vs.parts.volumes]
    index = {p: i for i, p in enumerate(vs.paths)}
    return ", ".join(dict.fromkeys(names[index[s.path]] for s in pieces if s.path in index))


def _check_padding(reader: BundleReader) -> list[str]:
    """The tar bytes no digest covers and the indexer did not checksum must be zeros
    (`rules.padding_ranges`); oci-layout must be the layout's marker. (Headers are
    checksummed by the indexer, airlock.json is signed, index.json pinned.)"""

    def read_at(lo: int, n: int) -> bytes:
        return b"".join(read_span(p) for p in reader.byte_spans(lo, n))

    problems = [
        f"volume {_volume_names(reader, reader.byte_spans(bad, 1))}: byte "
        f"{bad} of the tar should be zero (tar padding or end of archive): damaged"
        for bad in zeros(padding_ranges(reader.members.values(), reader.size), read_at)
    ]
    if OCI_LAYOUT in reader.members and reader.read_member(OCI_LAYOUT) != OCI_LAYOUT_CONTENT:
        problems.append(
            f"{OCI_LAYOUT} in volume "
            f"{_volume_names(reader, reader.member_spans(OCI_LAYOUT))} is damaged"
        )
    return problems


class _BlobHashes:
    """Every present blob hashed on `workers` threads (hashlib releases the GIL), largest
    first so they finish together; started before the signature is checked, so that check
    (and importing its library) runs while the blobs are read."""

    def __init__(
        self, reader: BundleReader, workers: int, progress: ProgressSink | None, label: str
    ) -> None:
        self.reader = reader
        self.progress = progress
        self.label = label
        self.present = [b for b in reader.manifest.blobs if reader.has_blob(b.digest)]
        self.present.sort(key=lambda b: (-b.size, b.digest))
        report_start(progress, label, sum(b.size for b in self.present))
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self.futures = [self.pool.submit(self._one, b.digest) for b in self.present]

    def _one(self, digest: str) -> tuple[str, str, int]:
        def hashed(n: int) -> None:
            if self.progress is not None:
                self.progress.advance(self.label, n)

        spans = self.reader.blob_spans(digest)
        early = earlyhash.hashed([(str(s.path), s.offset, s.length) for s in spans])
        if early is not None:  # hashed while the command line imported (airlock.earlyhash)
            hashed(early[1])
            return digest, *early
        hexd, n = hash_spans(spans, on_bytes=hashed)
        return digest, hexd, n

    def cancel(self) -> None:
        earlyhash.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def finish(self, problems: list[str]) -> tuple[set[str], int, int]:
        """(digests verified, blobs checked, bytes checked); problems name each bad blob."""
        reader, manifest = self.reader, self.reader.manifest
        for digest in reader.missing_blobs():
            problems.append(f"{_describe(manifest, digest)} is missing from the archive")
        try:
            results = [f.result() for f in self.futures]
        finally:
            self.cancel()
        report_done(self.progress, self.label)
        ok: set[str] = set()
        total = 0
        for digest, hexd, n in sorted(results):
            total += n
            if hexd == digest_hex(digest):
                ok.add(digest)
            else:
                where = ""
                if reader.volumes.parts is not None:
                    where = f" (in volume {_volume_names(reader, reader.blob_spans(digest))})"
                problems.append(
                    f"{_describe(manifest, digest)} sha256 mismatch{where}: the bytes are "
                    f"sha256:{hexd}"
                )
        return ok, len(self.present), total


def _facts(manifest: BundleManifest) -> Facts:
    """The facts `rules` checks, from the typed model (what `rules.manifest_facts` reads)."""
    return Facts(
        name=manifest.name,
        sequence=manifest.sequence,
        expires=manifest.expires,
        index_digest=manifest.index.digest,
        index_size=manifest.index.size,
        files_manifest=manifest.files_manifest,
        blobs=tuple((b.digest, b.size) for b in manifest.blobs),
        images={i.reference: (i.digest, frozenset(i.blobs)) for i in manifest.images},
        omitted=frozenset(manifest.omitted),
        stored_files=sum(1 for f in manifest.files if f.stored is not None),
    )


def _check_graph(
    reader: BundleReader, index: dict[str, Any], verified: set[str], problems: list[str]
) -> None:
    def load_json(digest: str) -> dict[str, Any] | None:
        def read() -> bytes:
            with reader.open_blob(digest) as fh:
                return fh.read()

        return json_blob(reader.member(blob_member(digest)).size, read)

    problems += graph_problems(index, _facts(reader.manifest), verified, load_json)


@dataclass(frozen=True)
class RecoveryStatus:
    damage: str | None  # what the scan found when data volumes are damaged
    hint: str | None  # how to repair them (None: cannot)
    notes: tuple[str, ...]  # damaged recovery volumes or boot copies of an intact bundle


def recovery_status(
    parts_path: Path | None, vol_problems: Sequence[str], workers: int
) -> RecoveryStatus | None:
    """With recovery volumes (format 1.2): damaged data volumes are judged repairable or not;
    with none damaged, the recovery volumes and boot copies themselves are checked."""
    if parts_path is None or not may_have_recovery(parts_path):
        return None
    from airlock.bundle import repair  # imported only for bundles that have recovery files

    rset = repair.find_recovery_set(parts_path)
    if rset is None:
        return None
    if not vol_problems:
        return RecoveryStatus(None, None, tuple(repair.recovery_problems(rset)))
    damage = repair.assess_set(rset, workers=workers)
    hint = f"repair it: airlock bundle repair {rset.parts_path} (or airlock load --repair)"
    return RecoveryStatus(damage.summary(), hint if damage.repairable else None, ())


def _keys_at_hand(path: Path) -> list[Path]:
    """Public keys beside the bundle and in the trusted-keys directory: not trusted for this
    check, only to name who signed a bundle the trusted keys do not verify."""
    from airlock.trust import trusted_keys

    beside = sorted(Path(path).parent.glob("*.pub"))
    return [*beside, *trusted_keys([])]


def _signature(
    reader: BundleReader,
    trust: TrustPolicy,
    checked: list[str],
    not_checked: list[str],
    path: Path | None = None,
) -> tuple[str | None, Path | None]:
    """Check airlock.json's signature as the policy says; (key id, key path) when it verified."""
    if reader.signature is None:
        if trust.keys and not trust.allow_unsigned:
            raise VerificationError("airlock.json is not signed, but a trusted key was given")
        not_checked.append(f"signature: the bundle is unsigned (--allow-unsigned: {UNVERIFIED})")
        return None, None
    if not trust.keys:
        not_checked.append(
            f"signature: no trusted key to check it (--allow-unsigned: {UNVERIFIED})"
        )
        return None, None
    from airlock.bundle.signing import key_id, verify_signature  # while the blobs hash

    others = _keys_at_hand(path) if path is not None else []
    key = verify_signature(reader.manifest_bytes, reader.signature, trust.keys, others=others)
    kid = key_id(key)
    checked.append(words.signature(kid, key))
    return kid, key


@dataclass(frozen=True)
class Verified:
    """What verification read and checked: the report and index.json's verified bytes."""

    report: VerifyReport
    index_bytes: bytes
    index: dict[str, Any]


def verify_reader(
    reader: BundleReader,
    *,
    path: Path,
    trust: TrustPolicy,
    workers: int,
    hash_content: bool,
    today: datetime.date | None = None,
    volume_problems: Sequence[str] = (),
    volume_bytes: int = 0,
    expiry: bool = True,
    recovery_notes: Sequence[str] = (),
    progress: ProgressSink | None = None,
) -> Verified:
    """Check an indexed bundle: signature, expiry, index.json, every blob (with
    `hash_content`) and the graph. `volume_problems` come from the caller's volume check;
    any problem raises BundleVerificationError with them all."""
    volumes = reader.volumes
    problems: list[str] = list(volume_problems)
    checked: list[str] = []
    not_checked: list[str] = []
    volumes_checked = len(volumes.parts.volumes) if volumes.parts else 0
    report = VerifyReport(
        ok=False, path=path, volumes_checked=volumes_checked, recovery=tuple(recovery_notes)
    )

    def fail(hint: str | None = None, **changes: Any) -> BundleVerificationError:
        return BundleVerificationError(
            report._replace(
                **changes,
                problems=tuple(problems),
                checked=tuple(checked),
                not_checked=tuple(not_checked),
                ok=False,
            ),
            hint,
        )

    if problems:
        raise fail()
    if volumes.parts and not hash_content:
        not_checked.append("volumes: not hashed as wholes; every blob is hashed as it is read")
    manifest = reader.manifest
    checked.append(words.archive(len(reader.members)))
    report = report._replace(
        name=manifest.name,
        sequence=manifest.sequence,
        signed=reader.signature is not None,
        expires=manifest.expires,
    )
    blob_hashes = (
        _BlobHashes(reader, workers, progress, f"verify {path.name}") if hash_content else None
    )
    try:
        signed_by, signed_by_path = _signature(reader, trust, checked, not_checked, path)
        report = report._replace(signed_by=signed_by, signed_by_path=signed_by_path)
        if expiry:
            check_expiry(manifest.expires, today=today)
    except VerificationError as exc:
        problems.append(exc.message)
        if blob_hashes is not None:
            blob_hashes.cancel()
        raise fail(exc.hint) from exc
    except BaseException:
        if blob_hashes is not None:
            blob_hashes.cancel()
        raise
    if volumes.parts and hash_content and signed_by is not None:
        checked.append(words.volumes_signed(volumes_checked, volumes.display()))
    elif volumes.parts and hash_content:  # airlock.json not signature-checked: see the handle
        checked.append(f"volumes: {volumes_checked}, each sha256 against {volumes.display()}")
    if not expiry:
        not_checked.append("expiry: not asked for (an old bundle read as a delta's baseline)")
    else:
        checked.append(words.expiry(manifest.expires))

    # Read once, hashed from the bytes read: these bytes are the index the caller gets.
    try:
        index_bytes = reader.read_member(INDEX_JSON, limit=MAX_JSON_BLOB_BYTES)
    except BaseException:
        if blob_hashes is not None:
            blob_hashes.cancel()
        raise
    index_digest = sha256_digest(index_bytes)
    index_ok = index_digest == manifest.index.digest
    if not index_ok:
        problems.append(
            f"index.json sha256 mismatch: airlock.json pins {manifest.index.digest}, "
            f"the archive holds {index_digest}"
        )
    else:
        checked.append(words.INDEX)
    if blob_hashes is not None:
        verified, blobs_checked, nbytes = blob_hashes.finish(problems)
        checked.append(words.blobs(blobs_checked, nbytes))
        if volumes.parts:
            problems += _check_padding(reader)
        stored = sum(1 for f in manifest.files if f.stored is not None)
        if stored:
            checked.append(words.compressed(stored))
            not_checked.append(words.COMPRESSED_CONTENT)
    else:
        for digest in reader.missing_blobs():
            problems.append(f"{_describe(manifest, digest)} is missing from the archive")
        verified, blobs_checked, nbytes = set(reader.blob_digests()), 0, 0
        not_checked.append("blob bytes: each is hashed as it is read (load: as it is copied)")
    report = report._replace(
        blobs_checked=blobs_checked,
        bytes_checked=volume_bytes + nbytes + len(index_bytes) + len(reader.manifest_bytes),
    )
    index: Any = None
    if index_ok:
        try:
            index = json.loads(index_bytes)
        except ValueError:
            index = None
        if not isinstance(index, dict):
            problems.append("index.json is not a JSON object")
        else:
            _check_graph(reader, index, verified, problems)
            checked.append(words.GRAPH)
    if manifest.omitted:
        not_checked.append(words.omitted(len(manifest.omitted)))
    not_checked.append(words.ROLLBACK)
    not_checked.append(words.UPSTREAM)
    if problems:
        raise fail()
    report = report._replace(ok=True, checked=tuple(checked), not_checked=tuple(not_checked))
    return Verified(report, index_bytes, index)


def verify_bundle(
    path: Path,
    *,
    trust: TrustPolicy,
    workers: int | None = None,
    hash_content: bool = True,
    today: datetime.date | None = None,
    progress: ProgressSink | None = None,
) -> VerifyReport:
    """Check volumes, signature, expiry, index.json, every blob and the graph; see module doc.

    `hash_content=False` checks everything but the bytes of the volumes and blobs (a caller that
    hashes each blob while it reads it then reads the bundle only once)."""
    from airlock.bundle.handle import Bundle  # the handle verifies through this module

    with Bundle.open(
        path,
        trust=trust,
        workers=workers,
        hash_content=hash_content,
        today=today,
        progress=progress,
    ) as bundle:
        return bundle.report
