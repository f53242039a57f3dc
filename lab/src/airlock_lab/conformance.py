"""The OCI distribution-spec conformance suite, run against airlock's registry and against
Debian's docker-registry in the same run (`python -m airlock_lab.conformance`, part of
`make test`).

The suite is built from its Go module (`lab/conformance/go.mod`: one require line, no copied
source) with `go test -c`, cached by the digest of go.mod under
`${XDG_CACHE_HOME:-~/.cache}/airlock/conformance/`. Each registry runs as an operator would run
it for pushes: TLS from `airlock registry certs` (the suite gets the CA through SSL_CERT_FILE),
htpasswd credentials (OCI_USERNAME / OCI_PASSWORD), pushes and deletes enabled. All four
workflows are on, OCI_CROSSMOUNT_NAMESPACE is set and OCI_HIDE_SKIPPED_WORKFLOWS=0; nothing is
switched off. Every skipped test is listed with the suite's reason; each run's junit report and
output stay in the results directory. The exit status is 1 when any test that ran against
airlock failed (docker-registry's failures are reported, not judged).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from airlock import system
from airlock.errors import AirlockError, SystemCommandError, UsageError

__all__ = [
    "SUITE_PACKAGE",
    "SuiteResult",
    "SuiteTarget",
    "build_suite",
    "main",
    "parse_junit",
    "run_suite",
]

SUITE_PACKAGE = "github.com/opencontainers/distribution-spec/conformance"
GO_MOD = Path(__file__).resolve().parents[2] / "conformance" / "go.mod"
NAMESPACE = "conformance/app"
CROSSMOUNT_NAMESPACE = "conformance/mounted"
USER = "conformance"
_BUILD_TIMEOUT = 1200.0
_RUN_TIMEOUT = 600.0
_BINARY = "conformance.test"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airlock" / "conformance"


def build_suite(*, go_mod: Path = GO_MOD, cache: Path | None = None) -> Path:
    """The suite's test binary, built once per go.mod (under a lock: parallel runs share it)."""
    try:
        mod = go_mod.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the suite's go.mod {go_mod}: {exc.strerror}") from exc
    root = cache or cache_dir()
    out = root / hashlib.sha256(mod).hexdigest()[:16]
    binary = out / _BINARY
    if binary.is_file():
        return binary
    go = system.which("go")
    if go is None:
        raise UsageError(
            "go not found: the conformance suite is built from its Go module",
            "install Go 1.26 (the machines have it on PATH)",
        )
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if binary.is_file():
            return binary
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            (tmp / "go.mod").write_bytes(mod)
            system.run(
                [*("nice", "-n", "19", go, "test", "-c", "-mod=mod"), "-o", _BINARY, SUITE_PACKAGE],
                cwd=tmp,
                timeout=_BUILD_TIMEOUT,
            )
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return binary


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SuiteTarget:
    """A registry to run the suite against."""

    name: str
    url: str
    username: str
    password: str
    ca_file: Path
    automatic_crossmount: bool  # whether a mount without `from` finds the blob itself


@dataclass
class SuiteResult:
    target: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (test, reason)
    junit: Path | None = None
    output: Path | None = None

    @property
    def ran(self) -> int:
        return len(self.passed) + len(self.failed)

    def counts(self) -> str:
        return f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


_PREFIX = "[It] OCI Distribution Conformance Tests "
# Tests the suite skips by its own design, whatever the registry: each is one branch of a
# choice whose other branch ran. The suite says only "you have skipped this test".
_WHY_SKIPPED = {
    "Get tag name from environment": "the alternative to pushing the pull fixtures: runs only "
    "when OCI_TAG_NAME, OCI_MANIFEST_DIGEST and OCI_BLOB_DIGEST name existing content",
    "Populate registry with test tags (no push)": "the alternative to pushing the tags: runs "
    "only when OCI_TAG_LIST names existing tags",
    "Cross-mounting of nonexistent blob should yield session id": "runs only when the mount "
    "with `from` answered 202 (an upload); it answered 201 (mounted)",
    "automatic content discovery disabled": "the other branch of OCI_AUTOMATIC_CROSSMOUNT "
    "(this registry finds a blob mounted without `from`)",
    "automatic content discovery enabled": "the other branch of OCI_AUTOMATIC_CROSSMOUNT "
    "(this registry does not look for a blob mounted without `from`)",
}


def _why(name: str, reason: str) -> str:
    known = next((why for key, why in _WHY_SKIPPED.items() if key in name), None)
    return f"{reason} {known}" if known else reason


def parse_junit(path: Path, target: str) -> SuiteResult:
    """Each test case of a ginkgo junit report as passed, failed (or errored) or skipped."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as exc:
        raise AirlockError(
            f"the conformance suite wrote no readable junit report at {path}: {exc}"
        ) from exc
    result = SuiteResult(target, junit=path)
    for case in tree.iter("testcase"):
        name = (case.get("name") or "").removeprefix(_PREFIX)
        skipped = case.find("skipped")
        if skipped is not None:
            reason = (skipped.get("message") or "").removeprefix("skipped - ").strip()
            result.skipped.append((name, _why(name, reason.splitlines()[0] if reason else "")))
        elif case.find("failure") is not None or case.find("error") is not None:
            result.failed.append(name)
        elif name.startswith("[") and "Suite" in name.split("]")[0]:
            continue  # ginkgo's own before/after-suite nodes
        else:
            result.passed.append(name)
    return result


def run_suite(binary: Path, target: SuiteTarget, *, report_dir: Path) -> SuiteResult:
    """Run every workflow against `target`; the junit report and output go to `report_dir`."""
    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "OCI_ROOT_URL": target.url,
        "OCI_NAMESPACE": NAMESPACE,
        "OCI_CROSSMOUNT_NAMESPACE": CROSSMOUNT_NAMESPACE,
        "OCI_USERNAME": target.username,
        "OCI_PASSWORD": target.password,
        "OCI_TEST_PULL": "1",
        "OCI_TEST_PUSH": "1",
        "OCI_TEST_CONTENT_DISCOVERY": "1",
        "OCI_TEST_CONTENT_MANAGEMENT": "1",
        "OCI_HIDE_SKIPPED_WORKFLOWS": "0",
        "OCI_AUTOMATIC_CROSSMOUNT": "1" if target.automatic_crossmount else "0",
        "OCI_DEBUG": "0",
        "OCI_REPORT_DIR": str(report_dir),
        "SSL_CERT_FILE": str(target.ca_file),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    (report_dir / "junit.xml").unlink(missing_ok=True)
    proc = system.run(
        [str(binary), "-ginkgo.no-color"],
        env=env,
        cwd=report_dir,
        check=False,
        timeout=_RUN_TIMEOUT,
    )
    output = report_dir / "output.txt"
    output.write_text(proc.stdout + proc.stderr)
    result = parse_junit(report_dir / "junit.xml", target.name)
    result.output = output
    if proc.returncode != 0 and not result.failed:
        raise SystemCommandError(
            f"the conformance suite exited with {proc.returncode} against {target.name} "
            "without a failed test",
            hint=f"see {output}",
        )
    return result


# -- the two registries -------------------------------------------------------------------------


def _wait_https(url: str, ca_file: Path, alive: Iterator[bool]) -> bool:
    """Whether `url` answers HTTP over TLS (any status: 401 is ready) within 20 s."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    for _ in range(200):
        if not next(alive):
            return False
        try:
            with opener.open(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def _alive(proc: system.Process) -> Iterator[bool]:
    while True:
        yield proc.alive()


@dataclass
class _Pki:
    ca: Path
    cert: Path
    key: Path
    htpasswd: Path
    password: str


def make_pki(work: Path) -> _Pki:
    """CA, server certificate and push credentials, made by the CLI an operator uses."""
    out = work / "pki"
    system.run(
        [
            *(sys.executable, "-m", "airlock", "registry", "certs", "--out", str(out)),
            *("--name", "localhost", "--address", "127.0.0.1", "--htpasswd-user", USER),
        ],
        timeout=120,
    )
    password = (out / "registry-password").read_text().strip()
    return _Pki(
        out / "ca.crt", out / "registry.crt", out / "registry.key", out / "htpasswd", password
    )


@contextlib.contextmanager
def airlock_registry(work: Path, pki: _Pki, *, delete: bool = True) -> Iterator[SuiteTarget]:
    """`airlock registry serve --push [--delete]` with TLS and credentials, on a free port."""
    from airlock_lab.distribution import free_port

    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        log = work / "airlock-registry.log"
        proc = system.spawn(
            [
                *(sys.executable, "-m", "airlock", "registry", "serve"),
                *("--store", str(work / "airlock-store"), "--listen", f"127.0.0.1:{port}"),
                *("--push", *(["--delete"] if delete else [])),
                *("--tls-cert", str(pki.cert), "--tls-key", str(pki.key)),
                *("--htpasswd", str(pki.htpasswd)),
                # a fixed floor: the run must not depend on how full this machine's disk is
                *("--free-floor", "256MiB", "--free-floor-percent", "0"),
            ],
            log=log,
        )
        url = f"https://127.0.0.1:{port}"
        try:
            if _wait_https(f"{url}/v2/", pki.ca, _alive(proc)):
                yield SuiteTarget("airlock", url, USER, pki.password, pki.ca, True)
                return
        finally:
            proc.stop()
    raise SystemCommandError(
        "airlock registry serve did not become ready", hint=f"see {work / 'airlock-registry.log'}"
    )


@contextlib.contextmanager
def docker_registry(work: Path, pki: _Pki) -> Iterator[SuiteTarget]:
    from airlock_lab.distribution import start_distribution

    with start_distribution(
        "conformance",
        work / "docker-registry-data",
        work,
        delete=True,
        tls=(pki.cert, pki.key),
        htpasswd=pki.htpasswd,
        ca_file=pki.ca,
    ) as reg:
        # distribution 2.8 does not look for a blob when a mount names no `from`
        yield SuiteTarget("docker-registry", reg.url, USER, pki.password, pki.ca, False)


# -- the run -----------------------------------------------------------------------------------


def _report(result: SuiteResult) -> list[str]:
    lines = [f"{result.target}: {result.counts()}"]
    lines += [f"  FAILED  {name}" for name in result.failed]
    lines += [f"  SKIPPED {name} ({reason})" for name, reason in result.skipped]
    if result.junit is not None:
        lines.append(f"  junit report: {result.junit}")
    return lines


def run_both(results: Path) -> tuple[SuiteResult, SuiteResult]:
    binary = build_suite()
    if results.exists():
        shutil.rmtree(results)
    work = results / "work"
    work.mkdir(parents=True)
    pki = make_pki(work)
    with airlock_registry(work, pki) as target:
        ours = run_suite(binary, target, report_dir=results / "airlock")
    with docker_registry(work, pki) as target:
        theirs = run_suite(binary, target, report_dir=results / "docker-registry")
    return ours, theirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=Path("out/conformance"))
    args = parser.parse_args(argv)
    try:
        ours, theirs = run_both(args.results)
    except AirlockError as exc:
        print(f"conformance: error: {exc}", file=sys.stderr)
        return 1
    lines = [
        f"OCI distribution-spec conformance ({SUITE_PACKAGE}, all four workflows)",
        *_report(ours),
        *_report(theirs),
    ]
    (args.results / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ok = not ours.failed and ours.ran > 0
    # the closing line CI reads: airlock's own count
    print(
        f"conformance: {len(ours.passed)} passed, {len(ours.failed)} failed, "
        f"{len(ours.skipped)} skipped"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
