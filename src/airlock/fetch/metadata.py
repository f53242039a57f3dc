"""Small metadata downloads for `plan` (CNI manifests, chart indexes): bounded, mirrored.

Artifacts themselves go through the parallel, resumable downloader; these are a few KB each.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Mapping

from airlock.errors import FetchError
from airlock.fetch.network import TLS_HINT, NetworkOptions, is_certificate_error, tls_problem
from airlock.resolve.urls import apply_mirror

__all__ = ["MetadataFetcher"]

_MAX_BYTES = 32 << 20


class MetadataFetcher:
    def __init__(
        self,
        mirrors: Mapping[str, str],
        *,
        timeout: float = 20,
        attempts: int = 3,
        network: NetworkOptions | None = None,
    ) -> None:
        self.network = network or NetworkOptions()
        self.opener = self.network.opener()
        self.mirrors = dict(mirrors)
        self.timeout = timeout
        self.attempts = attempts
        self.cache: dict[str, bytes] = {}

    def get(self, url: str) -> bytes:
        """GET an upstream URL through the spec's mirrors; 4xx fails at once, 5xx retried."""
        if url in self.cache:
            return self.cache[url]
        target = apply_mirror(url, self.mirrors)
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                with self.opener.open(target, timeout=self.timeout) as resp:
                    data: bytes = resp.read(_MAX_BYTES + 1)
                if len(data) > _MAX_BYTES:
                    raise FetchError(f"{url}: metadata larger than {_MAX_BYTES} bytes")
                self.cache[url] = data
                return data
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise FetchError(
                        f"{url}: HTTP {exc.code}"
                        + (f" (fetched as {target})" if target != url else ""),
                        hint="check the version in the spec, or the `sources` mirror",
                    ) from None
                last = exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if is_certificate_error(exc):
                    raise FetchError(
                        f"{url}: {tls_problem(exc)}"
                        + (f" (fetched as {target})" if target != url else ""),
                        hint=TLS_HINT,
                    ) from None
                last = exc
            time.sleep(min(0.2 * 2**attempt, 2))
        raise FetchError(
            f"{url}: unreachable after {self.attempts} attempts ({last})"
            + (f" (fetched as {target})" if target != url else ""),
            hint="on a machine without internet, point `sources.files` at a mirror",
        )
