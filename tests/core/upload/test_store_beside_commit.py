"""The files are stored while the commit's statements run; the commit waits for them (R1).

Each test holds the file's put until the transaction has run its statements and is
waiting for the puts, so it proves the order: statements first, then the wait, and the
commit only after a put that succeeded. (On SQLite and PostgreSQL, the file in memory and
spooled to disk.)
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select

import cheeseshop.upload.service as service
from cheeseshop.db.models import File, JournalEntry, Project
from cheeseshop.storage import metadata_path, storage_path
from cheeseshop.testing.dists import build_wheel

WAIT = 10.0


@pytest.fixture
def held_put(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The file's put waits until the commit waits for it; ``fail`` makes it fail then."""
    state: dict[str, Any] = {"fail": False, "waiting": threading.Event(), "statements_ran": None}
    real_put, real_wait = service._put_received, service._wait_for_puts

    def put(*args: Any, **kwargs: Any) -> Any:
        assert state["waiting"].wait(WAIT), "the commit never waited for the puts"
        if state["fail"]:
            raise OSError(28, "No space left on device")
        return real_put(*args, **kwargs)

    def wait(services: Any, puts: Any) -> None:
        # Inside the transaction, after its statements: the new file's row is there.
        state["statements_ran"] = True
        state["waiting"].set()
        real_wait(services, puts)

    monkeypatch.setattr(service, "_put_received", put)
    monkeypatch.setattr(service, "_wait_for_puts", wait)
    return state


async def _visible(services: Any) -> tuple[int, int, int]:
    async with services.db.read() as session:
        return (
            await session.scalar(select(func.count()).select_from(Project)),
            await session.scalar(select(func.count()).select_from(File)),
            await session.scalar(select(func.count()).select_from(JournalEntry)),
        )


async def test_a_put_failing_after_the_statements_ran_rolls_them_back(
    upload: Any, make_token: Any, cheeseshop_services: Any, held_put: dict[str, Any], spool: str
) -> None:
    token = await make_token("alice")
    held_put["fail"] = True
    dist = build_wheel("beside-commit", "1.0")

    response = await asyncio.wait_for(upload(dist, token=token), WAIT * 2)

    assert held_put["statements_ran"], "the transaction did not reach its wait for the puts"
    assert response.status_code == 503, await response.get_data(as_text=True)
    assert "try again" in (await response.get_data(as_text=True)).lower()
    assert await _visible(cheeseshop_services) == (0, 0, 0)
    # The metadata's put, which succeeded, was removed again: nothing is left behind.
    path = storage_path(_blake2(dist.content), dist.filename)
    assert not cheeseshop_services.storage.exists(metadata_path(path))
    assert not cheeseshop_services.storage.exists(path)


async def test_the_commit_waits_for_a_slow_put_and_then_publishes(
    upload: Any, make_token: Any, cheeseshop_services: Any, held_put: dict[str, Any], spool: str
) -> None:
    token = await make_token("alice")
    dist = build_wheel("beside-commit", "1.0")

    response = await asyncio.wait_for(upload(dist, token=token), WAIT * 2)

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert held_put["statements_ran"]
    projects, files, _ = await _visible(cheeseshop_services)
    assert (projects, files) == (1, 1)
    path = storage_path(_blake2(dist.content), dist.filename)
    assert cheeseshop_services.storage.size(path) == len(dist.content)
    assert cheeseshop_services.storage.exists(metadata_path(path))


def _blake2(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=32).hexdigest()


async def test_puts_slower_than_the_commit_waits_are_waited_for_outside_it(
    upload: Any, make_token: Any, cheeseshop_services: Any, monkeypatch: pytest.MonkeyPatch, spool: str
) -> None:
    # A large file or a slow remote store: the transaction does not sit on its locks
    # (SQLite's write lock, the journal's) until the puts end; it rolls back, waits
    # outside, and runs again.
    token = await make_token("alice")
    monkeypatch.setattr(service, "PUTS_WAIT_IN_TRANSACTION", 0.05)
    real_put, real_record = service._put_received, service._record_upload
    transactions: list[bool] = []

    def slow_put(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return real_put(*args, **kwargs)

    def counted_record(*args: Any, **kwargs: Any) -> Any:
        transactions.append(True)
        return real_record(*args, **kwargs)

    monkeypatch.setattr(service, "_put_received", slow_put)
    monkeypatch.setattr(service, "_record_upload", counted_record)
    dist = build_wheel("beside-commit", "1.0")

    response = await asyncio.wait_for(upload(dist, token=token), WAIT * 2)

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert len(transactions) == 2, "the transaction should have been run again after the puts"
    projects, files, entries = await _visible(cheeseshop_services)
    assert (projects, files) == (1, 1)
    assert entries == 4  # create, add Owner, new release, add file: once each, not twice
    path = storage_path(_blake2(dist.content), dist.filename)
    assert cheeseshop_services.storage.size(path) == len(dist.content)
