"""The journal: one entry per change to a project, numbered by a serial that only grows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import bindparam, func, insert, select, text, update

from cheeseshop.db import Executor, dialect_name
from cheeseshop.db.models import JournalEntry, Project, utcnow

__all__ = ["Change", "last_serial", "record_changes"]

# Any constant works; it names the one lock that orders journal writers on PostgreSQL.
_JOURNAL_LOCK = 0x0C4EE5E
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")

_entries = JournalEntry.__table__
_projects = Project.__table__
_INSERT = insert(_entries).returning(_entries.c.id)
_LAST = select(func.max(_entries.c.id))
_UPDATE_PROJECT = (
    update(_projects)
    .where(_projects.c.id == bindparam("project_id"))
    .values(
        last_serial=bindparam("serial"),
        total_size=_projects.c.total_size + bindparam("added_size"),
    )
)


@dataclasses.dataclass(frozen=True)
class Change:
    """One journal entry to write: what happened, to which version, by whom."""

    action: str
    version: str | None = None
    submitted_by: str | None = None


def last_serial(session: Executor) -> int:
    """The newest journal serial (0 for an empty journal)."""
    return session.scalar(_LAST) or 0


def record_changes(
    session: Executor,
    project_id: int,
    project_name: str,
    changes: Sequence[Change],
    *,
    added_size: int = 0,
) -> list[int]:
    """Journal ``changes`` to one project in the caller's transaction; their serials, in order.

    The entries are written by one statement, and the project's ``last_serial`` (and its
    ``total_size``, grown by ``added_size``) by one more: an upload's four changes cost two
    statements, not eight (four on PostgreSQL, with the lock and the newest serial).

    On PostgreSQL, concurrent transactions become visible in commit order, so a mirror
    could see serial 11 before serial 10 commits and then skip 10 forever. A
    transaction-scoped advisory lock makes journal writers commit one at a time, in
    serial order, and lets them number their entries themselves, without gaps. (SQLite's
    write transactions are serial already.)
    """
    if not changes:
        raise ValueError("record_changes needs at least one change")
    now = utcnow()
    rows: list[dict[str, object]] = [
        {
            "name": project_name,
            "version": change.version,
            "action": change.action,
            "submitted_date": now,
            "submitted_by": change.submitted_by,
        }
        for change in changes
    ]
    if dialect_name(session) == "postgresql":
        session.execute(_LOCK, {"key": _JOURNAL_LOCK})
        # Numbered here, under the lock, rather than by the column's sequence: a sequence
        # value is spent even when its transaction rolls back, and a mirror that sees a
        # serial missing cannot tell a rolled-back change from one it failed to receive.
        last = last_serial(session)
        for offset, row in enumerate(rows, start=1):
            row["id"] = last + offset
    # SQLAlchemy sends these as one multi-row INSERT ("insertmanyvalues"); on SQLite the
    # autoincrement rowid numbers them in VALUES order, and a rollback takes its numbers
    # back. RETURNING's own order is not promised, so sort.
    serials = sorted(session.execute(_INSERT, rows).scalars())
    session.execute(
        _UPDATE_PROJECT, {"project_id": project_id, "serial": serials[-1], "added_size": added_size}
    )
    return serials
