"""RedisPageCache and purge_redis against a real Redis: the page cache contract, shared."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import redis

from cheeseshop.cache import CachedPage, make_page
from cheeseshop.cache import redis as redis_cache
from cheeseshop.cache.keys import ALL_PROJECTS, change_keys, project_key
from cheeseshop.cache.redis import RedisPageCache, purge_redis

JSON = "application/vnd.pypi.simple.v1+json"


class Builder:
    """A build coroutine that counts its calls; ``before_return`` runs after "reading the data"."""

    def __init__(self, name: str, *, before_return=None) -> None:
        self.name = name
        self.before_return = before_return
        self.calls = 0

    async def __call__(self) -> CachedPage:
        self.calls += 1
        page = make_page(f"{self.name} #{self.calls}".encode(), JSON, 100 + self.calls)
        if self.before_return is not None:
            self.before_return()
        return page


def page_key(key: str, variant: str) -> str:
    return f"{redis_cache.PREFIX}page:{key}:{variant}"


def gen_key(key: str) -> str:
    return f"{redis_cache.PREFIX}gen:{key}"


def closed_port_url() -> str:
    """A redis:// URL on a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
async def cache(redis_url):
    cache = RedisPageCache(redis_url)
    yield cache
    await cache.close()


async def test_miss_builds_and_stores_then_a_hit_does_not_build(cache, redis_client):
    build = Builder("hit")
    first = await cache.fetch(project_key("hit"), "json", build)
    second = await cache.fetch(project_key("hit"), "json", build)
    assert build.calls == 1
    assert first == second, "the stored page comes back field for field"
    assert second is not None and second.body == b"hit #1" and second.serial == 101
    assert second.content_type == JSON and second.etag == first.etag
    raw = redis_client.get(page_key(project_key("hit"), "json"))
    assert raw is not None and raw.endswith(b"\nhit #1")


async def test_pages_are_shared_by_every_cache_on_the_same_redis(redis_url):
    one, two = RedisPageCache(redis_url), RedisPageCache(redis_url)
    try:
        build = Builder("shared")
        await one.fetch(project_key("shared"), "html", build)
        page = await two.fetch(project_key("shared"), "html", build)
        assert build.calls == 1, "a page built by one web process is served by the others"
        assert page is not None and page.body == b"shared #1"
        await asyncio.to_thread(one.purge, [project_key("shared")])
        again = await two.fetch(project_key("shared"), "html", build)
        assert build.calls == 2 and again is not None and again.body == b"shared #2"
    finally:
        await one.close()
        await two.close()


async def test_build_returning_none_is_not_stored(cache, redis_client):
    calls = 0

    async def missing():
        nonlocal calls
        calls += 1
        return None

    assert await cache.fetch(project_key("absent"), "json", missing) is None
    assert await cache.fetch(project_key("absent"), "json", missing) is None
    assert calls == 2
    assert redis_client.exists(page_key(project_key("absent"), "json")) == 0


async def test_purge_redis_bumps_the_generation_and_the_next_fetch_rebuilds(cache, redis_url, redis_client):
    key = project_key("purged")
    build, root, other = Builder("purged"), Builder("root"), Builder("other")
    await cache.fetch(key, "json", build)
    await cache.fetch(ALL_PROJECTS, "json", root)
    await cache.fetch(project_key("other"), "json", other)

    purge_redis(redis_url, change_keys("purged"))

    assert int(redis_client.get(gen_key(key))) == 1
    assert int(redis_client.get(gen_key(ALL_PROJECTS))) == 1
    assert redis_client.get(gen_key(project_key("other"))) is None
    assert redis_client.exists(page_key(key, "json")) == 0
    page = await cache.fetch(key, "json", build)
    await cache.fetch(ALL_PROJECTS, "json", root)
    await cache.fetch(project_key("other"), "json", other)
    assert page is not None and page.body == b"purged #2"
    assert (build.calls, root.calls, other.calls) == (2, 2, 1)
    # A page stored after the purge is current again.
    assert await cache.fetch(key, "json", build) == page
    assert build.calls == 2


async def test_purge_through_the_cache_object_is_the_same_purge(cache, redis_client):
    build = Builder("method")
    await cache.fetch(project_key("method"), "json", build)
    await asyncio.to_thread(cache.purge, [project_key("method")])
    await asyncio.to_thread(cache.purge, [project_key("method")])  # at least once: twice is harmless
    assert int(redis_client.get(gen_key(project_key("method")))) == 2
    page = await cache.fetch(project_key("method"), "json", build)
    assert page is not None and page.body == b"method #2"


async def test_purge_makes_every_variant_stale_whatever_its_name(cache, redis_url):
    key = project_key("variants")
    # The views' real variant names: url_variant() appends the host when base_url is unset.
    variants = ["json http://localhost/", "v1html http://localhost/", "html http://localhost/", "pypi-json 1.0"]
    builds = {variant: Builder(variant) for variant in variants}
    for variant in variants:
        await cache.fetch(key, variant, builds[variant])
    purge_redis(redis_url, [key])
    for variant in variants:
        page = await cache.fetch(key, variant, builds[variant])
        assert page is not None and page.body == f"{variant} #2".encode(), variant


async def test_purge_drops_the_stored_bodies_of_every_variant(cache, redis_url, redis_client):
    """The bodies go at purge time, not 24 hours later at expiry (as purge_redis intends)."""
    key = project_key("bodies")
    variants = ["json", "json http://localhost/", "v1html http://localhost/", "pypi-json 1.0"]
    for variant in variants:
        await cache.fetch(key, variant, Builder(variant))
    assert all(redis_client.exists(page_key(key, v)) for v in variants)
    purge_redis(redis_url, [key])
    left = [v for v in variants if redis_client.exists(page_key(key, v))]
    assert left == [], f"stale bodies kept until their TTL: {left}"


async def test_page_built_before_a_purge_and_stored_after_it_is_never_served(cache, redis_url, redis_client):
    key = project_key("race")
    # The build read the data, then a change committed and its purge ran, then the build
    # returned and the page was written: after the purge, with the old generation.
    racing = Builder("stale", before_return=lambda: purge_redis(redis_url, [key]))
    page = await cache.fetch(key, "json", racing)
    assert page is not None and page.body == b"stale #1"
    raw = redis_client.get(page_key(key, "json"))
    assert raw is not None, "the stale page was written after the purge (the race happened)"
    assert json.loads(raw.partition(b"\n")[0])[0] == 0
    assert int(redis_client.get(gen_key(key))) == 1

    fresh = Builder("fresh")
    served = await cache.fetch(key, "json", fresh)
    assert fresh.calls == 1, "the stale page must not be served"
    assert served is not None and served.body == b"fresh #1"
    assert await cache.fetch(key, "json", fresh) == served
    assert fresh.calls == 1


async def test_pages_are_stored_with_the_ttl(redis_url, redis_client):
    cache = RedisPageCache(redis_url, ttl=77)
    try:
        await cache.fetch(project_key("ttl"), "json", Builder("ttl"))
    finally:
        await cache.close()
    ttl = redis_client.ttl(page_key(project_key("ttl"), "json"))
    assert 0 < ttl <= 77


async def test_default_ttl_is_a_day(cache, redis_client):
    await cache.fetch(project_key("day"), "html", Builder("day"))
    ttl = redis_client.ttl(page_key(project_key("day"), "html"))
    assert 24 * 3600 - 60 < ttl <= 24 * 3600


async def test_a_garbled_stored_value_is_rebuilt_not_raised(cache, redis_client):
    """Whatever sits under a page key (an older format, a stray write) never fails a request."""
    key = project_key("garbled")
    redis_client.set(page_key(key, "json"), b"not a page at all")
    build = Builder("garbled")
    page = await cache.fetch(key, "json", build)
    assert page is not None and page.body == b"garbled #1"
    assert build.calls == 1


async def test_unreachable_redis_fails_open_building_every_time(caplog):
    cache = RedisPageCache(closed_port_url(), timeout=0.5)
    try:
        build = Builder("open")
        started = time.monotonic()
        first = await cache.fetch(project_key("open"), "json", build)
        second = await cache.fetch(project_key("open"), "json", build)
        elapsed = time.monotonic() - started
    finally:
        await cache.close()
    assert first is not None and first.body == b"open #1"
    assert second is not None and second.body == b"open #2"
    assert build.calls == 2
    assert elapsed < 3, "a refused connection must not hold the request"
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1, "warned once, not per request"
    assert "127.0.0.1" not in warnings[0].getMessage()


async def test_purge_redis_to_an_unreachable_redis_raises_so_the_outbox_retries():
    url = closed_port_url()
    with pytest.raises(redis.ConnectionError):
        purge_redis(url, change_keys("down"))
    cache = RedisPageCache(url, timeout=0.5)
    try:
        with pytest.raises(redis.ConnectionError):
            await asyncio.to_thread(cache.purge, [project_key("down")])
    finally:
        await cache.close()
