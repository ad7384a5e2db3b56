"""The page cache inside one web process, bounded in bytes, least recently used out first.

Purges reach it two ways. The ``cheeseshop_purge`` delivery, which runs in whichever
process delivers the outbox event, purges every cache of that process at once. Other web
processes (``serve --workers N`` without Redis) learn of changes by reading the journal
every ``poll_seconds``, so they may serve a page up to that long after its purge; with
several processes, configure ``redis_url`` for one shared cache instead.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable

from cheeseshop.background import stop_gracefully
from cheeseshop.cache import Build, CachedPage, SingleFlight
from cheeseshop.cache.follow import changes_since, follow
from cheeseshop.db import Database
from cheeseshop.journal import last_serial

__all__ = ["MemoryPageCache", "purge_local_caches"]

# Every memory cache of this process, for the purge hook (a plugin function has no
# other way to reach the caches of the application(s) living here).
_LIVE: weakref.WeakSet[MemoryPageCache] = weakref.WeakSet()


def purge_local_caches(keys: Iterable[str]) -> None:
    """Purge ``keys`` from every memory page cache in this process."""
    keys = tuple(keys)
    for cache in list(_LIVE):
        cache.purge(keys)


class MemoryPageCache:
    """Pages in a dict, under a lock: purges come from the outbox's worker threads."""

    needs_purge_events = False

    def __init__(self, db: Database | None = None, *, max_bytes: int = 256 * 2**20, poll_seconds: float = 1.0):
        self.max_bytes = max_bytes
        self.poll_seconds = poll_seconds
        self._db = db
        self._lock = threading.Lock()
        self._pages: OrderedDict[tuple[str, str], tuple[int, CachedPage]] = OrderedDict()
        self._variants: dict[str, set[str]] = {}
        self._generations: dict[str, int] = {}
        self._bytes = 0
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._flights = SingleFlight()
        _LIVE.add(self)

    async def fetch(self, key: str, variant: str, build: Build) -> CachedPage | None:
        """The cached page if its key was not purged since it was built, else a new one."""
        # The generation is read before the lookup: a build below stores under it, so a
        # purge that lands while building makes the new page stale at once.
        generation = self._generations.get(key, 0)
        hit = self._current(key, variant, generation)
        if hit is not None:
            return hit
        page = await self._flights.run((key, variant, generation), build)
        if page is not None and page.size <= self.max_bytes:
            self._store(key, variant, generation, page)
        return page

    async def peek(self, key: str, variant: str) -> CachedPage | None:
        """The cached page if its key was not purged since it was built, else None."""
        return self._current(key, variant, self._generations.get(key, 0))

    def _current(self, key: str, variant: str, generation: int) -> CachedPage | None:
        # No lock to read: a dict lookup is atomic, and a page that a purge races past
        # here was current when the lookup began.
        hit = self._pages.get((key, variant))
        if hit is None or hit[0] != generation:
            return None
        with self._lock:  # least recently used goes first
            if (key, variant) in self._pages:
                self._pages.move_to_end((key, variant))
        return hit[1]

    def _store(self, key: str, variant: str, generation: int, page: CachedPage) -> None:
        with self._lock:
            if self._generations.get(key, 0) != generation:
                return  # purged while it was being built: it may show the old data
            old = self._pages.pop((key, variant), None)
            if old is not None:
                self._bytes -= old[1].size
            self._pages[(key, variant)] = (generation, page)
            self._variants.setdefault(key, set()).add(variant)
            self._bytes += page.size
            while self._bytes > self.max_bytes:
                (old_key, old_variant), (_, evicted) = self._pages.popitem(last=False)
                self._bytes -= evicted.size
                self._variants.get(old_key, set()).discard(old_variant)

    def purge(self, keys: Iterable[str]) -> None:
        """Bump each key's generation and drop its pages."""
        with self._lock:
            for key in keys:
                self._generations[key] = self._generations.get(key, 0) + 1
                for variant in self._variants.pop(key, ()):
                    old = self._pages.pop((key, variant), None)
                    if old is not None:
                        self._bytes -= old[1].size

    async def purge_now(self, keys: Iterable[str]) -> None:
        """:meth:`purge`, which is quick enough to run on the event loop."""
        self.purge(keys)

    async def start(self) -> None:
        """Follow the journal, so changes committed by other processes purge here too."""
        if self._db is None or self.poll_seconds <= 0 or self._poller is not None:
            return
        db = self._db
        seen = await db.run_read(last_serial)

        async def step() -> None:
            nonlocal seen
            seen, keys = await db.run_read(functools.partial(changes_since, after=seen))
            if keys:
                self.purge(keys)

        self._stopping = asyncio.Event()
        self._poller = asyncio.create_task(
            follow(self._stopping, self.poll_seconds, step), name="page-cache-journal"
        )

    async def close(self) -> None:
        """Stop following the journal."""
        if self._poller is not None:
            await stop_gracefully(self._poller, self._stopping, grace=2)
            self._poller = None
