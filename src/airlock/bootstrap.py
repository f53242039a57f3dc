"""Install airlock on an offline node from the wheelhouse a bundle carries (stdlib only).

    python3 airlock-bootstrap.py BUNDLE [--venv /opt/airlock/venv]

It needs nothing but Python 3.11+: it reads airlock.json from the bundle (a tar, or the volumes
beside a parts file), extracts every wheel listed there, checks each one's sha256 against
airlock.json, creates a venv and runs `pip install --no-index` from those wheels only. The
installed airlock then checks the bundle's signature and every blob (`airlock bundle verify`).
This file must not import anything outside the standard library.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import venv
from pathlib import Path

_CHUNK = 1 << 20


class _Concat(io.RawIOBase):
    """The volumes of a split bundle read as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = list(paths)
        self._fh: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while True:
            if self._fh is None:
                if not self._paths:
                    return 0
                self._fh = self._paths.pop(0).open("rb")
            n = self._fh.readinto(b)
            if n:
                return n
            self._fh.close()
            self._fh = None


def _volumes(bundle: Path) -> list[Path]:
    if bundle.name.endswith(".parts.json"):
        parts = json.loads(bundle.read_text())
        return [bundle.parent / v["name"] for v in parts["volumes"]]
    if bundle.exists():
        return [bundle]
    found = sorted(bundle.parent.glob(bundle.name + ".[0-9][0-9][0-9]"))
    if not found:
        raise SystemExit(f"bootstrap: {bundle} not found (nor its volumes)")
    return found


def extract_wheels(bundle: Path, dest: Path) -> list[Path]:
    """Write the bundle's wheels into `dest`, each checked against airlock.json."""
    stream = io.BufferedReader(_Concat(_volumes(bundle)), buffer_size=_CHUNK)
    wanted: dict[str, tuple[str, int]] = {}
    written: list[Path] = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name == "airlock.json":
                fh = tar.extractfile(member)
                manifest = json.loads(fh.read() if fh else b"{}")
                for f in manifest.get("files", []):
                    if f.get("kind") == "wheel":
                        hexdigest = f["digest"].split(":", 1)[1]
                        wanted[f"blobs/sha256/{hexdigest}"] = (f["name"], f["size"])
                continue
            if member.name not in wanted or not member.isfile():
                continue
            name, size = wanted.pop(member.name)
            if "/" in name or name.startswith(".") or not name.endswith(".whl"):
                raise SystemExit(f"bootstrap: refusing wheel name {name!r}")
            fh = tar.extractfile(member)
            data = fh.read() if fh else b""
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != size or not member.name.endswith(digest):
                raise SystemExit(f"bootstrap: wheel {name} does not match airlock.json")
            out = dest / name
            out.write_bytes(data)
            written.append(out)
    if wanted:
        raise SystemExit(f"bootstrap: {len(wanted)} wheels listed in airlock.json are missing")
    if not written:
        raise SystemExit("bootstrap: this bundle carries no wheelhouse")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--venv", type=Path, default=Path("/opt/airlock/venv"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="airlock-wheels-") as tmp:
        wheels = extract_wheels(args.bundle, Path(tmp))
        print(f"bootstrap: {len(wheels)} wheels checked against airlock.json")
        venv.EnvBuilder(with_pip=True, clear=False).create(args.venv)
        pip = [str(args.venv / "bin" / "python"), "-m", "pip"]
        subprocess.run(
            [*pip, "install", "--quiet", "--no-index", "--find-links", tmp, "airlock"],
            check=True,
        )
    print(f"bootstrap: airlock installed in {args.venv}; run {args.venv}/bin/airlock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
