"""Registry credentials as container tools file them, the spec's references, Retry-After."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from airlock.errors import FetchError, SpecError, UsageError
from airlock.fetch.retry import RetryPolicy, TransientError, retry_after_seconds, with_retries
from airlock.oci.auth import Credentials
from airlock.oci.credentials import (
    CredentialRef,
    CredentialStore,
    config_paths,
    load_credential_ref,
    normalise_host,
)
from airlock.presets import preset_text
from airlock.spec import parse_spec

SECRET = "s3cr3t-canary"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("registry.example:5000", "registry.example:5000"),
        ("http://Registry.Example:5000/v2/", "registry.example:5000"),
        ("ghcr.io/owner", "ghcr.io"),
    ],
)
def test_config_keys_are_matched_by_host(key: str, host: str) -> None:
    assert normalise_host(key) == host


def test_auths_entry_auth_and_username_password(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config.json",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64(f"hub:{SECRET}")},
                "registry.example": {"username": "bob", "password": SECRET},
            }
        },
    )
    store = CredentialStore(files=[cfg], env={})
    assert store.for_host("registry-1.docker.io") == Credentials("hub", SECRET)
    assert store.for_host("docker.io") == Credentials("hub", SECRET)
    assert store.for_host("registry.example") == Credentials("bob", SECRET)
    assert store.for_host("other.example") is None
    assert SECRET not in repr(store.for_host("registry.example"))


def test_cred_helpers_then_creds_store_then_auths(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config.json",
        {
            "credHelpers": {"helped.example": "one"},
            "credsStore": "desktop",
            "auths": {"plain.example": {"auth": b64("p:pw")}},
        },
    )
    calls: list[tuple[str, str]] = []

    def helper(program: str, server: str) -> str | None:
        calls.append((program, server))
        if program == "docker-credential-one":
            return json.dumps({"Username": "h", "Secret": SECRET})
        if server == "stored.example":
            return json.dumps({"ServerURL": server, "Username": "s", "Secret": "x"})
        return None

    store = CredentialStore(files=[cfg], env={}, helper=helper)
    assert store.for_host("helped.example") == Credentials("h", SECRET)
    assert store.for_host("stored.example") == Credentials("s", "x")
    assert store.for_host("plain.example") == Credentials("p", "pw")  # store knows none
    assert store.for_host("helped.example") == Credentials("h", SECRET)  # cached
    assert calls.count(("docker-credential-one", "helped.example")) == 1


def test_identity_tokens_and_bad_helper_names(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.json",
        {
            "credHelpers": {"a.example": "x", "b.example": "../evil"},
            "auths": {"c.example": {"auth": b64("<token>:"), "identitytoken": SECRET}},
        },
    )

    def helper(program: str, server: str) -> str | None:
        return json.dumps({"Username": "<token>", "Secret": SECRET})

    store = CredentialStore(files=[cfg], env={}, helper=helper)
    for host in ("a.example", "c.example"):
        creds = store.for_host(host)
        assert creds is not None and creds.identity_token == SECRET and creds.password == ""
        assert SECRET not in repr(creds)
    with pytest.raises(UsageError, match="invalid credential helper name"):
        store.for_host("b.example")


def test_bad_config_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match=str(bad)):
        CredentialStore(files=[bad], env={}).for_host("x.example")


def test_files_read_in_the_container_tools_order(tmp_path: Path) -> None:
    env = {"REGISTRY_AUTH_FILE": "/a.json", "XDG_RUNTIME_DIR": "/run/user/1", "DOCKER_CONFIG": "/d"}
    assert config_paths(env, tmp_path) == [
        Path("/a.json"),
        Path("/run/user/1/containers/auth.json"),
        tmp_path / ".config/containers/auth.json",
        Path("/d/config.json"),
        tmp_path / ".config/helm/registry/config.json",
    ]


def test_spec_reference_env_and_file(tmp_path: Path) -> None:
    env = {"REG": f"alice:{SECRET}", "ONLY": SECRET}
    assert load_credential_ref(CredentialRef(env="REG"), host="h", env=env) == Credentials(
        "alice", SECRET
    )
    assert load_credential_ref(
        CredentialRef(env="ONLY", username="bob"), host="h", env=env
    ) == Credentials("bob", SECRET)
    (tmp_path / "pw").write_text(SECRET + "\n")
    ref = CredentialRef(file="pw", username="carol")
    assert load_credential_ref(ref, host="h", env={}, base=tmp_path) == Credentials("carol", SECRET)
    for ref, needle in (
        (CredentialRef(env="MISSING"), "MISSING is not set"),
        (CredentialRef(env="ONLY"), "does not hold `username:secret`"),
        (CredentialRef(file=str(tmp_path / "nope")), "cannot read"),
    ):
        with pytest.raises(UsageError, match=needle) as exc:
            load_credential_ref(ref, host="h", env=env)
        assert SECRET not in str(exc.value) + str(exc.value.hint)


def test_spec_reference_wins_over_files_for_its_host(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.json", {"auths": {"127.0.0.1:5000": {"auth": b64("file:pw")}}})
    store = CredentialStore(
        spec_refs={"docker.io": CredentialRef(env="R")}, files=[cfg], env={"R": "spec:pw"}
    )
    assert store.for_registry("docker.io", "127.0.0.1:5000") == Credentials("spec", "pw")
    assert store.for_registry("ghcr.io", "127.0.0.1:5000") == Credentials("file", "pw")
    assert store.for_host("127.0.0.1:5000") == Credentials("file", "pw")


SPEC = (
    preset_text("seed")
    + "sources:\n  registries:\n    docker.io:\n      url: http://127.0.0.1:5000\n"
)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (f"      password: {SECRET}\n", "never inline"),
        ("      username: alice\n", "never inline"),
        (f"      credentials: {{username: a, password: {SECRET}}}\n", "never written in the spec"),
        ("      credentials: {env: A, file: b}\n", "exactly one of env"),
        ("      credentials: {}\n", "exactly one of env"),
        ("      credentials: {env: 'not a name'}\n", "variable name"),
    ],
)
def test_spec_refuses_inline_secrets(extra: str, needle: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(SPEC + extra)
    text = str(exc.value)
    assert needle in text and "sources.registries.docker.io" in text
    assert SECRET not in text


def test_spec_accepts_references() -> None:
    spec = parse_spec(SPEC + "      credentials: {env: HUB_AUTH, username: alice}\n")
    creds = spec.sources.registries["docker.io"].credentials
    assert creds is not None and creds.env == "HUB_AUTH" and creds.username == "alice"


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


async def _throttled(retry_after: float, policy: RetryPolicy) -> list[int]:
    seen: list[int] = []

    async def attempt(n: int) -> str:
        seen.append(n)
        if n == 0:
            raise TransientError("HTTP 429", retry_after=retry_after)
        return "ok"

    await with_retries(attempt, policy=policy, what="x")
    return seen


def test_retry_after_beyond_budget_gives_up_at_once() -> None:
    import asyncio

    policy = RetryPolicy(base_delay=0.0, max_wait=5.0)
    with pytest.raises(FetchError, match=r"asks to wait 60 s \(Retry-After\)"):
        asyncio.run(_throttled(60.0, policy))
    assert asyncio.run(_throttled(0.05, policy)) == [0, 1]


def test_proxy_for_reads_the_environment_per_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from airlock.fetch.network import proxy_for

    for k in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    assert proxy_for("https://registry.example/v2/") == {}
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@127.0.0.5:3128")
    monkeypatch.setenv("NO_PROXY", "mirror.example,127.0.0.8")
    got = proxy_for("https://registry.example/v2/")
    assert got["proxy"] == "http://127.0.0.5:3128"
    assert got["proxy_headers"] == {"Proxy-Authorization": "Basic " + b64("user:pw")}
    assert proxy_for("http://registry.example/v2/") == {}  # no HTTP_PROXY
    assert proxy_for("https://mirror.example/x") == {}
    assert proxy_for("https://a.mirror.example/x") == {}  # a suffix, as curl and urllib do
    assert proxy_for("https://127.0.0.8:5000/v2/") == {}


def test_missing_registry_auth_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--registry-auth .*no such file"):
        CredentialStore.default(auth_file=tmp_path / "nope.json", env={})
