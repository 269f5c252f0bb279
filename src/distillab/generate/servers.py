"""Many OpenAI-compatible servers behind one teacher (`--base_url URL [URL ...]` or `--base_url @file`).

A request goes to the server with the fewest requests in flight (at most `max_in_flight` each). A transient
failure (HTTP 5xx or 429, a timeout, a refused or dropped connection) is retried after an exponential backoff,
on another server when there is one. A request that still fails raises `ServerFailure`; its row is then
recorded as failed (id and reason under `failed` in distillab.json), the run ends incomplete with a one-line
error, and a rerun retries exactly the rows still missing.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from distillab.errors import ConfigError, EngineError

T = TypeVar("T")
MAX_BACKOFF_S = 60.0


class ServerFailure(Exception):
    """A request failed on every try."""


def server_urls(values: str | list[str]) -> list[str]:
    """The URLs of `--base_url` values: each a URL or `@file` with one URL per line (`#` comments allowed)."""
    urls: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        if value.startswith("@"):
            path = Path(value[1:])
            if not path.is_file():
                raise ConfigError(f"--base_url file {path} not found")
            listed = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
            if not any(listed):
                raise ConfigError(f"--base_url file {path} lists no URL")
            urls += [url for url in listed if url]
        else:
            urls.append(value)
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--base_url {url!r} is not an http(s) URL, e.g. http://localhost:8000/v1")
    return urls


def is_transient(err: BaseException) -> bool:
    """Worth retrying: a 5xx or 429 answer, a timeout, a refused or dropped connection."""
    import openai

    if isinstance(err, openai.APIStatusError):
        return err.status_code >= 500 or err.status_code == 429
    return isinstance(err, openai.APIConnectionError)  # timeouts included


class ServerPool:
    """Spreads requests over servers (named by their URLs) with bounded concurrency each, retrying transient
    failures. Use it from one event loop."""

    def __init__(self, urls: list[str], max_in_flight: int, retries: int, backoff_s: float):
        self.urls = urls
        self.retries = retries
        self.backoff_s = backoff_s
        self.in_flight = [0] * len(urls)
        self._slots = [asyncio.Semaphore(max_in_flight) for _ in urls]
        self._turn = itertools.count()

    async def run(self, send: Callable[[int], Awaitable[T]]) -> T:
        """`send(server index)` on the least busy server, retried on transient errors; else `ServerFailure`."""
        failed_on = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            server = self._pick(avoid=failed_on)
            self.in_flight[server] += 1
            try:
                async with self._slots[server]:
                    return await send(server)
            except Exception as err:
                if not is_transient(err):
                    raise ServerFailure(f"{self.urls[server]} refused the request: {err}") from err
                failed_on, last = server, err
            finally:
                self.in_flight[server] -= 1
        raise ServerFailure(f"{self.retries + 1} tries failed, the last on {self.urls[failed_on]}: {last}")

    def _pick(self, avoid: int | None) -> int:
        """The server with the fewest requests in flight (not the one that just failed), ties in turn."""
        count = len(self.in_flight)
        start = next(self._turn) % count
        candidates = [s for s in range(count) if s != avoid] or [avoid]
        return min(candidates, key=lambda s: (self.in_flight[s], (s - start) % count))


def check_servers(urls: list[str], timeout: float = 5.0) -> None:
    """Fail fast with a one-line error when an OpenAI-compatible server does not answer."""
    import urllib.error
    import urllib.request

    for base_url in urls:
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout):
                continue
        except urllib.error.HTTPError as err:
            if err.code in {401, 403}:  # reachable, just wants a key
                continue
            raise EngineError(f"server at {base_url} answered {err.code} for /models") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise EngineError(f"cannot reach server at {base_url}: {reason}") from None
