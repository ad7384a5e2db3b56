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
import dataclasses
import functools
import logging
import time
import traceback
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update

from cheeseshop.config import Settings
from cheeseshop.db import Database, Executor
from cheeseshop.db.prepared import Prepared
from cheeseshop.db.models import OutboxDelivery, OutboxEvent, utcnow
from cheeseshop.events import Event, event_from_json
from cheeseshop.notify.mailer import Mailer
from cheeseshop.outbox.dispatch import EventDispatcher
from cheeseshop.plugins import Hooks

__all__ = ["Outbox", "record"]

log = logging.getLogger(__name__)

def record(session: Executor, events: Sequence[Event]) -> list[int]:
    """Add events to the outbox inside the caller's transaction; returns their ids.

    Synchronous, for work run by ``Database.run_core`` or ``run_write``; from an
    ``AsyncSession``, call ``await session.run_sync(record, events)``.
    """
    if not events:
        return []
    rows = [{"hook": event.hook, "kind": type(event).__name__, "payload": event.to_json()} for event in events]
    if len(rows) == 1:  # most changes: one event, on the driver's cursor
        return [_INSERT_EVENT.scalar(session, rows[0])]
    # One Core statement for every row, ids in the order given: no unit of work to flush.
    return list(session.scalars(_INSERT_EVENTS, rows))


_INSERT_EVENTS = insert(OutboxEvent.__table__).returning(
    OutboxEvent.__table__.c.id, sort_by_parameter_order=True
)
_INSERT_EVENT = Prepared(insert(OutboxEvent.__table__).returning(OutboxEvent.__table__.c.id))


class Outbox:
    """Delivers outbox events to the plugins implementing their hook."""

    def __init__(
        self,
        db: Database,
        hooks: Hooks,
        settings: Settings,
        dispatcher: EventDispatcher,
        *,
        mailer: Mailer | None = None,
    ):
        self.db = db
        self.hooks = hooks
        self.settings = settings
        self.dispatcher = dispatcher
        # Handed to cheeseshop_notify: the sender the plugins provide, unless one is given.
        self.mailer = mailer if mailer is not None else Mailer(db, hooks.email_sender(settings))
        self.retry = timedelta(seconds=settings.outbox_retry_seconds)
        self.max_retry = timedelta(seconds=settings.outbox_max_retry_seconds)
        # How long one deliverer may hold an event before another may take it over: a
        # deliverer that died (a killed worker) delays its events by this much at most.
        self.lease = timedelta(seconds=settings.outbox_lease_seconds)

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
        return await self.db.run_core(functools.partial(_due, now=utcnow(), limit=limit))

    async def deliver(self, event_id: int) -> bool:
        """Deliver one event to every plugin that has not taken it yet.

        Returns True when the event is now completely delivered. Safe to call
        concurrently and repeatedly: a lease admits one deliverer at a time.
        """
        return event_id in await self.deliver_many([event_id])

    async def deliver_many(
        self, event_ids: Sequence[int], *, stop: asyncio.Event | None = None
    ) -> set[int]:
        """Deliver events, in id order, to every plugin that has not taken them yet.

        Returns the ids now completely delivered. The events are leased together in one
        write and settled together in another: a sweep of a hundred events makes two
        writes, not two hundred, and seldom takes SQLite's one write lock, which the
        uploads need. An event leased elsewhere is skipped.

        The batch stops early when ``stop`` is set, or when half the lease has passed
        (slow plugins): what was delivered is settled, and the lease on the rest is
        released, so the next sweep takes them at once and no other deliverer can take
        over an event this one is still delivering.
        """
        ids = sorted(set(event_ids))
        if not ids:
            return set()
        leased_at = time.monotonic()
        leased = functools.partial(_lease_and_load, event_ids=ids, now=utcnow(), lease=self.lease)
        loaded = await self.db.run_core(leased, write=True)
        settlements: list[_Settlement] = []
        try:
            for event_id, event in loaded.items():
                if stop is not None and stop.is_set():
                    break
                if time.monotonic() - leased_at > self.lease.total_seconds() / 2:
                    break
                settlements.append(await self._deliver_leased(event_id, event))
        finally:
            delivered = {settlement.event_id for settlement in settlements}
            unsettled = [event_id for event_id in loaded if event_id not in delivered]
            settle = functools.partial(_settle, settlements=settlements, unsettled=unsettled)
            try:
                await self.db.run_core(settle, write=True)
            except Exception:
                # At least once: what was delivered and not recorded is delivered again
                # once the lease expires.
                log.warning("could not settle outbox events %s; their leases expire by themselves", list(loaded))
                raise
        return {s.event_id for s in settlements if s.next_attempt is None}

    async def _deliver_leased(self, event_id: int, loaded: _Loaded) -> _Settlement:
        """Call each plugin that has not taken the event; what to record of the calls."""
        hook, kind, payload, deliveries = loaded
        event = event_from_json(kind, payload)
        # The hooks run in worker threads; the mailer reaches the database through this loop.
        available = {
            event.argument: event,
            "settings": self.settings,
            "mailer": self.mailer.bound(asyncio.get_running_loop()),
        }
        outcomes: list[_Outcome] = []
        pending: list[datetime] = []
        for plugin, function, argnames in self.hooks.receivers(hook):
            previous = deliveries.get(plugin)
            now = utcnow()
            if previous is not None and previous.delivered is not None:
                continue
            if previous is not None and previous.next_attempt and previous.next_attempt > now:
                pending.append(previous.next_attempt)
                continue
            kwargs = {name: available[name] for name in argnames}
            attempts = (previous.attempts if previous else 0) + 1
            try:
                await asyncio.to_thread(function, **kwargs)
            except Exception as error:
                retry_at = utcnow() + self.backoff(attempts)
                log.warning(
                    "plugin %s failed on %s event %s (attempt %d, retry at %s): %r",
                    plugin, hook, event_id, attempts, retry_at.isoformat(), error,
                )
                message = "".join(traceback.format_exception_only(error)).strip()[:2000]
                outcomes.append(_Outcome(plugin, attempts, retry_at=retry_at, error=message))
                pending.append(retry_at)
            else:
                outcomes.append(_Outcome(plugin, attempts))
        # Recorded with the rest of the batch. A crash before that commits means the
        # plugins that succeeded are called again: at least once.
        return _Settlement(event_id, outcomes, min(pending, default=None), frozenset(deliveries))


@dataclasses.dataclass(frozen=True)
class _Delivered:
    attempts: int
    delivered: datetime | None
    next_attempt: datetime | None


@dataclasses.dataclass(frozen=True)
class _Outcome:
    plugin: str
    attempts: int
    retry_at: datetime | None = None
    error: str | None = None


#: An event as delivered: its hook, kind, payload, and what each plugin has had of it.
_Loaded = tuple[str, str, dict[str, Any], dict[str, _Delivered]]


@dataclasses.dataclass(frozen=True)
class _Settlement:
    """What one delivery of an event leaves to record: each called plugin's outcome, when
    the event is next due (None: it is complete), and the plugins that had a delivery row."""

    event_id: int
    outcomes: list[_Outcome]
    next_attempt: datetime | None
    known: frozenset[str]


# -- the database work, synchronous, on a Core connection (run by Database.run_core) -------


_DUE = (
    select(OutboxEvent.id)
    .where(OutboxEvent.completed.is_(None), OutboxEvent.next_attempt <= bindparam("now"))
    .where(or_(OutboxEvent.lease_until.is_(None), OutboxEvent.lease_until < bindparam("now")))
    .order_by(OutboxEvent.id)
    .limit(bindparam("limit"))
)
_UPCOMING = (
    select(OutboxEvent.next_attempt)
    .where(OutboxEvent.completed.is_(None), OutboxEvent.next_attempt > bindparam("now"))
    .order_by(OutboxEvent.next_attempt)
    .limit(1)
)


def _due(session: Executor, *, now: datetime, limit: int) -> tuple[list[int], datetime | None]:
    ids = list(session.scalars(_DUE, {"now": now, "limit": limit}))
    return ids, session.scalar(_UPCOMING, {"now": now})


_events = OutboxEvent.__table__
_deliveries = OutboxDelivery.__table__

# Core statements built once (every delivery runs them): SQLAlchemy compiles each once.
_LEASE = (
    update(_events)
    .where(_events.c.id.in_(bindparam("event_ids", expanding=True)), _events.c.completed.is_(None))
    .where(or_(_events.c.lease_until.is_(None), _events.c.lease_until < bindparam("now")))
    .values(lease_until=bindparam("until"))
    .returning(_events.c.id)
)
_RELEASE = (
    update(_events)
    .where(_events.c.id.in_(bindparam("event_ids", expanding=True)))
    .values(lease_until=None)
)
_EVENTS = select(OutboxEvent.id, OutboxEvent.hook, OutboxEvent.kind, OutboxEvent.payload).where(
    OutboxEvent.id.in_(bindparam("event_ids", expanding=True))
)
_DELIVERIES = select(
    OutboxDelivery.event_id,
    OutboxDelivery.plugin,
    OutboxDelivery.attempts,
    OutboxDelivery.delivered,
    OutboxDelivery.next_attempt,
).where(OutboxDelivery.event_id.in_(bindparam("event_ids", expanding=True)))


def _lease_and_load(
    session: Executor, *, event_ids: Sequence[int], now: datetime, lease: timedelta
) -> dict[int, _Loaded]:
    """Take the lease on those of the events not done nor leased elsewhere, and read
    them, in id order. Core statements, not ORM objects: this runs for every sweep."""
    leased = list(session.scalars(_LEASE, {"event_ids": event_ids, "now": now, "until": now + lease}))
    if not leased:
        return {}
    deliveries: dict[int, dict[str, _Delivered]] = {event_id: {} for event_id in leased}
    for event_id, plugin, attempts, delivered, next_attempt in session.execute(
        _DELIVERIES, {"event_ids": leased}
    ):
        deliveries[event_id][plugin] = _Delivered(attempts, delivered, next_attempt)
    rows = {row.id: row for row in session.execute(_EVENTS, {"event_ids": leased})}
    return {
        event_id: (rows[event_id].hook, rows[event_id].kind, rows[event_id].payload, deliveries[event_id])
        for event_id in sorted(rows)
    }


def _settle(session: Executor, *, settlements: Sequence[_Settlement], unsettled: Sequence[int]) -> None:
    """Record each delivery's outcomes and release the leases (completing the events that
    are done); release the lease on the ``unsettled`` events, which were not delivered."""
    now = utcnow()
    updates: list[dict[str, object]] = []
    inserts: list[dict[str, object]] = []
    completed: list[int] = []
    retries: list[dict[str, object]] = []
    for settlement in settlements:
        event_id = settlement.event_id
        for outcome in settlement.outcomes:
            values = {
                "attempts": outcome.attempts,
                "delivered": now if outcome.error is None else None,
                "next_attempt": outcome.retry_at,
                "last_error": outcome.error,
            }
            if outcome.plugin in settlement.known:
                # Bound as p_*: a name of a column the statement sets cannot be bound in WHERE.
                keyed = {f"p_{key}": value for key, value in values.items()}
                updates.append(keyed | {"p_event_id": event_id, "p_plugin": outcome.plugin})
            else:
                inserts.append(values | {"event_id": event_id, "plugin": outcome.plugin})
        if settlement.next_attempt is None:
            completed.append(event_id)
        else:
            retries.append({"event_id": event_id, "retry_at": settlement.next_attempt})
    if updates:
        session.execute(_UPDATE_DELIVERY, updates)
    if inserts:
        session.execute(_INSERT_DELIVERY, inserts)
    if completed:
        session.execute(_COMPLETE, {"event_ids": completed, "now": now})
    if retries:
        session.execute(_RETRY_AT, retries)
    if unsettled:
        session.execute(_RELEASE, {"event_ids": list(unsettled)})


_INSERT_DELIVERY = insert(_deliveries)
_UPDATE_DELIVERY = (
    update(_deliveries)
    .where(_deliveries.c.event_id == bindparam("p_event_id"), _deliveries.c.plugin == bindparam("p_plugin"))
    .values(
        attempts=bindparam("p_attempts"),
        delivered=bindparam("p_delivered"),
        next_attempt=bindparam("p_next_attempt"),
        last_error=bindparam("p_last_error"),
    )
)
_COMPLETE = (
    update(_events)
    .where(_events.c.id.in_(bindparam("event_ids", expanding=True)))
    .values(lease_until=None, completed=bindparam("now"))
)
_RETRY_AT = (
    update(_events)
    .where(_events.c.id == bindparam("event_id"))
    .values(lease_until=None, next_attempt=bindparam("retry_at"))
)
