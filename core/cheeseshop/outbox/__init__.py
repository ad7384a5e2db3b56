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
import traceback
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update

from cheeseshop.config import Settings
from cheeseshop.db import Database, Executor
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
    # One Core statement for every row, ids in the order given: no unit of work to flush.
    return list(session.scalars(_INSERT_EVENTS, rows))


_INSERT_EVENTS = insert(OutboxEvent.__table__).returning(
    OutboxEvent.__table__.c.id, sort_by_parameter_order=True
)


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
        # One write takes the lease and reads the event with what was delivered of it.
        leased = functools.partial(_lease_and_load, event_id=event_id, now=utcnow(), lease=self.lease)
        loaded = await self.db.run_core(leased, write=True)
        if loaded is None:
            return False
        try:
            # Its one write records every outcome and releases the lease with them.
            return await self._deliver_leased(event_id, loaded)
        except BaseException:
            try:
                await self.db.run_core(functools.partial(_release, event_id=event_id), write=True)
            except Exception:
                log.warning("could not release the lease on event %s; it expires by itself", event_id)
            raise

    async def _deliver_leased(self, event_id: int, loaded: _Loaded) -> bool:
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
        # One transaction for every outcome and the event's own state. A crash before it
        # commits means the plugins that succeeded are called again: at least once.
        await self.db.run_core(
            functools.partial(
                _settle,
                event_id=event_id,
                outcomes=outcomes,
                next_attempt=min(pending, default=None),
                known=frozenset(deliveries),
            ),
            write=True,
        )
        return not pending


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
    .where(_events.c.id == bindparam("event_id"), _events.c.completed.is_(None))
    .where(or_(_events.c.lease_until.is_(None), _events.c.lease_until < bindparam("now")))
    .values(lease_until=bindparam("until"))
)
_RELEASE = update(_events).where(_events.c.id == bindparam("event_id")).values(lease_until=None)


def _lease_and_load(session: Executor, *, event_id: int, now: datetime, lease: timedelta) -> _Loaded | None:
    """Take the lease on the event and read it, or None when it is done or leased already."""
    result = session.execute(_LEASE, {"event_id": event_id, "now": now, "until": now + lease})
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return _load(session, event_id=event_id)


def _release(session: Executor, *, event_id: int) -> None:
    session.execute(_RELEASE, {"event_id": event_id})


_EVENT = select(OutboxEvent.hook, OutboxEvent.kind, OutboxEvent.payload).where(
    OutboxEvent.id == bindparam("event_id")
)
_DELIVERIES = select(
    OutboxDelivery.plugin, OutboxDelivery.attempts, OutboxDelivery.delivered, OutboxDelivery.next_attempt
).where(OutboxDelivery.event_id == bindparam("event_id"))


def _load(session: Executor, *, event_id: int) -> _Loaded | None:
    # Core statements, not ORM objects: this runs for every delivery.
    row = session.execute(_EVENT, {"event_id": event_id}).first()
    if row is None:
        return None
    deliveries = {
        plugin: _Delivered(attempts, delivered, next_attempt)
        for plugin, attempts, delivered, next_attempt in session.execute(_DELIVERIES, {"event_id": event_id})
    }
    return row.hook, row.kind, row.payload, deliveries


def _settle(
    session: Executor,
    *,
    event_id: int,
    outcomes: Sequence[_Outcome],
    next_attempt: datetime | None,
    known: frozenset[str],
) -> None:
    """Record each plugin's outcome and release the lease (completing the event when done).

    ``known``: the plugins with a delivery row already, as loaded under this lease (no one
    else writes them while it is held).
    """
    now = utcnow()
    updates: list[dict[str, object]] = []
    inserts: list[dict[str, object]] = []
    for outcome in outcomes:
        values = {
            "attempts": outcome.attempts,
            "delivered": now if outcome.error is None else None,
            "next_attempt": outcome.retry_at,
            "last_error": outcome.error,
        }
        if outcome.plugin in known:
            # Bound as p_*: a name of a column the statement sets cannot be bound in WHERE.
            keyed = {f"p_{key}": value for key, value in values.items()}
            updates.append(keyed | {"p_event_id": event_id, "p_plugin": outcome.plugin})
        else:
            inserts.append(values | {"event_id": event_id, "plugin": outcome.plugin})
    if updates:
        session.execute(_UPDATE_DELIVERY, updates)
    if inserts:
        session.execute(_INSERT_DELIVERY, inserts)
    if next_attempt is None:
        session.execute(_COMPLETE, {"event_id": event_id, "now": now})
    else:
        session.execute(_RETRY_AT, {"event_id": event_id, "retry_at": next_attempt})


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
    update(_events).where(_events.c.id == bindparam("event_id")).values(lease_until=None, completed=bindparam("now"))
)
_RETRY_AT = (
    update(_events)
    .where(_events.c.id == bindparam("event_id"))
    .values(lease_until=None, next_attempt=bindparam("retry_at"))
)
