"""``cheeseshop worker`` and ``cheeseshop beat``: Celery's own worker and beat, on our app.

Both check everything they can before starting (the broker is set, the plugins load, the
settings validate, no two plugins claim one periodic task name), so a mistake stops
start-up with a message instead of failing task after task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from cheeseshop.config import ConfigError, Settings
from cheeseshop.worker.broker import coordination_redis_url
from cheeseshop.worker.schedule import PeriodicTask

__all__ = ["POOLS", "beat_argv", "describe_schedule", "run_beat", "run_worker", "worker_argv"]

log = logging.getLogger(__name__)

#: Celery execution pools offered: processes (the default), threads, or in-process.
POOLS = ("prefork", "threads", "solo")


def _checked(settings: Settings, command: str) -> tuple[Settings, dict[str, PeriodicTask]]:
    """Validated settings and the periodic entries; ``ConfigError`` names what is wrong."""
    from cheeseshop.app import build_services

    if settings.broker_url is None:
        raise ConfigError(
            f"cheeseshop {command} needs a broker: set broker_url (CHEESESHOP_BROKER_URL) "
            "to redis://… or sqs://…"
        )
    services = build_services(settings)
    try:
        return services.settings, services.hooks.periodic_tasks(services.settings)
    finally:
        # Nothing was connected; this process forks workers and must hold no pool.
        asyncio.run(services.db.dispose())


def worker_argv(
    *, concurrency: int | None, loglevel: str, pool: str, hostname: str | None
) -> list[str]:
    """Celery's worker arguments for our options."""
    argv = ["worker", f"--loglevel={loglevel}", f"--pool={pool}"]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


def run_worker(
    settings: Settings,
    *,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    pool: str = "prefork",
    hostname: str | None = None,
) -> None:
    """Run a Celery worker consuming ``broker_queue`` until it is stopped (SIGTERM)."""
    from cheeseshop.worker.celery_app import make_celery

    settings, _ = _checked(settings, "worker")
    app = make_celery(settings)
    app.worker_main(
        worker_argv(concurrency=concurrency, loglevel=loglevel, pool=pool, hostname=hostname)
    )


def beat_argv(*, loglevel: str) -> list[str]:
    """Celery's beat arguments: the RedBeat scheduler."""
    return ["beat", f"--loglevel={loglevel}", "--scheduler=redbeat.RedBeatScheduler"]


def run_beat(settings: Settings, *, loglevel: str = "INFO") -> None:
    """Run Celery beat with RedBeat until it is stopped (SIGTERM).

    Schedule and lock live in Redis: a second beat waits for the lock and takes over
    when the first one stops (at once) or dies (when the lock expires).
    """
    from cheeseshop.worker.celery_app import make_celery

    settings, entries = _checked(settings, "beat")
    if coordination_redis_url(settings) is None:
        raise ConfigError(
            "cheeseshop beat keeps its schedule and lock in Redis: set redis_url "
            "(CHEESESHOP_REDIS_URL), or use a redis:// broker_url"
        )
    for line in describe_schedule(entries):
        log.info("periodic task %s", line)
    app = make_celery(settings, schedule=entries)
    app.start(beat_argv(loglevel=loglevel))


def describe_schedule(entries: Mapping[str, PeriodicTask]) -> Sequence[str]:
    """One line per entry, for logs: name and interval."""
    return [f"{name} every {entry.interval_seconds:g}s" for name, entry in sorted(entries.items())]
