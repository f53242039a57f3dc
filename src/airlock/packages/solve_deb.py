"""Solve a package request with libsolv: JSON in on stdin, JSON out on stdout.

Run as `/usr/bin/python3 solve_deb.py` under the SYSTEM python: Debian's python3-solv is built
with multi-semantics (Debian version comparison, `add_debpackages`) and cannot be imported from
airlock's venv; PyPI's `solv` wheel is rpm-only. The same `solve()` is imported in-process by
`airlock.packages.rpm` with PyPI's `solv` module passed in, so both formats share one solver
policy. This file imports nothing from airlock (it runs outside the venv).

Request (all paths local, metadata already verified by `airlock.packages.repos`):

    {"format": "deb" | "rpm", "arch": "amd64",
     "repos": [{"name": "0", "path": "/x/Packages"}],      # Packages files or primary.xml
     "installed": "/x/status" | null,                      # dpkg status or primary.xml
     "requested": ["socat", ...], "recommends": false}

Answer: {"packages": [{name, version, arch, repo, location, checksum: {algorithm, value} |
null, size, chain: [requested, ..., parent], dep (the dependency that pulled it in),
replaces (the installed package it upgrades or obsoletes)}], "missing": [names],
"already_installed": [names], "problems": [text]}.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

__all__ = ["main", "solve"]

# apt takes the first alternative of `A | B` that can be installed; libsolv's own policy picks
# by name/version, so the first alternative is favoured and the request solved again. Each round
# adds at least one favour, so this bounds the loop on a pathological repository.
_MAX_ROUNDS = 25
_DEB_OPS = {">=": ("GT", "EQ"), "<=": ("LT", "EQ"), ">>": ("GT",), "<<": ("LT",), "=": ("EQ",)}
_ALT_RE = re.compile(r"^\s*([^\s(]+)\s*(?:\(\s*(>=|<=|>>|<<|=)\s*([^)\s]+)\s*\))?\s*\Z")


def _installed_status_only(path: str, out_path: str) -> None:
    """Keep only the paragraphs of a dpkg status file whose package is really installed."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    keep = []
    for para in re.split(r"\n\s*\n", text):
        m = re.search(r"^Status:\s*(\S+)\s+(\S+)\s+(\S+)", para, re.M)
        # `config-files`, `half-installed`, ...: files may be left but the package is not there
        if (m is None or m.group(3) == "installed") and para.strip():
            keep.append(para.strip("\n"))
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write("\n\n".join(keep) + "\n")


def _load(solv: Any, pool: Any, repo: Any, path: str, fmt: str) -> None:
    fh = solv.xfopen(path)
    if fh is None:
        raise OSError(f"cannot open {path}")
    try:
        ok = repo.add_debpackages(fh) if fmt == "deb" else repo.add_rpmmd(fh, None)
    finally:
        fh.close()
    if ok is False:
        raise ValueError(f"libsolv could not read {path}: {pool.errstr}")


def _first_alternative(solv: Any, pool: Any, dep: str) -> Any | None:
    """The first alternative of a Debian `A | B` dependency, as a libsolv Dep, if it exists."""
    if "|" not in dep:
        return None
    for alt in dep.split("|"):
        m = _ALT_RE.match(alt)
        if m is None:
            return None
        name, op, evr = m.groups()
        d = pool.Dep(name.split(":")[0])
        if op:
            flags = 0
            for part in _DEB_OPS[op]:
                flags |= getattr(solv, f"REL_{part}")
            d = d.Rel(flags, pool.Dep(evr))
        if pool.whatprovides(d):
            return d
    return None


def _deb_fields(path: str, wanted: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], Any]:
    """Filename, SHA256 and Size of the wanted (name, version, arch), read from a Packages file.

    libsolv keeps no download size for Debian packages, so the Packages paragraphs are read.
    """
    names = {w[0] for w in wanted}
    found: dict[tuple[str, str, str], Any] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        para: dict[str, str] = {}
        for line in [*fh, "\n"]:
            if line.strip():
                if line[0] not in " \t" and ":" in line:
                    key, _, value = line.partition(":")
                    para[key.strip().lower()] = value.strip()
                continue
            key3 = (para.get("package", ""), para.get("version", ""), para.get("architecture", ""))
            if key3[0] in names and key3 in wanted and key3 not in found:
                found[key3] = {
                    "location": para.get("filename"),
                    "checksum": {"algorithm": "sha256", "value": para["sha256"]}
                    if "sha256" in para
                    else None,
                    "size": int(para.get("size", "0") or 0),
                }
            para = {}
    return found


def _checksum(solv: Any, s: Any) -> dict[str, str] | None:
    chk = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
    if chk is None:
        return None
    return {"algorithm": chk.typestr(), "value": chk.hex()}


def _explain(solver: Any, s: Any, label: str = "Depends") -> tuple[Any | None, str]:
    """The package whose dependency decided `s` (None for a requested one) and that dep."""
    reason, rule = solver.describe_decision(s)
    if reason in (solver.SOLVER_REASON_WEAKDEP, solver.SOLVER_REASON_RECOMMENDED):
        for _type, parent, dep in solver.describe_weakdep_decision(s):
            return parent, f"Recommends: {dep}"
        return None, "recommended"
    if rule is None:
        return None, "requested"
    for info in rule.allinfos():
        if info.type == solver.SOLVER_RULE_PKG_REQUIRES and info.solvable is not None:
            return info.solvable, f"{label}: {info.dep}"
        if info.type == solver.SOLVER_RULE_JOB:
            return None, "requested"
    return None, "requested"


def solve(solv: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Resolve `request` (see the module docstring) with the given `solv` module."""
    fmt = request["format"]
    pool = solv.Pool()
    # Debian's multi-semantics libsolv defaults to deb, PyPI's is rpm-only: always say which
    pool.setdisttype(solv.Pool.DISTTYPE_DEB if fmt == "deb" else solv.Pool.DISTTYPE_RPM)
    pool.setarch(request["arch"])
    for spec in request["repos"]:
        _load(solv, pool, pool.add_repo(spec["name"]), spec["path"], fmt)
    system = pool.add_repo("@System")
    if request.get("installed"):
        path = request["installed"]
        if fmt == "deb":
            filtered = request.get("workdir", "/tmp") + "/status.installed"
            _installed_status_only(path, filtered)
            path = filtered
        _load(solv, pool, system, path, fmt)
    pool.installed = system
    pool.addfileprovides()
    pool.createwhatprovides()

    missing: list[str] = []
    already: list[str] = []
    jobs = []
    for name in request["requested"]:
        sel = pool.select(name, solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_PROVIDES)
        if sel.isempty():
            missing.append(name)
            continue
        if any(s.repo == system for s in sel.solvables()):
            already.append(name)
        jobs += sel.jobs(solv.Job.SOLVER_INSTALL)
    if missing:
        return {"packages": [], "missing": missing, "already_installed": already, "problems": []}

    favoured: set[str] = set()
    for _round in range(_MAX_ROUNDS):
        solver = pool.Solver()
        if not request.get("recommends"):
            solver.set_flag(solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
        problems = solver.solve(jobs)
        if problems:
            texts = []
            for problem in problems:
                lines = [str(problem)]
                for rule in problem.findallproblemrules():
                    for info in rule.allinfos():
                        text = info.problemstr()
                        if text and text not in lines:
                            lines.append(text)
                texts.append("\n".join(lines))
            return {"packages": [], "missing": [], "already_installed": already, "problems": texts}
        transaction = solver.transaction()
        new = list(transaction.newsolvables())
        extra = []
        if fmt == "deb":
            for s in new:
                parent, dep = _explain(solver, s)
                if parent is None or not dep.startswith("Depends: "):
                    continue
                first = _first_alternative(solv, pool, dep[len("Depends: ") :])
                if first is None or str(first) in favoured:
                    continue
                if not s.matchesdep(solv.SOLVABLE_PROVIDES, first):
                    favoured.add(str(first))
                    extra.append(
                        pool.Job(
                            solv.Job.SOLVER_FAVOR | solv.Job.SOLVER_SOLVABLE_PROVIDES, first.id
                        )
                    )
        if not extra:
            break
        jobs += extra

    by_id = {s.id: s for s in new}
    label = "Depends" if fmt == "deb" else "Requires"
    explained = {s.id: _explain(solver, s, label) for s in new}
    chains: dict[int, list[str]] = {}

    def chain_of(s: Any, depth: int = 0) -> list[str]:
        if s.id in chains:
            return chains[s.id]
        parent, _dep = explained.get(s.id, (None, "requested"))
        if parent is None or depth > 200:
            chains[s.id] = []
        elif parent.id not in by_id:  # pulled in by an installed package's dependency
            chains[s.id] = [parent.name]
        else:
            chains[s.id] = [*chain_of(parent, depth + 1), parent.name]
        return chains[s.id]

    out = []
    for s in sorted(new, key=lambda x: (x.name, x.evr, x.arch)):
        location, _medianr = s.lookup_location()
        replaced = transaction.othersolvable(s)
        out.append(
            {
                "name": s.name,
                "version": s.evr,
                "arch": s.arch,
                "repo": s.repo.name,
                "location": location,
                "checksum": _checksum(solv, s),
                "size": s.lookup_num(solv.SOLVABLE_DOWNLOADSIZE),
                "chain": chain_of(s),
                "dep": explained[s.id][1],
                "replaces": str(replaced) if replaced is not None and replaced.id else None,
            }
        )
    if fmt == "deb":
        paths = {spec["name"]: spec["path"] for spec in request["repos"]}
        for repo_name, path in paths.items():
            mine = [p for p in out if p["repo"] == repo_name]
            fields = _deb_fields(path, {(p["name"], p["version"], p["arch"]) for p in mine})
            for p in mine:
                p.update(fields.get((p["name"], p["version"], p["arch"]), {}))
    return {"packages": out, "missing": [], "already_installed": already, "problems": []}


def main() -> int:
    import importlib

    solv = importlib.import_module("solv")  # the system's python3-solv, outside the venv

    request = json.load(sys.stdin)
    try:
        answer = solve(solv, request)
    except (OSError, ValueError) as exc:
        answer = {"error": str(exc)}
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
