"""The journal: one entry per change to a project, numbered by a serial that only grows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import bindparam, func, insert, select, text, update

from cheeseshop.db import Executor, dialect_name
from cheeseshop.db.prepared import Prepared
from cheeseshop.db.models import JournalEntry, Project, utcnow

__all__ = ["Change", "last_serial", "record_changes"]

# Any constant works; it names the one lock that orders journal writers on PostgreSQL.
_JOURNAL_LOCK = 0x0C4EE5E
_LOCK = Prepared(text("SELECT pg_advisory_xact_lock(:key)"))

_entries = JournalEntry.__table__
_projects = Project.__table__
_INSERT = Prepared(insert(_entries).returning(_entries.c.id))
_LAST = Prepared(select(func.max(_entries.c.id)))
_UPDATE_PROJECT = Prepared(
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
    return _LAST.scalar(session) or 0


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
        _LOCK.rows(session, {"key": _JOURNAL_LOCK})
        # Numbered here, under the lock, rather than by the column's sequence: a sequence
        # value is spent even when its transaction rolls back, and a mirror that sees a
        # serial missing cannot tell a rolled-back change from one it failed to receive.
        last = last_serial(session)
        serials = list(range(last + 1, last + 1 + len(rows)))
        for serial, row in zip(serials, rows):
            row["id"] = serial
        _INSERT.execute_many(session, rows)  # one batch: asyncpg pipelines an executemany
    else:
        # On SQLite the autoincrement rowid numbers them in order, and a rollback takes
        # its numbers back; a row at a time is cheaper on the driver's cursor than one
        # multi-row statement through SQLAlchemy.
        serials = [_INSERT.scalar(session, row) for row in rows]
    _UPDATE_PROJECT.rows(session, {"project_id": project_id, "serial": serials[-1], "added_size": added_size})
    return serials
