"""Rate limits on uploads: new projects per user and per address, invalid tokens per address."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import pytest
import redis

from cheeseshop.ratelimit import RateLimiter, Verdict
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.services import service_missing

REDIS_URL = os.environ.get("CHEESESHOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


async def text(response: Any) -> str:
    return await response.get_data(as_text=True)


class TestNewProjects:
    @pytest.fixture
    def cheeseshop_settings_overrides(self) -> dict[str, Any]:
        return {"rate_new_projects_per_user": "2/hour", "rate_new_projects_per_ip": "3/hour"}

    async def test_a_user_creating_too_many_projects_gets_429_and_nothing_is_stored(
        self, upload, make_token, cheeseshop_client
    ):
        token = await make_token("alice")
        for name in ("first-new", "second-new"):
            assert (await upload(build_wheel(name, "1.0"), token=token)).status_code == 200

        refused = await upload(build_wheel("third-new", "1.0"), token=token)
        assert refused.status_code == 429
        message = await text(refused)
        assert "Too many new projects created: at most 2/hour per user" in message
        assert int(refused.headers["Retry-After"]) > 3500
        assert refused.headers["RateLimit-Limit"] == "2"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert (await cheeseshop_client.get("/simple/third-new/")).status_code == 404

        # Existing projects take new releases, and an identical re-upload is still fine.
        assert (await upload(build_wheel("first-new", "2.0"), token=token)).status_code == 200
        assert (await upload(build_wheel("first-new", "1.0"), token=token)).status_code == 200

    async def test_an_address_creating_too_many_projects_gets_429_whoever_uploads(self, upload, make_token):
        alice, bob = await make_token("alice"), await make_token("bob")
        assert (await upload(build_wheel("ip-one", "1.0"), token=alice)).status_code == 200
        assert (await upload(build_wheel("ip-two", "1.0"), token=alice)).status_code == 200
        assert (await upload(build_wheel("ip-three", "1.0"), token=bob)).status_code == 200

        refused = await upload(build_wheel("ip-four", "1.0"), token=bob)
        assert refused.status_code == 429
        assert "at most 3/hour per address" in await text(refused)

    async def test_refused_uploads_do_not_count(self, upload, make_token):
        token = await make_token("alice")
        bad = build_wheel("counted-not", "1.0")
        fields = [("name", "counted-not")]  # no version, no filetype: refused with 400
        for _ in range(3):
            assert (await upload(bad, token=token, fields=fields)).status_code == 400
        assert (await upload(build_wheel("counted-one", "1.0"), token=token)).status_code == 200
        assert (await upload(build_wheel("counted-two", "1.0"), token=token)).status_code == 200


class TestInvalidTokens:
    @pytest.fixture
    def cheeseshop_settings_overrides(self) -> dict[str, Any]:
        return {"rate_auth_failures_per_ip": "3/minute"}

    async def test_an_address_sending_invalid_tokens_is_refused_even_with_a_valid_one(
        self, upload, make_token
    ):
        dist = build_wheel("guarded", "1.0")
        for _ in range(3):
            wrong = await upload(dist, token="cheeseshop-not-a-real-token")
            assert wrong.status_code == 403

        refused = await upload(dist, token=await make_token("alice"))
        assert refused.status_code == 429
        assert "Too many uploads with an invalid token from your address" in await text(refused)
        assert 0 < int(refused.headers["Retry-After"]) <= 60

    async def test_missing_credentials_are_not_counted(self, upload, make_token):
        dist = build_wheel("guarded-two", "1.0")
        for _ in range(5):
            assert (await upload(dist, authorization="")).status_code == 401
        assert (await upload(dist, token=await make_token("alice"))).status_code == 200


# -- the limiter itself ---------------------------------------------------------------------


async def test_moving_window_in_memory_refuses_past_the_rule_and_counts_per_identifier():
    limiter = RateLimiter()
    for _ in range(2):
        assert await limiter.refusal("2/minute", "thing", "a") is None
        await limiter.hit("2/minute", "thing", "a")
    refusal = await limiter.refusal("2/minute", "thing", "a")
    assert refusal is not None and not refusal.allowed and refusal.remaining == 0
    assert await limiter.refusal("2/minute", "thing", "b") is None


@pytest.fixture
def redis_available() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        service_missing("Redis", f"{REDIS_URL}: {error}")
    finally:
        client.close()
    return REDIS_URL


async def test_limits_in_redis_are_shared_by_every_process(redis_available):
    prefix = f"cheeseshop-test-ratelimit-{uuid.uuid4().hex[:12]}"
    one = RateLimiter(redis_available, key_prefix=prefix)
    two = RateLimiter(redis_available, key_prefix=prefix)
    await one.hit("2/hour", "shared", "x")
    await two.hit("2/hour", "shared", "x")
    refusal = await one.refusal("2/hour", "shared", "x")
    assert refusal is not None and refusal.limit == 2
    client = redis.Redis.from_url(redis_available)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        assert keys, "the counts live in Redis"
        client.delete(*keys)
    finally:
        client.close()


async def test_an_unreachable_store_fails_open_and_warns_once(caplog):
    limiter = RateLimiter("redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="cheeseshop.ratelimit"):
        for _ in range(3):
            assert await limiter.refusal("1/hour", "down", "x") is None
            await limiter.hit("1/hour", "down", "x")
    warnings = [r for r in caplog.records if "rate limit storage unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_verdict_headers_follow_the_ratelimit_draft():
    assert Verdict(False, 20, 0, 42).headers() == {
        "RateLimit-Limit": "20",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "42",
        "Retry-After": "42",
    }
    assert "Retry-After" not in Verdict(True, 20, 5, 42).headers()


def test_a_malformed_rule_stops_start_up_naming_the_setting():
    from cheeseshop.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="rate_new_projects_per_user"):
        load_settings(environ={}, overrides={"rate_new_projects_per_user": "many"})


async def test_in_memory_windows_move_and_say_when_room_comes_back(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("cheeseshop.ratelimit.time.monotonic", lambda: clock[0])
    limiter = RateLimiter()
    for second in (0, 10, 20):
        clock[0] = 1000.0 + second
        await limiter.hit("3/minute", "moving", "a")
    clock[0] = 1030.0
    refusal = await limiter.refusal("3/minute", "moving", "a")
    assert refusal is not None and refusal.reset_seconds == 30  # the hit at 0 s leaves at 60 s
    clock[0] = 1060.5
    assert await limiter.refusal("3/minute", "moving", "a") is None
