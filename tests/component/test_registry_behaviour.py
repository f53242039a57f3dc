"""The registry client against registries as they behave on the internet (see registry_fronts).

Real parts: two Debian docker-registry daemons, each trusting its own token server on another
port and address. Fronts of our own: a redirector that sends every request for
registry.k8s.io to the second registry under another repository path (which challenges with
its own realm), object storage that answers 400 to any Authorization header, 429s with
Retry-After, Docker Hub's rate-limit headers, and a private repository.
Every image lands with the digest pushed upstream; every front counts credentials that reach
it without having been issued for it, and that count is 0.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from registry_fronts import (
    Loop,
    Redirector,
    StorageFront,
    Tap,
    TokenRegistry,
    TokenServer,
    bearer_admit,
    start_token_registry,
)
from ruamel.yaml import YAML
from test_oci_client import build_index, build_manifest, children, tag

from airlock.blobstore import BlobStore
from airlock.content import ImageArtifact
from airlock.errors import RegistryError
from airlock.oci.client import Endpoint, pull_images
from airlock.oci.credentials import CredentialRef, CredentialStore
from airlock.oci.layout import OciLayout
from airlock.oci.ref import parse_reference
from airlock.presets import preset_text
from airlock_lab.upstream import Upstream

pytestmark = pytest.mark.component
AIRLOCK = str(Path(sys.executable).with_name("airlock"))

CANARY = "canary-5f0c1e-never-print-me"  # alice's password on registry A only


@dataclass
class World:
    tmp: Path
    loop: Loop
    layout: OciLayout
    digests: dict[str, str]  # image name in the layout -> digest pushed
    token_a: TokenServer
    token_b: TokenServer
    reg_a: TokenRegistry
    reg_b: TokenRegistry
    tap_a: Tap
    tap_b: Tap
    storage: StorageFront
    redirector: Redirector

    def foreign(self) -> dict[str, int]:
        return {
            "token-a": self.token_a.foreign,
            "token-b": self.token_b.foreign,
            "registry-a": self.tap_a.foreign,
            "registry-b": self.tap_b.foreign,
            "storage": self.storage.foreign,
            "redirector": self.redirector.foreign,
        }

    def headers_seen_by_others(self) -> list[str]:
        """Every Authorization that reached a host other than registry A and its token server."""
        return (
            [a for _, _, a in self.tap_b.seen]
            + [r["auth"] for r in self.token_b.requests]
            + [a for _, a in self.redirector.seen]
        )


def _push(layout: OciLayout, name: str, dest: str, creds: str) -> None:
    subprocess.run(
        [
            "skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests", "--quiet",
            "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout.root}:{name}",
            f"docker://{dest}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("behaviour")
    loop = Loop()
    regs: list[TokenRegistry] = []
    try:
        token_a = TokenServer(
            "token-a", "registry-a", tmp, users={"pusher": "pw-a", "alice": CANARY}
        )
        token_a.url = loop.serve(token_a.app())
        token_b = TokenServer(
            "token-b", "registry-b", tmp, users={"pusher": "pw-b", "bob": "bobs-own-secret"}
        )
        token_b.url = loop.serve(token_b.app(), "127.0.0.2")
        reg_a = start_token_registry("a", tmp, token_a)
        regs.append(reg_a)
        reg_b = start_token_registry("b", tmp, token_b)
        regs.append(reg_b)
        storage = StorageFront(reg_a)
        storage.url = loop.serve(storage.app(), "127.0.0.3")
        tap_a = Tap(reg_a.url, admit=bearer_admit(token_a), storage=storage)
        tap_a.url = loop.serve(tap_a.app())
        tap_b = Tap(reg_b.url, admit=bearer_admit(token_b))
        tap_b.url = loop.serve(tap_b.app(), "127.0.0.2")
        redirector = Redirector(tap_b.url, "k8s-artifacts-prod/images")
        redirector.url = loop.serve(redirector.app(), "127.0.0.4")

        layout = OciLayout(tmp / "layout")
        layout.init()
        base = os.urandom(400_000)
        pause = build_manifest(layout, "amd64", [base, os.urandom(1000)])
        amd64 = build_manifest(layout, "amd64", [base, os.urandom(2000)])
        arm64 = build_manifest(layout, "arm64", [base, os.urandom(3000)])
        multi = build_index(layout, [amd64, arm64])
        private = build_manifest(layout, "amd64", [os.urandom(5000)])
        for name, desc in (("pause", pause), ("multi", multi), ("private", private)):
            tag(layout, name, desc)
        a, b = reg_a.url.removeprefix("http://"), reg_b.url.removeprefix("http://")
        _push(layout, "multi", f"{a}/library/app:1.0", "pusher:pw-a")
        _push(layout, "private", f"{a}/private/app:1.0", "pusher:pw-a")
        _push(layout, "pause", f"{b}/k8s-artifacts-prod/images/pause:3.9", "pusher:pw-b")
        _push(layout, "multi", f"{b}/k8s-artifacts-prod/images/multi/app:1.0", "pusher:pw-b")
        _push(layout, "private", f"{b}/k8s-artifacts-prod/images/private/app:1.0", "pusher:pw-b")
        # what the pushes themselves sent is not what the client sends: count from here on
        for t in (token_a, token_b):
            t.requests.clear()
        digests = {"pause": pause["digest"], "multi": multi["digest"], "private": private["digest"]}
        yield World(
            tmp, loop, layout, digests, token_a, token_b, reg_a, reg_b, tap_a, tap_b, storage,
            redirector,
        )  # fmt: skip
    finally:
        for r in regs:
            r.process.stop()
        loop.close()


@pytest.fixture
def w(world: World) -> Iterator[World]:
    """The world, with every front's fault switches off again after the test."""
    yield world
    world.tap_a.throttle.clear()
    world.tap_a.retry_after = "1"
    world.tap_a.rate_limit = None
    assert world.foreign() == dict.fromkeys(world.foreign(), 0)


def pull(
    dest: Path,
    refs: list[str],
    endpoints: dict[str, Endpoint],
    *,
    platforms: tuple[str, ...] = ("linux/amd64",),
    **kw: Any,
) -> list[ImageArtifact]:
    async def go() -> list[ImageArtifact]:
        async with aiohttp.ClientSession() as session:
            return await pull_images(
                [parse_reference(r) for r in refs],
                dest=BlobStore(dest),
                endpoints=endpoints,
                platforms=list(platforms),
                session=session,
                backoff=0.01,
                **kw,
            )

    return asyncio.run(go())


def _netloc(url: str) -> str:
    return url.removeprefix("http://")


def test_redirect_to_another_registry_authenticates_there_with_its_own_realm(
    w: World, tmp_path: Path
) -> None:
    # credentials for the home host exist; the registry a redirect leads to must never see them
    eps = {
        "registry.k8s.io": Endpoint(
            w.redirector.url, insecure=True, username="alice", password=CANARY
        )
    }
    before = len(w.token_b.requests)
    arts = pull(
        tmp_path,
        ["registry.k8s.io/pause:3.9", "registry.k8s.io/multi/app:1.0"],
        eps,
        platforms=("linux/amd64", "linux/arm64"),
    )
    assert [a.digest for a in arts] == [w.digests["pause"], w.digests["multi"]]
    dest = BlobStore(tmp_path)
    for a in arts:
        for b in a.blobs:
            dest.verify(b.digest)
    assert sorted(dest.digests()) == sorted(
        set(children(w.layout, w.digests["pause"]) + children(w.layout, w.digests["multi"]))
    )
    # every request went to the redirector first, then to registry B with B's own token
    assert w.redirector.seen and all(auth == "" for _, auth in w.redirector.seen)
    mine = w.token_b.requests[before:]
    scopes = {r["scope"] for r in mine}
    assert "repository:k8s-artifacts-prod/images/pause:pull" in scopes
    assert all(r["auth"] == "" for r in mine)  # anonymous: a public repository
    bearer = [a for _, _, a in w.tap_b.seen if a]
    assert bearer and all(a.removeprefix("Bearer ") in w.token_b.issued for a in bearer)
    assert not any(CANARY in h or "alice" in h for h in w.headers_seen_by_others())
    assert not any(_b64(f"alice:{CANARY}") in h for h in w.headers_seen_by_others())


def test_redirect_target_gets_the_credentials_filed_for_it_never_the_home_ones(
    w: World, tmp_path: Path
) -> None:
    """A private repository behind the redirect: registry B gets bob's login, filed for B's
    host in config.json; the home host's login (alice, the canary) never leaves home."""
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"auths": {_netloc(w.tap_b.url): {"auth": _b64("bob:bobs-own-secret")}}})
    )
    eps = {
        "registry.k8s.io": Endpoint(
            w.redirector.url, insecure=True, username="alice", password=CANARY
        )
    }
    store = CredentialStore(files=[config], env={})
    (art,) = pull(tmp_path / "d", ["registry.k8s.io/private/app:1.0"], eps, credentials=store)
    assert art.digest == w.digests["private"]
    bob = "Basic " + _b64("bob:bobs-own-secret")
    assert any(r["auth"] == bob for r in w.token_b.requests)
    assert all(r["auth"] in ("", bob) for r in w.token_b.requests)
    assert not any(CANARY in h or _b64(f"alice:{CANARY}") in h for h in w.headers_seen_by_others())
    assert all(auth == "" for _, auth in w.redirector.seen)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_blob_redirect_to_object_storage_carries_no_authorization(w: World, tmp_path: Path) -> None:
    before = w.storage.gets
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    (art,) = pull(tmp_path, ["docker.io/library/app:1.0"], eps)
    assert art.digest == w.digests["multi"]
    # config + 2 layers of the amd64 image came from storage, not from the registry
    assert w.storage.gets - before == 3
    assert w.storage.foreign == 0
    manifests = [a for m, p, a in w.tap_a.seen if "/manifests/" in p]
    assert manifests[-1].startswith("Bearer ")  # the registry itself did get its token


def test_429_with_retry_after_is_waited_out(w: World, tmp_path: Path) -> None:
    w.tap_a.throttle["/manifests/"] = 2
    w.tap_a.retry_after = "1"
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    started = time.monotonic()
    (art,) = pull(tmp_path, ["docker.io/library/app:1.0"], eps)
    assert art.digest == w.digests["multi"]
    assert len(w.tap_a.throttled) >= 2
    first, second = w.tap_a.throttled[-2:]
    assert second - first >= 0.95  # the client waited as long as it was asked to (backoff 0.01)
    assert time.monotonic() - started >= 1.9


def test_retry_after_beyond_the_budget_fails_at_once_and_says_so(w: World, tmp_path: Path) -> None:
    w.tap_a.throttle["/manifests/"] = 1
    w.tap_a.retry_after = "3600"
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    started = time.monotonic()
    with pytest.raises(RegistryError) as exc:
        pull(tmp_path, ["docker.io/library/app:1.0"], eps)
    assert time.monotonic() - started < 10
    assert "429" in str(exc.value) and "3600 s (Retry-After)" in str(exc.value)
    assert exc.value.hint and "rate limit" in exc.value.hint


def test_429_without_retry_after_gives_up_saying_rate_limited(w: World, tmp_path: Path) -> None:
    w.tap_a.throttle["/manifests/"] = 50
    w.tap_a.retry_after = ""
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    with pytest.raises(RegistryError) as exc:
        pull(tmp_path, ["docker.io/library/app:1.0"], eps)
    assert "gave up after 5 attempts" in str(exc.value) and "rate limited" in str(exc.value)
    assert exc.value.hint and "rate limiting" in exc.value.hint


def test_docker_hub_rate_limit_is_reported_when_low(w: World, tmp_path: Path) -> None:
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    notices: list[str] = []
    w.tap_a.rate_limit = (100, 60)
    pull(tmp_path / "plenty", ["docker.io/library/app:1.0"], eps, notices=notices)
    assert notices == []
    w.tap_a.rate_limit = (100, 3)
    pull(tmp_path / "low", ["docker.io/library/app:1.0"], eps, notices=notices)
    assert len(notices) == 1
    assert "docker.io" in notices[0] and "3 of 100" in notices[0] and "6 h" in notices[0]
    assert "anonymous" in notices[0]


# -- a private repository: credentials from where users keep them ----------------------------------


def test_private_repository_refused_without_credentials(w: World, tmp_path: Path) -> None:
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    with pytest.raises(RegistryError) as exc:
        pull(tmp_path, ["docker.io/private/app:1.0"], eps, credentials=CredentialStore(env={}))
    assert str(exc.value).startswith("access denied: docker.io/private/app:1.0")
    assert exc.value.hint and "credentials" in exc.value.hint


def _pull_private(w: World, tmp_path: Path, store: CredentialStore) -> None:
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    (art,) = pull(tmp_path / "dest", ["docker.io/private/app:1.0"], eps, credentials=store)
    assert art.digest == w.digests["private"]
    assert any(r["auth"] == "Basic " + _b64(f"alice:{CANARY}") for r in w.token_a.requests)


def test_private_repository_with_docker_config_json(w: World, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {"auths": {f"http://{_netloc(w.tap_a.url)}/v1/": {"auth": _b64(f"alice:{CANARY}")}}}
        )
    )
    _pull_private(w, tmp_path, CredentialStore(files=[config], env={}))


def test_private_repository_with_a_credential_helper(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-airlocktest"
    log = tmp_path / "helper.log"
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 2\nread -r server\necho "$server" >> {log}\n'
        f'if [ "$server" = "{_netloc(w.tap_a.url)}" ]; then\n'
        f'  echo \'{{"ServerURL":"\'"$server"\'","Username":"alice","Secret":"{CANARY}"}}\'\n'
        "else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {_netloc(w.tap_a.url): "airlocktest"}}))
    _pull_private(w, tmp_path, CredentialStore(files=[config], env={}))
    assert log.read_text().split() == [_netloc(w.tap_a.url)]  # asked once, for that host only


def test_private_repository_with_an_identity_token(w: World, tmp_path: Path) -> None:
    """`docker login` to some registries stores an OAuth2 refresh token (`identitytoken`):
    it is exchanged with a POST at that registry's realm, and never sent anywhere else."""
    refresh = f"refresh-{CANARY}"
    w.token_a.refresh_tokens[refresh] = "alice"
    config = tmp_path / "config.json"
    entry = {"auth": _b64("<token>:"), "identitytoken": refresh}
    config.write_text(json.dumps({"auths": {_netloc(w.tap_a.url): entry}}))
    eps = {"docker.io": Endpoint(w.tap_a.url, insecure=True)}
    store = CredentialStore(files=[config], env={})
    (art,) = pull(tmp_path / "dest", ["docker.io/private/app:1.0"], eps, credentials=store)
    assert art.digest == w.digests["private"]
    posts = [r for r in w.token_a.requests if r.get("method") == "POST"]
    assert posts and posts[-1]["grant_type"] == "refresh_token"
    assert (
        posts[-1]["refresh_token"] == refresh
        and posts[-1]["scope"] == "repository:private/app:pull"
    )


def test_private_repository_with_the_spec_env_reference(w: World, tmp_path: Path) -> None:
    store = CredentialStore(
        spec_refs={"docker.io": CredentialRef(env="AIRLOCK_TEST_REGISTRY")},
        env={"AIRLOCK_TEST_REGISTRY": f"alice:{CANARY}"},
    )
    _pull_private(w, tmp_path, store)


def test_no_credential_reached_a_host_it_was_not_issued_for(world: World) -> None:
    """After every test above: the fronts' counts, and the canary nowhere but at home."""
    assert world.foreign() == dict.fromkeys(world.foreign(), 0)
    assert not any(CANARY in h for h in world.headers_seen_by_others())


# -- the whole connected side: the canary travels nowhere -------------------------------------------


def test_canary_secret_appears_nowhere_in_bundle_json_or_logs(
    w: World, upstream: Upstream, tmp_path: Path
) -> None:
    """`bundle create` pulls the private image with the spec's env reference; the secret is in
    no byte of the bundle (airlock.json included), of --json output, or of --debug logs."""
    doc = YAML().load(preset_text("seed"))
    doc["sources"] = upstream.sources()
    doc["sources"]["registries"]["registry.example"] = {
        "url": w.tap_a.url,
        "insecure": True,
        "credentials": {"env": "AIRLOCK_TEST_REGISTRY"},
    }
    doc["images"] = [*doc["images"], "registry.example/private/app:1.0"]
    spec = tmp_path / "airlock.yaml"
    with spec.open("w") as fh:
        YAML().dump(doc, fh)
    # a ~/.netrc `default` entry must not be sent anywhere either (aiohttp's trust_env would)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"default login alice password {CANARY}\n")
    env = {**os.environ, "AIRLOCK_TEST_REGISTRY": f"alice:{CANARY}", "NETRC": str(netrc)}
    out = tmp_path / "out"
    args = ["bundle", "create", "-f", str(spec), "--cache", str(tmp_path / "cache")]
    proc = subprocess.run(
        [AIRLOCK, *args, "-o", str(out), "--json"],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stdout)
    bundle = Path(result["bundle"])
    with tarfile.open(bundle) as tar:
        manifest = json.loads(tar.extractfile("airlock.json").read())  # type: ignore[union-attr]
    private = [i for i in manifest["images"] if "registry.example/private/app" in json.dumps(i)]
    assert private and json.dumps(private).count(w.digests["private"]) >= 1
    # a second run with --debug (logs), and a failing one (error output)
    debug = subprocess.run(
        [AIRLOCK, "--debug", *args, "-o", str(tmp_path / "out2")], env=env, capture_output=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert debug.returncode == 0, debug.stderr.decode()[-2000:]
    bad = subprocess.run(
        [AIRLOCK, "--debug", *args, "-o", str(tmp_path / "out3"), "--json"],
        env={**env, "AIRLOCK_TEST_REGISTRY": f"alice:{CANARY}-wrong"},
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert bad.returncode == 1 and b"access denied" in bad.stdout + bad.stderr
    needles = [CANARY.encode(), _b64(f"alice:{CANARY}").encode()]
    haystacks = {
        "stdout": proc.stdout + debug.stdout + bad.stdout,
        "stderr": proc.stderr + debug.stderr + bad.stderr,
    }
    for f in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p not in (spec, netrc)):
        haystacks[str(f)] = f.read_bytes()
    leaks = [where for where, data in haystacks.items() if any(n in data for n in needles)]
    assert leaks == []
