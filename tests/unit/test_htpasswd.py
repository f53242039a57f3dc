"""htpasswd parsing and verification (bcrypt `$2y$` as docker-registry requires, and `{SHA}`)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.errors import UsageError
from airlock.oci.htpasswd import hash_password, load_htpasswd, parse_htpasswd

# A stored `$2y$` line as `htpasswd -nbB alice wonderland` writes it (password: wonderland).
APACHE_LINE = "alice:$2y$05$zzibJVORU5ni2cgZ0Rs.D.I7nut2RBzb6eW1ZqdgJ0/wS4MLG3NsO"


def sha_entry(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def test_apache_bcrypt_line_verifies() -> None:
    # Made here so the test does not depend on a stored hash being right:
    line = "alice:" + "$2y$" + bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()[4:]
    users = parse_htpasswd(line)
    assert users.verify("alice", "wonderland")
    assert not users.verify("alice", "Wonderland")
    assert not users.verify("bob", "wonderland")


def test_hash_password_writes_2y_and_verifies() -> None:
    entry = hash_password("s3cret", rounds=4)
    assert entry.startswith("$2y$04$")
    users = parse_htpasswd(f"ci:{entry}\n")
    assert users.verify("ci", "s3cret")
    assert not users.verify("ci", "s3cret ")
    # repeat: the second success comes from the cache and must agree
    assert users.verify("ci", "s3cret")
    assert not users.verify("ci", "wrong")


def test_sha_entries_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"# registry users\n\nold:{sha_entry('legacy')}\n{APACHE_LINE}\n")
    users = load_htpasswd(path)
    assert sorted(users.entries) == ["alice", "old"]
    assert users.verify("old", "legacy")
    assert not users.verify("old", "Legacy")
    assert users.verify("alice", "wonderland")
    assert not users.verify("alice", "legacy")
    assert users.line("old").startswith("old:{SHA}")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("alice\n", "not a `user:hash` line"),
        (":$2y$05$x\n", "not a `user:hash` line"),
        ("alice:$apr1$abc$def\n", "unsupported password hash"),
        ("alice:plain\n", "unsupported password hash"),
        ("# only a comment\n", "no users"),
    ],
)
def test_bad_files_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_htpasswd(text, source="users.htpasswd")
    assert needle in str(err.value)
    assert "users.htpasswd" in str(err.value)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read htpasswd file"):
        load_htpasswd(tmp_path / "nope")


def test_corrupt_bcrypt_hash_is_a_refusal_not_a_crash() -> None:
    users = parse_htpasswd("alice:$2y$05$tooshort\n")
    assert not users.verify("alice", "anything")


def test_long_passwords_truncate_like_apache() -> None:
    # bcrypt reads 72 bytes; Apache and Go truncate. The bcrypt package would raise instead.
    long = "x" * 100
    users = parse_htpasswd("u:" + hash_password(long, rounds=4))
    assert users.verify("u", long)
    assert users.verify("u", "x" * 72)
    assert not users.verify("u", "x" * 71)
    assert not users.verify("nobody", long)


@settings(max_examples=15, deadline=None)
@given(
    user=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    # at most 72 bytes (18 code points of up to 4 bytes): bcrypt ignores what follows
    password=st.text(min_size=0, max_size=18),
    other=st.text(min_size=1, max_size=18),
)
def test_round_trip_any_password(user: str, password: str, other: str) -> None:
    for entry in (hash_password(password, rounds=4), sha_entry(password)):
        users = parse_htpasswd(f"{user}:{entry}\n")
        assert users.verify(user, password)
        if other != password:
            assert not users.verify(user, other)
