"""What the index has recorded, read back for tests: row counts and journal entries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from cheeseshop.db.models import File, FilenameRegistry, JournalEntry, Project, Release

__all__ = ["journal_of", "stored_counts"]


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
