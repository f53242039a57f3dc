"""airlock.earlyverify: `bundle verify` answered before the libraries load prints exactly what
the full command prints, and only for a bundle the full command accepts; every other case
(damage, another key, expiry, no signature, recovery files, a doubt) is left to the full
command, whose output is then the same with and without the early path. airlock.json's facts
are parsed at least as strictly as the typed model parses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airlock import earlyverify
from airlock.blobstore import BlobStore
from airlock.bundle.facts import BLOB_KEYS, FILE_KEYS, IMAGE_KEYS, TOP_KEYS, manifest_facts
from airlock.bundle.manifest import BundleManifest, parse_manifest
from airlock.bundle.signing import generate_keypair
from airlock.bundle.writer import BundleContent, write_bundle
from airlock.errors import VerificationError
from airlock_lab.bundle_testing import flip_byte, sample_content

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
EARLY = "debug: verified before the command line's libraries were imported"
MiB = 1 << 20


def _write(
    tmp: Path,
    *,
    split: int | None = None,
    key: Path | None = None,
    change: Callable[[BundleContent], BundleContent] | None = None,
) -> Path:
    store = BlobStore(tmp / "store")
    content = sample_content(store, big_file_size=3 * MiB)
    if change is not None:
        content = change(content)
    return write_bundle(content, blobs=store, out=tmp / "out", split=split, sign_key=key).path


def _run(
    argv: list[str], *, early: bool, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    full = {k: v for k, v in os.environ.items() if k not in ("AIRLOCK_NO_EARLY_VERIFY",)}
    full.update(env or {})
    if not early:
        full["AIRLOCK_NO_EARLY_VERIFY"] = "1"
    p = subprocess.run([AIRLOCK, *argv], capture_output=True, text=True, env=full, timeout=120)
    return p.returncode, p.stdout, p.stderr


def _same_both_ways(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The command's result, the same with the early path and without it."""
    early = _run(argv, early=True, env=env)
    full = _run(argv, early=False, env=env)
    assert early == full
    return early


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keypair(d / "signer")
    _, other = generate_keypair(d / "other")
    return priv, pub, other


def test_the_early_answer_imports_no_dataclasses(
    tmp_path: Path, keys: tuple[Path, Path, Path]
) -> None:
    """The parent's imports take CPU from the hashing child on both cores; dataclasses (with
    inspect, ast and dis) is the largest the rules could pull in, so none of them uses it."""
    priv, pub, _ = keys
    argv = ["bundle", "verify", "--key", str(pub), str(_write(tmp_path, key=priv))]
    code = (
        "import sys\n"
        "from airlock import earlyhash, earlyverify\n"
        f"earlyhash.start({argv!r})\n"
        f"answered = earlyverify.answer({argv!r})\n"
        "print(answered, 'dataclasses' in sys.modules, file=sys.stderr)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert p.stderr.split() == ["True", "False"]


@pytest.mark.parametrize("split", [None, 1 * MiB], ids=["tar", "volumes"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_good_bundle_is_answered_early_with_the_full_commands_output(
    tmp_path: Path, keys: tuple[Path, Path, Path], split: int | None, as_json: bool
) -> None:
    priv, pub, _ = keys
    bundle = _write(tmp_path, split=split, key=priv)
    argv = ["bundle", "verify", *(["--json"] if as_json else []), "--key", str(pub), str(bundle)]
    code, out, err = _same_both_ways(argv)
    assert code == 0 and err == ""
    assert ("signed by sha256:" in out) and ("UNVERIFIED" not in out)
    code, out_debug, err_debug = _run(["--debug", *argv], early=True)
    assert code == 0 and err_debug.strip() == EARLY and out_debug == out
    if split:  # the first volume names the same bundle
        first = sorted(bundle.parent.glob("*.tar.000"))[0]
        argv[-1] = str(first)
        assert _run(["--debug", *argv], early=True)[2].strip() == EARLY


def test_the_trusted_keys_directory_is_read_as_the_full_command_reads_it(
    tmp_path: Path, keys: tuple[Path, Path, Path]
) -> None:
    priv, pub, other = keys
    bundle = _write(tmp_path, key=priv)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "a-other.pub").write_bytes(other.read_bytes())
    (trusted / "b-signer.pub").write_bytes(pub.read_bytes())
    env = {"AIRLOCK_TRUSTED_KEYS": str(trusted)}
    code, out, _ = _same_both_ways(["bundle", "verify", str(bundle)], env)
    assert code == 0 and "b-signer.pub" in out
    assert (
        _run(["--debug", "bundle", "verify", str(bundle)], early=True, env=env)[2].strip() == EARLY
    )


def _damaged_blob(bundle: Path) -> None:
    flip_byte(bundle, bundle.stat().st_size // 2)


def _expired(content: BundleContent) -> BundleContent:
    import dataclasses

    return dataclasses.replace(content, expires="2001-01-01")


@pytest.mark.parametrize(
    "case",
    ["damaged blob", "another key", "expired", "unsigned", "recovery files", "volume cut"],
)
def test_anything_but_a_good_bundle_is_left_to_the_full_command(
    tmp_path: Path, keys: tuple[Path, Path, Path], case: str
) -> None:
    priv, pub, other = keys
    split = 1 * MiB if case in ("recovery files", "volume cut") else None
    bundle = _write(
        tmp_path,
        split=split,
        key=None if case == "unsigned" else priv,
        change=_expired if case == "expired" else None,
    )
    key = other if case == "another key" else pub
    argv = ["bundle", "verify", "--key", str(key), str(bundle)]
    if case == "damaged blob":
        _damaged_blob(bundle)
    elif case == "unsigned":
        argv.insert(2, "--allow-unsigned")
    elif case == "recovery files":
        (bundle.parent / bundle.name.replace(".parts.json", ".recovery.json")).write_text("{}")
    elif case == "volume cut":
        last = sorted(bundle.parent.glob("*.tar.0*"))[-1]
        with last.open("r+b") as fh:
            fh.truncate(last.stat().st_size - 512)
    _same_both_ways(argv)
    for as_json in ([], ["--json"]):
        code, _, err = _run(["--debug", *as_json, *argv], early=True)
        assert EARLY not in err
        if case != "unsigned":
            assert code != 0


@pytest.mark.parametrize(
    "argv",
    [
        ["bundle", "verify", "--allow-unsigned", "x.tar"],
        ["bundle", "verify", "--help"],
        ["bundle", "verify", "a.tar", "b.tar"],
        ["bundle", "verify", "--key"],
        ["bundle", "verify", "--key", "--json", "x.tar"],
        ["bundle", "verify", "--progress", "plain", "x.tar"],
        ["bundle", "verify", "--", "x.tar"],
        ["bundle", "create", "x.tar"],
        ["-v", "bundle", "verify", "x.tar"],
    ],
)
def test_command_lines_the_early_path_does_not_read(argv: list[str]) -> None:
    assert earlyverify.command(argv) is None


def test_command_lines_it_reads() -> None:
    got = earlyverify.command(
        ["--json", "bundle", "verify", "--key=a.pub", "x.tar", "--key", "b.pub", "--progress=none"]
    )
    assert got == ("x.tar", ["a.pub", "b.pub"], True, False)
    assert earlyverify.command(["--debug", "bundle", "verify", "y.tar"]) == (
        "y.tar",
        [],
        False,
        True,
    )


# --- airlock.json's facts: never laxer than the typed model ---------------------------------------


def test_the_key_sets_are_the_models_aliases() -> None:
    def aliases(model: Any) -> tuple[frozenset[str], frozenset[str]]:
        fields = model.model_fields.items()
        names = {n: f.alias or n for n, f in fields}
        required = frozenset(names[n] for n, f in fields if f.is_required())
        return required, frozenset(names.values()) - required

    from airlock.bundle.manifest import BlobEntry, FileEntry, ImageEntry

    assert aliases(BundleManifest) == TOP_KEYS
    assert aliases(BlobEntry) == BLOB_KEYS
    assert aliases(ImageEntry) == IMAGE_KEYS
    assert aliases(FileEntry) == FILE_KEYS

    from airlock.bundle.volumes import PartsFile, VolumeInfo

    assert aliases(PartsFile) == earlyverify.PARTS_KEYS
    assert frozenset().union(*aliases(VolumeInfo)) == earlyverify.VOLUME_KEYS


def _doc(tmp_path: Path) -> dict[str, Any]:
    store = BlobStore(tmp_path / "store")
    content = sample_content(store, big_file_size=4096)
    w = write_bundle(content, blobs=store, out=tmp_path / "out")
    return json.loads(w.manifest.to_bytes())


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        target: Any = doc
        for part in head:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()
MUTATIONS = {
    "extra top-level key": _set("extra", 1),
    "missing sbom": _set("sbom", _DELETE),
    "sequence as text": _set("sequence", "1"),
    "sequence as a bool": _set("sequence", True),
    "negative sequence": _set("sequence", -1),
    "newer format": _set("formatVersion", "9.9"),
    "another schema": _set("schema", "airlock.bundle/v2"),
    "bad name": _set("name", "a/b"),
    "bad expiry": _set("expires", "2026-13-45"),
    "tool with more": _set("tool.extra", "x"),
    "blob digest": _set("blobs.0.digest", "sha256:XYZ"),
    "blob size as a float": _set("blobs.0.size", 1.0),
    "blob role": _set("blobs.0.role", "other"),
    "blob extra": _set("blobs.0.extra", 1),
    "blob checksum algorithm": _set(
        "blobs.0.checksum", {"algorithm": "md5", "value": "a" * 64, "source": "x"}
    ),
    "blobs out of order": lambda doc: doc["blobs"].reverse(),
    "image blob digest": _set("images.0.blobs", ["sha256:nope"]),
    "image size as text": _set("images.0.size", "1"),
    "file name": _set("files.0.name", ".."),
    "file annotations": _set("files.0.annotations", {"a": 1}),
    "file stored compression": _set(
        "files.0.stored", {"compression": "gzip", "digest": "sha256:" + "a" * 64, "size": 1}
    ),
    "index size": _set("index.size", -1),
    "omitted digest": _set("omitted", ["sha256:short"]),
    "base extra": _set("base", {"inventory": "sha256:" + "a" * 64, "x": 1}),
    "recovery scheme": _set(
        "recovery",
        {
            "scheme": "other",
            "dataVolumes": 1,
            "recoveryVolumes": 1,
            "volumeSize": 1,
            "chunkSize": 1,
            "bootCopies": 1,
        },
    ),
    "spec as a list": _set("spec", []),
}


def test_a_manifest_the_model_accepts_is_read_alike(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    data = json.dumps(doc).encode()
    model = parse_manifest(data)
    facts = manifest_facts(data)
    assert facts.blobs == tuple((b.digest, b.size) for b in model.blobs)
    assert facts.index_digest == model.index.digest and facts.name == model.name
    assert set(facts.images) == {i.reference for i in model.images}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_what_the_model_refuses_the_facts_refuse(tmp_path: Path, name: str) -> None:
    doc = _doc(tmp_path)
    MUTATIONS[name](doc)
    data = json.dumps(doc).encode()
    with pytest.raises(VerificationError):
        parse_manifest(data)
    with pytest.raises((ValueError, TypeError, KeyError)):
        manifest_facts(data)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_in_the_early_path_is_said_as_the_cli_says_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    from airlock.cli.output import state

    for name, value in (("json", False), ("result", {}), ("written", False)):
        monkeypatch.setattr(state, name, value)  # the CLI's output state, restored after

    def interrupted(*_: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(earlyverify, "_verified", interrupted)
    monkeypatch.setattr(os, "isatty", lambda fd: False)
    with pytest.raises(SystemExit) as exc:
        earlyverify.answer(["bundle", "verify", *(["--json"] if as_json else []), "x.tar"])
    assert exc.value.code == 130
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if as_json:
        doc = json.loads(out)
        assert doc["ok"] is False and doc["error"]["code"] == "INTERRUPTED"
    else:
        assert "interrupted" in err and "run the same command again" in err
