"""Celery on Redis: a real worker process delivers what the web app committed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cheeseshop.db.models import OutboxDelivery, OutboxEvent
from cheeseshop.services import Services
from cheeseshop.storage.gc import OrphanCollector
from cheeseshop.testing.dists import build_wheel
from cheeseshop.worker.dispatcher import CeleryDispatcher

from worker_kit import Processes, records, wait_for


@pytest.fixture
def cheeseshop_settings_overrides(
    redis_url: str, worker_key_prefix: str, recorder_path: Path
) -> dict[str, Any]:
    return {
        "broker_url": redis_url,
        "worker_key_prefix": worker_key_prefix,
        "plugins": ["recorder"],
        "recorder": {"path": str(recorder_path)},
    }


async def events_and_deliveries(
    services: Services,
) -> tuple[list[OutboxEvent], list[OutboxDelivery]]:
    async with services.db.read() as session:
        events = list(await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
        deliveries = list(await session.scalars(select(OutboxDelivery)))
    return events, deliveries


async def test_upload_events_are_delivered_by_a_celery_worker_on_redis(
    upload: Any, cheeseshop_services: Services, cheeseshop_settings: Any,
    processes: Processes, recorder_path: Path,
) -> None:  # fmt: skip
    worker = processes.worker("worker", cheeseshop_settings)
    dist = build_wheel("celery-demo", "1.0")

    response = await upload(dist)
    assert response.status_code == 200

    await asyncio.to_thread(
        wait_for,
        lambda: (
            records(recorder_path, "file_uploaded") and records(recorder_path, "release_published")
        ),
        what="both events recorded",
    )
    uploaded = records(recorder_path, "file_uploaded")
    published = records(recorder_path, "release_published")
    assert [r["filename"] for r in uploaded] == [dist.filename]
    assert [(r["project"], r["version"]) for r in published] == [("celery-demo", "1.0")]
    # Delivered in the worker's pool process, never in this (the web) process.
    assert {r["pid"] for r in uploaded + published} != {os.getpid()}
    assert "Task cheeseshop.deliver[" in worker.output()

    async def all_completed() -> list[OutboxEvent]:
        for _ in range(100):
            events, _ = await events_and_deliveries(cheeseshop_services)
            if events and all(e.completed for e in events):
                return events
            await asyncio.sleep(0.1)
        raise AssertionError("outbox events not all completed")

    events = await all_completed()
    _, deliveries = await events_and_deliveries(cheeseshop_services)
    assert {e.kind for e in events} >= {"FileUploaded", "ReleasePublished"}
    recorder = [d for d in deliveries if d.plugin == "recorder"]
    assert len(recorder) == 2 and all(d.attempts == 1 and d.delivered for d in recorder)


async def test_event_dispatcher_with_a_broker_is_celery_and_the_web_runs_no_loops(
    cheeseshop_services: Services,
) -> None:
    """With a broker, the workers and beat own delivery and collection, not the web process."""
    assert isinstance(cheeseshop_services.outbox.dispatcher, CeleryDispatcher)
    assert not OrphanCollector(cheeseshop_services).enabled
    running = {task.get_name() for task in asyncio.all_tasks()}
    assert "cheeseshop-outbox" not in running and "cheeseshop-orphans" not in running
