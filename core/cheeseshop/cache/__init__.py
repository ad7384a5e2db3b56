"""The page cache: rendered Simple and JSON pages, kept until a purge names their key.

A page is stored under (key, variant) — the key says what it shows (see :mod:`.keys`),
the variant which rendering (``json``, ``html``…). Every key has a generation that a purge
bumps; a page remembers the generation of its key from before its data was read, and is
served only while that is still current. So a page built from data read before a change
can never be served after the purge of that change, however the build and the purge
interleave. Two implementations: in this process (:mod:`.memory`), or shared by every
web process through Redis (:mod:`.redis`) when ``redis_url`` is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cheeseshop.config import Settings
    from cheeseshop.db import Database

__all__ = ["CachedPage", "NullPageCache", "SingleFlight", "PageCache", "make_page", "make_page_cache", "purge_after_commit"]

log = logging.getLogger(__name__)


#: Pages at least this large are also kept gzip-compressed, for clients that accept it
#: (pip, uv and browsers all do). Below it, the bytes saved are not worth a header.
GZIP_MIN_BYTES = 1024
#: zlib's default: the root of 100,000 projects (4.7 MB) compresses about 15:1 in ~0.1 s,
#: once per change; level 9 would take twice as long for about 2% less.
GZIP_LEVEL = 6


@dataclasses.dataclass(frozen=True)
class CachedPage:
    """A rendered response body with what its headers need.

    ``gzipped`` is the same body gzip-compressed (None for a small page): compressed once
    when the page is built, so a client sending ``Accept-Encoding: gzip`` costs nothing
    more per request.
    """

    body: bytes
    content_type: str
    etag: str
    serial: int
    gzipped: bytes | None = None

    @property
    def size(self) -> int:
        """Bytes held, roughly: the bodies dominate."""
        return len(self.body) + len(self.gzipped or b"") + len(self.etag) + len(self.content_type) + 64

    @property
    def gzip_etag(self) -> str:
        """The strong ETag of the gzip-encoded representation (RFC 9110 8.8.3: each
        representation has its own)."""
        return f'{self.etag[:-1]}-gzip"'


def make_page(body: bytes, content_type: str, serial: int) -> CachedPage:
    """A page with its strong ETag and, when large enough, its gzipped body; computed once.

    The content type is hashed with the body: a strong validator must differ between
    representations of one URL (RFC 9110 8.8.1), and the HTML body is the same bytes
    whether sent as ``text/html`` or as ``application/vnd.pypi.simple.v1+html``.
    """
    digest = hashlib.blake2b(content_type.encode() + b"\n" + body, digest_size=16)
    # mtime=0: the same body always compresses to the same bytes (in every web process).
    gzipped = gzip.compress(body, GZIP_LEVEL, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    return CachedPage(
        body=body, content_type=content_type, etag=f'"{digest.hexdigest()}"', serial=serial, gzipped=gzipped
    )


#: Builds a page on a miss; returns None for "nothing to cache" (e.g. a 404).
Build = Callable[[], Awaitable[CachedPage | None]]


class SingleFlight:
    """One build per page and generation at a time in this process; concurrent misses share it.

    After a purge, a popular page (the root, a big project) would otherwise be built by
    every request that arrives before the first build is done. The generation is part of
    the key: a request that comes after a purge never joins a build begun before it.
    """

    def __init__(self) -> None:
        self._running: dict[tuple[str, str, int], asyncio.Future[CachedPage | None]] = {}

    async def run(self, key: tuple[str, str, int], build: Build) -> CachedPage | None:
        """``await build()``, or the result of the build already running for ``key``."""
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(build())
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        # Shielded: one request giving up must not cancel the build the others wait for.
        return await asyncio.shield(running)


class PageCache(Protocol):
    """Where rendered pages are kept between requests."""

    #: True when purges must reach this cache through the outbox: it outlives processes
    #: (Redis), so a purge lost with a crash would leave a stale page there for good. A
    #: per-process cache is purged right after each commit and follows the journal.
    needs_purge_events: bool

    async def fetch(self, key: str, variant: str, build: Build) -> CachedPage | None:
        """The cached page, else ``await build()`` — stored unless purged meanwhile."""
        ...

    async def peek(self, key: str, variant: str) -> CachedPage | None:
        """The cached page if it is current, else None: never builds, never raises."""
        ...

    def purge(self, keys: Iterable[str]) -> None:
        """Make every page of these keys stale (blocking; called from a worker thread)."""
        ...

    async def purge_now(self, keys: Iterable[str]) -> None:
        """Make every page of these keys stale, from the event loop."""
        ...

    async def start(self) -> None:
        """Begin background work, if any (web processes, at start-up)."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections."""
        ...


class NullPageCache:
    """No caching: every fetch builds (the ``page_cache`` plugin is blocked)."""

    needs_purge_events = False

    async def fetch(self, key: str, variant: str, build: Build) -> CachedPage | None:
        """Build, always."""
        return await build()

    async def peek(self, key: str, variant: str) -> CachedPage | None:
        """Nothing is kept."""
        return None

    def purge(self, keys: Iterable[str]) -> None:
        """Nothing is kept, so nothing to purge."""

    async def purge_now(self, keys: Iterable[str]) -> None:
        """Nothing is kept, so nothing to purge."""

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""


def make_page_cache(settings: Settings, db: Database, *, enabled: bool) -> PageCache:
    """Redis when ``redis_url`` is set, else in this process; none when not ``enabled``."""
    if not enabled:
        return NullPageCache()
    if settings.redis_url is not None:
        from cheeseshop.cache.redis import RedisPageCache

        return RedisPageCache(
            settings.redis_url.get_secret_value(), db=db, poll_seconds=settings.page_cache_poll_seconds
        )
    if settings.page_cache_bytes == 0:
        return NullPageCache()
    from cheeseshop.cache.memory import MemoryPageCache

    return MemoryPageCache(
        db, max_bytes=settings.page_cache_bytes, poll_seconds=settings.page_cache_poll_seconds
    )


async def purge_after_commit(cache: PageCache, keys: tuple[str, ...]) -> None:
    """Purge ``keys`` from this process's cache right after a commit: read-your-writes.

    The ``cheeseshop_purge`` event recorded with the change purges every other cache (and
    retries until it has); this only spares the process that made the change the wait for
    that delivery. A failure is logged, never raised: the change is committed already.
    """
    try:
        await cache.purge_now(keys)
    except Exception:
        log.warning("could not purge %s at once; the outbox will", keys, exc_info=True)
