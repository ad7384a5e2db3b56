"""The page cache shared by every web process, in Redis (when ``redis_url`` is set).

Per key, ``<prefix>gen:<key>`` is a counter that a purge increments; each page is stored
under ``<prefix>page:<key>:<variant>`` together with the counter's value from before its
data was read, and its variant is added to the set ``<prefix>variants:<key>``. A read
fetches counter and page in one ``MGET`` and uses the page only when they agree, so a page
built before a purge is never served after it, whichever wrote last. A purge bumps the
counter and deletes every variant's body, in one script. Pages expire after ``ttl``
seconds to bound memory; counters are tiny and stay.

Purges arrive three ways: right after a commit from the process that made it, through the
outbox (``cheeseshop_purge``, retried until delivered), and from the journal, which every
web process follows from a mark kept in Redis — so changes made while Redis was down are
purged as soon as it is back, without waiting for an outbox retry.

Redis being down never fails a request: the page is built as if it were not cached (and
a warning logged). A purge while Redis is down raises, so the outbox retries it. After any
Redis error, a process that follows the journal serves nothing from Redis until it has
caught up with the journal again: a page stored before the outage may have missed purges.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Iterable

import redis
import redis.asyncio

from cheeseshop.background import stop_gracefully
from cheeseshop.cache import Build, CachedPage, SingleFlight
from cheeseshop.cache.follow import changes_since, follow
from cheeseshop.db import Database
from cheeseshop.journal import last_serial

__all__ = ["RedisPageCache", "purge_redis"]

log = logging.getLogger(__name__)

PREFIX = "cheeseshop:"
#: Seconds between two "Redis is unreachable" warnings.
WARN_EVERY = 30.0

# KEYS: the generation counters, then the variant sets, of the keys to purge.
# ARGV[1]: the journal mark key; ARGV[2]: a serial to raise the mark to ("" for none).
# Bumps each counter and deletes every stored variant's body.
_PURGE = """
local n = #KEYS / 2
for i = 1, n do
  redis.call('INCR', KEYS[i])
  local set = KEYS[n + i]
  local variants = redis.call('SMEMBERS', set)
  for _, page in ipairs(variants) do redis.call('DEL', page) end
  redis.call('DEL', set)
end
if ARGV[2] ~= '' then
  local mark = tonumber(redis.call('GET', ARGV[1]) or '0')
  if tonumber(ARGV[2]) > mark then redis.call('SET', ARGV[1], ARGV[2]) end
end
return n
"""


def _gen_key(key: str) -> str:
    return f"{PREFIX}gen:{key}"


def _page_key(key: str, variant: str) -> str:
    return f"{PREFIX}page:{key}:{variant}"


def _variants_key(key: str) -> str:
    return f"{PREFIX}variants:{key}"


def _mark_key() -> str:
    return f"{PREFIX}journal-mark"


def _purge_args(keys: Iterable[str], mark: int | None) -> tuple[list[str], list[str]]:
    keys = sorted(set(keys))
    return (
        [_gen_key(k) for k in keys] + [_variants_key(k) for k in keys],
        [_mark_key(), "" if mark is None else str(mark)],
    )


def _encode(generation: int, page: CachedPage) -> bytes:
    # The header line, then the body, then the gzipped body (its length in the header).
    gzipped = page.gzipped or b""
    header = json.dumps([generation, page.content_type, page.etag, page.serial, len(gzipped)]).encode()
    return header + b"\n" + page.body + gzipped


def _decode(raw: bytes) -> tuple[int, CachedPage] | None:
    """The stored generation and page; None for a value this code did not write."""
    header, _, data = raw.partition(b"\n")
    try:
        generation, content_type, etag, serial, gzipped_size = json.loads(header)
        if not 0 <= gzipped_size <= len(data):
            return None
        body = data[: len(data) - gzipped_size]
        gzipped = data[len(data) - gzipped_size :] if gzipped_size else None
        page = CachedPage(body=body, content_type=content_type, etag=etag, serial=int(serial), gzipped=gzipped)
        return int(generation), page
    except (ValueError, TypeError):
        return None


def purge_redis(url: str, keys: Iterable[str]) -> None:
    """Bump the generation of each key (and drop its pages) in the Redis at ``url``."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        names, args = _purge_args(keys, None)
        if names:
            client.eval(_PURGE, len(names), *names, *args)
    finally:
        client.close()


class RedisPageCache:
    """Pages in Redis, so every web process serves and purges the same copy."""

    needs_purge_events = True

    def __init__(
        self,
        url: str,
        *,
        db: Database | None = None,
        poll_seconds: float = 0.5,
        ttl: int = 24 * 3600,
        timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.poll_seconds = poll_seconds
        self._db = db
        self._client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._purge_script = self._client.register_script(_PURGE)
        self._warned = 0.0
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Set on a Redis error, cleared once the journal has been followed up to now.
        self._behind = False
        self._flights = SingleFlight()

    async def fetch(self, key: str, variant: str, build: Build) -> CachedPage | None:
        """The page from Redis if its generation is current, else built and stored."""
        if self._behind:
            return await build()
        page_key = _page_key(key, variant)
        try:
            generation, stored = await self._lookup(key, page_key)
        except redis.RedisError:
            self._lost()
            return await build()
        if stored is not None:
            return stored
        built = await self._flights.run((key, variant, generation), build)
        if built is not None:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.set(page_key, _encode(generation, built), ex=self.ttl)
                    pipe.sadd(_variants_key(key), page_key)
                    pipe.expire(_variants_key(key), self.ttl)
                    await pipe.execute()
            except redis.RedisError:
                self._lost()
        return built

    async def peek(self, key: str, variant: str) -> CachedPage | None:
        """The page from Redis if its generation is current, else None (also when Redis fails)."""
        if self._behind:
            return None
        try:
            return (await self._lookup(key, _page_key(key, variant)))[1]
        except redis.RedisError:
            self._lost()
            return None

    async def _lookup(self, key: str, page_key: str) -> tuple[int, CachedPage | None]:
        """The key's generation, and the stored page if it was built under that generation."""
        generation_raw, raw = await self._client.mget(_gen_key(key), page_key)
        generation = int(generation_raw or 0)
        stored = _decode(raw) if raw is not None else None
        if stored is not None and stored[0] == generation:
            return generation, stored[1]
        return generation, None

    def purge(self, keys: Iterable[str]) -> None:
        """Purge through a blocking client (this runs in the outbox's worker thread)."""
        purge_redis(self.url, keys)

    async def purge_now(self, keys: Iterable[str]) -> None:
        """Purge through this cache's own connections (raises when Redis is down)."""
        try:
            await self._purge(keys, None)
        except redis.RedisError:
            self._lost()
            raise

    async def _purge(self, keys: Iterable[str], mark: int | None) -> None:
        names, args = _purge_args(keys, mark)
        if names or mark is not None:
            await self._purge_script(keys=names, args=args)

    async def start(self) -> None:
        """Follow the journal from the mark in Redis (see the module's docstring)."""
        if self._db is None or self.poll_seconds <= 0 or self._poller is not None:
            return
        self._stopping = asyncio.Event()
        self._poller = asyncio.create_task(
            follow(self._stopping, self.poll_seconds, self._follow_step), name="page-cache-journal"
        )

    async def _follow_step(self) -> None:
        assert self._db is not None
        try:
            raw = await self._client.get(_mark_key())
            if raw is None:  # a new (or flushed) Redis holds no pages older than now
                newest = await self._db.run_read(last_serial)
                await self._client.set(_mark_key(), newest, nx=True)
            else:
                mark = int(raw)
                # Catch up completely before trusting Redis again.
                while True:
                    seen, keys = await self._db.run_read(functools.partial(changes_since, after=mark))
                    if seen == mark:
                        break
                    await self._purge(keys, seen)
                    mark = seen
        except redis.RedisError:
            self._lost()
            raise
        self._behind = False

    async def close(self) -> None:
        """Stop following the journal; close the connection pool."""
        if self._poller is not None:
            await stop_gracefully(self._poller, self._stopping, grace=2)
            self._poller = None
        await self._client.aclose()

    def _lost(self) -> None:
        """Redis failed: stop trusting it (when following the journal) and warn, now and then."""
        if self._poller is not None:
            self._behind = True
        now = time.monotonic()
        if now - self._warned > WARN_EVERY:
            self._warned = now
            # Not the URL: it may hold a password.
            log.warning("page cache: Redis is unreachable; serving pages uncached", exc_info=True)

