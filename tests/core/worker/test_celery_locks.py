"""The periodic tasks' lock, on a real Redis: one run at a time, renewed, freed by expiry."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from cheeseshop.worker.locks import run_exclusively


@pytest.fixture
def client(redis_url: str, worker_key_prefix: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def key(worker_key_prefix: str) -> str:
    return f"{worker_key_prefix}periodic:{uuid.uuid4().hex}"


def test_periodic_tasks_run_exclusively_admits_one_run_at_a_time(
    client: redis.Redis, key: str
) -> None:
    running = threading.Event()
    release = threading.Event()
    outcomes: list[tuple[bool, object]] = []

    def long_job() -> str:
        running.set()
        release.wait(10)
        return "done"

    first = threading.Thread(target=lambda: outcomes.append(run_exclusively(client, key, long_job)))
    first.start()
    assert running.wait(10)
    # While the first run holds the lock, a second one is skipped, not queued.
    assert run_exclusively(client, key, lambda: "second") == (False, None)
    release.set()
    first.join(10)
    assert outcomes == [(True, "done")]
    # Released at the end: the next run goes ahead.
    assert run_exclusively(client, key, lambda: "third") == (True, "third")
    assert not client.exists(key)


def test_periodic_tasks_lock_is_renewed_while_a_long_job_runs(
    client: redis.Redis, key: str
) -> None:
    def slow_job() -> None:
        time.sleep(1.6)  # four times the lock's time-out

    worker = threading.Thread(
        target=run_exclusively, args=(client, key, slow_job), kwargs={"timeout": 0.4}
    )
    worker.start()
    time.sleep(1.0)
    # Without renewal the lock would have expired twice over by now.
    assert run_exclusively(client, key, lambda: "overlap", timeout=0.4) == (False, None)
    worker.join(10)


def test_periodic_tasks_lock_of_a_vanished_holder_expires(client: redis.Redis, key: str) -> None:
    # A worker killed mid-job: its lock is never released, and nobody renews it.
    assert client.lock(key, timeout=0.5).acquire(blocking=False)
    assert run_exclusively(client, key, lambda: "blocked") == (False, None)
    time.sleep(0.7)
    assert run_exclusively(client, key, lambda: "after") == (True, "after")
