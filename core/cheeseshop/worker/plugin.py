"""Default plugin ``celery``: Celery delivery when a broker is set, and the core's periodic work.

- ``cheeseshop_event_dispatcher``: a :class:`~.dispatcher.CeleryDispatcher` when
  ``broker_url`` is set, else ``None`` so the embedded default stays. Not ``trylast``,
  so that it comes before the embedded default; any outside dispatcher plugin, registered
  after the core's defaults, still comes before it.
- ``cheeseshop_periodic_tasks``: the outbox sweep (re-queue what a lost dispatch or a
  killed worker left undelivered) and the collection of stored files without rows. With a
  broker the workers own this work; the web process then runs neither its outbox loop
  nor its orphan collector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cheeseshop.config import Settings
from cheeseshop.plugins import hookimpl
from cheeseshop.worker.schedule import PeriodicTask

if TYPE_CHECKING:
    from cheeseshop.worker.dispatcher import CeleryDispatcher

__all__ = [
    "COLLECT_ORPHANS",
    "OUTBOX_SWEEP",
    "cheeseshop_event_dispatcher",
    "cheeseshop_periodic_tasks",
    "collect_orphans_job",
    "sweep_outbox",
]

log = logging.getLogger(__name__)

OUTBOX_SWEEP = "cheeseshop.outbox_sweep"
COLLECT_ORPHANS = "cheeseshop.collect_orphans"
#: Events re-queued per sweep at most; a larger backlog takes several sweeps.
SWEEP_BATCH = 1000


@hookimpl
def cheeseshop_event_dispatcher(settings: Settings) -> CeleryDispatcher | None:
    """Queue ``deliver`` tasks on the broker, when one is configured."""
    if settings.broker_url is None:
        return None
    from cheeseshop.worker.dispatcher import CeleryDispatcher

    return CeleryDispatcher(settings)


@hookimpl(trylast=True)
def cheeseshop_periodic_tasks(settings: Settings) -> Sequence[PeriodicTask]:
    """The outbox sweep, every ``outbox_sweep_seconds``; orphan collection, hourly at most."""
    from cheeseshop.storage.gc import MAX_INTERVAL_SECONDS

    return [
        PeriodicTask(OUTBOX_SWEEP, settings.outbox_sweep_seconds, sweep_outbox),
        PeriodicTask(
            COLLECT_ORPHANS,
            min(settings.orphan_grace_seconds, MAX_INTERVAL_SECONDS),
            collect_orphans_job,
        ),
    ]


def sweep_outbox(settings: Settings) -> int:
    """Queue a ``deliver`` task for every event due now; returns how many.

    Due means undelivered, not leased, and not waiting for a plugin's retry: what the
    broker lost, what a killed worker left (once its lease ran out), and the retries that
    fell due. An event whose task is merely still queued is queued again; the second
    task finds it delivered and does nothing.
    """
    from cheeseshop.worker.celery_app import DELIVER
    from cheeseshop.worker.runtime import current_runtime

    runtime = current_runtime()
    due, _ = runtime.run(runtime.services.outbox.due(limit=SWEEP_BATCH))
    if due:
        with runtime.celery.producer_or_acquire() as producer:
            for event_id in due:
                runtime.celery.send_task(DELIVER, args=(event_id,), producer=producer)
        log.info("outbox sweep: queued %d undelivered event(s)", len(due))
    return len(due)


def collect_orphans_job(settings: Settings) -> int:
    """Delete stored files no row references (:mod:`cheeseshop.storage.gc`); returns how many."""
    from cheeseshop.storage.gc import collect_orphans
    from cheeseshop.worker.runtime import current_runtime

    runtime = current_runtime()
    return len(runtime.run(collect_orphans(runtime.services)))
