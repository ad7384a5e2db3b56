"""The Celery application: built from settings, with the tasks ``deliver`` and ``periodic``.

No module-level app: :func:`make_celery` builds one per process from the settings
(``cheeseshop worker``, ``cheeseshop beat``, the web process's dispatcher).

Choices, and why:

- JSON only, in and out: a task message is an event id or a periodic entry's name, and a
  broker message must never be able to run code (no pickle).
- ``task_acks_late`` with ``task_reject_on_worker_lost``: a task is acknowledged after it
  ran, so a worker killed in the middle leaves it to be handed out again (the broker's
  visibility timeout, see :mod:`.broker`). Repeating a delivery is safe: the outbox
  records each plugin's outcome and never calls a plugin again once it took the event.
- ``worker_prefetch_multiplier = 1``: a killed worker holds back no more tasks than it
  was running, and a slow delivery holds up no others.
- Retries of ``deliver`` are bounded, with backoff, for errors around the delivery (the
  database unreachable). Plugin failures are not task failures: the outbox records
  them and retries that plugin alone when it falls due, through the sweep. The last
  retry's delay stays far below the visibility timeout: a task waiting for its retry
  sits unacknowledged in the worker, and the broker would otherwise hand it out again.
- No result backend: nobody waits for a task's result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_shutdown, worker_shutdown

from cheeseshop.config import Settings
from cheeseshop.worker.broker import broker_config, coordination_redis_url
from cheeseshop.worker.locks import run_exclusively
from cheeseshop.worker.runtime import close_runtime, worker_runtime
from cheeseshop.worker.schedule import PeriodicTask

__all__ = ["BEAT_MAX_LOOP_SECONDS", "DELIVER", "PERIODIC", "make_celery", "periodic_lock_key"]

log = logging.getLogger(__name__)

DELIVER = "cheeseshop.deliver"
PERIODIC = "cheeseshop.periodic"

#: Longest sleep of beat between two looks at the schedule. The standby beat tries for
#: the RedBeat lock this often, and the lock outlives a killed beat by five times this.
BEAT_MAX_LOOP_SECONDS = 10
#: Bounded retries of a delivery whose surroundings failed (the database, say); after
#: the last one the event is left to the sweep.
DELIVER_MAX_RETRIES = 5
DELIVER_MAX_BACKOFF_SECONDS = 60


def make_celery(
    settings: Settings,
    *,
    schedule: Mapping[str, PeriodicTask] | None = None,
    publish_only: bool = False,
) -> Celery:
    """The Celery app for ``settings`` (``broker_url`` set), with the core's tasks.

    ``schedule``, for beat: the periodic entries to send, one task each per interval.
    ``publish_only``, for the web process: short socket timeouts (see :func:`broker_config`).
    """
    broker = broker_config(settings, publish_only=publish_only)
    app = Celery("cheeseshop", set_as_current=False)
    app.conf.update(
        broker_url=broker.url,
        broker_transport_options=broker.transport_options,
        broker_connection_timeout=settings.broker_connect_timeout_seconds,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.broker_queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Let a running delivery finish when the broker connection drops: it records its
        # outcomes in the database, so the redelivered copy finds nothing left to do.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
        timezone="UTC",
        beat_schedule={name: _schedule_entry(entry) for name, entry in (schedule or {}).items()},
        beat_max_loop_interval=BEAT_MAX_LOOP_SECONDS,
    )
    redis_url = coordination_redis_url(settings)
    if redis_url is not None:
        app.conf.update(
            redbeat_redis_url=redis_url,
            redbeat_key_prefix=f"{settings.worker_key_prefix}redbeat",
            redbeat_lock_timeout=BEAT_MAX_LOOP_SECONDS * 5,
            # Set explicitly, or RedBeat would hand the broker's transport options to redis-py.
            redbeat_redis_options={
                "socket_connect_timeout": settings.broker_connect_timeout_seconds
            },
        )
    _register_tasks(app, settings)
    return app


def periodic_lock_key(settings: Settings, name: str) -> str:
    """The Redis key of the lock a periodic task ``name`` runs under."""
    return f"{settings.worker_key_prefix}periodic:{name}"


def _schedule_entry(entry: PeriodicTask) -> dict[str, Any]:
    return {
        "task": PERIODIC,
        "schedule": timedelta(seconds=entry.interval_seconds),
        "args": (entry.name,),
        # A run no worker took before the next one was due is dropped, so workers that
        # were down for an hour do not find an hour of sweeps piled up.
        "options": {"expires": entry.interval_seconds},
    }


def _register_tasks(app: Celery, settings: Settings) -> None:
    # Hard limit on one delivery: past the lease another deliverer may take the event
    # over anyway, so a plugin hung for longer only blocks this worker process.
    deliver_time_limit = settings.outbox_lease_seconds + 60

    @app.task(
        name=DELIVER,
        bind=True,
        autoretry_for=(Exception,),
        max_retries=DELIVER_MAX_RETRIES,
        retry_backoff=2,
        retry_backoff_max=DELIVER_MAX_BACKOFF_SECONDS,
        retry_jitter=True,
        time_limit=deliver_time_limit,
    )
    def deliver(task: Task, event_id: int) -> bool:
        """Deliver outbox event ``event_id`` to every plugin that has not taken it yet.

        True when the event is now completely delivered. False when nothing was done
        here (delivered already, or leased by another deliverer: a dead one's lease runs
        out and the sweep comes back), or when a plugin failed or waits for its retry
        (the sweep queues the event again when that falls due).
        """
        runtime = worker_runtime(settings, app)
        return runtime.run(runtime.services.outbox.deliver(event_id))

    @app.task(name=PERIODIC, bind=True)
    def periodic(task: Task, name: str) -> bool:
        """Run the periodic entry ``name`` unless it is running elsewhere; True if it ran.

        Not retried: the next scheduled run comes anyway.
        """
        runtime = worker_runtime(settings, app)
        entry = runtime.periodic.get(name)
        if entry is None:
            # Beat runs with other plugins than this worker: say so, and drop the task.
            log.warning("no periodic task %r in this worker (is its plugin enabled?)", name)
            return False
        ran, _ = run_exclusively(
            runtime.redis,
            periodic_lock_key(runtime.settings, name),
            lambda: entry.run(runtime.settings),
        )
        return ran


@worker_process_shutdown.connect
def _close_child_runtime(**_: Any) -> None:
    close_runtime()


@worker_shutdown.connect
def _close_main_runtime(**_: Any) -> None:
    # The solo pool runs tasks in the main process.
    close_runtime()
