"""Debian resolution: libsolv under the system python3, with apt's preferences.

Debian's python3-solv (multi-semantics libsolv: Debian version comparison, `add_debpackages`)
cannot be imported from the venv, so `solve_deb.py` (beside this file) runs as
`/usr/bin/python3 solve_deb.py` with JSON in and out. Recommends are ignored unless asked for
(as `apt-get install --no-install-recommends`); the first alternative of `A | B` is preferred,
as apt does.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airlock import system
from airlock.errors import SystemCommandError
from airlock.packages.repos import RepoMetadata

__all__ = [
    "SOLVER_SCRIPT",
    "SYSTEM_PYTHON",
    "required_base_status",
    "run_solver",
    "solve_debian",
]

SOLVER_SCRIPT = Path(__file__).with_name("solve_deb.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def run_solver(request: dict[str, Any], *, python: str = SYSTEM_PYTHON) -> dict[str, Any]:
    """Run solve_deb.py under the system python; its JSON answer."""
    with tempfile.TemporaryDirectory(prefix="airlock-solve-") as tmp:
        result = system.run(
            [python, str(SOLVER_SCRIPT)],
            input=json.dumps({**request, "workdir": tmp}),
            check=False,
            timeout=600,
        )
    if result.returncode != 0 or not result.stdout.strip():
        missing_solv = "No module named 'solv'" in result.stderr
        raise SystemCommandError(
            f"the package solver failed: {(result.stderr or result.stdout).strip()[-1500:]}",
            hint="apt-get install python3-solv (Debian's libsolv bindings)"
            if missing_solv
            else None,
        )
    answer: dict[str, Any] = json.loads(result.stdout)
    if "error" in answer:
        raise SystemCommandError(f"the package solver failed: {answer['error']}")
    return answer


def solve_debian(
    requested: Sequence[str],
    *,
    repos: Sequence[RepoMetadata],
    arch: str,
    installed_status: Path | None = None,
    recommends: bool = False,
) -> dict[str, Any]:
    """Resolve Debian packages against verified Packages indexes (see solve_deb.py's answer)."""
    return run_solver(
        {
            "format": "deb",
            "arch": arch,
            "repos": [{"name": str(i), "path": str(r.index_path)} for i, r in enumerate(repos)],
            "installed": str(installed_status) if installed_status else None,
            "requested": list(requested),
            "recommends": recommends,
        }
    )


def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def required_base_status(
    repos: Sequence[RepoMetadata], *, arch: str, dest: Path, extra: Sequence[str] = ()
) -> Path:
    """A dpkg status file for a minimal install: every `Priority: required` package (plus
    `extra`, e.g. `apt`) and their dependencies, as debootstrap's minbase variant installs.
    """
    names: set[str] = set(extra)
    for repo in repos:
        for para in _paragraphs(repo.index_path.read_text(errors="replace")):
            if re.search(r"^Priority:\s*required\s*$", para, re.M):
                m = re.search(r"^Package:\s*(\S+)", para, re.M)
                if m:
                    names.add(m.group(1))
    answer = solve_debian(sorted(names), repos=repos, arch=arch)
    if answer["missing"] or answer["problems"]:
        raise SystemCommandError(
            f"cannot build a minimal base: {answer['missing'] or answer['problems']}"
        )
    chosen = {(p["name"], p["version"], p["arch"]) for p in answer["packages"]}
    out: list[str] = []
    for repo in repos:
        for para in _paragraphs(repo.index_path.read_text(errors="replace")):
            key = tuple(
                (m.group(1) if (m := re.search(rf"^{f}:\s*(\S+)", para, re.M)) else "")
                for f in ("Package", "Version", "Architecture")
            )
            if key in chosen:
                chosen.discard(key)
                lines = para.splitlines()
                lines.insert(1, "Status: install ok installed")
                out.append("\n".join(lines))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n\n".join(out) + "\n")
    return dest
