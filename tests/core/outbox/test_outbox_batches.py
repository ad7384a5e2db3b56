"""A sweep's events are leased in one transaction and settled in one (Outbox.deliver_many)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import cheeseshop
import cheeseshop.outbox as outbox_module
from cheeseshop.db.models import OutboxEvent
from cheeseshop.events import ReleasePublished
from cheeseshop.outbox import record


class Releases:
    """A plugin taking release_published events, in the order it gets them."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.versions: list[str] = []
        self.lock = threading.Lock()

    @cheeseshop.hookimpl
    def cheeseshop_release_published(self, event: ReleasePublished) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.versions.append(event.version)


@pytest.fixture
def releases() -> Releases:
    return Releases()


@pytest.fixture
def cheeseshop_plugins(releases: Releases) -> list[tuple[str, Any]]:
    return [("releases", releases)]


def _event(version: str) -> ReleasePublished:
    return ReleasePublished(
        project="batched",
        normalized_name="batched",
        version=version,
        published_by="alice",
        created=datetime.now(UTC),
        serial=1,
    )


async def _recorded(services: Any, versions: list[str]) -> list[int]:
    await services.outbox.dispatcher.stop()  # only this test's calls deliver
    events = [_event(version) for version in versions]
    return await services.db.run_write(lambda session: record(session, events))


async def _completed(services: Any) -> dict[int, bool]:
    async with services.db.read() as session:
        rows = await session.execute(select(OutboxEvent.id, OutboxEvent.completed, OutboxEvent.lease_until))
        return {event_id: completed is not None for event_id, completed, lease in rows if lease is None}


async def test_a_batch_is_leased_once_settled_once_and_delivered_in_order(
    cheeseshop_services: Any, releases: Releases, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _recorded(cheeseshop_services, ["1.0", "2.0", "3.0"])
    calls: list[str] = []
    for name in ("_lease_and_load", "_settle"):
        real = getattr(outbox_module, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(outbox_module, name, counted)

    # Given in another order, and one id twice: delivered once each, in id order.
    assert await cheeseshop_services.outbox.deliver_many([ids[2], ids[0], ids[1], ids[0]]) is True

    assert releases.versions == ["1.0", "2.0", "3.0"]
    assert calls == ["_lease_and_load", "_settle"]
    assert await _completed(cheeseshop_services) == {event_id: True for event_id in ids}
    # Done: a second delivery leases nothing and calls no plugin.
    assert await cheeseshop_services.outbox.deliver_many(ids) is False
    assert releases.versions == ["1.0", "2.0", "3.0"]


async def test_events_not_begun_by_half_the_lease_are_released_for_later(
    cheeseshop_services: Any, releases: Releases
) -> None:
    ids = await _recorded(cheeseshop_services, ["1.0", "2.0", "3.0"])
    outbox = cheeseshop_services.outbox
    outbox.lease = timedelta(seconds=0.4)
    releases.delay = 0.3  # past half the lease after the first event

    assert await outbox.deliver_many(ids) is False

    assert releases.versions == ["1.0"]
    # The first is done; the others are free again (not leased, not done), and the next
    # delivery takes them.
    assert await _completed(cheeseshop_services) == {ids[0]: True, ids[1]: False, ids[2]: False}
    releases.delay = 0.0
    assert await outbox.deliver_many(ids[1:]) is True
    assert releases.versions == ["1.0", "2.0", "3.0"]
