"""Rate limits: moving windows kept in Redis when ``redis_url`` is set, else in this process.

Moving windows: a rule such as ``20/hour`` admits at most 20 hits in any 3,600 seconds,
with no burst at a window's edge. With Redis, the ``limits`` library's moving-window
strategy keeps the counts, shared by every web process. Without it each process counts
for itself (a deployment of one process, the embedded default, loses nothing), in a few
lines of its own: ``limits``' in-memory storage hands each expiry sweep to a thread,
several thread hops per check on a path (the upload) that otherwise needs none.

A rate limit protects the index; it must never take the index down. So a limiter that
cannot reach its storage *fails open*: it allows, and logs a warning at most once a
minute. Answers carry the ``RateLimit-*`` headers of the IETF draft
(draft-ietf-httpapi-ratelimit-headers), and a refusal ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from collections import deque

import limits
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

__all__ = ["RateLimiter", "Verdict", "parse_rule"]

log = logging.getLogger(__name__)

#: Seconds between two "storage unreachable" warnings.
_WARN_EVERY = 60.0


@functools.lru_cache(maxsize=64)
def parse_rule(rule: str) -> limits.RateLimitItem:
    """A rule like ``20/hour`` or ``40 per hour`` as a ``limits`` item; ValueError if malformed."""
    return limits.parse(rule)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether one more hit is within a rule, and what the client should be told."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``/``-Remaining``/``-Reset``, and ``Retry-After`` when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


class RateLimiter:
    """Tests and counts hits against named rules, per identifier (a user id, an address)."""

    def __init__(self, redis_url: str | None = None, *, key_prefix: str = "cheeseshop-ratelimit") -> None:
        self._strategy: MovingWindowRateLimiter | None = None
        self._local = _LocalWindows()
        if redis_url:
            # redis-py (already a dependency) rather than the library's default, coredis.
            uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
            storage = RedisStorage(
                uri,
                implementation="redispy",
                key_prefix=key_prefix,
                wrap_exceptions=True,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )
            self._strategy = MovingWindowRateLimiter(storage)
        self._warned = 0.0

    async def refusal(self, rule: str, *identifiers: str) -> Verdict | None:
        """None when one more hit is within ``rule``; else the refusal (headers, wait).

        Counts nothing: call :meth:`hit` once the thing limited has happened.
        """
        if self._strategy is None:
            return self.refusal_here(rule, *identifiers)
        item = parse_rule(rule)
        try:
            if await self._strategy.test(item, *identifiers):
                return None
            stats = await self._strategy.get_window_stats(item, *identifiers)
        except Exception as error:  # noqa: BLE001 - any storage failure: fail open
            self._warn(error)
            return None
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, item.amount, stats.remaining, reset)

    @property
    def counts_here(self) -> bool:
        """Whether the windows are kept in this process (no ``redis_url``): then
        :meth:`refusal_here` answers without awaiting anything, from any thread."""
        return self._strategy is None

    def refusal_here(self, rule: str, *identifiers: str) -> Verdict | None:
        """:meth:`refusal`, blocking, for a limiter that :attr:`counts_here` (RuntimeError
        otherwise): an upload checks its new project's limits in its worker thread."""
        if self._strategy is not None:
            raise RuntimeError("this limiter keeps its windows in Redis: await refusal()")
        item = parse_rule(rule)
        return self._local.refusal(item, item.key_for(*identifiers))

    async def hit(self, rule: str, *identifiers: str) -> None:
        """Count one hit against ``rule`` (nothing is refused here; see :meth:`refusal`)."""
        item = parse_rule(rule)
        if self._strategy is None:
            self._local.hit(item, item.key_for(*identifiers))
            return
        try:
            await self._strategy.hit(item, *identifiers)
        except Exception as error:  # noqa: BLE001 - any storage failure: fail open
            self._warn(error)

    def _warn(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > _WARN_EVERY:
            self._warned = now
            log.warning("rate limit storage unavailable, allowing requests: %r", error)


class _LocalWindows:
    """Moving windows in this process: for each key, the times of its hits, oldest first."""

    #: Operations between two sweeps that drop keys whose hits have all expired.
    SWEEP_EVERY = 1000

    def __init__(self) -> None:
        self._hits: dict[str, tuple[int, deque[float]]] = {}  # key -> (window seconds, hits)
        self._lock = threading.Lock()
        self._operations = 0

    def refusal(self, item: limits.RateLimitItem, key: str) -> Verdict | None:
        """None when one more hit fits in the window; else the refusal."""
        now = time.monotonic()
        window = item.get_expiry()
        with self._lock:
            hits = self._current(key, window, now)
            if len(hits) < item.amount:
                return None
            # Room comes back when the oldest hit that must go leaves the window.
            oldest = hits[len(hits) - item.amount]
            return Verdict(False, item.amount, 0, max(1, math.ceil(oldest + window - now)))

    def hit(self, item: limits.RateLimitItem, key: str) -> None:
        """Count one hit now."""
        now = time.monotonic()
        with self._lock:
            self._current(key, item.get_expiry(), now).append(now)
            self._operations += 1
            if self._operations % self.SWEEP_EVERY == 0:
                self._sweep(now)

    def _current(self, key: str, window: int, now: float) -> deque[float]:
        # The key names the rule (limits' key_for), so its window never changes.
        hits = self._hits.setdefault(key, (window, deque()))[1]
        while hits and hits[0] <= now - window:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        stale = [k for k, (window, hits) in self._hits.items() if not hits or hits[-1] <= now - window]
        for key in stale:
            del self._hits[key]
