"""MemoryPageCache: the page cache inside one web process (generations, LRU by bytes, journal poller)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cheeseshop.cache import CachedPage, make_page
from cheeseshop.cache.keys import ALL_PROJECTS, change_keys, project_key
from cheeseshop.cache.memory import MemoryPageCache, purge_local_caches
from cheeseshop.db.models import JournalEntry


class Builder:
    """A build coroutine that counts its calls and returns a new page each time."""

    def __init__(self, name: str = "page", *, size: int = 10, before_return: Callable[[], None] | None = None):
        self.name = name
        self.size = size
        self.before_return = before_return
        self.calls = 0

    async def __call__(self) -> CachedPage:
        self.calls += 1
        body = f"{self.name} #{self.calls}".encode().ljust(self.size, b".")
        if self.before_return is not None:
            self.before_return()
        return make_page(body, "application/vnd.pypi.simple.v1+json", self.calls)


async def eventually(predicate: Callable[[], Any], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout:.0f}s")
        await asyncio.sleep(0.02)


# -- hits, misses, purges -------------------------------------------------------------------


async def test_miss_builds_and_hit_returns_the_stored_page_without_building():
    cache = MemoryPageCache()
    build = Builder("alpha")
    first = await cache.fetch(project_key("alpha"), "json", build)
    second = await cache.fetch(project_key("alpha"), "json", build)
    assert build.calls == 1
    assert first is second
    assert first is not None and first.body.startswith(b"alpha #1")
    assert first.etag.startswith('"') and first.etag.endswith('"') and len(first.etag) == 34


async def test_variants_and_keys_are_kept_apart():
    cache = MemoryPageCache()
    json_build, html_build, other_build = Builder("json"), Builder("html"), Builder("other")
    for _ in range(2):
        json_page = await cache.fetch(project_key("a"), "json", json_build)
        html_page = await cache.fetch(project_key("a"), "html", html_build)
        other_page = await cache.fetch(project_key("b"), "json", other_build)
    assert (json_build.calls, html_build.calls, other_build.calls) == (1, 1, 1)
    assert json_page is not None and json_page.body.startswith(b"json")
    assert html_page is not None and html_page.body.startswith(b"html")
    assert other_page is not None and other_page.body.startswith(b"other")


async def test_build_returning_none_is_not_stored():
    cache = MemoryPageCache()
    calls = 0

    async def missing() -> None:
        nonlocal calls
        calls += 1
        return None

    assert await cache.fetch(project_key("nope"), "json", missing) is None
    assert await cache.fetch(project_key("nope"), "json", missing) is None
    assert calls == 2


async def test_purge_bumps_the_generation_and_drops_every_variant_of_the_key():
    cache = MemoryPageCache()
    json_build, html_build, other_build = Builder("json"), Builder("html"), Builder("other")
    await cache.fetch(project_key("a"), "json", json_build)
    await cache.fetch(project_key("a"), "html", html_build)
    await cache.fetch(project_key("b"), "json", other_build)
    before = cache._generations.get(project_key("a"), 0)
    held = cache._bytes

    cache.purge([project_key("a")])

    assert cache._generations[project_key("a")] == before + 1
    assert (project_key("a"), "json") not in cache._pages
    assert (project_key("a"), "html") not in cache._pages
    assert cache._bytes < held, "the purged pages' bytes are given back"
    rebuilt = await cache.fetch(project_key("a"), "json", json_build)
    await cache.fetch(project_key("a"), "html", html_build)
    kept = await cache.fetch(project_key("b"), "json", other_build)
    assert rebuilt is not None and rebuilt.body.startswith(b"json #2")
    assert (json_build.calls, html_build.calls) == (2, 2)
    assert other_build.calls == 1, "another key's page survives the purge"
    assert kept is not None and kept.body.startswith(b"other #1")


async def test_purge_of_a_key_never_cached_is_harmless_and_still_counts():
    cache = MemoryPageCache()
    cache.purge([project_key("ghost"), ALL_PROJECTS])
    cache.purge([project_key("ghost")])
    assert cache._generations[project_key("ghost")] == 2
    assert cache._bytes == 0
    build = Builder("ghost")
    await cache.fetch(project_key("ghost"), "json", build)
    await cache.fetch(project_key("ghost"), "json", build)
    assert build.calls == 1


async def test_page_built_while_a_purge_happened_is_served_but_not_stored():
    cache = MemoryPageCache()
    key = project_key("racy")
    # The build read its data, then a change committed and purged, then it returned.
    racing = Builder("stale", before_return=lambda: cache.purge([key]))
    page = await cache.fetch(key, "json", racing)
    assert page is not None and page.body.startswith(b"stale #1"), "this request still gets its page"
    assert (key, "json") not in cache._pages, "a page that may show pre-purge data must not be kept"
    assert cache._bytes == 0

    fresh = Builder("fresh")
    again = await cache.fetch(key, "json", fresh)
    assert fresh.calls == 1
    assert again is not None and again.body.startswith(b"fresh #1")
    assert await cache.fetch(key, "json", fresh) is again, "a page built after the purge is kept"
    assert fresh.calls == 1


async def test_concurrent_builds_across_a_purge_leave_only_the_fresh_page():
    cache = MemoryPageCache()
    key = project_key("interleaved")
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_old() -> CachedPage:
        started.set()
        await release.wait()
        return make_page(b"old data", "text/html", 1)

    old_task = asyncio.create_task(cache.fetch(key, "html", slow_old))
    await started.wait()
    cache.purge([key])
    fresh = Builder("new")
    new_page = await cache.fetch(key, "html", fresh)
    release.set()
    old_page = await old_task
    assert old_page is not None and old_page.body == b"old data"
    assert new_page is not None and new_page.body.startswith(b"new #1")
    # The slow, pre-purge build finished last; it must not have replaced the fresh page.
    assert await cache.fetch(key, "html", fresh) is new_page
    assert fresh.calls == 1


async def test_concurrent_misses_share_one_build():
    cache = MemoryPageCache()
    key = project_key("popular")
    release = asyncio.Event()
    calls = 0

    async def slow() -> CachedPage:
        nonlocal calls
        calls += 1
        await release.wait()
        return make_page(b"built once", "text/html", 1)

    waiting = [asyncio.create_task(cache.fetch(key, "html", slow)) for _ in range(5)]
    await asyncio.sleep(0.05)
    waiting[0].cancel()  # one client giving up must not cancel the build the others share
    release.set()
    pages = await asyncio.gather(*waiting[1:])
    assert calls == 1
    assert {page.body for page in pages if page is not None} == {b"built once"}
    assert await cache.fetch(key, "html", slow) is pages[0]


# -- bounded by bytes, least recently used out first -----------------------------------------


async def test_lru_eviction_by_bytes_drops_the_least_recently_used():
    probe = make_page(b"x" * 1000, "application/vnd.pypi.simple.v1+json", 1)
    # Room for two pages of this size, not three.
    cache = MemoryPageCache(max_bytes=probe.size * 2 + probe.size // 2)
    builds = {name: Builder(name, size=1000) for name in ("a", "b", "c")}
    await cache.fetch(project_key("a"), "json", builds["a"])
    await cache.fetch(project_key("b"), "json", builds["b"])
    # "a" is used again: "b" is now the least recently used.
    await cache.fetch(project_key("a"), "json", builds["a"])
    assert builds["a"].calls == 1
    await cache.fetch(project_key("c"), "json", builds["c"])

    assert cache._bytes <= cache.max_bytes
    assert set(cache._pages) == {(project_key("a"), "json"), (project_key("c"), "json")}, (
        "the page read most recently must survive; the one not read since must go"
    )
    await cache.fetch(project_key("a"), "json", builds["a"])
    await cache.fetch(project_key("b"), "json", builds["b"])
    assert builds["a"].calls == 1
    assert builds["b"].calls == 2


async def test_eviction_keeps_the_byte_count_exact():
    probe = make_page(b"x" * 500, "application/vnd.pypi.simple.v1+json", 1)
    cache = MemoryPageCache(max_bytes=probe.size * 3)
    for index in range(10):
        await cache.fetch(project_key(f"p{index}"), "html", Builder(f"p{index}", size=500))
        assert cache._bytes == sum(page.size for _, page in cache._pages.values())
        assert cache._bytes <= cache.max_bytes
    assert len(cache._pages) == 3
    assert set(cache._pages) == {(project_key(f"p{i}"), "html") for i in (7, 8, 9)}
    # An evicted page's key can be purged and rebuilt without upsetting the count.
    cache.purge([project_key("p0"), project_key("p9")])
    assert cache._bytes == sum(page.size for _, page in cache._pages.values())
    assert len(cache._pages) == 2


async def test_replacing_a_page_does_not_count_its_bytes_twice():
    cache = MemoryPageCache()
    key = project_key("same")
    await cache.fetch(key, "json", Builder("one", size=300))
    # Make the stored entry stale without a purge dropping it, then store over it.
    cache._generations[key] = cache._generations.get(key, 0) + 1
    await cache.fetch(key, "json", Builder("two", size=300))
    assert len(cache._pages) == 1
    assert cache._bytes == next(iter(cache._pages.values()))[1].size


async def test_page_bigger_than_max_bytes_is_served_but_not_stored():
    cache = MemoryPageCache(max_bytes=2048)
    small = Builder("small", size=100)
    await cache.fetch(project_key("small"), "json", small)
    huge = Builder("huge", size=4096)
    first = await cache.fetch(project_key("huge"), "json", huge)
    second = await cache.fetch(project_key("huge"), "json", huge)
    assert first is not None and len(first.body) == 4096
    assert second is not None and second.body.startswith(b"huge #2")
    assert huge.calls == 2
    assert (project_key("huge"), "json") not in cache._pages
    # Nor did it push out what fits.
    assert (project_key("small"), "json") in cache._pages
    await cache.fetch(project_key("small"), "json", small)
    assert small.calls == 1


# -- purging every cache of the process ---------------------------------------------------------


async def test_purge_local_caches_reaches_every_live_cache():
    caches = [MemoryPageCache(), MemoryPageCache(), MemoryPageCache()]
    key = project_key("everywhere")
    builds = [Builder(f"c{i}") for i in range(3)]
    untouched = Builder("untouched")
    for cache, build in zip(caches, builds, strict=True):
        await cache.fetch(key, "json", build)
        await cache.fetch(project_key("elsewhere"), "json", untouched)
    assert untouched.calls == 1 + 2  # each cache built it once

    purge_local_caches(change_keys("everywhere"))

    for cache, build in zip(caches, builds, strict=True):
        assert (key, "json") not in cache._pages
        assert cache._generations[key] >= 1
        assert cache._generations[ALL_PROJECTS] >= 1
        await cache.fetch(key, "json", build)
        assert build.calls == 2
        await cache.fetch(project_key("elsewhere"), "json", untouched)
    assert untouched.calls == 3, "keys not named stay cached"


# -- following the journal ----------------------------------------------------------------------


async def test_journal_poller_drops_a_projects_pages_after_a_commit_elsewhere(cheeseshop_services):
    db = cheeseshop_services.db
    cache = MemoryPageCache(db, poll_seconds=0.05)
    await cache.start()
    try:
        root, followed, other = Builder("root"), Builder("followed"), Builder("other")
        await cache.fetch(ALL_PROJECTS, "json", root)
        await cache.fetch(project_key("poll-me"), "json", followed)
        await cache.fetch(project_key("not-me"), "json", other)

        def commit(session: Any) -> None:
            # As another process would: a journal entry only, no purge event. The
            # journal holds the name as written; the cache key is the normalized one.
            session.add(JournalEntry(name="Poll_Me", action="set status archived"))

        await db.run_write(commit)
        await eventually(lambda: (project_key("poll-me"), "json") not in cache._pages, timeout=5)
        assert (ALL_PROJECTS, "json") not in cache._pages, "every change touches the root"
        assert (project_key("not-me"), "json") in cache._pages

        page = await cache.fetch(project_key("poll-me"), "json", followed)
        assert page is not None and page.body.startswith(b"followed #2")
        await cache.fetch(project_key("not-me"), "json", other)
        assert other.calls == 1

        # Entries already seen are not applied again: the page built after them stays.
        await asyncio.sleep(0.3)
        assert await cache.fetch(project_key("poll-me"), "json", followed) is page
        assert followed.calls == 2
    finally:
        await cache.close()
    assert cache._poller is None


async def test_journal_poller_starts_after_the_entries_already_there(cheeseshop_services):
    db = cheeseshop_services.db
    await db.run_write(lambda session: session.add(JournalEntry(name="old-news", action="create")))
    cache = MemoryPageCache(db, poll_seconds=0.05)
    await cache.start()
    try:
        build = Builder("old-news")
        await cache.fetch(project_key("old-news"), "json", build)
        await asyncio.sleep(0.4)
        await cache.fetch(project_key("old-news"), "json", build)
        assert build.calls == 1, "a change from before start-up must not purge pages built after it"
    finally:
        await cache.close()
