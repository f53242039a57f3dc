"""airlock.standalone.volumes: the one way to find a bundle's volumes (the handle's, the bootstrap
script's and the early verify's), from a tar, a parts file, the first volume or the bare tar name
of a split bundle; every wrong path is a VolumeError that says what to pass instead, and a damaged
parts file is marked damaged. `volume_paths` (what `bundle verify` reads before its fork, without
pathlib or json) finds the same files as `locate`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airlock.standalone.volumes import VolumeError, locate, volume_paths


def _split(tmp_path: Path, n: int = 3, *, parts: bool = True) -> Path:
    for i in range(n):
        (tmp_path / f"lab.airlock.tar.{i:03d}").write_bytes(b"x" * (i + 1))
    if parts:
        doc = {
            "name": "lab",
            "tar": "lab.airlock.tar",
            "volumes": [{"name": f"lab.airlock.tar.{i:03d}"} for i in range(n)],
        }
        (tmp_path / "lab.airlock.parts.json").write_text(json.dumps(doc))
    return tmp_path


def _same_both_ways(path: Path | str) -> list[Path]:
    found = locate(path)
    assert volume_paths(str(path)) == [str(p) for p in found.paths]
    return list(found.paths)


def test_a_single_tar(tmp_path: Path) -> None:
    tar = tmp_path / "lab.airlock.tar"
    tar.write_bytes(b"x")
    found = locate(tar)
    assert (found.tar_name, found.paths, found.parts_path, found.parts) == (
        "lab.airlock.tar",
        (tar,),
        None,
        None,
    )
    assert _same_both_ways(tar) == [tar]


@pytest.mark.parametrize(
    "given", ["lab.airlock.parts.json", "lab.airlock.tar.000", "lab.airlock.tar"]
)
def test_a_split_bundle_from_its_parts_file_first_volume_or_tar_name(
    tmp_path: Path, given: str
) -> None:
    _split(tmp_path)
    found = locate(tmp_path / given)
    assert found.tar_name == "lab.airlock.tar"
    assert found.parts_path == tmp_path / "lab.airlock.parts.json"
    assert found.parts is not None and found.parts["name"] == "lab"
    want = [tmp_path / f"lab.airlock.tar.{i:03d}" for i in range(3)]
    assert _same_both_ways(tmp_path / given) == want


def test_volumes_without_a_parts_file_are_counted_in_order(tmp_path: Path) -> None:
    _split(tmp_path, 4, parts=False)
    found = locate(tmp_path / "lab.airlock.tar.000")
    assert found.tar_name == "lab.airlock.tar" and found.parts_path is None
    assert _same_both_ways(tmp_path / "lab.airlock.tar.000") == [
        tmp_path / f"lab.airlock.tar.{i:03d}" for i in range(4)
    ]


def test_a_relative_path_is_found_where_it_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "media").mkdir()
    _split(tmp_path / "media")
    monkeypatch.chdir(tmp_path)
    paths = _same_both_ways("media/lab.airlock.parts.json")
    assert [os.path.realpath(p) for p in paths] == [
        str(tmp_path / "media" / f"lab.airlock.tar.{i:03d}") for i in range(3)
    ]


@pytest.mark.parametrize(
    ("given", "message", "hint"),
    [
        ("lab.airlock.tar.001", "is not the first volume", "pass lab.airlock.tar.000 or"),
        ("gone.airlock.tar", "bundle .*gone.airlock.tar not found", "pass NAME.airlock.tar"),
        ("gone.airlock.tar.000", "bundle volume .*gone.airlock.tar.000 not found", None),
    ],
)
def test_a_wrong_path_says_what_to_pass(
    tmp_path: Path, given: str, message: str, hint: str | None
) -> None:
    _split(tmp_path)
    for find in (locate, volume_paths):
        with pytest.raises(VolumeError, match=message) as caught:
            find(str(tmp_path / given))
        assert not caught.value.damaged
        if hint is None:
            assert caught.value.hint is None
        else:
            assert caught.value.hint is not None and hint in caught.value.hint


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"tar": "lab.airlock.tar", "volumes": []}),
        json.dumps({"volumes": [{"name": "lab.airlock.tar.000"}]}),
        json.dumps({"tar": "lab.airlock.tar", "volumes": [{"name": "../etc/passwd"}]}),
        json.dumps({"tar": "lab.airlock.tar", "volumes": [{"name": ".."}]}),
        json.dumps({"tar": "lab.airlock.tar", "volumes": ["lab.airlock.tar.000"]}),
    ],
    ids=["not-json", "not-an-object", "no-volumes", "no-tar", "a-path", "dot-dot", "not-objects"],
)
def test_a_damaged_parts_file_is_named_as_damaged(tmp_path: Path, text: str) -> None:
    parts = tmp_path / "lab.airlock.parts.json"
    parts.write_text(text)
    for find in (locate, volume_paths):
        with pytest.raises(VolumeError, match="lab.airlock.parts.json") as caught:
            find(str(parts))
        assert caught.value.damaged
        assert caught.value.hint == "copy the parts file again from the source medium"


def test_an_unreadable_parts_file_is_named(tmp_path: Path) -> None:
    parts = tmp_path / "lab.airlock.parts.json"
    parts.mkdir()  # a directory: open() fails
    with pytest.raises(VolumeError, match="cannot read parts file .*lab.airlock.parts.json"):
        locate(parts)
