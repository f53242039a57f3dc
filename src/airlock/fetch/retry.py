"""Bounded retries with exponential backoff, on transient failures only.

Transient: a connection refused, reset or dropped mid-body, a timeout, HTTP 5xx (not 501/505)
and 429. Never retried: 4xx such as 401/403/404, TLS certificate errors, a digest or checksum
mismatch. Both the attempt count and the total time are bounded, so a loop always ends.
A server's Retry-After (seconds or an HTTP date, sent with 429 and 503 under rate limits) is
honoured in full, never cut short: when the wait it asks for does not fit in what is left of
the budget (`max_wait` for one wait, `max_total` in all), airlock gives up at once and says
how long the server asked it to wait, rather than hammer a rate-limited registry.
Shared by the file downloader and the OCI client.
"""

from __future__ import annotations

import asyncio
import email.utils
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
    max_wait: float = 120.0  # the longest single Retry-After wait honoured

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


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds, or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


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
        elapsed = time.monotonic() - start
        if retry_after is not None:
            if n < policy.retries and (
                retry_after > policy.max_wait or elapsed + retry_after > policy.max_total
            ):
                raise error(
                    f"{what}: {reason}; the server asks to wait {retry_after:.0f} s "
                    "(Retry-After), longer than airlock waits "
                    f"({min(policy.max_wait, max(0.0, policy.max_total - elapsed)):.0f} s left)",
                    "the source is rate limiting: run again later, or authenticate "
                    "(registries give logged-in users a higher limit)",
                ) from cause
            delay = max(delay, retry_after)
        if n >= policy.retries or elapsed + delay > policy.max_total:
            raise error(
                f"{what}: gave up after {n + 1} attempts: {reason}",
                "the source is rate limiting: run again later, or authenticate (registries "
                "give logged-in users a higher limit)"
                if "429" in reason
                else "the server or the network kept failing; check the source and run again "
                "(completed downloads are cached, partial ones resume)",
            ) from cause
        n += 1
        await asyncio.sleep(delay)
