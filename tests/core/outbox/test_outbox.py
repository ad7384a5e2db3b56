"""The outbox: events are committed with their change and delivered plugin by plugin."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from quart import has_request_context
from sqlalchemy import select

import cheeseshop
from cheeseshop.db.models import OutboxDelivery, OutboxEvent
from cheeseshop.events import FileUploaded, ReleasePublished
from cheeseshop.outbox import record
from cheeseshop.testing.dists import build_sdist, build_wheel


class Recorder:
    """A plugin object that records every delivery it receives."""

    def __init__(self, *, failures: int = 0, delay: float = 0.0) -> None:
        self.failures = failures  # how many file_uploaded deliveries fail first
        self.delay = delay
        self.calls: list[tuple[str, Any]] = []
        self.in_request: list[bool] = []
        self.lock = threading.Lock()

    def _take(self, kind: str, event: Any) -> None:
        with self.lock:
            self.calls.append((kind, event))
            self.in_request.append(has_request_context())
            failing = kind == "file_uploaded" and self.failures > 0
            if failing:
                self.failures -= 1
        if self.delay:
            time.sleep(self.delay)
        if failing:
            raise RuntimeError(f"{kind} failed on purpose")

    @cheeseshop.hookimpl
    def cheeseshop_file_uploaded(self, event: FileUploaded) -> None:
        self._take("file_uploaded", event)

    @cheeseshop.hookimpl
    def cheeseshop_release_published(self, event: ReleasePublished) -> None:
        self._take("release_published", event)

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)


async def eventually(predicate, *, timeout: float = 10.0) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within %.0fs" % timeout)
        await asyncio.sleep(0.02)


def release_event(name: str) -> ReleasePublished:
    """An event as the upload pipeline would record it, for tests that record it directly."""
    return ReleasePublished(
        project=name,
        normalized_name=name,
        version="1.0",
        published_by="alice",
        created=datetime.now(UTC),
        serial=1,
    )


async def completed_events(services) -> list[OutboxEvent]:
    async with services.db.read() as session:
        return list(await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))


@pytest.fixture
def flaky() -> Recorder:
    return Recorder(failures=2)


@pytest.fixture
def steady() -> Recorder:
    return Recorder()


@pytest.fixture
def cheeseshop_plugins(flaky, steady):
    return [("flaky", flaky), ("steady", steady)]


async def test_file_uploaded_failing_plugin_is_retried_alone(upload, cheeseshop_services, flaky, steady):
    dist = build_wheel("outbox-demo", "1.0")
    response = await upload(dist)
    assert response.status_code == 200

    await eventually(lambda: flaky.count("file_uploaded") == 3)
    await eventually(lambda: steady.count("release_published") == 1)
    await asyncio.sleep(0.3)  # a few more sweeps: nothing may be delivered again

    assert steady.count("file_uploaded") == 1, "the healthy plugin must not get a repeat"
    assert flaky.count("file_uploaded") == 3, "two failures, then one success, then no more"
    event = steady.calls[0][1]
    assert isinstance(event, FileUploaded)
    assert event.filename == dist.filename and event.sha256 == dist.sha256
    assert not any(steady.in_request + flaky.in_request), "hooks must never run in the request"

    async with cheeseshop_services.db.read() as session:
        deliveries = {
            (d.plugin, d.event_id): d for d in await session.scalars(select(OutboxDelivery))
        }
    events = await completed_events(cheeseshop_services)
    file_event = next(e for e in events if e.kind == "FileUploaded")
    assert deliveries[("steady", file_event.id)].attempts == 1
    assert deliveries[("flaky", file_event.id)].attempts == 3
    assert deliveries[("flaky", file_event.id)].delivered is not None
    assert all(e.completed is not None for e in events)


async def test_release_published_once_per_release_after_its_file(upload, cheeseshop_services, flaky, steady):
    flaky.failures = 0
    assert (await upload(build_wheel("outbox-order", "1.0"))).status_code == 200
    assert (await upload(build_sdist("outbox-order", "1.0"))).status_code == 200
    await eventually(lambda: steady.count("file_uploaded") == 2 and steady.count("release_published") == 1)
    kinds = [kind for kind, _ in steady.calls]
    assert kinds.index("file_uploaded") < kinds.index("release_published")
    published = next(e for k, e in steady.calls if k == "release_published")
    assert (published.project, published.version) == ("outbox-order", "1.0")
    first_file = next(e for k, e in steady.calls if k == "file_uploaded")
    # The release's journal entry comes before its first file's, in the same transaction.
    assert published.serial == first_file.serial - 1


async def test_event_dispatcher_sweeps_events_nobody_dispatched(cheeseshop_services, flaky, steady):
    """An event committed without a dispatch (a lost hint, a crash) is still delivered."""
    flaky.failures = 0
    event = release_event("swept")
    await cheeseshop_services.db.run_write(lambda session: record(session, [event]))
    await eventually(lambda: steady.count("release_published") == 1)
    delivered = steady.calls[0][1]
    assert delivered == event


async def test_concurrent_deliveries_of_one_event_call_each_plugin_once(cheeseshop_services, flaky, steady):
    flaky.failures = 0
    steady.delay = 0.2
    await cheeseshop_services.outbox.dispatcher.stop()  # only this test's calls deliver
    event = release_event("raced")
    [event_id] = await cheeseshop_services.db.run_write(lambda session: record(session, [event]))
    results = await asyncio.gather(*(cheeseshop_services.outbox.deliver(event_id) for _ in range(4)))
    assert results.count(True) == 1
    assert Counter(kind for kind, _ in steady.calls) == {"release_published": 1}
    assert flaky.count("release_published") == 1
