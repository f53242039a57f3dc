"""Recovery volumes (bundle format 1.2): any damaged or missing volumes up to the chosen amount
are rebuilt from the recovery volumes and the boot copy, then the bundle verifies and loads;
one more is refused, naming what is missing."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from airlock.blobstore import BlobStore
from airlock.bundle.bootvol import read_boot_volumes
from airlock.bundle.recovery import parse_index, parse_percent, plan_recovery
from airlock.bundle.signing import generate_keypair
from airlock.bundle.verify import BundleVerificationError, verify_bundle
from airlock.bundle.volumes import load_parts
from airlock.bundle.writer import WriteResult, write_bundle
from airlock.errors import UsageError, VerificationError
from airlock.standalone import bootstrap
from airlock.trust import TrustPolicy
from airlock.verbs.load import LoadOptions, load_bundle
from airlock.verbs.repair import RepairOptions, repair_bundle
from airlock_lab.bundle_testing import put_file, sample_content

MiB = 1 << 20

UNSIGNED_OK = TrustPolicy((), allow_unsigned=True)


def _write(tmp: Path, out: str, *, percent: float = 50, key: Path | None = None) -> WriteResult:
    store = BlobStore(tmp / "store")
    content = sample_content(store, big_file_size=3 * MiB + 300_000)
    wheel = put_file(store, "airlock-0.1.0-py3-none-any.whl", b"PK\x03\x04 wheel", kind="wheel")
    content = dataclasses.replace(content, wheelhouse=[wheel])
    return write_bundle(
        content, blobs=store, out=tmp / out, split=MiB, recovery=percent, sign_key=key
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]
) -> tuple[WriteResult, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("pristine")
    result = _write(tmp, "out", key=keys[0])
    return result, {p.name: p.read_bytes() for p in result.paths}


def _copy(pristine: tuple[WriteResult, dict[str, bytes]], dest: Path) -> WriteResult:
    result, files = pristine
    dest.mkdir()
    for name, data in files.items():
        (dest / name).write_bytes(data)
    return dataclasses.replace(
        result,
        path=dest / result.path.name,
        volumes=tuple(dest / p.name for p in result.volumes),
        recovery_volumes=tuple(dest / p.name for p in result.recovery_volumes),
        boot_volumes=tuple(dest / p.name for p in result.boot_volumes),
    )


def test_percent_and_plan() -> None:
    assert parse_percent("20%") == 20 and parse_percent(" 5 ") == 5
    for bad in ("0", "-1", "101%", "x"):
        with pytest.raises(UsageError, match="--recovery"):
            parse_percent(bad)
    plan = plan_recovery(10 * MiB - 1, MiB, 20)
    assert (plan.data_volumes, plan.recovery_volumes) == (10, 2)
    assert plan_recovery(MiB, MiB, 1).recovery_volumes == 1  # at least one
    with pytest.raises(UsageError, match="more than the 256 shares") as info:
        plan_recovery(300 * MiB, MiB, 10)
    assert info.value.hint == "use larger volumes (--split 2M or more)"


def test_recovery_needs_split(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    with pytest.raises(UsageError, match="--split"):
        write_bundle(sample_content(store), blobs=store, out=tmp_path, recovery=20)


def test_layout_is_recorded_and_deterministic(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]], keys: tuple[Path, Path]
) -> None:
    result, files = pristine
    m = result.manifest
    assert m.format_version == "1.2" and m.recovery is not None
    assert m.recovery.data_volumes == len(result.volumes) == 4
    assert m.recovery.recovery_volumes == len(result.recovery_volumes) == 2
    assert m.recovery.boot_copies == len(result.boot_volumes) == 3
    assert [p.name for p in result.recovery_volumes] == [
        "lab.airlock.recovery.000",
        "lab.airlock.recovery.001",
    ]
    assert all(p.stat().st_size == MiB for p in result.recovery_volumes)
    parts = load_parts(result.path)
    assert [v.name for v in parts.volumes] == [p.name for p in result.volumes]
    assert result.recovery_index is not None
    index = parse_index(result.recovery_index.read_bytes(), "index")
    assert [v.name for v in index.data] == [p.name for p in result.volumes]
    assert all(len(v.chunks) == index.plan.stripes for v in (*index.data, *index.recovery))
    boot = read_boot_volumes(result.boot_volumes)
    assert boot.manifest_bytes == m.to_bytes() and boot.parts_bytes == result.path.read_bytes()
    assert boot.recovery_bytes == result.recovery_index.read_bytes()
    again = _write(tmp_path, "again", key=keys[0])
    assert {p.name: p.read_bytes() for p in again.paths} == files
    assert verify_bundle(result.path, trust=TrustPolicy((keys[1],))).ok


def test_every_combination_up_to_the_recovery_is_repaired(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]], keys: tuple[Path, Path]
) -> None:
    result, files = pristine
    names = [p.name for p in (*result.volumes, *result.recovery_volumes)]
    for lost in range(1, 3):
        for n, combo in enumerate(itertools.combinations(names, lost)):
            case = _copy(pristine, tmp_path / f"case-{lost}-{n}")
            for i, name in enumerate(combo):
                victim = case.path.parent / name
                if (i + n) % 2:
                    victim.unlink()  # a lost DVD
                else:
                    data = bytearray(victim.read_bytes())  # a scratch in the middle
                    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096
                    victim.write_bytes(bytes(data))
            repaired = repair_bundle(case.path, options=RepairOptions(keys=[keys[1]]))
            assert sorted(p.name for p in repaired.rebuilt) == sorted(combo), combo
            assert repaired.verify is not None and repaired.verify.ok
            for name in combo:
                assert (case.path.parent / name).read_bytes() == files[name], combo


def test_one_more_is_refused_naming_what_is_missing(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]]
) -> None:
    case = _copy(pristine, tmp_path / "case")
    for p in (case.volumes[0], case.volumes[2], case.recovery_volumes[1]):
        p.unlink()
    with pytest.raises(BundleVerificationError) as info:
        verify_bundle(case.path, trust=UNSIGNED_OK)
    problems = " | ".join(info.value.report.problems)
    assert "3 volumes damaged, NOT repairable" in problems
    assert "lab.airlock.tar.000 missing" in problems and "lab.airlock.recovery.001" in problems
    with pytest.raises(VerificationError, match="bring back 1 more") as refused:
        repair_bundle(case.path, options=RepairOptions(allow_unsigned=True))
    assert "lab.airlock.tar.002 missing" in refused.value.message
    assert not case.volumes[0].exists()  # nothing half-written


def test_verify_says_repairable_and_load_repairs(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]], keys: tuple[Path, Path]
) -> None:
    case = _copy(pristine, tmp_path / "case")
    case.volumes[1].unlink()
    data = bytearray(case.volumes[3].read_bytes())
    data[10] ^= 1
    case.volumes[3].write_bytes(bytes(data))
    with pytest.raises(BundleVerificationError) as info:
        verify_bundle(case.path, trust=UNSIGNED_OK)
    assert any("2 volumes damaged, repairable" in p for p in info.value.report.problems)
    assert info.value.hint is not None and "airlock bundle repair" in info.value.hint
    with pytest.raises(VerificationError) as refused:  # without --repair, load refuses
        load_bundle(case.path, store_dir=tmp_path / "store", options=LoadOptions(keys=[keys[1]]))
    assert refused.value.hint is not None and "load --repair" in refused.value.hint
    loaded = load_bundle(
        case.path, store_dir=tmp_path / "store", options=LoadOptions(keys=[keys[1]], repair=True)
    )
    assert sorted(Path(p).name for p in loaded.repaired) == [
        "lab.airlock.tar.001",
        "lab.airlock.tar.003",
    ]
    assert loaded.blobs_added > 0


def test_repair_does_not_need_volume_zero_or_the_parts_file(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]], keys: tuple[Path, Path]
) -> None:
    """airlock.json and the parts file come from a boot copy: volume 000 (which holds
    airlock.json) and the parts file may both be gone, and a damaged boot copy is skipped."""
    files = pristine[1]
    case = _copy(pristine, tmp_path / "case")
    case.volumes[0].unlink()
    case.path.unlink()
    case.boot_volumes[0].write_bytes(b"garbage")
    case.boot_volumes[2].unlink()
    repaired = repair_bundle(case.boot_volumes[1], options=RepairOptions(keys=[keys[1]]))
    assert repaired.verify is not None and repaired.verify.ok
    assert {p.name for p in repaired.restored} == {
        case.path.name,
        case.boot_volumes[0].name,
        case.boot_volumes[2].name,
    }
    for p in case.paths:
        assert p.read_bytes() == files[p.name]
    assert repaired.to_json()["found"].startswith("1 volume damaged, repairable")


def test_a_wrong_key_refuses_before_anything_is_written(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]]
) -> None:
    case = _copy(pristine, tmp_path / "case")
    case.volumes[1].unlink()
    _, other = generate_keypair(tmp_path / "other")
    with pytest.raises(VerificationError):
        repair_bundle(case.path, options=RepairOptions(keys=[other]))
    assert not case.volumes[1].exists()


def test_a_boot_copy_installs_airlock(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]]
) -> None:
    """The boot copy is read by the stdlib-only bootstrap as a bundle: its wheels, checked."""
    result, _ = pristine
    out = tmp_path / "wheels"
    out.mkdir()
    copy = bootstrap.Bundle(result.boot_volumes[0])
    manifest, _ = copy.index()
    wheels = bootstrap.listed_wheels(bootstrap.parse_manifest(manifest))
    for w in wheels:  # each checked against the digest airlock.json pins
        copy.copy_checked(f"blobs/sha256/{w.digest[7:]}", w, out / w.name)
    copy.close()
    assert [w.name for w in wheels] == ["airlock-0.1.0-py3-none-any.whl"]


def test_damaged_recovery_volume_is_reported_by_a_passing_verify(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]]
) -> None:
    case = _copy(pristine, tmp_path / "case")
    case.recovery_volumes[0].unlink()
    report = verify_bundle(case.path, trust=UNSIGNED_OK)
    assert report.ok and report.recovery == ("recovery volume lab.airlock.recovery.000 missing",)


def test_repair_reports_its_progress(
    tmp_path: Path, pristine: tuple[WriteResult, dict[str, bytes]], keys: tuple[Path, Path]
) -> None:
    """The rebuild reports the damaged volumes' bytes as it writes them, then the verification
    its own step; each ends where its total said."""
    case = _copy(pristine, tmp_path / "case")
    case.volumes[1].unlink()
    case.volumes[2].write_bytes(b"garbage")
    totals: dict[str, int | None] = {}
    seen: dict[str, int] = {}

    class Sink:
        def start(self, name: str, total: int | None) -> None:
            totals[name], seen[name] = total, 0

        def advance(self, name: str, nbytes: int) -> None:
            seen[name] += nbytes

        def done(self, name: str) -> None:
            assert seen[name] == totals[name], name

    repaired = repair_bundle(case.path, options=RepairOptions(keys=[keys[1]], progress=Sink()))
    assert repaired.verify is not None and repaired.verify.ok
    assert "rebuild 2 volumes" in totals
    assert totals["rebuild 2 volumes"] == 2 * case.volumes[0].stat().st_size  # 1 MiB volumes
    assert f"verify {case.path.name}" in totals
