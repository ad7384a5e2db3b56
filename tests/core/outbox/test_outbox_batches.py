"""Batched delivery: a sweep's events are leased in one write and settled in another."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

import cheeseshop
from cheeseshop.db.models import OutboxDelivery, OutboxEvent
from cheeseshop.events import ReleasePublished
from cheeseshop.outbox import record


class Taker:
    """A plugin recording the projects of the release events it is given, in order."""

    def __init__(self, *, failing: frozenset[str] = frozenset(), on_call: Any = None) -> None:
        self.failing = failing
        self.on_call = on_call
        self.projects: list[str] = []

    @cheeseshop.hookimpl
    def cheeseshop_release_published(self, event: ReleasePublished) -> None:
        self.projects.append(event.project)
        if self.on_call is not None:
            self.on_call(event)
        if event.project in self.failing:
            raise RuntimeError(f"{event.project} refused on purpose")


@pytest.fixture
def taker() -> Taker:
    return Taker(failing=frozenset({"p-fails"}))


@pytest.fixture
def cheeseshop_plugins(taker):
    return [("taker", taker)]


def release(name: str) -> ReleasePublished:
    return ReleasePublished(
        project=name, normalized_name=name, version="1.0", published_by="alice", created=datetime.now(UTC), serial=1
    )


async def recorded(services: Any, *names: str) -> list[int]:
    await services.outbox.dispatcher.stop()  # only the test's own calls deliver
    return await services.db.run_write(lambda session: record(session, [release(n) for n in names]))


async def events_by_id(services: Any) -> dict[int, OutboxEvent]:
    async with services.db.read() as session:
        return {e.id: e for e in await session.scalars(select(OutboxEvent))}


def count_writes(services: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The ``write`` flag of every ``run_core`` call the outbox makes from now on."""
    calls: list[bool] = []
    run_core = services.db.run_core

    async def counted(work: Any, *, write: bool = False) -> Any:
        calls.append(write)
        return await run_core(work, write=write)

    monkeypatch.setattr(services.db, "run_core", counted)
    return calls


async def test_a_batch_is_delivered_in_id_order_with_two_writes(cheeseshop_services, taker, monkeypatch):
    ids = await recorded(cheeseshop_services, "p-one", "p-fails", "p-three", "p-four")
    visits = count_writes(cheeseshop_services, monkeypatch)
    before = datetime.now(UTC)
    # Given out of order and with a repeat: delivered once each, in id order.
    done = await cheeseshop_services.outbox.deliver_many([ids[3], ids[0], ids[2], ids[1], ids[0]])
    assert taker.projects == ["p-one", "p-fails", "p-three", "p-four"]
    assert done == {ids[0], ids[2], ids[3]}
    assert visits == [True, True], "one write leases and reads the batch, one settles it"
    events = await events_by_id(cheeseshop_services)
    assert all(events[i].completed is not None and events[i].lease_until is None for i in done)
    failed = events[ids[1]]
    assert failed.completed is None and failed.lease_until is None
    assert failed.next_attempt > before, "the failed event is retried later"
    async with cheeseshop_services.db.read() as session:
        deliveries = {d.event_id: d for d in await session.scalars(select(OutboxDelivery))}
    assert deliveries[ids[1]].delivered is None and "refused on purpose" in deliveries[ids[1]].last_error
    assert all(deliveries[i].delivered is not None and deliveries[i].attempts == 1 for i in done)
    # Nothing completed is delivered again. (The failed event is left out: the tests'
    # retry delay is a fraction of a second, so by now it may be due again.)
    assert await cheeseshop_services.outbox.deliver_many(sorted(done)) == set()
    assert taker.projects == ["p-one", "p-fails", "p-three", "p-four"]


async def test_events_leased_elsewhere_are_left_alone(cheeseshop_services, taker):
    ids = await recorded(cheeseshop_services, "p-mine", "p-theirs")
    later = datetime.now(UTC) + timedelta(minutes=5)
    await cheeseshop_services.db.run_write(
        lambda session: session.execute(
            update(OutboxEvent).where(OutboxEvent.id == ids[1]).values(lease_until=later)
        )
    )
    assert await cheeseshop_services.outbox.deliver_many(ids) == {ids[0]}
    assert taker.projects == ["p-mine"]
    assert (await events_by_id(cheeseshop_services))[ids[1]].lease_until == later, "another's lease stands"


async def test_a_stopped_batch_releases_what_it_did_not_deliver(cheeseshop_services, taker):
    stop = asyncio.Event()
    taker.on_call = lambda event: stop.set()  # stop once the first event is being delivered
    ids = await recorded(cheeseshop_services, "p-first", "p-second", "p-third")
    assert await cheeseshop_services.outbox.deliver_many(ids, stop=stop) == {ids[0]}
    assert taker.projects == ["p-first"]
    events = await events_by_id(cheeseshop_services)
    assert [events[i].lease_until for i in ids] == [None, None, None], "the rest is free for the next sweep"
    assert events[ids[1]].completed is None and events[ids[2]].completed is None
    taker.on_call = None
    assert await cheeseshop_services.outbox.deliver_many(ids) == {ids[1], ids[2]}
    assert taker.projects == ["p-first", "p-second", "p-third"]


@pytest.mark.parametrize("cheeseshop_settings_overrides", [{"outbox_lease_seconds": 0.4}])
async def test_a_slow_batch_stops_at_half_its_lease(cheeseshop_services, taker):
    """No event of a batch is still undelivered when its lease could be taken over."""
    taker.on_call = lambda event: time.sleep(0.25)
    ids = await recorded(cheeseshop_services, "p-slow-1", "p-slow-2", "p-slow-3")
    assert await cheeseshop_services.outbox.deliver_many(ids) == {ids[0]}
    assert taker.projects == ["p-slow-1"]
    assert all(e.lease_until is None for e in (await events_by_id(cheeseshop_services)).values())
