"""Bounded retries with exponential backoff, on transient failures only.

Transient: a connection refused, reset or dropped mid-body, a timeout, HTTP 5xx (not 501/505)
and 429. Never retried: 4xx such as 401/403/404, TLS certificate errors, a digest or checksum
mismatch. Both the attempt count and the total time are bounded, so a loop always ends.
Shared by the file downloader and the OCI client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from airlock.errors import FetchError

__all__ = [
    "RetryPolicy",
    "TransientError",
    "is_transient_exception",
    "is_transient_status",
    "retry_after_seconds",
    "with_retries",
]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # attempts after the first
    base_delay: float = 0.5  # seconds; doubles each retry
    max_delay: float = 8.0
    max_total: float = 300.0  # seconds from the first attempt; no retry starts after this

    def delay(self, retry: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2**retry)))


class TransientError(Exception):
    """A failure worth another attempt (raised inside an attempt; never seen by users)."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def is_transient_status(status: int) -> bool:
    return status == 429 or (500 <= status <= 599 and status not in (501, 505))


def is_transient_exception(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientSSLError):
        return False  # a certificate problem does not fix itself
    return isinstance(
        exc,
        aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | asyncio.TimeoutError,
    )


def retry_after_seconds(value: str | None) -> float | None:
    """The delta-seconds form of Retry-After (the HTTP-date form is ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    error: type[FetchError] = FetchError,
) -> T:
    """Run `attempt(n)` until it returns, retrying transient failures within `policy`.

    Non-transient exceptions pass through unchanged; when retries run out the last transient
    failure becomes `error(...)` naming `what`.
    """
    start = time.monotonic()
    n = 0
    cause: BaseException
    while True:
        try:
            return await attempt(n)
        except TransientError as exc:
            reason, retry_after, cause = exc.reason, exc.retry_after, exc
        except Exception as exc:
            if not is_transient_exception(exc):
                raise
            reason, retry_after, cause = _describe(exc), None, exc
        delay = policy.delay(n)
        if retry_after is not None:
            delay = max(delay, min(retry_after, policy.max_delay))
        elapsed = time.monotonic() - start
        if n >= policy.retries or elapsed + delay > policy.max_total:
            raise error(
                f"{what}: gave up after {n + 1} attempts: {reason}",
                "the server or the network kept failing; check the source and run again "
                "(completed downloads are cached, partial ones resume)",
            ) from cause
        n += 1
        await asyncio.sleep(delay)
