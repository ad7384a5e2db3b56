"""The journal: one entry per change to a project, numbered by a serial that only grows."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cheeseshop.db.models import JournalEntry, Project, utcnow

__all__ = ["record_change"]

# Any constant works; it names the one lock that orders journal writers on PostgreSQL.
_JOURNAL_LOCK = 0x0C4EE5E


async def record_change(
    session: AsyncSession,
    project: Project,
    action: str,
    *,
    version: str | None = None,
    submitted_by: str | None = None,
) -> int:
    """Write a journal entry for ``project`` in the caller's transaction; return its serial.

    On PostgreSQL, sequence values are handed out in call order but become visible in
    commit order, so a mirror could see serial 11 before serial 10 commits and then skip
    10 forever. A transaction-scoped advisory lock makes journal writers commit one at a
    time, in serial order. (SQLite's write transactions are serial already.)
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _JOURNAL_LOCK})
    entry = JournalEntry(
        name=project.name,
        version=version,
        action=action,
        submitted_date=utcnow(),
        submitted_by=submitted_by,
    )
    session.add(entry)
    await session.flush()
    project.last_serial = entry.id
    return entry.id
