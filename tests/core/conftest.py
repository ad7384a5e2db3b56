"""A real Redis for the page cache tests (cache/, simple/), with keys of their own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from cheeseshop.testing.services import service_missing

REDIS_URL_ENV = "CHEESESHOP_TEST_REDIS_URL"
#: A database of its own, and within it a key prefix per test, so tests (and workers) never
#: see each other's pages or generation counters.
_DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


@pytest.fixture
def redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """URL of a reachable Redis; ``cheeseshop.cache.redis.PREFIX`` is unique to this test.

    A missing Redis skips the test, or fails it under ``CI=true``.
    """
    url = os.environ.get(REDIS_URL_ENV, _DEFAULT_REDIS)
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        service_missing("Redis", f"{url}: {error}")
    prefix = f"cheeseshop-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{uuid.uuid4().hex[:12]}:"
    monkeypatch.setattr("cheeseshop.cache.redis.PREFIX", prefix)
    try:
        yield url
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A blocking client on the same database, to look at what the cache stored."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
