"""The page cache shared by every web process, in Redis (when ``redis_url`` is set).

Per key, ``<prefix>gen:<key>`` is a counter that a purge increments; each page is stored
under ``<prefix>page:<key>:<variant>`` together with the counter's value from before its
data was read. A read fetches both in one ``MGET`` and uses the page only when they agree,
so a page built before a purge is never served after it, whichever wrote last. Pages
expire after ``ttl`` seconds to bound memory; counters are tiny and stay.

Redis being down never fails a request: the page is built as if it were not cached (and
a warning logged). A purge while Redis is down raises, so the outbox retries it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio

from cheeseshop.cache import Build, CachedPage

__all__ = ["RedisPageCache", "purge_redis"]

log = logging.getLogger(__name__)

PREFIX = "cheeseshop:"
#: Seconds between two "Redis is unreachable" warnings.
WARN_EVERY = 30.0


def _gen_key(key: str) -> str:
    return f"{PREFIX}gen:{key}"


def _page_key(key: str, variant: str) -> str:
    return f"{PREFIX}page:{key}:{variant}"


def _encode(generation: int, page: CachedPage) -> bytes:
    header = json.dumps([generation, page.content_type, page.etag, page.serial]).encode()
    return header + b"\n" + page.body


def _decode(raw: bytes) -> tuple[int, CachedPage]:
    header, _, body = raw.partition(b"\n")
    generation, content_type, etag, serial = json.loads(header)
    return generation, CachedPage(body=body, content_type=content_type, etag=etag, serial=serial)


def _queue_purge(pipe: Any, keys: Iterable[str]) -> None:
    for key in keys:
        pipe.incr(_gen_key(key))
        # Drop the common bodies now rather than at expiry; any leftover is stale anyway.
        pipe.delete(_page_key(key, "json"), _page_key(key, "html"))


def purge_redis(url: str, keys: Iterable[str]) -> None:
    """Bump the generation of each key (and drop its pages) in the Redis at ``url``."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        with client.pipeline(transaction=False) as pipe:
            _queue_purge(pipe, keys)
            pipe.execute()
    finally:
        client.close()


class RedisPageCache:
    """Pages in Redis, so every web process serves and purges the same copy."""

    needs_purge_events = True

    def __init__(self, url: str, *, ttl: int = 24 * 3600, timeout: float = 1.0) -> None:
        self.url = url
        self.ttl = ttl
        self._client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._warned = 0.0

    async def fetch(self, key: str, variant: str, build: Build) -> CachedPage | None:
        """The page from Redis if its generation is current, else built and stored."""
        try:
            generation_raw, raw = await self._client.mget(_gen_key(key), _page_key(key, variant))
        except redis.RedisError:
            self._warn()
            return await build()
        generation = int(generation_raw or 0)
        if raw is not None:
            stored_generation, page = _decode(raw)
            if stored_generation == generation:
                return page
        built = await build()
        if built is not None:
            try:
                await self._client.set(_page_key(key, variant), _encode(generation, built), ex=self.ttl)
            except redis.RedisError:
                self._warn()
        return built

    def purge(self, keys: Iterable[str]) -> None:
        """Purge through a blocking client (this runs in the outbox's worker thread)."""
        purge_redis(self.url, keys)

    async def purge_now(self, keys: Iterable[str]) -> None:
        """Purge through this cache's own connections (raises when Redis is down)."""
        async with self._client.pipeline(transaction=False) as pipe:
            _queue_purge(pipe, keys)
            await pipe.execute()

    async def start(self) -> None:
        """Nothing to start: Redis itself is shared."""

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned > WARN_EVERY:
            self._warned = now
            # Not the URL: it may hold a password.
            log.warning("page cache: Redis is unreachable; serving pages uncached", exc_info=True)
