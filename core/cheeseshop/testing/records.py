"""What the index has recorded, read back for tests: row counts, journal entries, and
whether the outbox has delivered what it holds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import func, select

from cheeseshop.db.models import File, FilenameRegistry, JournalEntry, OutboxEvent, Project, Release

__all__ = ["journal_of", "outbox_settled", "stored_counts"]

_UNDELIVERED = select(OutboxEvent.id).where(OutboxEvent.completed.is_(None)).order_by(OutboxEvent.id)


async def outbox_settled(services: Any, *, timeout: float = 15.0) -> None:
    """Wait (at most ``timeout`` seconds, else AssertionError) until the outbox holds no
    undelivered event: every purge, e-mail and plugin call of what came before is done."""
    deadline = time.monotonic() + timeout
    while True:
        async with services.db.read() as session:
            pending = list(await session.scalars(_UNDELIVERED))
        if not pending:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"outbox events {pending} still undelivered after {timeout:.0f}s")
        await asyncio.sleep(0.025)


async def stored_counts(services: Any) -> dict[str, int]:
    """What uploads have stored: files, releases, projects, registered filenames, and the
    newest journal serial. Equal before and after a refused upload."""
    async with services.db.read() as session:
        return {
            "files": await session.scalar(select(func.count()).select_from(File)),
            "releases": await session.scalar(select(func.count()).select_from(Release)),
            "projects": await session.scalar(select(func.count()).select_from(Project)),
            "journal": await session.scalar(select(func.max(JournalEntry.id))) or 0,
            "registry": await session.scalar(select(func.count()).select_from(FilenameRegistry)),
        }


async def journal_of(services: Any, name: str) -> list[tuple[int, str, str | None, str | None]]:
    """The journal entries of project ``name`` (as journaled: its display name), oldest
    first: (serial, action, version, submitted by)."""
    async with services.db.read() as session:
        rows = await session.execute(
            select(JournalEntry.id, JournalEntry.action, JournalEntry.version, JournalEntry.submitted_by)
            .where(JournalEntry.name == name)
            .order_by(JournalEntry.id)
        )
        return [tuple(row) for row in rows]
