"""The outbox: events committed with their change, delivered plugin by plugin.

The request writes an :class:`~cheeseshop.db.models.OutboxEvent` row in the same
transaction as the change (:func:`record`), then hands the id to the dispatcher. A
deliverer calls :meth:`Outbox.deliver`, which takes a lease on the event, calls each
receiving plugin that has not yet taken it, and records the outcome per plugin. A plugin
that fails is retried with exponential backoff on its own; the others are not called
again. :meth:`Outbox.due` finds what a lost dispatch or a crash left behind.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from cheeseshop.config import Settings
from cheeseshop.db import Database
from cheeseshop.db.models import OutboxDelivery, OutboxEvent, utcnow
from cheeseshop.events import Event, event_from_json
from cheeseshop.outbox.dispatch import EventDispatcher
from cheeseshop.plugins import Hooks

__all__ = ["Outbox", "record"]

log = logging.getLogger(__name__)

#: How long one deliverer may hold an event before another may take it over.
LEASE = timedelta(minutes=5)


def record(session: Session, events: Sequence[Event]) -> list[int]:
    """Add events to the outbox inside the caller's transaction; returns their ids.

    Synchronous, for work run by ``Database.run_write``; from an ``AsyncSession``, call
    ``await session.run_sync(record, events)``.
    """
    if not events:
        return []
    rows = [
        OutboxEvent(hook=event.hook, kind=type(event).__name__, payload=event.to_json())
        for event in events
    ]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


class Outbox:
    """Delivers outbox events to the plugins implementing their hook."""

    def __init__(self, db: Database, hooks: Hooks, settings: Settings, dispatcher: EventDispatcher):
        self.db = db
        self.hooks = hooks
        self.settings = settings
        self.dispatcher = dispatcher
        self.retry = timedelta(seconds=settings.outbox_retry_seconds)
        self.max_retry = timedelta(seconds=settings.outbox_max_retry_seconds)

    async def dispatch(self, event_ids: Sequence[int]) -> None:
        """Hand committed events to the dispatcher; a failure is logged, the sweep retries."""
        if not event_ids:
            return
        try:
            await self.dispatcher.dispatch(event_ids)
        except Exception:
            log.exception("could not dispatch events %s; the sweep will deliver them", event_ids)

    def backoff(self, attempts: int) -> timedelta:
        """Delay before attempt ``attempts + 1``: doubling from the first, capped."""
        return min(self.retry * (2 ** max(attempts - 1, 0)), self.max_retry)

    async def due(self, *, limit: int = 100) -> tuple[list[int], datetime | None]:
        """Ids of undelivered events due now, and when the next one falls due."""
        now = utcnow()
        async with self.db.read() as session:
            ids = list(
                await session.scalars(
                    select(OutboxEvent.id)
                    .where(OutboxEvent.completed.is_(None), OutboxEvent.next_attempt <= now)
                    .where(or_(OutboxEvent.lease_until.is_(None), OutboxEvent.lease_until < now))
                    .order_by(OutboxEvent.id)
                    .limit(limit)
                )
            )
            upcoming = await session.scalar(
                select(OutboxEvent.next_attempt)
                .where(OutboxEvent.completed.is_(None), OutboxEvent.next_attempt > now)
                .order_by(OutboxEvent.next_attempt)
                .limit(1)
            )
        return ids, upcoming

    async def _lease(self, event_id: int, now: datetime) -> bool:
        async with self.db.write() as session:
            result = await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id == event_id, OutboxEvent.completed.is_(None))
                .where(or_(OutboxEvent.lease_until.is_(None), OutboxEvent.lease_until < now))
                .values(lease_until=now + LEASE)
            )
            return result.rowcount == 1

    async def deliver(self, event_id: int) -> bool:
        """Deliver one event to every plugin that has not taken it yet.

        Returns True when the event is now completely delivered. Safe to call
        concurrently and repeatedly: a lease admits one deliverer at a time.
        """
        if not await self._lease(event_id, utcnow()):
            return False
        try:
            # Its last write releases the lease together with the outcome.
            return await self._deliver_leased(event_id)
        except BaseException:
            try:
                async with self.db.write() as session:
                    await session.execute(
                        update(OutboxEvent).where(OutboxEvent.id == event_id).values(lease_until=None)
                    )
            except Exception:
                log.warning("could not release the lease on event %s; it expires by itself", event_id)
            raise

    async def _deliver_leased(self, event_id: int) -> bool:
        async with self.db.read() as session:
            row = await session.get(OutboxEvent, event_id)
            if row is None:
                return False
            deliveries = {
                d.plugin: d
                for d in await session.scalars(
                    select(OutboxDelivery).where(OutboxDelivery.event_id == event_id)
                )
            }
        event = event_from_json(row.kind, row.payload)
        pending: list[datetime] = []
        for plugin, function, argnames in self.hooks.receivers(row.hook):
            previous = deliveries.get(plugin)
            now = utcnow()
            if previous is not None and previous.delivered is not None:
                continue
            if previous is not None and previous.next_attempt and previous.next_attempt > now:
                pending.append(previous.next_attempt)
                continue
            available = {"event": event, "settings": self.settings}
            kwargs = {name: available[name] for name in argnames}
            try:
                await asyncio.to_thread(function, **kwargs)
            except Exception as error:
                attempts = (previous.attempts if previous else 0) + 1
                retry_at = utcnow() + self.backoff(attempts)
                log.warning(
                    "plugin %s failed on %s event %s (attempt %d, retry at %s): %r",
                    plugin, row.hook, event_id, attempts, retry_at.isoformat(), error,
                )
                await self._record(event_id, plugin, error=error, retry_at=retry_at)
                pending.append(retry_at)
            else:
                await self._record(event_id, plugin)
        async with self.db.write() as session:
            values: dict[str, datetime | None]
            if pending:
                values = {"next_attempt": min(pending), "lease_until": None}
            else:
                values = {"completed": utcnow(), "lease_until": None}
            await session.execute(update(OutboxEvent).where(OutboxEvent.id == event_id).values(**values))
        return not pending

    async def _record(
        self,
        event_id: int,
        plugin: str,
        *,
        error: BaseException | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        async with self.db.write() as session:
            delivery = await session.scalar(
                select(OutboxDelivery).where(
                    OutboxDelivery.event_id == event_id, OutboxDelivery.plugin == plugin
                )
            )
            if delivery is None:
                delivery = OutboxDelivery(event_id=event_id, plugin=plugin, attempts=0)
                session.add(delivery)
            delivery.attempts += 1
            if error is None:
                delivery.delivered = utcnow()
                delivery.next_attempt = None
                delivery.last_error = None
            else:
                delivery.next_attempt = retry_at
                delivery.last_error = "".join(traceback.format_exception_only(error)).strip()[:2000]
