"""``CeleryDispatcher``: the web process queues a ``deliver`` task per committed event.

Dispatch is a hint (see :class:`~cheeseshop.outbox.dispatch.EventDispatcher`): the events
are committed already, and the sweep run by beat re-queues whatever a lost hint left. So a
broker that is down at commit time must cost the request little, and never fail it: the
publish runs in a thread with short connect timeouts and one quick retry (which replaces
a pooled connection the broker closed meanwhile), and the request stops waiting after a
bounded time whatever the thread is doing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cheeseshop.config import Settings

if TYPE_CHECKING:
    from celery import Celery

    from cheeseshop.outbox import Outbox

__all__ = ["CeleryDispatcher"]

log = logging.getLogger(__name__)

#: kombu's publish retry: once, at once. A refused connection fails in milliseconds; an
#: unanswered one within the connect timeout, twice.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


class CeleryDispatcher:
    """Sends committed event ids to Celery workers through the broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Two connection attempts, and a second for the publish itself.
        self.budget = 2 * settings.broker_connect_timeout_seconds + 1.0
        self._celery: Celery | None = None

    @property
    def celery(self) -> Celery:
        """The Celery app, built on first use (building it connects to nothing)."""
        if self._celery is None:
            from cheeseshop.worker.celery_app import make_celery

            self._celery = make_celery(self.settings, publish_only=True)
        return self._celery

    async def start(self, outbox: Outbox) -> None:
        """Build the Celery app. No loop here: workers deliver, beat sweeps."""
        self.celery  # noqa: B018 -- built now, so the first upload does not pay for the import

    async def dispatch(self, event_ids: Sequence[int]) -> None:
        """Queue a ``deliver`` task per id; raises after ``budget`` seconds at most.

        The caller (:meth:`Outbox.dispatch`) logs a failure: the sweep delivers later.
        """
        ids = list(event_ids)
        if not ids:
            return
        # The thread cannot be cancelled: on a time-out it finishes (or fails) on its own,
        # bounded by the socket time-outs, while the request goes on.
        await asyncio.wait_for(asyncio.to_thread(self._send, ids), timeout=self.budget)

    def _send(self, event_ids: list[int]) -> None:
        from cheeseshop.worker.celery_app import DELIVER

        celery = self.celery
        with celery.producer_or_acquire() as producer:
            for event_id in event_ids:
                celery.send_task(
                    DELIVER,
                    args=(event_id,),
                    producer=producer,
                    retry=True,
                    retry_policy=_PUBLISH_RETRY,
                )

    async def stop(self) -> None:
        """Close the broker connections."""
        if self._celery is not None:
            celery, self._celery = self._celery, None
            await asyncio.to_thread(celery.close)
