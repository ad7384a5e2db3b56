"""R4 with Celery: a broker down at commit, a worker killed mid-delivery, two beats.

Each fault is real: a redis-server of the test's own that is not running yet, a worker
process group killed with SIGKILL, two beat processes side by side.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cheeseshop.db.models import OutboxDelivery, OutboxEvent
from cheeseshop.services import Services
from cheeseshop.testing.dists import build_sdist, build_wheel

from worker_kit import PrivateRedis, Processes, records, wait_for


@pytest.fixture
def cheeseshop_database_url(tmp_path: Path, _cheeseshop_sqlite_template: Path) -> str:
    """SQLite, a file shared with the worker processes (the Redis delivery test runs both)."""
    from cheeseshop.testing.services import migrated_sqlite

    return migrated_sqlite(_cheeseshop_sqlite_template, tmp_path / "cheeseshop.db")


async def outbox_state(services: Services) -> tuple[list[OutboxEvent], list[OutboxDelivery]]:
    async with services.db.read() as session:
        events = list(await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
        deliveries = list(await session.scalars(select(OutboxDelivery)))
    return events, deliveries


async def wait_all_completed(services: Services, *, timeout: float = 30.0) -> list[OutboxEvent]:
    deadline = time.monotonic() + timeout
    while True:
        events, _ = await outbox_state(services)
        if events and all(event.completed for event in events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(
                f"outbox not completed: {[(e.id, e.kind, e.completed) for e in events]}"
            )
        await asyncio.sleep(0.1)


def both_recorded(path: Path, count: int = 1) -> bool:
    return (
        len(records(path, "file_uploaded")) >= count
        and len(records(path, "release_published")) >= count
    )


# -- (a) the broker is down when the upload commits ----------------------------------------


class TestBrokerDownAtCommit:
    @pytest.fixture
    def cheeseshop_settings_overrides(
        self, private_redis: PrivateRedis, worker_key_prefix: str, recorder_path: Path
    ) -> dict[str, Any]:
        return {
            "broker_url": private_redis.url,  # nothing listens there yet
            "broker_connect_timeout_seconds": 1.0,
            "worker_key_prefix": worker_key_prefix,
            "outbox_sweep_seconds": 1.0,
            "plugins": ["recorder"],
            "recorder": {"path": str(recorder_path)},
        }

    async def test_upload_succeeds_and_the_sweep_delivers_once_the_broker_is_back(
        self, upload: Any, cheeseshop_services: Services, cheeseshop_settings: Any,
        processes: Processes, private_redis: PrivateRedis, recorder_path: Path,
    ) -> None:  # fmt: skip
        started = time.monotonic()
        response = await upload(build_wheel("broker-down", "1.0"))
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        # Connection refused costs milliseconds; the dispatcher's budget bounds the rest.
        assert elapsed < cheeseshop_services.outbox.dispatcher.budget + 2.0
        events, _ = await outbox_state(cheeseshop_services)
        assert events and not any(e.completed for e in events), "nothing can have delivered them"

        private_redis.start()
        processes.worker("worker", cheeseshop_settings)
        beat = processes.beat("beat", cheeseshop_settings)

        await asyncio.to_thread(
            wait_for, lambda: both_recorded(recorder_path), what="events swept and delivered"
        )
        await wait_all_completed(cheeseshop_services)
        assert "cheeseshop.outbox_sweep" in beat.output()
        await asyncio.sleep(3.0)  # three more sweeps: nothing may be delivered again
        assert len(records(recorder_path, "file_uploaded")) == 1
        assert len(records(recorder_path, "release_published")) == 1
        # The core's own receivers too: one e-mail to the owner (the default file sender).
        mails = sorted((cheeseshop_settings.data_dir / "mail").glob("*.eml"))
        assert len(mails) == 1, mails
        assert "broker-down" in mails[0].read_text()
        _, deliveries = await outbox_state(cheeseshop_services)
        assert all(d.attempts == 1 for d in deliveries if d.plugin == "recorder")

        # The web process's own broker connection recovers too: with beat gone, only the
        # dispatch at commit can deliver this one.
        beat.stop()
        assert (await upload(build_sdist("broker-down", "1.0"))).status_code == 200
        await asyncio.to_thread(
            wait_for,
            lambda: len(records(recorder_path, "file_uploaded")) == 2,
            what="delivery by dispatch",
        )
        await wait_all_completed(cheeseshop_services)


# -- (b) a worker is killed in the middle of a delivery -----------------------------------


@pytest.fixture(params=["redis", "sqs"])
def broker(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The broker settings of one transport."""
    if request.param == "redis":
        return {
            "broker_url": request.getfixturevalue("redis_url"),
            "worker_key_prefix": request.getfixturevalue("worker_key_prefix"),
        }
    return {
        "broker_url": "sqs://testing:testing@",
        "sqs_endpoint_url": request.getfixturevalue("moto_endpoint"),
        "sqs_region": "eu-west-1",
    }


class TestWorkerKilledMidDelivery:
    @pytest.fixture
    def cheeseshop_settings_overrides(
        self, broker: dict[str, Any], recorder_path: Path, tmp_path: Path
    ) -> dict[str, Any]:
        return {
            **broker,
            # Short, so the test takes seconds: the killed worker's lease runs out after
            # 2 s, and the broker hands its task out again after 3 s.
            "outbox_lease_seconds": 2.0,
            "broker_visibility_timeout_seconds": 3,
            "plugins": ["recorder"],
            "recorder": {"path": str(recorder_path), "block_until": str(tmp_path / "unblock")},
        }

    async def test_another_worker_completes_the_delivery_once(
        self, upload: Any, cheeseshop_services: Services, cheeseshop_settings: Any,
        processes: Processes, recorder_path: Path, tmp_path: Path,
    ) -> None:  # fmt: skip
        first = processes.worker("first", cheeseshop_settings)
        dist = build_wheel("killed-worker", "1.0")
        assert (await upload(dist)).status_code == 200

        blocked = await asyncio.to_thread(
            wait_for, lambda: records(recorder_path, "blocked"), what="the delivery to block"
        )
        first.kill()  # the whole process group: parent and pool process, no ack, no release
        assert not records(recorder_path, "file_uploaded")
        (tmp_path / "unblock").touch()

        second = processes.worker("second", cheeseshop_settings)
        await asyncio.to_thread(
            wait_for, lambda: both_recorded(recorder_path), what="delivery by the second worker"
        )
        await wait_all_completed(cheeseshop_services)

        uploaded = records(recorder_path, "file_uploaded")
        assert [r["filename"] for r in uploaded] == [dist.filename]
        assert uploaded[0]["pid"] != blocked[0]["pid"]
        assert "cheeseshop.deliver" in second.output()
        await asyncio.sleep(4.0)  # past another visibility timeout: no second copy arrives
        assert len(records(recorder_path, "file_uploaded")) == 1
        assert len(records(recorder_path, "release_published")) == 1
        # The core's own receivers too: one e-mail to the owner (the default file sender).
        mails = sorted((cheeseshop_settings.data_dir / "mail").glob("*.eml"))
        assert len(mails) == 1, mails
        assert "killed-worker" in mails[0].read_text()


# -- (c) two beat processes ---------------------------------------------------------------


class TestTwoBeats:
    @pytest.fixture
    def cheeseshop_settings_overrides(
        self, redis_url: str, worker_key_prefix: str, recorder_path: Path
    ) -> dict[str, Any]:
        return {
            "broker_url": redis_url,
            "worker_key_prefix": worker_key_prefix,
            "plugins": ["recorder"],
            "recorder": {"path": str(recorder_path), "tick_seconds": 1.0},
        }

    async def test_periodic_tasks_of_two_beats_follow_one_schedule(
        self, cheeseshop_settings: Any, processes: Processes, recorder_path: Path
    ) -> None:
        processes.worker("worker", cheeseshop_settings)
        beats = [
            processes.beat("beat-1", cheeseshop_settings),
            processes.beat("beat-2", cheeseshop_settings),
        ]
        await asyncio.to_thread(
            wait_for, lambda: records(recorder_path, "tick"), what="a first tick"
        )

        window = 6.0
        before = len(records(recorder_path, "tick"))
        await asyncio.sleep(window)
        ticks = len(records(recorder_path, "tick")) - before
        # One schedule sends one tick a second; two would send two.
        assert window / 2 <= ticks <= window + 1, ticks
        holders = [b for b in beats if "beat: Acquired lock" in b.output()]
        assert len(holders) == 1, [b.output()[-1500:] for b in beats]

        # The holder stops (releasing the lock): the other one takes over the schedule.
        holder, standby = holders[0], next(b for b in beats if b is not holders[0])
        assert sent_ticks(holder.output()) >= ticks and sent_ticks(standby.output()) == 0
        holder.stop()
        await asyncio.to_thread(standby.wait_for_output, "beat: Acquired lock", timeout=30)
        after = len(records(recorder_path, "tick"))
        await asyncio.to_thread(
            wait_for,
            lambda: len(records(recorder_path, "tick")) >= after + 2,
            timeout=15,
            what="ticks after take-over",
        )
        assert sent_ticks(standby.output()) >= 2


def sent_ticks(output: str) -> int:
    """How many ticks a beat says it sent."""
    return len(re.findall(r"Sending due task recorder\.tick", output))
