"""Run a job under a Redis lock that is renewed while it runs, or not at all.

A plain lock with a timeout forces a choice between a short timeout (a long job loses
its lock and a second copy starts) and a long one (a worker killed mid-job blocks the
job for that long). Renewing a short lock from a thread while the job runs gives both:
held as long as the job runs, free within ``timeout`` seconds after its worker died.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.exceptions import LockError

__all__ = ["LOCK_SECONDS", "run_exclusively"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a lock outlives the worker that held it (renewed every third of it).
LOCK_SECONDS = 60.0


def run_exclusively(
    client: redis.Redis, key: str, job: Callable[[], T], *, timeout: float = LOCK_SECONDS
) -> tuple[bool, T | None]:
    """Call ``job()`` if no one holds ``key``; return (whether it ran, its result).

    The lock is taken without waiting: a job someone else is running is skipped, not
    queued behind it (the next scheduled run comes anyway). Redis being unreachable
    raises ``redis.RedisError``: without the lock the job does not run.
    """
    lock = client.lock(key, timeout=timeout, blocking=False, thread_local=False)
    if not lock.acquire():
        log.info("%s is running elsewhere; skipped", key)
        return False, None
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(lock, timeout, stop), name=f"lock-{key}", daemon=True
    )
    renewer.start()
    try:
        return True, job()
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except LockError:
            # Lost meanwhile (Redis restarted, or renewal failed for a whole timeout).
            log.warning("lock %s was lost before the job ended", key)
        except redis.RedisError as error:
            log.warning("could not release lock %s (it expires by itself): %s", key, error)


def _renew(lock: redis.lock.Lock, timeout: float, stop: threading.Event) -> None:
    """Reset the lock's time-out every third of it until ``stop``."""
    while not stop.wait(timeout / 3):
        try:
            lock.reacquire()
        except (LockError, redis.RedisError) as error:
            # Keep trying: a short Redis outage must not end the renewals for good.
            log.warning("could not renew lock %s: %s", lock.name, error)
