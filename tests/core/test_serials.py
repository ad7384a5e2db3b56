"""Serials as a mirror sees them: a serial, once a larger one was seen, never appears later.

PostgreSQL hands out sequence values in call order but makes rows visible in commit
order; without the journal's advisory lock, a mirror reading while two uploads commit
could see serial 11, then 10 — and, following "changes since 11", skip 10 forever.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from sqlalchemy import select

import cheeseshop.upload.service

from cheeseshop.db.models import JournalEntry, Project
from cheeseshop.errors import APIError
from cheeseshop.projects import service as projects
from cheeseshop.testing.dists import build_wheel

UPLOADERS = 6
UPLOADS_EACH = 3


async def _journal_ids(services: Any) -> list[int]:
    async with services.db.read() as session:
        return list(await session.scalars(select(JournalEntry.id).order_by(JournalEntry.id)))


@pytest.fixture
def slow_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold some uploads' transactions open after their journal insert, to open the window
    in which a later serial could commit first (the lock must close it)."""
    original = cheeseshop.upload.service.record_changes
    delays = itertools.cycle([0.05, 0.0, 0.02, 0.0])

    def delayed(session: Any, *args: Any, **kwargs: Any) -> list[int]:
        serials = original(session, *args, **kwargs)
        time.sleep(next(delays))  # in the upload's worker thread, on either database
        return serials

    monkeypatch.setattr(cheeseshop.upload.service, "record_changes", delayed)


async def test_no_serial_appears_below_one_already_seen(upload, make_token, cheeseshop_services, slow_commits):
    token = await make_token("alice")
    done = asyncio.Event()
    snapshots: list[list[int]] = []

    async def mirror() -> None:
        while not done.is_set():
            snapshots.append(await _journal_ids(cheeseshop_services))
            await asyncio.sleep(0)
        snapshots.append(await _journal_ids(cheeseshop_services))

    async def uploader(n: int) -> None:
        for version in range(1, UPLOADS_EACH + 1):
            response = await upload(build_wheel(f"serial-race-{n}", f"{version}.0"), token=token)
            assert response.status_code == 200, await response.get_data(as_text=True)

    watcher = asyncio.create_task(mirror())
    try:
        await asyncio.gather(*(uploader(n) for n in range(UPLOADERS)))
    finally:
        done.set()
        await watcher

    # Each new project: create, add Owner, new release, add file; each later upload: two.
    expected = UPLOADERS * (4 + 2 * (UPLOADS_EACH - 1))
    assert len(snapshots[-1]) == expected
    assert len(snapshots) > 2, "the mirror must have read while uploads were committing"
    seen_max = 0
    seen: set[int] = set()
    for snapshot in snapshots:
        assert seen <= set(snapshot), "an entry a mirror saw disappeared"
        late = [serial for serial in set(snapshot) - seen if serial < seen_max]
        assert not late, f"serials {late} became visible after {seen_max} had been seen"
        seen = set(snapshot)
        seen_max = max(snapshot, default=0)


async def test_every_change_moves_last_serial_to_its_own_entry(upload, cheeseshop_services):
    assert (await upload(build_wheel("serial-steps", "1.0"))).status_code == 200
    assert (await upload(build_wheel("serial-steps", "2.0"))).status_code == 200
    await projects.yank(cheeseshop_services, "serial-steps", "2.0", reason="bad")
    await projects.unyank(cheeseshop_services, "serial-steps", "2.0")
    await projects.set_status(cheeseshop_services, "serial-steps", "archived")
    async with cheeseshop_services.db.read() as session:
        entries = (
            await session.execute(
                select(JournalEntry.id, JournalEntry.action).where(JournalEntry.name == "serial-steps")
            )
        ).all()
        last_serial = await session.scalar(
            select(Project.last_serial).where(Project.normalized_name == "serial-steps")
        )
    actions = [action for _, action in sorted(entries)]
    assert actions == [
        "create",
        "add Owner alice",
        "new release",
        "add py3 file serial_steps-1.0-py3-none-any.whl",
        "new release",
        "add py3 file serial_steps-2.0-py3-none-any.whl",
        "yank release",
        "unyank release",
        "set status archived",
    ]
    ids = [serial for serial, _ in sorted(entries)]
    assert ids == sorted(set(ids)), "strictly increasing"
    assert last_serial == ids[-1]


async def test_a_rolled_back_change_leaves_no_gap_in_the_serials(
    upload: Any, make_token: Any, cheeseshop_services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mirror that finds a serial missing cannot tell a change rolled back from one it
    # failed to receive: serials are handed out only by changes that commit.
    token = await make_token("alice")
    assert (await upload(build_wheel("gapless", "1.0"), token=token)).status_code == 200

    def fail_after_journaling(session: Any, events: Any) -> list[int]:
        raise APIError(503, "injected: the commit fails after the journal entries were written")

    monkeypatch.setattr(cheeseshop.upload.service, "record", fail_after_journaling)
    refused = await upload(build_wheel("gapless", "2.0"), token=token)
    assert refused.status_code == 503
    monkeypatch.undo()
    assert (await upload(build_wheel("gapless", "3.0"), token=token)).status_code == 200

    serials = await _journal_ids(cheeseshop_services)
    # Create, add Owner, new release, add file; then a new release and its file.
    assert serials == list(range(serials[0], serials[0] + 6))
    async with cheeseshop_services.db.read() as session:
        project = await session.scalar(select(Project).where(Project.normalized_name == "gapless"))
    assert project.last_serial == serials[-1]
