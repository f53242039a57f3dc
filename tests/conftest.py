"""Shared fixtures for every test directory.

`upstream`: the simulated internet of the blog post (file hosts and registries on loopback),
started once per test session (once per xdist worker, each on its own free ports). Its build is
cached under /tmp/airlock-test-cache/upstream (or $AIRLOCK_TEST_CACHE/upstream), keyed by the
content that shapes it, so a second session starts in seconds. A missing Debian tool
(docker-registry, skopeo, busybox-static, containerd, ...) makes the fixture fail with the
package to install: it is never a skip.

Point a spec at it with `spec["sources"] = upstream.sources()`. Treat `upstream.files_root` as
read-only: the build is shared by every worker and every later session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock_lab.upstream import Upstream


def upstream_cache_dir() -> Path:
    return Path(os.environ.get("AIRLOCK_TEST_CACHE", "/tmp/airlock-test-cache")) / "upstream"


def component_platforms() -> tuple[str, ...]:
    """The platforms the real components are built for: linux/amd64 in `make test`; `make
    test-full` adds linux/arm64 (AIRLOCK_TEST_PLATFORMS=linux/amd64,linux/arm64)."""
    return tuple(os.environ.get("AIRLOCK_TEST_PLATFORMS", "linux/amd64").split(","))


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    with Upstream.start(upstream_cache_dir(), platforms=component_platforms()) as up:
        yield up


# Fuzzing budget: bounded in `make test`, longer with `make fuzz` (HYPOTHESIS_PROFILE=long).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("default", deadline=None, max_examples=100)
settings.register_profile(
    "long", deadline=None, max_examples=5000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
