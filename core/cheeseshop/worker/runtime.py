"""What a worker runs its tasks with: the services and one event loop, per thread.

Celery tasks are synchronous; the outbox and the database are async. Each worker thread
keeps one event loop (an ``asyncio.Runner``) for its whole life, so the database pool
built on it is reused from task to task. Built lazily, in the process that runs the
tasks: a prefork worker forks its children before any task, and a pool of connections
must never cross a fork. With the thread pool, each thread has its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from cheeseshop.config import ConfigError, Settings
from cheeseshop.worker.broker import SOCKET_TIMEOUT, coordination_redis_url

if TYPE_CHECKING:
    from celery import Celery

    from cheeseshop.services import Services
    from cheeseshop.worker.schedule import PeriodicTask

__all__ = ["WorkerRuntime", "close_runtime", "current_runtime", "worker_runtime"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_local = threading.local()


class WorkerRuntime:
    """Services, periodic entries, an event loop and a Redis client for one worker thread."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        from cheeseshop.app import build_services

        self.pid = os.getpid()
        self.celery = celery
        self.services: Services = build_services(settings)
        self.settings = self.services.settings
        self.periodic: dict[str, PeriodicTask] = self.services.hooks.periodic_tasks(self.settings)
        self._runner = asyncio.Runner()
        self._redis: redis.Redis | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` to completion on this thread's event loop."""
        return self._runner.run(coroutine)

    @property
    def redis(self) -> redis.Redis:
        """A client of the coordination Redis (periodic tasks' locks)."""
        if self._redis is None:
            url = coordination_redis_url(self.settings)
            if url is None:
                raise ConfigError(
                    "periodic tasks need Redis for their locks: "
                    "set redis_url (CHEESESHOP_REDIS_URL)"
                )
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=self.settings.broker_connect_timeout_seconds,
            )
        return self._redis

    def close(self) -> None:
        """Close the database pool, the Redis client and the event loop."""
        try:
            self.run(self.services.db.dispose())
        finally:
            self._runner.close()
            if self._redis is not None:
                self._redis.close()


def worker_runtime(settings: Settings, celery: Celery) -> WorkerRuntime:
    """This thread's runtime, built on first use (and again in a forked child)."""
    runtime: WorkerRuntime | None = getattr(_local, "runtime", None)
    if runtime is None or runtime.pid != os.getpid():
        runtime = _local.runtime = WorkerRuntime(settings, celery)
    return runtime


def current_runtime() -> WorkerRuntime:
    """The runtime of the task running in this thread (for the core's periodic jobs)."""
    runtime: WorkerRuntime | None = getattr(_local, "runtime", None)
    if runtime is None or runtime.pid != os.getpid():
        raise RuntimeError("no worker runtime in this thread: call this from a worker task")
    return runtime


def close_runtime() -> None:
    """Close this thread's runtime, if it has one (at worker shutdown)."""
    runtime: WorkerRuntime | None = getattr(_local, "runtime", None)
    _local.runtime = None
    if runtime is not None and runtime.pid == os.getpid():
        try:
            runtime.close()
        except Exception:
            log.warning("could not close the worker runtime cleanly", exc_info=True)
